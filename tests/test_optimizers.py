"""The optimisers on their own: Adam's update against the hand formula, L-BFGS on a quadratic
(minimised, resumed exactly through its state, converged at a minimum)."""
from __future__ import annotations

import numpy as np
import pytest

from vggjit.optimizers import LBFGS, Adam, Converged


def test_one_adam_step_equals_the_hand_formula():
    rng = np.random.default_rng(0)
    x, g1, g2 = rng.standard_normal((3, 2, 5))
    adam = Adam(lr=0.5)
    x1 = adam.update(x, g1)
    m, v = 0.1 * g1, 0.001 * g1 ** 2
    expected1 = x - 0.5 * (m / (1 - 0.9)) / (np.sqrt(v / (1 - 0.999)) + 1e-8)
    np.testing.assert_allclose(x1, expected1, rtol=1e-14)
    x2 = adam.update(x1, g2)
    m, v = 0.9 * m + 0.1 * g2, 0.999 * v + 0.001 * g2 ** 2
    expected2 = x1 - 0.5 * (m / (1 - 0.9 ** 2)) / (np.sqrt(v / (1 - 0.999 ** 2)) + 1e-8)
    np.testing.assert_allclose(x2, expected2, rtol=1e-14)
    assert adam.t == 2


def quadratic(a_diag):
    def fun(x):
        return 0.5 * float(np.sum(a_diag * x * x)), a_diag * x, {}
    return fun


def test_lbfgs_minimises_a_quadratic_and_resumes_exactly():
    a = np.linspace(1, 50, 40).reshape(1, 40)
    x0 = np.random.default_rng(1).standard_normal((1, 40))
    fun = quadratic(a)
    opt, x = LBFGS(history=5), x0
    xs = []
    for _ in range(12):
        x = opt.step(x, fun).x
        xs.append(x)
    assert fun(x)[0] < 1e-4 * fun(x0)[0]
    # Stop after 5 steps, carry the state through state_dict, continue: the same iterates.
    first, x = LBFGS(history=5), x0
    for _ in range(5):
        x = first.step(x, fun).x
    second = LBFGS(history=5)
    second.load_state_dict({k: np.array(v) for k, v in first.state_dict().items()})
    for k in range(5, 12):
        x = second.step(x, fun).x
        np.testing.assert_array_equal(x, xs[k])


def test_lbfgs_reports_convergence_at_a_minimum():
    fun = quadratic(np.ones((1, 4)))
    with pytest.raises(Converged):
        LBFGS().step(np.zeros((1, 4)), fun)
