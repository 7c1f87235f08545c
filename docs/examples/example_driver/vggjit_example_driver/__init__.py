"""A complete third-party vggjit driver: every op in vectorised NumPy.

Install it next to vggjit (see docs/drivers.md) and `vggjit drivers` lists ``example-numpy``.
The test suite installs this very file and runs it through the conformance suite, so this
example cannot silently rot.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vggjit import BACKWARD, FORWARD, Driver, DriverRecord, InputError, hookimpl


def _windows(x: np.ndarray, k: int, stride: int, pad: int = 0) -> np.ndarray:
    """x [N, C, H, W] -> read-only view [N, C, Hout, Wout, k, k] of every (padded) window."""
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


def _strided(a: np.ndarray, i: int, j: int, stride: int, hout: int, wout: int):
    """The [.., hout, wout] slice of a that window offset (i, j) touches."""
    return a[:, :, i:i + stride * (hout - 1) + 1:stride, j:j + stride * (wout - 1) + 1:stride]


class NumpyDriver(Driver):
    name = "example-numpy"
    capabilities = frozenset({FORWARD, BACKWARD})

    def _conv2d(self, x, w, b, stride, pad):
        cols = _windows(x, w.shape[2], stride, pad)
        y = np.einsum("nchwij,ocij->nohw", cols, w, optimize=True)
        return np.ascontiguousarray(y + b[None, :, None, None], dtype=np.float32)

    def _conv2d_backward(self, dy, x, w, stride, pad, need_dx, need_dw):
        k, (_, _, hout, wout) = w.shape[2], dy.shape
        dx = dw = db = None
        if need_dw:
            dw = np.einsum("nohw,nchwij->ocij", dy, _windows(x, k, stride, pad), optimize=True)
            db = dy.sum(axis=(0, 2, 3))
        if need_dx:
            n, c, h, wd = x.shape
            dxpad = np.zeros((n, c, h + 2 * pad, wd + 2 * pad), np.float32)
            for i in range(k):
                for j in range(k):
                    _strided(dxpad, i, j, stride, hout, wout)[...] += np.einsum(
                        "nohw,oc->nchw", dy, w[:, :, i, j], optimize=True)
            dx = np.ascontiguousarray(dxpad[:, :, pad:pad + h, pad:pad + wd])
        return dx, dw, db

    def _relu(self, x):
        return np.maximum(x, 0)

    def _relu_backward(self, dy, x):
        return np.where(x > 0, dy, np.float32(0))

    def _max_pool2d(self, x, size, stride):
        win = _windows(x, size, stride)
        flat = win.reshape(win.shape[:4] + (size * size,))
        argmax = flat.argmax(axis=-1)  # argmax returns the first maximum: ties as required
        y = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]
        return np.ascontiguousarray(y), (argmax, size, stride)  # switches: our own format

    def _max_pool2d_backward(self, dy, switches, x_shape):
        argmax, size, stride = switches
        if argmax.shape != dy.shape or argmax.min() < 0 or argmax.max() >= size * size:
            # a gradient routed nowhere would be silently lost: refuse foreign switches
            raise InputError(f"max_pool2d_backward: switches of shape {argmax.shape} with "
                             f"window positions outside 0..{size * size - 1} do not come from "
                             f"this driver's max_pool2d for dy {dy.shape}")
        dx = np.zeros(x_shape, np.float32)
        hout, wout = dy.shape[2:]
        for i in range(size):
            for j in range(size):
                _strided(dx, i, j, stride, hout, wout)[...] += np.where(
                    argmax == i * size + j, dy, np.float32(0))
        return dx

    def _avg_pool2d(self, x, size, stride):
        return np.ascontiguousarray(_windows(x, size, stride).mean(axis=(4, 5)), np.float32)

    def _avg_pool2d_backward(self, dy, x_shape, size, stride):
        dx = np.zeros(x_shape, np.float32)
        hout, wout = dy.shape[2:]
        for i in range(size):
            for j in range(size):
                _strided(dx, i, j, stride, hout, wout)[...] += dy / np.float32(size * size)
        return dx

    def _linear(self, x, w, b):
        return x @ w.T + b

    def _linear_backward(self, dy, x, w, need_dx, need_dw):
        return (dy @ w if need_dx else None, dy.T @ x if need_dw else None,
                dy.sum(axis=0) if need_dw else None)

    def _softmax(self, x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def _gram(self, x):
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        return flat @ flat.transpose(0, 2, 1)


@hookimpl
def vggjit_drivers():
    return [DriverRecord(name="example-numpy", priority=-10, factory=NumpyDriver,
                         description="example third-party driver: vectorised NumPy",
                         capabilities=frozenset({FORWARD, BACKWARD}))]
