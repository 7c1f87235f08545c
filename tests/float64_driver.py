"""A float64 test driver (not installed, not registered).

Every op the network and the losses use, forward and backward, in float64 end to end: it
overrides the public methods, so the contract's float32 conversion is skipped. A network on it
is a float64 function, so its backward pass can be checked against central finite differences
to ~1e-7 instead of float32's ~1e-3. tests/test_network.py and tests/test_losses.py check it
against the naive driver. Pooling windows must not overlap (size == stride), as in VGG.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vggjit.contract import BACKWARD, FORWARD, Driver


def _f64(a) -> np.ndarray:
    return np.asarray(a, np.float64)


def _windows(x, k, stride):
    """[N, C, H, W] -> view [N, C, Hout, Wout, k, k] of every window."""
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


def _pad(x, pad):
    return np.pad(_f64(x), ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def _spread(dy, x_shape, size, stride, contribution):
    """Scatter ``contribution(i, j)`` [N, C, Hout, Wout] onto every window tap (i, j)."""
    assert size == stride, "the float64 test driver pools without overlap"
    dx = np.zeros(x_shape, np.float64)
    hout, wout = dy.shape[2:]
    for i in range(size):
        for j in range(size):
            dx[:, :, i:i + stride * hout:stride, j:j + stride * wout:stride] += contribution(i, j)
    return dx


class Float64Driver(Driver):
    name = "float64-test"
    capabilities = frozenset({FORWARD, BACKWARD})

    def conv2d(self, x, w, b, stride=1, pad=0, *, relu=False):
        y = np.einsum("nchwij,ocij->nohw", _windows(_pad(x, pad), w.shape[2], stride), _f64(w),
                      optimize=True)
        y = y + _f64(b)[None, :, None, None]
        return self.relu(y) if relu else y

    def conv2d_backward(self, dy, x, w, stride=1, pad=0, *, need_dx=True, need_dw=True,
                        relu_out=None):
        if relu_out is not None:
            dy = self.relu_backward(dy, relu_out)
        dy, w, xp = _f64(dy), _f64(w), _pad(x, pad)
        k, (hout, wout) = w.shape[2], dy.shape[2:]
        dw = np.einsum("nohw,nchwij->ocij", dy, _windows(xp, k, stride), optimize=True)
        dxp = np.zeros_like(xp)
        for i in range(k):  # one scatter per kernel tap, each over all pixels at once
            for j in range(k):
                dxp[:, :, i:i + stride * hout:stride, j:j + stride * wout:stride] += np.einsum(
                    "nohw,oc->nchw", dy, w[:, :, i, j], optimize=True)
        dx = dxp[:, :, pad:pad + x.shape[2], pad:pad + x.shape[3]]
        return (dx if need_dx else None, dw if need_dw else None,
                dy.sum(axis=(0, 2, 3)) if need_dw else None)

    def relu(self, x):
        return np.maximum(_f64(x), 0.0)

    def relu_backward(self, dy, x):
        return np.where(np.asarray(x) > 0, _f64(dy), 0.0)

    def max_pool2d(self, x, size=2, stride=2, switches=True):
        win = _windows(_f64(x), size, stride)
        flat = win.reshape(win.shape[:4] + (size * size,))
        argmax = flat.argmax(axis=4)  # first maximum in row-major window order
        y = np.take_along_axis(flat, argmax[..., None], axis=4)[..., 0]
        return y, (argmax, size, stride)

    def max_pool2d_backward(self, dy, switches, x_shape):
        argmax, size, stride = switches
        return _spread(dy, x_shape, size, stride,
                       lambda i, j: np.where(argmax == i * size + j, _f64(dy), 0.0))

    def avg_pool2d(self, x, size=2, stride=2):
        return _windows(_f64(x), size, stride).mean(axis=(4, 5))

    def avg_pool2d_backward(self, dy, x_shape, size=2, stride=2):
        return _spread(dy, x_shape, size, stride, lambda i, j: _f64(dy) / (size * size))

    def linear(self, x, w, b):
        return _f64(x) @ _f64(w).T + _f64(b)

    def linear_backward(self, dy, x, w, *, need_dx=True, need_dw=True):
        dy, x, w = _f64(dy), _f64(x), _f64(w)
        return ((dy @ w if need_dx else None), (dy.T @ x if need_dw else None),
                (dy.sum(axis=0) if need_dw else None))

    def softmax(self, x):
        z = _f64(x)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def gram(self, x):
        flat = _f64(x).reshape(x.shape[0], x.shape[1], -1)
        return flat @ flat.transpose(0, 2, 1)

    def gram_backward(self, dg, x, accumulate=None):
        flat = _f64(x).reshape(x.shape[0], x.shape[1], -1)
        dg = _f64(dg)
        grad = ((dg + dg.transpose(0, 2, 1)) @ flat).reshape(x.shape)
        if accumulate is None:
            return grad
        accumulate += grad
        return accumulate
