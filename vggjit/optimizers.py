"""Optimisers for style transfer: Adam (the lab's) and L-BFGS, both with checkpointable state.

Both work on a float64 vector ``x`` (the image) and a function ``fun(x) -> (loss, grad, terms)``
returning the loss, its float64 gradient of ``x``'s shape and the weighted loss terms. A step never
changes the optimiser's state until it has finished, so an interrupt (Ctrl-C) in the middle of a
step leaves the state of the last completed step intact.

Adam follows docs/equations.md, section 5 (the lab's 3.17) exactly. L-BFGS keeps its own
curvature history (the two-loop recursion, the last ``history`` pairs) for the whole run and
finds its step length with ``scipy.optimize.line_search`` (strong Wolfe conditions). Because
the history, the current loss and gradient are plain arrays in :meth:`state_dict`, resuming
from a checkpoint continues the very same iteration sequence: both optimisers resume exactly
(bit for bit on a deterministic driver).

Each optimiser says what a run loop must know of it: ``line_search`` (a step tries points along
a line and backs off from one whose loss is not finite, so such a point is no divergence) and
``evaluates_new_iterate`` (a step's loss is the new image's; if not, it is the loss of the image
the step started from, and a run's last image is never evaluated by the optimiser).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import InputError, VggjitError

Fun = Callable[[np.ndarray], tuple[float, np.ndarray, dict]]


class Converged(VggjitError):
    """The optimiser cannot make further progress (L-BFGS line search failed from a fresh start)."""


@dataclass
class Step:
    """What one optimiser step did.

    x: the new iterate. loss, terms: the loss and weighted terms of the iterate ``checked``
    (Adam: the image the step started from, where its gradient was taken; L-BFGS: the new
    image, where the line search ended). evaluations: loss + gradient evaluations it used.
    """

    x: np.ndarray
    loss: float
    terms: dict = field(default_factory=dict)
    evaluations: int = 1
    checked: np.ndarray | None = None


class Adam:
    """Adam as docs/equations.md, section 5: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    x <- x - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)."""

    name = "adam"
    line_search = False
    evaluates_new_iterate = False

    def __init__(self, lr: float = 1.0, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8):
        if not lr > 0:
            raise InputError(f"learning rate must be positive, got {lr}")
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), float(eps)
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None
        self.t = 0

    def update(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        """One update of x with gradient g; returns the new x (state committed)."""
        m = self.beta1 * (self.m if self.m is not None else 0.0) + (1 - self.beta1) * g
        v = self.beta2 * (self.v if self.v is not None else 0.0) + (1 - self.beta2) * np.square(g)
        t = self.t + 1
        m_hat = m / (1 - self.beta1 ** t)
        v_hat = v / (1 - self.beta2 ** t)
        x_new = x - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
        self.m, self.v, self.t = m, v, t
        return x_new

    def step(self, x: np.ndarray, fun: Fun) -> Step:
        loss, g, terms = fun(x)
        return Step(self.update(x, g), loss, terms, 1, x)

    def params(self) -> dict:
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"t": np.array(self.t, np.int64)}
        if self.m is not None:
            state["m"], state["v"] = self.m, self.v
        return state

    def load_state_dict(self, state, terms: dict | None = None) -> None:
        """Restore :meth:`state_dict`'s state; ``terms`` (the current loss terms, which L-BFGS
        keeps) are no part of Adam's state."""
        self.t = int(state["t"])
        self.m = np.array(state["m"], np.float64) if "m" in state else None
        self.v = np.array(state["v"], np.float64) if "v" in state else None


