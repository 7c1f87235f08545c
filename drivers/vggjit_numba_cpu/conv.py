"""Convolution as img2col + GEMM, forward and backward side by side.

Layout: x [N, Cin, H, W], w [Cout, Cin, K, K] viewed as w2 [Cout, Kd] with Kd = Cin*K*K (the
OIHW order is already the row order img2col produces), y / dy [N, Cout, Ho, Wo]; one image's
output is the row-major matrix [Cout, Ho*Wo].

Why tiles and not one big column matrix: the columns of a VGG layer are large (64 channels at
224x224: 115 MB per image) and writing them to memory and reading them back costs about as much
as the GEMM on this machine. So each worker takes a few output rows of one image at a
time, builds just their columns in its own cache-sized buffer and multiplies them straight away
with a single-threaded sgemm, writing into y in place. The GEMMs of different workers are
independent, which scales better than one 2-thread GEMM, and BLAS's own thread pool never runs
(see threads.py). The buffers come from the driver and are reused between calls; their size, and
so the peak memory, is set by the driver's ``memory_bound_mb``.

Kernels (the driver picks one per call, see the ``use_*`` rules at the bottom):
  conv2d_forward       general K, stride, pad: img2col tile + one sgemm per tile;
  conv2d_forward_s1    stride 1, Cout <= 128: K padded rows per input channel instead of K*K
                       shifted copies, read by K sgemm calls at offsets 0..K-1;
  conv2d_forward_cout  few output pixels (conv5 at batch 1): workers split Cout, not rows;
  input_grad           dx (sgemm + col2im), input channels split among workers;
  weight_grad_channels dw, input channels split among workers;
  conv2d_weight_grad_rows + sum_partials_t   dw of small layers by row tiles.

Race-freedom of the backward scatter (col2im): workers split the *input channels*, so each owns
dx[:, its channels] and dw[:, its columns] outright; no two workers ever add into the same
element, and no atomics or per-thread copies of dx are needed.

BLAS calls go through blas.sgemm (one single-threaded sgemm on sub-matrices given by address
and leading dimension); ``blas`` is the tuple from blas.Sgemm.kernel_args. Every kernel checks
the size of its work buffer first, since nothing is bounds-checked inside.
"""
from __future__ import annotations

import numpy as np
from numba import prange, types

from .blas import TRANS_N, TRANS_T, address, sgemm
from .kernel_cache import jit

#: "no ReLU mask" for the kernels that take one: an empty array typed like a real mask, so one
#: compiled kernel serves both cases.
NO_MASK = np.empty((0, 0, 0, 0), np.float32)


@jit(parallel=False)
def _valid_cols(off, stride, W, Wo):
    """Output columns j in [lo, hi) whose input column j*stride + off lies inside [0, W)."""
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    hi = (W - 1 - off) // stride + 1 if W - 1 - off >= 0 else 0
    hi = min(hi, Wo)
    return min(lo, hi), hi


# Explicit signatures: the callers pass literal zeros for c0 or r0, and Numba would otherwise
# compile a copy per combination of literal and variable arguments; x writable or read-only
# (as blas.address: a read-only array is a type of its own to Numba).
@jit([types.void(x, *([types.int64] * 9), types.float32[::1])
      for x in (types.float32[:, :, :, ::1],
                types.Array(types.float32, 4, "C", readonly=True))], parallel=False)
