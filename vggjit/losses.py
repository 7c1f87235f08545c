"""Gatys style-transfer losses and their gradients, plus total variation.

The equations are docs/equations.md, section 5; (3.10)-(3.16) are the course lab's numbers.

For features X (the image being optimised) and targets at layer l, all [N, C, H, W]:

    content   L_c = 1/(2NCHW) sum (X - Y)^2                 dL_c/dX = (X - Y) / (NCHW)
    Gram      G[n,i,j] = sum_{h,w} X[n,i,h,w] X[n,j,h,w]    (computed by the driver)
    style     L_s = 1/(4NC^2H^2W^2) sum (G - A)^2           dL_s/dX = (G - A) X / (NC^2H^2W^2)
    total     L = alpha sum_l c_l L_c^l + beta sum_l s_l L_s^l + tv L_tv

with total variation over the image x [N, 3, H, W] (neighbour differences along H and W)

    L_tv = 1/(2NCHW) (sum dh^2 + sum dw^2).

:class:`StyleObjective` holds the targets (content features, style Grams: computed once) and
evaluates the total loss and its gradient with respect to the image with one forward pass that
stops at the deepest loss layer and one backward pass seeded at every loss layer.

``normalize``: each loss layer's weight is divided by the mean square of its own target, in the
units its loss measures it: the features Y for content, the Gram per position A/(HW) for style.
Each term then is a relative squared error, ``1/2 |X-Y|^2/|Y|^2`` and ``1/4 |G-A|^2/|A|^2``, so
layers whose activations differ in scale by orders of magnitude (random networks; VGGs trained
by different tools) weigh alike, and one alpha and beta serve every network: style transfer's
default (docs/style-transfer.md). The TV term needs no such scale: it is measured on the image,
in pixel units, the same for every network.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .errors import InputError


# -- the loss terms on their own ----------------------------------------------------------------
def content_loss(x: np.ndarray, y: np.ndarray, weight: float = 1.0
                 ) -> tuple[float, np.ndarray]:
    """(L_content, weight * dL/dX) for features x and content target y, both [N, C, H, W]."""
    diff = np.subtract(x, y)
    loss = float(np.sum(np.square(diff, dtype=np.float64))) / (2.0 * x.size)
    diff *= weight / x.size
    return loss, diff


def style_loss(x: np.ndarray, g: np.ndarray, a: np.ndarray, weight: float = 1.0
               ) -> tuple[float, np.ndarray]:
    """(L_style, weight * dL/dX) for features x [N, C, H, W], their Gram g and the style Gram
    a [N, C, C]. The gradient by NumPy; :class:`StyleObjective` has the driver make it
    (``gram_backward``) when its backward pass reaches the layer."""
    loss, dg = style_loss_dg(x, g, a, weight)
    n, c = x.shape[:2]
    grad = np.matmul(dg + dg.transpose(0, 2, 1), x.reshape(n, c, -1))
    return loss, grad.reshape(x.shape)


def style_loss_dg(x: np.ndarray, g: np.ndarray, a: np.ndarray, weight: float = 1.0
                  ) -> tuple[float, np.ndarray]:
    """(L_style, weight * dL/dG [N, C, C]) for features x [N, C, H, W], their Gram g and the
    style Gram a: the loss now, the gradient with respect to x (as large as x) later, as
    ``driver.gram_backward(dg, x)`` = (dg + dg^T) X."""
    n, c, h, w = x.shape
    scale = float(n) * c * c * (float(h) * w) ** 2
    diff = np.subtract(g, a, dtype=np.result_type(g, x))
    loss = float(np.sum(np.square(diff, dtype=np.float64))) / (4.0 * scale)
    # The factors go into the C x C difference, not into the gradient, which is as large as x.
    diff *= weight / (2.0 * scale)
    return loss, diff


def tv_loss(x: np.ndarray) -> tuple[float, np.ndarray]:
    """(L_tv, dL/dx) for an image x [N, C, H, W]: squared neighbour differences, see module doc."""
    x = np.asarray(x)
    dh = x[:, :, 1:, :] - x[:, :, :-1, :]
    dw = x[:, :, :, 1:] - x[:, :, :, :-1]
    size = float(x.size)
    loss = (float(np.sum(np.square(dh, dtype=np.float64)))
            + float(np.sum(np.square(dw, dtype=np.float64)))) / (2.0 * size)
    grad = np.zeros_like(x)
    grad[:, :, 1:, :] += dh
    grad[:, :, :-1, :] -= dh
    grad[:, :, :, 1:] += dw
    grad[:, :, :, :-1] -= dw
    grad *= 1.0 / size
    return loss, grad


# -- geometry: which layers exist, how large their maps are ---------------------------------------
def feature_geometry(net, name: str, height: int, width: int) -> tuple[int, int, int]:
    """(channels, height, width) of layer ``name``'s output for an input of height x width.

    Raises InputError for an unknown name, a classifier layer, or an input too small for it.
    """
    position = net._position(name)
    layer = net.layers[position]
    if layer.kind not in ("conv", "relu", "pool"):
        raise InputError(f"layer {name!r} is a {layer.kind} layer; style transfer uses the "
                         f"convolutional part only (conv*, relu*, pool* layers)")
    channels, h, w = net.layers[0].cin, height, width
    for i in range(position + 1):
        current = net.layers[i]
        if current.kind == "conv":
            channels = current.cout
        elif current.kind == "pool":
            if h < 2 or w < 2:
                raise InputError(
                    f"an image of {height}x{width} pixels is too small for layer {name!r}: it "
                    f"shrinks to {h}x{w} before {current.name}; use at least "
                    f"{min_size(net, [name])} pixels on each side or shallower layers")
            h, w = h // 2, w // 2
    return channels, h, w


def min_size(net, names: Sequence[str]) -> int:
    """The smallest side length an image needs for every layer in ``names`` (2^pools before it)."""
    deepest = max(net._position(name) for name in names)
    pools = sum(layer.kind == "pool" for layer in net.layers[:deepest + 1])
    return 2 ** pools


def check_layers(net, names: Sequence[str], what: str) -> None:
    """Raise InputError naming the valid choices if any of ``names`` is not a usable layer."""
    usable = [layer.name for layer in net.layers if layer.kind in ("conv", "relu", "pool")]
    for name in names:
        if name not in usable:
            raise InputError(f"unknown {what} layer {name!r}; valid names: {', '.join(usable)}")


def layer_weights(names: Sequence[str], weights: Sequence[float] | None, what: str
                  ) -> dict[str, float]:
    """{layer: weight}; equal weights summing to 1 when ``weights`` is None (the lab's mean)."""
    names = list(names)
    if not names:
        return {}
    if len(set(names)) != len(names):
        raise InputError(f"{what} layers repeat a name: {', '.join(names)}")
    if weights is None:
        weights = [1.0 / len(names)] * len(names)
    weights = [float(w) for w in weights]
    if len(weights) != len(names):
        raise InputError(f"{len(names)} {what} layers but {len(weights)} {what} layer weights")
    if any(not np.isfinite(w) or w < 0 for w in weights):
        raise InputError(f"{what} layer weights must be finite and non-negative, got {weights}")
    return dict(zip(names, weights))


# -- targets --------------------------------------------------------------------------------------
def content_targets(net, content: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """The content image's features at ``layers`` (one forward pass, nothing kept)."""
    if not layers:
        return {}
    return dict(net.forward(content, tuple(layers)))


def style_targets(net, styles: Sequence[np.ndarray], blend: Sequence[float],
                  layers: Sequence[str], height: int, width: int) -> dict[str, np.ndarray]:
    """Blended style Grams {layer: A [1, C, C]} for an output image of height x width.

    Each style image's Gram is rescaled by (positions of the output's map) / (positions of the
    style image's map) at that layer, so that style images of another size (style scale, aspect
    ratio) measure the same per-position statistics; with equal sizes the factor is 1. The
    Grams of several styles are mixed with ``blend`` (weights summing to 1).
    """
    if not layers:
        return {}
    targets: dict[str, np.ndarray] = {}
    for style, share in zip(styles, blend):
        feats = net.forward(style, tuple(layers))
        for name in layers:
            f = feats[name]
            _, h, w = feature_geometry(net, name, height, width)
            a = net.driver.gram(f).astype(np.float64) * (share * (h * w) / (f.shape[2] * f.shape[3]))
            targets[name] = a if name not in targets else targets[name] + a
        del feats
    return {name: a.astype(np.float32) for name, a in targets.items()}


# -- the whole objective --------------------------------------------------------------------------
@dataclass
class Evaluation:
    """One evaluation: total loss, gradient w.r.t. the image, and the weighted terms."""

    loss: float
    grad: np.ndarray
    terms: dict[str, float] = field(default_factory=dict)

    @property
    def content(self) -> float:
        return sum(v for k, v in self.terms.items() if k.startswith("content:"))

    @property
    def style(self) -> float:
        return sum(v for k, v in self.terms.items() if k.startswith("style:"))


class StyleObjective:
    """Total loss of an image against fixed content and style targets, and its gradient.

    net: a :class:`vggjit.network.Network`; content: preprocessed [1, 3, H, W] content image
    (the output has its size); content_layers / style_layers: {layer: weight} (see
    :func:`layer_weights`); style_grams: {layer: A} from :func:`style_targets`;
    content_features: {layer: Y} from :func:`content_targets` (computed here when None).
    """

    def __init__(self, net, content: np.ndarray, content_layers: Mapping[str, float],
                 style_layers: Mapping[str, float], style_grams: Mapping[str, np.ndarray], *,
                 alpha: float = 1.0, beta: float = 500.0, tv_weight: float = 0.0,
                 normalize: bool = False, content_features: Mapping[str, np.ndarray] | None = None):
        self.net = net
        self.shape = tuple(content.shape)
        self.alpha, self.beta, self.tv_weight = float(alpha), float(beta), float(tv_weight)
        self.normalize = bool(normalize)
        self.content_layers = {k: float(v) for k, v in content_layers.items()}
        self.style_layers = {k: float(v) for k, v in style_layers.items()}
        if content_features is None:
            content_features = content_targets(net, content, list(self.content_layers))
        self.content_features = {k: content_features[k] for k in self.content_layers}
        self.style_grams = {k: style_grams[k] for k in self.style_layers}
        self.outputs = tuple(dict.fromkeys([*self.content_layers, *self.style_layers]))
        # Effective weight of each term: alpha * c_l or beta * s_l, normalised on request.
        self.weights: dict[str, float] = {}
        self.scales: dict[str, float] = {}
        height, width = self.shape[2], self.shape[3]
        for name, w in self.content_layers.items():
            scale = _mean_square(self.content_features[name]) if normalize else 1.0
            self.scales[f"content:{name}"] = scale
            self.weights[f"content:{name}"] = self.alpha * w / scale
        for name, w in self.style_layers.items():
            if normalize:
                _, h, wd = feature_geometry(net, name, height, width)
                scale = _mean_square(self.style_grams[name]) / float(h * wd) ** 2
            else:
                scale = 1.0
            self.scales[f"style:{name}"] = scale
            self.weights[f"style:{name}"] = self.beta * w / scale

    def __call__(self, x: np.ndarray, need_grad: bool = True) -> Evaluation:
        """Evaluate at the preprocessed image x [1, 3, H, W] (float32; float64 stays float64
        for drivers that compute in it)."""
        x = np.asarray(x)
        x = np.ascontiguousarray(x, np.float64 if x.dtype == np.float64 else np.float32)
        if x.shape != self.shape:
            raise InputError(f"image shape {x.shape} differs from the content's {self.shape}")
        terms: dict[str, float] = {}
        seeds: dict[str, list] = {}     # per layer: its gradient terms (arrays, callables)
        total = 0.0
        if self.outputs:
            feats = self.net.forward(x, self.outputs, keep=need_grad)
            for name in self.content_layers:
                key = f"content:{name}"
                loss, grad = content_loss(feats[name], self.content_features[name],
                                          self.weights[key])
                total += self._add(key, loss, grad, name, terms, seeds)
            f = None
            for name in self.style_layers:
                key = f"style:{name}"
                f = feats[name]
                loss, dg = style_loss_dg(f, self.net.driver.gram(f), self.style_grams[name],
                                         self.weights[key])
                # the gradient (as large as f) is made when the backward walk reaches f
                total += self._add(key, loss, functools.partial(self.net.driver.gram_backward,
                                                                dg, f), name, terms, seeds)
            del feats, f
        if self.tv_weight:
            tv, tv_grad = tv_loss(x)
            terms["tv"] = self.tv_weight * tv
            total += terms["tv"]
        if not need_grad:
            return Evaluation(total, None, terms)
        if seeds:
            seeds = {name: functools.partial(_add_terms, layer_terms)
                     for name, layer_terms in seeds.items()}
            dx = self.net.backward(seeds, release=True)
        else:
            dx = np.zeros_like(x)
        if self.tv_weight:
            dx = dx + (self.tv_weight * tv_grad).astype(dx.dtype, copy=False)
        return Evaluation(total, dx, terms)

    def _add(self, key, loss, weighted_grad, name, terms, seeds) -> float:
        """Record term ``key`` (its loss before, its gradient after the weight: an array, or a
        callable that adds it to the array it is given) for the backward seed at ``name``."""
        terms[key] = self.weights[key] * loss
        seeds.setdefault(name, []).append(weighted_grad)
        return terms[key]


def _add_terms(layer_terms: list, dy: np.ndarray | None) -> np.ndarray:
    """A layer's seed for Network.backward: dy (None, or the gradient arriving from deeper
    layers, ours to update) plus each of its loss terms' gradients."""
    for term in layer_terms:
        if callable(term):
            dy = term(accumulate=dy)
        elif dy is None:
            dy = term
        else:
            dy += term
    layer_terms.clear()     # each term's arrays go as soon as they are added
    return dy


def _mean_square(a: np.ndarray) -> float:
    ms = float(np.mean(np.square(a, dtype=np.float64)))
    # An all-zero target (a dead layer) cannot be normalised; leave its weight as given.
    return ms if ms > 0.0 else 1.0
