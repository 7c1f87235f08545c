"""Vectorised numpy drivers for tests (not installed, not registered).

* :class:`NumpyDriver`: float32 through the contract like any driver, forward ops only; a
  224 x 224 pass of a few-channel fixture network takes milliseconds instead of the naive
  driver's seconds, so classification and CLI tests use it.
* :class:`Float64Driver`: the same ops *and* their backward passes, entirely in float64 (it
  bypasses the contract's float32 conversion). A network on it is a float64 function, so its
  backward pass can be checked against central finite differences to ~1e-7.

tests/test_network.py checks both against the naive driver.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vggjit.contract import BACKWARD, FORWARD, Driver


def _windows(x, k, stride):
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


def conv2d(x, w, b, stride, pad):
    k = w.shape[2]
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    y = np.einsum("nchwij,ocij->nohw", _windows(xp, k, stride), np.asarray(w, np.float64),
                  optimize=True)
    return y + np.asarray(b, np.float64)[None, :, None, None]


def conv2d_backward(dy, x, w, stride, pad):
    dy, x, w = (np.asarray(a, np.float64) for a in (dy, x, w))
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dw = np.einsum("nohw,nchwij->ocij", dy, _windows(xp, k, stride), optimize=True)
    db = dy.sum(axis=(0, 2, 3))
    dxp = np.zeros_like(xp)
    hout, wout = dy.shape[2:]
    for i in range(k):  # one scatter per kernel tap, each over all pixels at once
        for j in range(k):
            dxp[:, :, i:i + stride * hout:stride, j:j + stride * wout:stride] += np.einsum(
                "nohw,oc->nchw", dy, w[:, :, i, j], optimize=True)
    dx = dxp[:, :, pad:pad + x.shape[2], pad:pad + x.shape[3]]
    return dx, dw, db


def max_pool2d(x, size, stride):
    windows = _windows(np.asarray(x), size, stride)
    flat = windows.reshape(windows.shape[:4] + (size * size,))
    switches = flat.argmax(axis=4)  # first maximum in row-major window order
    return np.take_along_axis(flat, switches[..., None], axis=4)[..., 0], switches


def max_pool2d_backward(dy, switches, x_shape, size, stride):
    assert size == stride, "the test driver pools without overlap"
    dx = np.zeros(x_shape, np.float64)
    hout, wout = dy.shape[2:]
    for i in range(size):
        for j in range(size):
            dx[:, :, i:i + stride * hout:stride, j:j + stride * wout:stride] += np.where(
                switches == i * size + j, dy, 0.0)
    return dx


def softmax(x):
    z = np.asarray(x, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class NumpyDriver(Driver):
    """Fast float32 forward ops for tests."""

    name = "numpy-test"
    capabilities = frozenset({FORWARD})

    def _conv2d(self, x, w, b, stride, pad):
        return conv2d(x, w, b, stride, pad).astype(np.float32)

    def _relu(self, x):
        return np.maximum(x, 0)

    def _max_pool2d(self, x, size, stride):
        y, switches = max_pool2d(x, size, stride)
        return y.astype(np.float32), switches

    def _avg_pool2d(self, x, size, stride):
        return _windows(x, size, stride).mean(axis=(4, 5), dtype=np.float64).astype(np.float32)

    def _linear(self, x, w, b):
        return (x.astype(np.float64) @ w.astype(np.float64).T + b).astype(np.float32)

    def _softmax(self, x):
        return softmax(x).astype(np.float32)

    def _gram(self, x):
        f = x.reshape(x.shape[0], x.shape[1], -1).astype(np.float64)
        return np.einsum("ncp,ndp->ncd", f, f).astype(np.float32)


class Float64Driver(Driver):
    """Every op the network uses, forward and backward, in float64 end to end."""

    name = "float64-test"
    capabilities = frozenset({FORWARD, BACKWARD})

    def conv2d(self, x, w, b, stride=1, pad=0):
        return conv2d(x, w, b, stride, pad)

    def conv2d_backward(self, dy, x, w, stride=1, pad=0, *, need_dx=True, need_dw=True):
        dx, dw, db = conv2d_backward(dy, x, w, stride, pad)
        return (dx if need_dx else None), (dw if need_dw else None), (db if need_dw else None)

    def relu(self, x):
        return np.maximum(np.asarray(x, np.float64), 0.0)

    def relu_backward(self, dy, x):
        return np.where(np.asarray(x) > 0, np.asarray(dy, np.float64), 0.0)

    def max_pool2d(self, x, size=2, stride=2):
        y, switches = max_pool2d(np.asarray(x, np.float64), size, stride)
        return y, (switches, size, stride)

    def max_pool2d_backward(self, dy, switches, x_shape):
        switches, size, stride = switches
        return max_pool2d_backward(np.asarray(dy, np.float64), switches, x_shape, size, stride)

    def linear(self, x, w, b):
        return np.asarray(x, np.float64) @ np.asarray(w, np.float64).T + b

    def linear_backward(self, dy, x, w, *, need_dx=True, need_dw=True):
        dy, x, w = (np.asarray(a, np.float64) for a in (dy, x, w))
        return ((dy @ w if need_dx else None), (dy.T @ x if need_dw else None),
                (dy.sum(axis=0) if need_dw else None))

    def softmax(self, x):
        return softmax(x)