def _img2col(x, n, c0, c1, r0, r1, K, stride, pad, Wo, cols):
    """Columns of output rows [r0, r1) of image n, input channels [c0, c1).

    cols (1-D, used as [(c1-c0)*K*K, (r1-r0)*Wo] row-major):
        cols[((c-c0)*K + kh)*K + kw, (r-r0)*Wo + j] = xpad[n, c, r*stride + kh, j*stride + kw]
    with xpad = x zero-padded by ``pad``. Padding is written as zeros, never read.

    Indices are unsigned on purpose: with signed ones Numba must allow for negative
    (wrap-around) indexing, and LLVM then vectorises the copies with scatter instructions,
    which made this loop 2-3x slower.
    """
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    L = (r1 - r0) * Wo
    xf = x.reshape(-1)
    step = np.uint64(stride)
    for c in range(c0, c1):
        plane = (n * C + c) * H * W
        for kh in range(K):
            for kw in range(K):
                q = ((c - c0) * K + kh) * K + kw
                off = kw - pad
                jlo, jhi = _valid_cols(off, stride, W, Wo)
                for r in range(r0, r1):
                    ih = r * stride - pad + kh
                    dst = np.uint64(q * L + (r - r0) * Wo)
                    if ih < 0 or ih >= H:
                        for j in range(np.uint64(Wo)):
                            cols[dst + j] = 0.0
                        continue
                    for j in range(np.uint64(jlo)):
                        cols[dst + j] = 0.0
                    d0 = dst + np.uint64(jlo)
                    s0 = np.uint64(plane + ih * W + off + jlo * stride)
                    if stride == 1:             # contiguous: a vector copy
                        for j in range(np.uint64(jhi - jlo)):
                            cols[d0 + j] = xf[s0 + j]
                    else:
                        for j in range(np.uint64(jhi - jlo)):
                            cols[d0 + j] = xf[s0 + j * step]
                    for j in range(np.uint64(jhi), np.uint64(Wo)):
                        cols[dst + j] = 0.0


@jit(parallel=False)
def _col2im(dcols, n, c0, c1, r0, r1, K, stride, pad, Wo, dx):
    """The scatter-add inverse of _img2col:
        dxpad[n, c, r*s + kh, j*s + kw] += dcols[q, (r-r0)*Wo + j]

    Contributions that land in the padding are dropped (that is the crop). Serial: the caller
    guarantees that no other worker writes channels [c0, c1) of dx. Unsigned indices as above.
    """
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    L = (r1 - r0) * Wo
    dxf = dx.reshape(-1)
    step = np.uint64(stride)
    for c in range(c0, c1):
        plane = (n * C + c) * H * W
        for kh in range(K):
            for kw in range(K):
                q = ((c - c0) * K + kh) * K + kw
                off = kw - pad
                jlo, jhi = _valid_cols(off, stride, W, Wo)
                for r in range(r0, r1):
                    ih = r * stride - pad + kh
                    if ih < 0 or ih >= H:
                        continue
                    s0 = np.uint64(q * L + (r - r0) * Wo + jlo)
                    d0 = np.uint64(plane + ih * W + off + jlo * stride)
                    if stride == 1:
                        for j in range(np.uint64(jhi - jlo)):
                            dxf[d0 + j] += dcols[s0 + j]
                    else:
                        for j in range(np.uint64(jhi - jlo)):
                            dxf[d0 + j * step] += dcols[s0 + j]


# -- forward -----------------------------------------------------------------------------------
# one signature: conv2d_forward_cout passes the literals 1 and 0, a specialisation of its own
@jit(types.void(types.float32[::1], *([types.int64] * 4)), parallel=False)
def _relu_rows(yf, start, count, stride, length):
    """max(v, 0) in place on ``count`` runs of ``length`` floats, ``stride`` apart, from
    ``start``: the fused ReLU, applied to a tile while it is still in cache. NaN stays NaN."""
    for r in range(count):
        s = np.uint64(start + r * stride)
        for j in range(np.uint64(length)):
            v = yf[s + j]
            yf[s + j] = 0.0 if v <= 0.0 else v


@jit(parallel=False)
def conv2d_forward(t, x, w2, b, K, stride, pad, rows, workers, cols, y, blas, relu):
    """y = conv(x, w) + b (relu: max(that, 0)), tiled over output rows.

    x [N, Cin, H, W]; w2 [Cout, Cin*K*K]; b [Cout]; y [N, Cout, Ho, Wo] (overwritten);
    rows: output rows per tile; workers: number of workers (= tiles in flight);
    cols: 1-D buffer of at least workers * Cin*K*K * rows*Wo floats (one tile per worker).

    Worker t takes tiles t, t + workers, ...; each tile: img2col into the worker's buffer,
    y[n, :, tile] = b, then y[n, :, tile] += w2 @ cols (sgemm with beta = 1 writing in place:
    the bias costs no extra pass over y); with ``relu``, the ReLU runs over the tile right
    after its sgemm, while it is still in cache.
    """
    N, Cin = x.shape[0], x.shape[1]
    Cout, Kd = w2.shape[0], w2.shape[1]
    Ho, Wo = y.shape[2], y.shape[3]
    HW = Ho * Wo
    per_image = (Ho + rows - 1) // rows
    ntiles = N * per_image
    per_worker = Kd * rows * Wo
    if cols.shape[0] < workers * per_worker:       # no bounds checks inside: refuse up front
        raise ValueError("conv2d_forward: work buffer too small")
    yf = y.reshape(-1)
    w2f = w2.reshape(-1)
    buf = cols[t * per_worker:(t + 1) * per_worker]
    for tile in range(t, ntiles, workers):
        n = tile // per_image
        r0 = (tile % per_image) * rows
        r1 = min(r0 + rows, Ho)
        L = (r1 - r0) * Wo
        _img2col(x, n, 0, Cin, r0, r1, K, stride, pad, Wo, buf)
        base = n * Cout * HW + r0 * Wo
        for co in range(Cout):
            bias = b[co]
            start = base + co * HW
            for j in range(L):
                yf[start + j] = bias
        sgemm(blas, t, TRANS_N, TRANS_N, Cout, L, Kd, address(w2f, 0), Kd,
              address(cols, t * per_worker), L, 1, address(yf, base), HW)
        if relu:
            _relu_rows(yf, base, Cout, HW, L)


