"""Naive kernels: each output element computed straight from its defining sum.

Every op converts its operands to float64, loops over output (or input) positions in Python
exactly as the equations in docs/equations.md, section 2 are written, and rounds to float32
once at the end. Slow by design; its job is to be obviously right (it is itself checked against
finite differences in tests/test_naive_gradients.py).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from vggjit.checks import conv_output_length
from vggjit.contract import BACKWARD, FORWARD, Driver
from vggjit.errors import InputError


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _pad(x: np.ndarray, pad: int) -> np.ndarray:
    """x [N, C, H, W] -> [N, C, H + 2 pad, W + 2 pad] with zeros around."""
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


class PoolSwitches(NamedTuple):
    """This driver's record of a max pooling: where each window's maximum was, and the window.

    index [N, C, Hout, Wout] int64: flat position (row * W + col) in the input plane.
    size, stride: the window, so the backward can check every index lies in its own window.
    """

    index: np.ndarray
    size: int
    stride: int


def _check_switches(switches, dy_shape, x_shape) -> np.ndarray:
    """The index array of ``switches``, after checking it could have come from our forward on
    an input of ``x_shape``: right type and shape, every index inside its own window."""
    if not isinstance(switches, PoolSwitches):
        raise InputError(f"max_pool2d_backward: switches must be what this driver's max_pool2d "
                         f"returned, got {type(switches).__name__}")
    index = np.asarray(switches.index)
    if index.shape != tuple(dy_shape) or not np.issubdtype(index.dtype, np.integer):
        raise InputError(f"max_pool2d_backward: switches hold {index.dtype} {index.shape}, "
                         f"expected integers of dy's shape {tuple(dy_shape)}")
    width = x_shape[3]
    size, stride = switches.size, switches.stride
    rows, cols = np.divmod(index, width)
    first_row = (np.arange(index.shape[2]) * stride)[:, None]
    first_col = (np.arange(index.shape[3]) * stride)[None, :]
    inside = ((index >= 0) & (rows >= first_row) & (rows < first_row + size)
              & (cols >= first_col) & (cols < first_col + size) & (rows < x_shape[2]))
    if not inside.all():
        raise InputError(f"max_pool2d_backward: {int((~inside).sum())} switches lie outside "
                         f"their {size}x{size} window (negative, or made for another input "
                         f"than shape {tuple(x_shape)})")
    return index


class NaiveDriver(Driver):
    name = "naive"
    capabilities = frozenset({FORWARD, BACKWARD})
    #: ~30-100 MFLOP/s measured on VGG-sized convolutions (one Python step per output value):
    #: a VGG19 forward pass at 224x224 takes over ten minutes
    flops_per_second = 5e7

    # -- convolution --------------------------------------------------------------------------
    def _conv2d(self, x, w, b, stride, pad):
        """Y[n,co,h,w] = sum_{ci,kh,kw} W[co,ci,kh,kw] Xpad[n,ci,h s+kh,w s+kw] + b[co]."""
        n, _, height, width = x.shape
        cout, _, k, _ = w.shape
        hout = conv_output_length(height, k, stride, pad)
        wout = conv_output_length(width, k, stride, pad)
        xpad, w64, b64 = _pad(_f64(x), pad), _f64(w), _f64(b)
        y = np.zeros((n, cout, hout, wout))
        for i in range(n):
            for co in range(cout):
                for h in range(hout):
                    for j in range(wout):
                        window = xpad[i, :, h * stride:h * stride + k, j * stride:j * stride + k]
                        y[i, co, h, j] = np.sum(window * w64[co]) + b64[co]
        return y.astype(np.float32)

    def _conv2d_backward(self, dy, x, w, stride, pad, need_dx, need_dw):
        """dW = sum dY Xpad-window; db = sum dY; dXpad-window += dY W, then crop the padding."""
        n, _, height, width = x.shape
        cout, _, k, _ = w.shape
        _, _, hout, wout = dy.shape
        xpad, w64, dy64 = _pad(_f64(x), pad), _f64(w), _f64(dy)
        dxpad = np.zeros_like(xpad)
        dw = np.zeros_like(w64)
        for i in range(n):
            for co in range(cout):
                for h in range(hout):
                    for j in range(wout):
                        rows = slice(h * stride, h * stride + k)
                        cols = slice(j * stride, j * stride + k)
                        if need_dw:
                            dw[co] += dy64[i, co, h, j] * xpad[i, :, rows, cols]
                        if need_dx:
                            dxpad[i, :, rows, cols] += dy64[i, co, h, j] * w64[co]
        dx = dxpad[:, :, pad:pad + height, pad:pad + width].astype(np.float32) if need_dx else None
        if not need_dw:
            return dx, None, None
        return dx, dw.astype(np.float32), dy64.sum(axis=(0, 2, 3)).astype(np.float32)

    # -- ReLU ---------------------------------------------------------------------------------
    def _relu(self, x):
        y = np.empty_like(x)
        for idx in np.ndindex(x.shape):
            y[idx] = 0.0 if x[idx] <= 0 else x[idx]  # NaN <= 0 is false: NaN stays NaN
        return y

    def _relu_backward(self, dy, x):
        dx = np.zeros_like(dy)
        for idx in np.ndindex(x.shape):
            if x[idx] > 0:
                dx[idx] = dy[idx]
        return dx

    # -- pooling ------------------------------------------------------------------------------
    def _max_pool2d(self, x, size, stride):
        """switches.index[n,c,h,w] = flat index (row * W + col) in x[n,c] of the window's
        first max (a :class:`PoolSwitches`)."""
        n, c, height, width = x.shape
        hout = conv_output_length(height, size, stride, 0)
        wout = conv_output_length(width, size, stride, 0)
        y = np.empty((n, c, hout, wout), np.float32)
        switches = np.empty((n, c, hout, wout), np.int64)
        for i, ch, h, j in np.ndindex(n, c, hout, wout):
            best_value, best_index = None, -1
            for kh in range(size):
                for kw in range(size):
                    row, col = h * stride + kh, j * stride + kw
                    value = x[i, ch, row, col]
                    if best_value is None or value > best_value:  # strict: first max wins ties
                        best_value, best_index = value, row * width + col
            y[i, ch, h, j] = best_value
            switches[i, ch, h, j] = best_index
        return y, PoolSwitches(switches, size, stride)

    def _max_pool2d_backward(self, dy, switches, x_shape):
        index = _check_switches(switches, dy.shape, x_shape)
        n, c, height, width = x_shape
        dx = np.zeros((n, c, height * width))
        for i, ch, h, j in np.ndindex(dy.shape):
            dx[i, ch, index[i, ch, h, j]] += dy[i, ch, h, j]
        return dx.reshape(x_shape).astype(np.float32)

    def _avg_pool2d(self, x, size, stride):
        n, c, height, width = x.shape
        hout = conv_output_length(height, size, stride, 0)
        wout = conv_output_length(width, size, stride, 0)
        x64 = _f64(x)
        y = np.empty((n, c, hout, wout))
        for i, ch, h, j in np.ndindex(n, c, hout, wout):
            window = x64[i, ch, h * stride:h * stride + size, j * stride:j * stride + size]
            y[i, ch, h, j] = window.sum() / (size * size)
        return y.astype(np.float32)

    def _avg_pool2d_backward(self, dy, x_shape, size, stride):
        dx = np.zeros(x_shape)
        for i, ch, h, j in np.ndindex(dy.shape):
            dx[i, ch, h * stride:h * stride + size, j * stride:j * stride + size] += (
                float(dy[i, ch, h, j]) / (size * size))
        return dx.astype(np.float32)

    # -- fully connected ----------------------------------------------------------------------
    def _linear(self, x, w, b):
        """Y[n, o] = sum_i X[n, i] W[o, i] + b[o]."""
        x64, w64 = _f64(x), _f64(w)
        y = np.empty((x.shape[0], w.shape[0]))
        for n in range(x.shape[0]):
            for o in range(w.shape[0]):
                y[n, o] = np.dot(x64[n], w64[o]) + float(b[o])
        return y.astype(np.float32)

    def _linear_backward(self, dy, x, w, need_dx, need_dw):
        x64, w64, dy64 = _f64(x), _f64(w), _f64(dy)
        dx = np.zeros_like(x64) if need_dx else None
        dw = np.zeros_like(w64) if need_dw else None
        for n in range(x.shape[0]):
            for o in range(w.shape[0]):
                if need_dx:
                    dx[n] += dy64[n, o] * w64[o]
                if need_dw:
                    dw[o] += dy64[n, o] * x64[n]
        return (dx.astype(np.float32) if need_dx else None,
                dw.astype(np.float32) if need_dw else None,
                dy64.sum(axis=0).astype(np.float32) if need_dw else None)

    # -- softmax and Gram ---------------------------------------------------------------------
    def _softmax(self, x):
        y = np.empty(x.shape)
        for n in range(x.shape[0]):
            row = _f64(x[n])
            shifted = np.exp(row - row.max())
            y[n] = shifted / shifted.sum()
        return y.astype(np.float32)

    def _gram(self, x):
        n, c = x.shape[:2]
        flat = _f64(x).reshape(n, c, -1)
        g = np.empty((n, c, c))
        for i in range(n):
            for a in range(c):
                for b in range(c):
                    g[i, a, b] = np.dot(flat[i, a], flat[i, b])
        return g.astype(np.float32)

    def _gram_backward(self, dg, x, accumulate):
        n, c = x.shape[:2]
        flat = _f64(x).reshape(n, c, -1)
        dx = np.zeros(flat.shape)
        for i in range(n):
            for a in range(c):          # dL/dX[a] = sum_b (dg[a, b] + dg[b, a]) X[b]
                for b in range(c):
                    dx[i, a] += (float(dg[i, a, b]) + float(dg[i, b, a])) * flat[i, b]
        dx = dx.reshape(x.shape)
        if accumulate is None:
            return dx.astype(np.float32)
        accumulate[...] = _f64(accumulate) + dx       # one rounding, as for the other ops
        return accumulate
