"""Max and average pooling, forward and backward side by side.

x [N, C, H, W] -> y [N, C, Ho, Wo], Ho = floor((H - size) / stride) + 1 (rows and columns past
the last whole window are dropped). Every kernel runs one (n, c) plane per prange iteration:
windows of one plane may overlap (stride < size), and the backward scatter-add into a plane is
then race-free because only one worker ever touches that plane.

Switches (this driver's record of the arg-max): int32 [N, C, Ho, Wo], the flat index
``row * W + col`` inside the plane of the window's first maximum in row-major window order (a
later equal value does not replace it). The driver hands them out with the window's size and
stride (``MaxPoolSwitches``), so the backward can refuse a switch outside its own window. A
NaN in a window wins (the first NaN), so NaN propagates as the NaN policy in vggjit.checks
asks.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .kernel_cache import jit


@jit
def max_pool2d_forward(x, size, stride, y, switches):
    """y [N, C, Ho, Wo] = window maxima of x; switches [N, C, Ho, Wo] int32 (see module doc)."""
    N, C, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    Ho, Wo = y.shape[2], y.shape[3]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    sf = switches.reshape(-1)
    for p in prange(N * C):
        src = p * H * W
        dst = p * Ho * Wo
        for i in range(Ho):
            for j in range(Wo):
                first = (i * stride) * W + j * stride
                best = xf[src + first]
                where = first
                if best == best:                      # not NaN: look for a larger value
                    for kh in range(size):
                        row = (i * stride + kh) * W + j * stride
                        for kw in range(size):
                            v = xf[src + row + kw]
                            if v > best or v != v:    # strict: ties keep the first maximum
                                best = v
                                where = row + kw
                                if v != v:
                                    break
                        if best != best:
                            break
                yf[dst + i * Wo + j] = best
                sf[dst + i * Wo + j] = where


@jit(parallel=False)
def _take(v, best):
    """Does v replace the running maximum best? When larger, or when v is the first NaN."""
    return best == best and (v > best or v != v)


@jit
def max_pool2x2_forward(x, y, switches):
    """max_pool2d_forward for size 2, stride 2 (every VGG pooling), the same results and
    switches, written without branches: every load happens and each step is a select, so
    LLVM vectorises a row of windows. The general kernel's early exits become branches that
    mispredict on real data (which of four values is largest is a coin toss): VGG19's pool1
    at 224 took 19 ms that way, 0.9 ms this way."""
    N, C, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    Ho, Wo = y.shape[2], y.shape[3]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    sf = switches.reshape(-1)
    for p in prange(N * C):
        for i in range(Ho):
            top = np.uint64(p * H * W + 2 * i * W)
            bottom = top + np.uint64(W)
            out = np.uint64(p * Ho * Wo + i * Wo)
            row = np.int32(2 * i * W)
            for j in range(np.uint64(Wo)):
                c = np.uint64(2) * j
                a, b = xf[top + c], xf[top + c + np.uint64(1)]
                d, e = xf[bottom + c], xf[bottom + c + np.uint64(1)]
                best, where = a, row + np.int32(c)
                t = _take(b, best)
                best, where = (b, where + np.int32(1)) if t else (best, where)
                t = _take(d, best)
                best, where = (d, row + np.int32(W + c)) if t else (best, where)
                t = _take(e, best)
                best, where = (e, row + np.int32(W + c + 1)) if t else (best, where)
                yf[out + j] = best
                sf[out + j] = where


@jit
def max_pool2x2_values(x, y):
    """max_pool2x2_forward's y without the switches (inference: no backward follows), half the
    stores: VGG19's five pools at 224 px took 4.2 ms instead of 7.6 ms at batch 1 and 10.4
    instead of 21 ms at batch 4 on the shared VM. The same values, NaN included: each max
    keeps its first operand when that is NaN and takes the second when that is."""
    N, C, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    Ho, Wo = y.shape[2], y.shape[3]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    for p in prange(N * C):
        for i in range(Ho):
            top = np.uint64(p * H * W + 2 * i * W)
            bottom = top + np.uint64(W)
            out = np.uint64(p * Ho * Wo + i * Wo)
            for j in range(np.uint64(Wo)):
                c = np.uint64(2) * j
                a, b = xf[top + c], xf[top + c + np.uint64(1)]
                d, e = xf[bottom + c], xf[bottom + c + np.uint64(1)]
                upper = a if (a >= b or a != a) else b
                lower = d if (d >= e or d != d) else e
                yf[out + j] = upper if (upper >= lower or upper != upper) else lower


@jit
def max_pool2d_backward(dy, switches, dx, size, stride):
    """dx [N, C, H, W] (overwritten) = dy routed to the switch positions, summed where windows
    overlap; returns how many switches lie outside their own size x size window (those are
    ignored; the caller raises: such a switch was not made by this forward for this input)."""
    N, C, H, W = dx.shape[0], dx.shape[1], dx.shape[2], dx.shape[3]
    HW = H * W
    Wo = dy.shape[3]
    M = dy.shape[2] * Wo
    dyf = dy.reshape(-1)
    sf = switches.reshape(-1)
    dxf = dx.reshape(-1)
    bad = 0
    for p in prange(N * C):
        base = p * HW
        for k in range(HW):
            dxf[base + k] = 0.0
        for k in range(M):
            where = sf[p * M + k]
            row0 = (k // Wo) * stride
            col0 = (k % Wo) * stride
            row = where // W
            col = where - row * W
            if (where < 0 or where >= HW or row < row0 or row >= row0 + size
                    or col < col0 or col >= col0 + size):
                bad += 1
            else:
                dxf[base + where] += dyf[p * M + k]
    return bad


@jit
def max_pool2x2_backward(dy, switches, dx):
    """max_pool2d_backward for size 2, stride 2: each window's four inputs are written once
    (dy at the switch, 0 elsewhere) instead of zeroing dx and scattering into it. Returns how
    many switches lie outside their own window, as the general kernel does (the caller
    refuses them); dx [N, C, H, W], odd edges zeroed."""
    N, C, H, W = dx.shape[0], dx.shape[1], dx.shape[2], dx.shape[3]
    Ho, Wo = dy.shape[2], dy.shape[3]
    dyf = dy.reshape(-1)
    sf = switches.reshape(-1)
    dxf = dx.reshape(-1)
    stray = 0
    for p in prange(N * C):
        base = np.uint64(p * H * W)
        for i in range(Ho):
            top = base + np.uint64(2 * i * W)
            bottom = top + np.uint64(W)
            src = np.uint64(p * Ho * Wo + i * Wo)
            row = np.int64(2 * i * W)
            for j in range(np.uint64(Wo)):
                g = dyf[src + j]
                k = np.int64(sf[src + j]) - row - np.int64(2 * j)   # 0, 1, W, W + 1 if inside
                c = np.uint64(2) * j
                dxf[top + c] = g if k == 0 else 0.0
                dxf[top + c + np.uint64(1)] = g if k == 1 else 0.0
                dxf[bottom + c] = g if k == W else 0.0
                dxf[bottom + c + np.uint64(1)] = g if k == W + 1 else 0.0
                if k != 0 and k != 1 and k != W and k != W + 1:
                    stray += 1
            if W > 2 * Wo:                          # the column no window covers
                dxf[top + np.uint64(W - 1)] = 0.0
                dxf[bottom + np.uint64(W - 1)] = 0.0
        for k in range(2 * Ho * W, H * W):          # the row no window covers
            dxf[base + np.uint64(k)] = 0.0
    return stray


@jit
def avg_pool2d_forward(x, size, stride, y):
    """y [N, C, Ho, Wo] = window means of x (sum in float32, times 1/size^2)."""
    N, C, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    Ho, Wo = y.shape[2], y.shape[3]
    scale = np.float32(1.0 / (size * size))
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    for p in prange(N * C):
        src = p * H * W
        dst = p * Ho * Wo
        for i in range(Ho):
            for j in range(Wo):
                s = np.float32(0.0)
                for kh in range(size):
                    row = src + (i * stride + kh) * W + j * stride
                    for kw in range(size):
                        s += xf[row + kw]
                yf[dst + i * Wo + j] = s * scale


@jit
def avg_pool2d_backward(dy, size, stride, dx):
    """dx [N, C, H, W] (overwritten): every window gets dy / size^2 added to all its inputs."""
    N, C, H, W = dx.shape[0], dx.shape[1], dx.shape[2], dx.shape[3]
    Ho, Wo = dy.shape[2], dy.shape[3]
    scale = np.float32(1.0 / (size * size))
    dyf = dy.reshape(-1)
    dxf = dx.reshape(-1)
    for p in prange(N * C):
        base = p * H * W
        for k in range(H * W):
            dxf[base + k] = 0.0
        for i in range(Ho):
            for j in range(Wo):
                g = dyf[p * Ho * Wo + i * Wo + j] * scale
                for kh in range(size):
                    row = base + (i * stride + kh) * W + j * stride
                    for kw in range(size):
                        dxf[row + kw] += g