@jit(parallel=False)
def image_columns(t, x, n, K, stride, pad, Ho, Wo, workers, cols):
    """Worker t's share of the img2col columns of image n: input channels t, t + workers, ...

    x [N, Cin, H, W]; cols: 1-D, at least Cin*K*K * Ho*Wo floats, the whole image's column
    matrix [Cin*K*K, Ho*Wo] (the first phase of the Cout split).
    """
    Cin = x.shape[1]
    KK = K * K
    HW = Ho * Wo
    if cols.shape[0] < Cin * KK * HW:
        raise ValueError("image_columns: work buffer too small")
    for c in range(t, Cin, workers):
        _img2col(x, n, c, c + 1, 0, Ho, K, stride, pad, Wo, cols[c * KK * HW:(c + 1) * KK * HW])


@jit(parallel=False)
def conv2d_forward_cout(t, n, w2, b, bounds, workers, cols, y, blas, relu):
    """Forward for layers with few output pixels (VGG's conv5 at 14x14): split Cout, not rows.

    Split by rows, each worker's sgemm would get ~100 columns and would re-pack all of w2
    (9.4 MB at 512x4608) for them; split by output channels, each worker packs only its share
    of w2 and multiplies it with all Ho*Wo columns. Per image n: the workers first build the
    image's columns together (image_columns), then worker t computes
    y[n, co0:co1] = b[co0:co1] + w2[co0:co1] @ cols for its blocks t, t + workers, ...
    w2 [Cout, Cin*K*K]; bounds: int64 [nblocks + 1] output-channel boundaries; cols: the
    image's columns, Cin*K*K * Ho*Wo floats; y [N, Cout, Ho, Wo]; relu: max(y, 0) on each
    block right after its sgemm.
    """
    Cout, Kd = w2.shape[0], w2.shape[1]
    HW = y.shape[2] * y.shape[3]
    nblocks = bounds.shape[0] - 1
    if cols.shape[0] < Kd * HW:
        raise ValueError("conv2d_forward_cout: work buffer too small")
    yf = y.reshape(-1)
    w2f = w2.reshape(-1)
    for blk in range(t, nblocks, workers):
        co0, co1 = bounds[blk], bounds[blk + 1]
        for co in range(co0, co1):
            bias = b[co]
            start = np.uint64(n * Cout * HW + co * HW)
            for j in range(np.uint64(HW)):
                yf[start + j] = bias
        sgemm(blas, t, TRANS_N, TRANS_N, co1 - co0, HW, Kd, address(w2f, co0 * Kd), Kd,
              address(cols, 0), HW, 1, address(yf, n * Cout * HW + co0 * HW), HW)
        if relu:
            _relu_rows(yf, n * Cout * HW + co0 * HW, 1, 0, (co1 - co0) * HW)


