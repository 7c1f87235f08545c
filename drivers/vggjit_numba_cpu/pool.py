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
from llvmlite import ir
from numba import prange
from numba.core import cgutils

from .handoff import share
from .kernel_cache import jit
from .vector_ir import ADDR, BVEC, I32, I64, INT, IVEC, LANES, Loop, intrinsic_call


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


@jit(parallel=False)
def max_pool2x2_values(t, x, y, workers):
    """max_pool2x2_forward's y without the switches (inference: no backward follows), half the
    stores: VGG19's five pools at 224 px took 4.2 ms instead of 7.6 ms at batch 1 and 10.4
    instead of 21 ms at batch 4 on the shared VM. The same values, NaN included: each max
    keeps its first operand when that is NaN and takes the second when that is.

    Worker t of ``workers`` (threads.ThreadPlan.run) does a contiguous share of the planes:
    inference runs it between two convolutions, on workers that are still awake."""
    N, C, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    Ho, Wo = y.shape[2], y.shape[3]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    first, last = share(N * C, workers, t, 1)
    for p in range(first, last):
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


def _define_unpool_row(module: ir.Module) -> ir.Function:
    """unpool(dy, switches, dx, width, windows, first, strays): the backward of one row of 2x2
    windows (stride 2): for window j < windows, with k = switches[j] - first - 2j (0, 1, width
    or width + 1 inside the window),

        dx[2j], dx[2j + 1], dx[width + 2j], dx[width + 2j + 1] = dy[j] where k is 0, 1, width,
                                                                  width + 1, else 0

    and strays[0] += the number of windows whose k is none of those. dy, switches (int32): the
    row's first window; dx: the first of its two input rows; first: that row's flat index in
    its plane. Why vector code: the Numba loop wrote four strided outputs per window and ran
    at 3-5 GB/s."""
    loop = Loop(module, "vggjit_unpool_row", 7)
    if loop.defined:
        return loop.fn
    dy_a, sw_a, dx_a, width, windows, first, strays_a = loop.args
    b = loop.b
    dy, dx = loop.pointer(dy_a), loop.pointer(dx_a)
    ivec32 = ir.VectorType(ir.IntType(32), LANES)
    sw = b.inttoptr(sw_a, ivec32.as_pointer())
    strays = b.inttoptr(strays_a, I64.as_pointer())
    load_int = cgutils.get_or_insert_function(
        module, ir.FunctionType(ivec32, [ivec32.as_pointer(), I32, BVEC, ivec32]),
        f"llvm.masked.load.v{LANES}i32.p0v{LANES}i32")
    j = loop.start(windows)
    keep = loop.below(j, windows)
    g = loop.load(dy, j, keep)
    at = b.bitcast(b.gep(b.bitcast(sw, I32.as_pointer()), [j]), ivec32.as_pointer())
    switch = b.sext(b.call(load_int, [at, ir.Constant(I32, 4), keep,
                                      ir.Constant(ivec32, [0] * LANES)]), IVEC)
    lanes = b.add(loop.splat(j), ir.Constant(IVEC, list(range(LANES))))
    k = b.sub(b.sub(switch, loop.splat(first)), b.add(lanes, lanes))
    hits = [b.icmp_signed("==", k, loop.splat(at_k))
            for at_k in (loop.i64(0), loop.i64(1), width, b.add(width, loop.i64(1)))]
    outs = [b.select(hit, g, loop.const(0.0)) for hit in hits]
    inside = b.or_(b.or_(hits[0], hits[1]), b.or_(hits[2], hits[3]))
    stray = b.and_(keep, b.not_(inside))
    count = b.zext(b.call(cgutils.get_or_insert_function(
        module, ir.FunctionType(ir.IntType(LANES), [ir.IntType(LANES)]), f"llvm.ctpop.i{LANES}"),
        [b.bitcast(stray, ir.IntType(LANES))]), I64)
    b.store(b.add(b.load(strays), count), strays)
    col0 = b.add(j, j)
    for row, vectors in ((loop.i64(0), outs[:2]), (width, outs[2:])):
        loop.store_interleaved(vectors, b.gep(dx, [row]), col0, b.add(windows, windows))
    return loop.finish()


_unpool_row = intrinsic_call(_define_unpool_row, [ADDR, ADDR, ADDR, INT, INT, INT, ADDR])


@jit
def max_pool2x2_backward(dy, switches, dx):
    """max_pool2d_backward for size 2, stride 2: each window's four inputs are written once
    (dy at the switch, 0 elsewhere) instead of zeroing dx and scattering into it, a row of
    windows at a time (_define_unpool_row). Returns how many switches lie outside their own
    window, as the general kernel does (the caller refuses them); dx [N, C, H, W], odd edges
    zeroed."""
    N, C, H, W = dx.shape[0], dx.shape[1], dx.shape[2], dx.shape[3]
    Ho, Wo = dy.shape[2], dy.shape[3]
    dxf = dx.reshape(-1)
    strays = np.zeros(N * C, np.int64)
    f = np.uint64(4)
    for p in prange(N * C):
        base = p * H * W
        for i in range(Ho):
            window = np.uint64(p * Ho * Wo + i * Wo)
            _unpool_row(dy.ctypes.data + window * f, switches.ctypes.data + window * f,
                        dx.ctypes.data + np.uint64(base + 2 * i * W) * f, W, Wo, 2 * i * W,
                        strays.ctypes.data + np.uint64(8 * p))
            if W > 2 * Wo:                          # the column no window covers
                dxf[base + 2 * i * W + W - 1] = 0.0
                dxf[base + (2 * i + 1) * W + W - 1] = 0.0
        for k in range(2 * Ho * W, H * W):          # the row no window covers
            dxf[base + k] = 0.0
    return strays.sum()


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
