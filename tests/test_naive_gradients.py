"""The oracle checked against calculus: each naive backward op equals central finite
differences of its naive forward op, on tiny shapes with strides, padding and overlap."""
from __future__ import annotations

import numpy as np
import pytest

from vggjit import InputError, get_driver

EPS = 1e-2


@pytest.fixture(scope="module")
def naive():
    return get_driver("naive")


def numeric_grad(f, x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """d/dx of sum(f(x) * r), by central differences (float64 arithmetic on the outputs)."""
    g = np.zeros(x.shape)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += EPS
        minus[idx] -= EPS
        g[idx] = (np.sum(f(plus).astype(np.float64) * r) -
                  np.sum(f(minus).astype(np.float64) * r)) / (2 * EPS)
    return g


def check(analytic, numeric):
    # float32 outputs differenced over 2 * EPS: errors of ~1e-7 * |y| / EPS, far below this.
    np.testing.assert_allclose(analytic, numeric, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("shape,k,stride,pad", [
    ((1, 2, 5, 4), 3, 1, 1), ((2, 1, 6, 7), 3, 2, 0), ((1, 2, 5, 5), 2, 3, 2), ((1, 1, 4, 3), 1, 1, 0),
])
def test_conv2d_backward_equals_finite_differences(naive, shape, k, stride, pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((3, shape[1], k, k)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    y = naive.conv2d(x, w, b, stride, pad)
    r = rng.standard_normal(y.shape)
    dx, dw, db = naive.conv2d_backward(r.astype(np.float32), x, w, stride, pad)
    check(dx, numeric_grad(lambda v: naive.conv2d(v, w, b, stride, pad), x, r))
    check(dw, numeric_grad(lambda v: naive.conv2d(x, v, b, stride, pad), w, r))
    check(db, numeric_grad(lambda v: naive.conv2d(x, w, v, stride, pad), b, r))


def test_relu_backward_equals_finite_differences(naive):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    x[np.abs(x) < 2 * EPS] = 0.5  # keep clear of the kink
    r = rng.standard_normal(x.shape)
    check(naive.relu_backward(r.astype(np.float32), x), numeric_grad(naive.relu, x, r))


@pytest.mark.parametrize("size,stride", [(2, 2), (3, 2), (2, 1)])
def test_pooling_backward_equals_finite_differences(naive, size, stride):
    rng = np.random.default_rng(2)
    # Distinct values at least 0.1 apart, so a step of EPS never changes a window's maximum.
    x = (rng.permutation(2 * 7 * 6) * 0.1).reshape(1, 2, 7, 6).astype(np.float32)
    y, switches = naive.max_pool2d(x, size, stride)
    r = rng.standard_normal(y.shape)
    check(naive.max_pool2d_backward(r.astype(np.float32), switches, x.shape),
          numeric_grad(lambda v: naive.max_pool2d(v, size, stride)[0], x, r))
    check(naive.avg_pool2d_backward(r.astype(np.float32), x.shape, size, stride),
          numeric_grad(lambda v: naive.avg_pool2d(v, size, stride), x, r))


def test_linear_backward_equals_finite_differences(naive):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    r = rng.standard_normal((3, 4))
    dx, dw, db = naive.linear_backward(r.astype(np.float32), x, w)
    check(dx, numeric_grad(lambda v: naive.linear(v, w, b), x, r))
    check(dw, numeric_grad(lambda v: naive.linear(x, v, b), w, r))
    check(db, numeric_grad(lambda v: naive.linear(x, w, v), b, r))


def test_gram_backward_equals_finite_differences(naive):
    # a non-symmetric dg: the backward must use dg + dg^T, not 2 dg
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 2, 3)).astype(np.float32)
    r = rng.standard_normal((2, 3, 3))
    check(naive.gram_backward(r.astype(np.float32), x), numeric_grad(naive.gram, x, r))
    arriving = rng.standard_normal(x.shape).astype(np.float32)
    check(naive.gram_backward(r.astype(np.float32), x, accumulate=arriving.copy()),
          numeric_grad(naive.gram, x, r) + arriving)


def test_naive_forward_values_by_hand(naive):
    # A 1-channel 3x3 input, 2x2 kernel of ones, stride 1, no pad: window sums.
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    y = naive.conv2d(x, np.ones((1, 1, 2, 2), np.float32), np.array([1.0], np.float32), 1, 0)
    np.testing.assert_array_equal(y[0, 0], [[9.0, 13.0], [21.0, 25.0]])
    p, _ = naive.max_pool2d(np.array([[[[1, 3], [3, 2]]]], np.float32), 2, 2)
    assert p[0, 0, 0, 0] == 3.0
    s = naive.softmax(np.array([[0.0, np.log(3.0)]], np.float32))
    np.testing.assert_allclose(s, [[0.25, 0.75]], rtol=1e-6)
    g = naive.gram(np.array([[[[1, 2]], [[3, 4]]]], np.float32))
    np.testing.assert_array_equal(g[0], [[5, 11], [11, 25]])


def test_max_pool_ties_go_to_the_first_maximum(naive):
    x = np.array([[[[2.0, 2.0], [2.0, 1.0]]]], np.float32)
    y, switches = naive.max_pool2d(x, 2, 2)
    dx = naive.max_pool2d_backward(np.ones_like(y), switches, x.shape)
    np.testing.assert_array_equal(dx[0, 0], [[1.0, 0.0], [0.0, 0.0]])


def test_max_pool_backward_rejects_switches_outside_their_window(naive):
    # a switch inside the plane but in another window would route a gradient to a pixel that
    # never produced that output: the oracle must refuse it, not add it up
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    y, switches = naive.max_pool2d(x, 2, 2)
    moved = switches.index.copy()
    moved[0, 0, 0, 0] = moved[0, 0, 1, 1]        # the bottom-right window's position
    with pytest.raises(InputError, match="outside their 2x2 window"):
        naive.max_pool2d_backward(np.ones_like(y), switches._replace(index=moved), x.shape)
    with pytest.raises(InputError, match="what this driver's max_pool2d returned"):
        naive.max_pool2d_backward(np.ones_like(y), switches.index, x.shape)