@jit(parallel=False)
def _padded_rows(x, n, r0, r1, K, pad, Lb, rows3):
    """Stride-1 columns with the kw shift left out: one padded input row per (c, kh).

    rows3 (1-D, used as [Cin*K, Lb] row-major, Lb = (r1-r0)*Wp + K-1, Wp = W + 2 pad):
        rows3[c*K + kh, (r-r0)*Wp + u] = xpad[n, c, r + kh, u]    for u in [0, Wp)
    and K-1 trailing zeros. Then the img2col row (c, kh, kw) is this row read from offset kw:
    a strided matrix BLAS can use directly, so the K-fold copy of img2col shrinks to ~1.
    """
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Wp = W + 2 * pad
    xf = x.reshape(-1)
    for c in range(C):
        plane = (n * C + c) * H * W
        for kh in range(K):
            q = np.uint64((c * K + kh) * Lb)
            for r in range(r0, r1):
                ih = r + kh - pad
                dst = q + np.uint64((r - r0) * Wp)
                if ih < 0 or ih >= H:
                    for u in range(np.uint64(Wp)):
                        rows3[dst + u] = 0.0
                    continue
                for u in range(np.uint64(pad)):
                    rows3[dst + u] = 0.0
                    rows3[dst + np.uint64(pad + W) + u] = 0.0
                src = np.uint64(plane + ih * W)
                d0 = dst + np.uint64(pad)
                for u in range(np.uint64(W)):
                    rows3[d0 + u] = xf[src + u]
            tail = q + np.uint64((r1 - r0) * Wp)
            for u in range(np.uint64(K - 1)):
                rows3[tail + u] = 0.0


@jit(parallel=False)
def conv2d_forward_s1(t, x, wk, b, K, pad, rows, workers, work, y, blas, relu):
    """Stride-1 convolution without the K-fold img2col copy (the "shifted rows" form).

    x [N, Cin, H, W]; wk [K, Cout, Cin*K]: wk[kw, co, c*K + kh] = w[co, c, kh, kw] (the caller
    reorders the weights once per call); y [N, Cout, Ho, Wo] overwritten;
    work: per worker Cin*K*Lb (rows) + Cout*rows*Wp (output tile) floats.

    Per tile: y_tile' [Cout, rows*Wp] = sum_kw wk[kw] @ rows3[:, kw : kw + rows*Wp]  (K sgemm
    calls, beta = 1 after the first), computed on padded-width rows; the Wp - Wo columns per
    row that fall off the edge are dropped when the tile is copied into y with the bias (and
    the ReLU when ``relu``).
    """
    N, Cin, W = x.shape[0], x.shape[1], x.shape[3]
    Cout = wk.shape[1]
    Ho, Wo = y.shape[2], y.shape[3]
    Wp = W + 2 * pad
    HW = Ho * Wo
    CK = Cin * K
    Lb = rows * Wp + K - 1
    per_worker = CK * Lb + Cout * rows * Wp
    per_image = (Ho + rows - 1) // rows
    ntiles = N * per_image
    if work.shape[0] < workers * per_worker:
        raise ValueError("conv2d_forward_s1: work buffer too small")
    wkf = wk.reshape(-1)
    yf = y.reshape(-1)
    floor = np.float32(0.0) if relu else np.float32(-np.inf)   # the ReLU as a clamp (NaN stays)
    start = t * per_worker
    tile_out = start + CK * Lb
    for tile in range(t, ntiles, workers):
        n = tile // per_image
        r0 = (tile % per_image) * rows
        r1 = min(r0 + rows, Ho)
        L = (r1 - r0) * Wp
        _padded_rows(x, n, r0, r1, K, pad, Lb, work[start:start + CK * Lb])
        for kw in range(K):
            sgemm(blas, t, TRANS_N, TRANS_N, Cout, L, CK, address(wkf, kw * Cout * CK), CK,
                  address(work, start + kw), Lb, 0 if kw == 0 else 1,
                  address(work, tile_out), L)
        for co in range(Cout):
            bias = b[co]
            src = np.uint64(tile_out + co * L)
            dst = np.uint64(n * Cout * HW + co * HW + r0 * Wo)
            for r in range(r1 - r0):
                s = src + np.uint64(r * Wp)
                d = dst + np.uint64(r * Wo)
                for j in range(np.uint64(Wo)):
                    v = work[s + j] + bias
                    yf[d + j] = floor if v <= floor else v


# -- backward ----------------------------------------------------------------------------------
@jit(parallel=False)
def _widest(bounds):
    """The most channels in one block: bounds int64 [nblocks + 1] are the block boundaries."""
    widest = 0
    for i in range(bounds.shape[0] - 1):
        widest = max(widest, bounds[i + 1] - bounds[i])
    return widest