class LBFGS:
    """Limited-memory BFGS with a strong-Wolfe line search from scipy.optimize.

    history: how many (s, y) pairs the inverse-Hessian estimate keeps (scipy's default, 10).
    initial_step: the first step (and every restart) moves along -g scaled so that its largest
        pixel change is this many units (pixels are 0..255); later steps start at the natural
        quasi-Newton length 1.
    max_line_search: loss evaluations one line search may use.
    """

    name = "lbfgs"
    line_search = True
    evaluates_new_iterate = True

    def __init__(self, history: int = 10, initial_step: float = 10.0, c1: float = 1e-4,
                 c2: float = 0.9, max_line_search: int = 20):
        if history < 1:
            raise InputError(f"L-BFGS history must be at least 1, got {history}")
        self.history, self.initial_step = int(history), float(initial_step)
        self.c1, self.c2, self.max_line_search = float(c1), float(c2), int(max_line_search)
        self.s: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        self.f: float | None = None
        self.g: np.ndarray | None = None
        self.terms: dict = {}

    # -- the search direction -----------------------------------------------------------------
    def _direction(self, g: np.ndarray, s_hist: list, y_hist: list) -> np.ndarray:
        """-H g by the two-loop recursion; a scaled -g when there is no history."""
        if not s_hist:
            top = float(np.max(np.abs(g)))
            return -g * (self.initial_step / top) if top > 0 else -g
        q = g.copy()
        coefficients = []
        for s, y in zip(reversed(s_hist), reversed(y_hist)):
            rho = 1.0 / float(np.dot(y, s))
            a = rho * float(np.dot(s, q))
            q -= a * y
            coefficients.append((rho, a))
        s, y = s_hist[-1], y_hist[-1]
        q *= float(np.dot(s, y)) / float(np.dot(y, y))
        for s, y, (rho, a) in zip(s_hist, y_hist, reversed(coefficients)):
            q += (a - rho * float(np.dot(y, q))) * s
        return -q

    def step(self, x: np.ndarray, fun: Fun) -> Step:
        from scipy.optimize import line_search

        evaluations = 0
        if self.g is None:
            f, g, terms = fun(x)
            evaluations += 1
            self.f, self.g, self.terms = f, g, terms  # depends on x only: safe to commit
        cache: list[tuple[np.ndarray, float, np.ndarray, dict]] = []

        def evaluate(point: np.ndarray):
            nonlocal evaluations
            for px, pf, pg, pt in cache:
                if np.array_equal(px, point):
                    return pf, pg, pt
            pf, pg, pt = fun(point.reshape(x.shape))
            evaluations += 1
            cache.append((point.copy(), pf, np.ravel(pg), pt))
            del cache[:-3]
            return pf, cache[-1][2], pt

        xf, f, gf = x.ravel(), self.f, self.g.ravel()
        if not np.any(gf):
            raise Converged("L-BFGS: the gradient is zero; the optimisation has converged")
        s_hist, y_hist = list(self.s), list(self.y)
        while True:
            d = self._direction(gf, s_hist, y_hist)
            if s_hist and float(np.dot(gf, d)) >= 0:  # not downhill: forget the curvature
                s_hist, y_hist = [], []
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scipy's LineSearchWarning: handled below
                alpha = line_search(lambda p: evaluate(p)[0], lambda p: evaluate(p)[1], xf, d,
                                    gf, f, None, c1=self.c1, c2=self.c2,
                                    maxiter=self.max_line_search)[0]
            if alpha is not None:
                break
            if not s_hist:
                raise Converged("L-BFGS: the line search found no lower loss along the "
                                "gradient; the optimisation has converged (or is stuck)")
            s_hist, y_hist = [], []  # one fresh start from the gradient
        x_new = xf + alpha * d
        f_new, g_new, terms_new = evaluate(x_new)
        s, y = x_new - xf, g_new - gf
        if float(np.dot(s, y)) > 1e-10 * float(np.dot(y, y)):  # keep H positive definite
            s_hist, y_hist = (s_hist + [s])[-self.history:], (y_hist + [y])[-self.history:]
        x_out = x_new.reshape(x.shape)
        self.s, self.y = s_hist, y_hist
        self.f, self.g, self.terms = f_new, g_new.reshape(x.shape), terms_new
        return Step(x_out, f_new, terms_new, evaluations, x_out)

    def params(self) -> dict:
        return {"history": self.history, "initial_step": self.initial_step, "c1": self.c1,
                "c2": self.c2, "max_line_search": self.max_line_search}

    def state_dict(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {}
        if self.g is not None:
            state["f"], state["g"] = np.array(self.f, np.float64), self.g
        if self.s:
            state["s"], state["y"] = np.stack(self.s), np.stack(self.y)
        return state

    def load_state_dict(self, state, terms: dict | None = None) -> None:
        """Restore :meth:`state_dict`'s state; ``terms``: the loss terms of the current point
        (a checkpoint keeps them in its history, not in the state)."""
        self.f = float(state["f"]) if "f" in state else None
        self.g = np.array(state["g"], np.float64) if "g" in state else None
        self.s = [row.copy() for row in np.asarray(state["s"], np.float64)] if "s" in state else []
        self.y = [row.copy() for row in np.asarray(state["y"], np.float64)] if "y" in state else []
        self.terms = dict(terms or {})


def make_optimizer(name: str, lr: float = 1.0, **options):
    """'adam' (learning rate ``lr``) or 'lbfgs' (``lr`` unused; see :class:`LBFGS`)."""
    if name == "adam":
        return Adam(lr, **options)
    if name == "lbfgs":
        return LBFGS(**options)
    raise InputError(f"unknown optimiser {name!r}; choose 'adam' or 'lbfgs'")