@jit(parallel=False)
def _input_grad(t, dy, w2, K, stride, pad, rows, bounds, workers, work, dx, blas, mask):
    """dx of a convolution, the input channels split among workers (see input_grad)."""
    N, C = dx.shape[0], dx.shape[1]
    Cout, Kd = w2.shape[0], w2.shape[1]
    Ho, Wo = dy.shape[2], dy.shape[3]
    KK = K * K
    nblocks = bounds.shape[0] - 1
    widest = _widest(bounds)
    per_worker = (widest * KK + Cout) * rows * Wo
    if work.shape[0] < workers * per_worker or (mask.size and mask.size != dy.size):
        raise ValueError("conv2d input_grad: work buffer too small or mask not shaped like dy")
    w2f = w2.reshape(-1)
    cs = t * per_worker                       # dcols [m, L], then the staged dy [Cout, L]
    ds = cs + widest * KK * rows * Wo
    for blk in range(t, nblocks, workers):
        c0, c1 = bounds[blk], bounds[blk + 1]
        m = (c1 - c0) * KK
        for n in range(N):
            dx[n, c0:c1] = 0.0
        for n in range(N):
            for r0 in range(0, Ho, rows):
                r1 = min(r0 + rows, Ho)
                L = (r1 - r0) * Wo
                if mask.size:
                    _stage_dy_masked(dy, n, r0, r1, Wo, work[ds:ds + Cout * L], mask)
                else:
                    _stage_dy(dy, n, r0, r1, Wo, work[ds:ds + Cout * L])
                sgemm(blas, t, TRANS_T, TRANS_N, m, L, Cout, address(w2f, c0 * KK), Kd,
                      address(work, ds), L, 0, address(work, cs), L)
                _col2im(work[cs:ds], n, c0, c1, r0, r1, K, stride, pad, Wo, dx)


def input_grad(t, dy, w2, k, stride, pad, rows, bounds, workers, work, dx, blas,
               relu_out=None):
    """Worker t's share of dx [N, Cin, H, W] (overwritten) of a convolution: the input
    channels are split among the workers.

    dy [N, Cout, Ho, Wo]; w2 [Cout, Cin*K*K]; bounds: int64 [nblocks + 1] channel-block
    boundaries, worker t takes blocks t, t + workers, ...; work: 1-D, per worker
    (widest block * K*K + Cout) * rows*Wo floats (input_grad_floats); relu_out: None, or the
    output of the ReLU fused into this convolution (shaped like dy): dy is then read as 0
    where relu_out <= 0, the ReLU's backward without a masked copy of dy.

    Per tile of output rows of image n, for the worker's channels [c0, c1) (m = (c1-c0)*K*K):
    dy_tile is copied to a compact buffer (_stage_dy), dcols [m, L] = w2[:, c0*KK:c1*KK]^T @
    dy_tile, then col2im into dx[n, c0:c1]; the worker owns those channels of dx outright.
    """
    _input_grad(t, dy, w2, k, stride, pad, rows, bounds, workers, work, dx, blas,
                NO_MASK if relu_out is None else relu_out)


def input_grad_floats(cout: int, k: int, wo: int, rows: int, bounds, workers: int) -> int:
    """Work floats of input_grad."""
    return workers * (int(_widest(np.asarray(bounds, np.int64))) * k * k + cout) * rows * wo


@jit(parallel=False)
def weight_grad_channels(t, dy, x, K, stride, pad, rows, bounds, workers, work, dw, blas):
    """Worker t's share of dw [Cout, Cin*K*K] (overwritten) by channel blocks: worker t owns the
    columns of its input channels [c0, c1), so no partial sums are needed.

    dy [N, Cout, Ho, Wo]; x [N, Cin, H, W]; bounds, workers as in input_grad; work: 1-D, per
    worker (widest block * K*K + Cout) * rows*Wo floats (input_grad_floats). Per tile of
    output rows of image n: img2col of the worker's channels, then
    dw[:, c0*KK:c1*KK] += dy_tile [Cout, L] @ cols^T [L, m] (sgemm, beta = 1).
    """
    N = x.shape[0]
    Cout, Kd = dw.shape[0], dw.shape[1]
    Ho, Wo = dy.shape[2], dy.shape[3]
    KK = K * K
    nblocks = bounds.shape[0] - 1
    widest = _widest(bounds)
    per_worker = (widest * KK + Cout) * rows * Wo
    if work.shape[0] < workers * per_worker:
        raise ValueError("conv2d weight_grad_channels: work buffer too small")
    dwf = dw.reshape(-1)
    cs = t * per_worker                       # cols [m, L], then the staged dy [Cout, L]
    ds = cs + widest * KK * rows * Wo
    for blk in range(t, nblocks, workers):
        c0, c1 = bounds[blk], bounds[blk + 1]
        m = (c1 - c0) * KK
        for co in range(Cout):
            dwf[co * Kd + c0 * KK:co * Kd + c1 * KK] = 0.0
        for n in range(N):
            for r0 in range(0, Ho, rows):
                r1 = min(r0 + rows, Ho)
                L = (r1 - r0) * Wo
                _stage_dy(dy, n, r0, r1, Wo, work[ds:ds + Cout * L])
                _img2col(x, n, c0, c1, r0, r1, K, stride, pad, Wo, work[cs:ds])
                sgemm(blas, t, TRANS_N, TRANS_T, Cout, m, L, address(work, ds), L,
                      address(work, cs), L, 1, address(dwf, c0 * KK), Kd)


@jit(parallel=False)
def _stage_dy(dy, n, r0, r1, Wo, out):
    """Copy the tile of dy [N, Cout, Ho, Wo] for output rows [r0, r1) of image n into out
    (1-D, used as [Cout, (r1-r0)*Wo]). The sgemm then reads a compact matrix instead of one
    with leading dimension Ho*Wo: at 224x224 that stride is 49 * 4 KiB, every row of the tile
    maps to the same L1 sets, and the sgemm reading it in place ran at half speed."""
    Cout = dy.shape[1]
    HW = dy.shape[2] * dy.shape[3]
    L = (r1 - r0) * Wo
    dyf = dy.reshape(-1)
    for co in range(Cout):
        src = np.uint64(n * Cout * HW + co * HW + r0 * Wo)
        dst = np.uint64(co * L)
        for j in range(np.uint64(L)):
            out[dst + j] = dyf[src + j]


@jit(parallel=False)
def _stage_dy_masked(dy, n, r0, r1, Wo, out, mask):
    """_stage_dy through the ReLU's output ``mask`` (shaped like dy): dy is copied as 0 where
    mask <= 0 (or NaN), the ReLU's backward."""
    Cout = dy.shape[1]
    HW = dy.shape[2] * dy.shape[3]
    L = (r1 - r0) * Wo
    dyf = dy.reshape(-1)
    mf = mask.reshape(-1)
    for co in range(Cout):
        src = np.uint64(n * Cout * HW + co * HW + r0 * Wo)
        dst = np.uint64(co * L)
        for j in range(np.uint64(L)):
            v = dyf[src + j]     # loaded unconditionally: a select, not a branch
            out[dst + j] = v if mf[src + j] > 0.0 else 0.0


@jit(parallel=False)
def _stage_dy_and_sum(dy, n, r0, r1, Wo, out, db_row):
    """_stage_dy, and add each channel's sum over the tile to db_row [Cout] (float64): the
    bias gradient costs no extra pass over dy."""
    Cout = dy.shape[1]
    HW = dy.shape[2] * dy.shape[3]
    L = (r1 - r0) * Wo
    dyf = dy.reshape(-1)
    for co in range(Cout):
        src = np.uint64(n * Cout * HW + co * HW + r0 * Wo)
        dst = np.uint64(co * L)
        s = 0.0
        for j in range(np.uint64(L)):
            v = dyf[src + j]
            out[dst + j] = v
            s += v
        db_row[co] += s


@jit(parallel=False)
def conv2d_weight_grad_rows(t, dy, x, K, stride, pad, rows, workers, cols, partial, db_partial,
                            blas):
    """dw by row tiles: worker t sums (dy_tile @ cols_tile^T)^T over its tiles into partial[t].

    The alternative to conv2d_backward's channel split for layers whose dw is small
    (Cout*Cin*K*K floats, e.g. 64x576 for VGG's conv1_2): every sgemm then spans all input
    channels (N = Cin*K*K instead of a block of them), and the price is one partial dw per
    worker, summed by sum_partials_t. Each partial is dw transposed, [Cin*K*K, Cout] =
    cols @ dy_tile^T: in that orientation OpenBLAS ran these thin products (Cout = 64..256)
    10-30% faster than dy_tile @ cols^T. dy [N, Cout, Ho, Wo]; x [N, Cin, H, W]; cols:
    workers * (Cin*K*K + Cout) * rows*Wo floats (columns and the staged dy tile); partial
    [workers, Cin*K*K, Cout] and db_partial [workers, Cout] float64 (both overwritten).
    """
    N, Cin = x.shape[0], x.shape[1]
    Kd, Cout = partial.shape[1], partial.shape[2]
    Ho, Wo = dy.shape[2], dy.shape[3]
    per_image = (Ho + rows - 1) // rows
    ntiles = N * per_image
    per_worker = (Kd + Cout) * rows * Wo
    if cols.shape[0] < workers * per_worker:
        raise ValueError("conv2d_weight_grad_rows: work buffer too small")
    pf = partial.reshape(-1)
    start = t * per_worker
    dys = start + Kd * rows * Wo
    db_partial[t, :] = 0.0
    first = True
    for tile in range(t, ntiles, workers):
        n = tile // per_image
        r0 = (tile % per_image) * rows
        r1 = min(r0 + rows, Ho)
        L = (r1 - r0) * Wo
        _img2col(x, n, 0, Cin, r0, r1, K, stride, pad, Wo, cols[start:dys])
        _stage_dy_and_sum(dy, n, r0, r1, Wo, cols[dys:start + per_worker], db_partial[t])
        sgemm(blas, t, TRANS_N, TRANS_T, Kd, Cout, L, address(cols, start), L,
              address(cols, dys), L, 0 if first else 1, address(pf, t * Cout * Kd), Cout)
        first = False
    if first:                        # more workers than tiles: contribute zeros
        pf[t * Cout * Kd:(t + 1) * Cout * Kd] = 0.0


@jit
def sum_partials_t(partial, out):
    """out [M, K] = sum over t of partial[t]^T, partial [T, K, M]; parallel over rows of out."""
    T, K, M = partial.shape[0], partial.shape[1], partial.shape[2]
    for i in prange(M):
        for j in range(K):
            s = partial[0, j, i]
            for t in range(1, T):
                s += partial[t, j, i]
            out[i, j] = s


@jit
def bias_grad(dy, db):
    """db[co] = sum over n, h, w of dy[n, co, h, w]; parallel over output channels.

    dy [N, Cout, Ho, Wo]; db [Cout] float32 (accumulated in float64 per channel).
    """
    N, Cout = dy.shape[0], dy.shape[1]
    HW = dy.shape[2] * dy.shape[3]
    dyf = dy.reshape(-1)
    for co in prange(Cout):
        s = 0.0
        for n in range(N):
            start = (n * Cout + co) * HW
            for j in range(HW):
                s += dyf[start + j]
        db[co] = s


# -- tile planning (plain Python) ----------------------------------------------------------------
#: fewest output columns per tile: below this each sgemm call is too short to run at speed.
MIN_TILE_COLS = 256

def plan_forward(ho: int, wo: int, kd: int, workers: int, n: int, tile_bytes: int,
                 bound_bytes: int) -> int:
    """Output rows per tile for the forward pass.

    Aim for a column tile of about ``tile_bytes`` per worker (cache-sized: L2 here is 2 MiB), but
    at least ~256 output columns so that each sgemm stays efficient; keep workers * tile under
    ``bound_bytes``; then even out the tiles so that every worker gets the same number.
    Never fewer than one output row (the bound cannot go below one row per worker).
    """
    row_bytes = kd * wo * 4
    rows = max(1, tile_bytes // row_bytes, -(-MIN_TILE_COLS // wo))
    rows = max(1, min(rows, ho, bound_bytes // max(1, workers * row_bytes)))
    return balanced_rows(ho, rows, n, workers)


#: the shifted-rows forward (conv2d_forward_s1) is used for stride 1, K > 1 and at most this
#: many output channels: its saving (img2col copies / GEMM flops ~ 1/Cout) is largest there,
#: while its per-call weight reorder (~1/(N*H*W)) and K sgemm calls per tile cost more on the
#: deep layers. Measured on VGG19 shapes: conv1_x 15-20% faster, conv2_x 5-10%, conv3_x
#: (256 channels) even, conv4_x/conv5_x 10-15% slower.
SHIFTED_MAX_COUT = 128
#: the shifted form's tiles stay under this many padded columns (longer tiles measured slower)
SHIFTED_MAX_COLS = 1024


def use_shifted(stride: int, k: int, cout: int) -> bool:
    return stride == 1 and k > 1 and cout <= SHIFTED_MAX_COUT


def shifted_tile(cin: int, cout: int, k: int, w: int, pad: int, rows: int) -> int:
    """Floats per worker of conv2d_forward_s1 with ``rows`` output rows per tile."""
    wp = w + 2 * pad
    return cin * k * (rows * wp + k - 1) + cout * rows * wp


def plan_forward_shifted(ho: int, w: int, pad: int, cin: int, cout: int, k: int, workers: int,
                         n: int, tile_bytes: int, bound_bytes: int) -> int:
    """Output rows per tile of conv2d_forward_s1: ~tile_bytes per worker, at least
    MIN_TILE_COLS and at most SHIFTED_MAX_COLS padded columns, within the bound."""
    wp = w + 2 * pad
    row_bytes = 4 * (cin * k + cout) * wp
    rows = max(1, tile_bytes // row_bytes, -(-MIN_TILE_COLS // wp))
    rows = min(rows, max(1, SHIFTED_MAX_COLS // wp), ho)
    while rows > 1 and workers * 4 * shifted_tile(cin, cout, k, w, pad, rows) > bound_bytes:
        rows -= 1
    return balanced_rows(ho, rows, n, workers)


#: forward by output-channel blocks (conv2d_forward_cout) when a row split would leave each
#: worker fewer output columns than this (VGG: conv5_x at batch 1, 98 columns per worker)
COUT_SPLIT_MAX_COLS = 256


def use_cout_split(n: int, ho: int, wo: int, cout: int, kd: int, workers: int,
                   bound_bytes: int) -> bool:
    return (workers > 1 and n * ho * wo < workers * COUT_SPLIT_MAX_COLS
            and cout >= 32 * workers and 4 * kd * ho * wo <= bound_bytes)


def channel_blocks(total: int, blocks: int, align: int = 16) -> np.ndarray:
    """int64 boundaries of ``blocks`` near-equal blocks of ``total``, edges on ``align``."""
    step = -(-total // blocks)
    step = -(-step // align) * align
    edges = [min(total, i * step) for i in range(blocks)] + [total]
    return np.array(sorted(set(edges)), np.int64)


#: dw by row tiles (conv2d_weight_grad_rows) when dw has at most this many floats (one partial
#: per worker must be summed at the end) and the image has enough output pixels to share.
ROWS_DW_MAX_FLOATS = 1 << 20
ROWS_DW_MIN_PIXELS = 1024


def use_rows_dw(cout: int, kd: int, n: int, ho: int, wo: int) -> bool:
    return cout * kd <= ROWS_DW_MAX_FLOATS and n * ho * wo >= ROWS_DW_MIN_PIXELS


def balanced_rows(ho: int, rows: int, n: int, workers: int) -> int:
    """The tile height in [rows/2, rows] that spreads the n*ho output rows most evenly over the
    workers (worker t takes tiles t, t + workers, ...); ties go to the taller tile."""
    best, best_load = rows, None
    for r in range(rows, (rows - 1) // 2, -1):
        heights = [min(r, ho - start) for start in range(0, ho, r)] * n
        load = max(sum(heights[t::workers]) for t in range(workers))
        if best_load is None or load < best_load:
            best, best_load = r, load
    return best


def plan_backward(cin: int, k: int, ho: int, wo: int, cout: int, workers: int,
                  tile_bytes: int, bound_bytes: int) -> tuple[np.ndarray, int]:
    """Channel blocks (boundaries, int64) and output rows per tile of input_grad and
    weight_grad_channels.

    Blocks: as many as workers (equal widths when cin divides), more when one block's tile of
    one output row (its columns and the staged dy, ``cout`` floats per output column) would
    not fit the bound.
    """
    blocks = min(cin, workers)
    while True:
        width = -(-cin // blocks)
        row_bytes = (width * k * k + cout) * wo * 4
        if workers * row_bytes <= bound_bytes or width == 1:
            break
        blocks = min(cin, blocks + workers)
    rows = max(1, tile_bytes // row_bytes, -(-MIN_TILE_COLS // wo))
    rows = max(1, min(rows, ho, bound_bytes // max(1, workers * row_bytes)))
    bounds = np.linspace(0, cin, blocks + 1).round().astype(np.int64)
    return bounds, rows
