"""Fully connected layer, forward and backward: y [N, out] = x [N, in] @ w[out, in]^T + b.

Every worker runs one single-threaded sgemm on its own slice of the output, so the split needs
no reduction: forward and dw split the ``out`` features, dx splits the ``in`` features (see
threads.py for why BLAS is only ever called from inside the workers).

A forward pass of a few images (VGG's classifier at batch 1..8) is bound by reading the weights
(fc6: 411 MB), not by arithmetic, and sgemm is the wrong tool there: it packs every panel of w
before using it once, so the weights cross the memory bus about twice (55 ms for fc6 here,
against 15 ms for NumPy's gemv). ``linear_forward_stream`` reads each weight once instead,
four output rows at a time (four independent streams keep more loads in flight than one).
"""
from __future__ import annotations

import numpy as np

from .blas import TRANS_N, TRANS_T, address, sgemm
from .handoff import share
from .kernel_cache import jit


@jit(parallel=False)
def linear_forward(t, x, w, b, workers, y, blas):
    """y [N, out] = x [N, in] @ w [out, in]^T + b [out]; worker t owns a block of out features."""
    N, nin = x.shape[0], x.shape[1]
    nout = w.shape[0]
    xf, wf, yf = x.reshape(-1), w.reshape(-1), y.reshape(-1)
    o0, o1 = share(nout, workers, t, 16)
    if o1 > o0:
        for i in range(N):
            for o in range(o0, o1):
                yf[i * nout + o] = b[o]
        sgemm(blas, t, TRANS_N, TRANS_T, N, o1 - o0, nin, address(xf, 0), nin,
              address(wf, o0 * nin), nin, 1, address(yf, o0), nout)


#: batch sizes up to this take linear_forward_stream (measured on fc6: 3.7x faster than the
#: sgemm path at batch 1, 2x at batch 4; the sgemm path wins once the weights are reused enough)
STREAM_MAX_BATCH = 8


@jit(parallel=False)
def _four_images(x, w, b, y, i, o0):
    """y[i:i + 4, o0:o0 + 4] of linear_forward_stream: each weight loaded once for 4 images."""
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0.0)
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = np.float32(0.0)
    for k in range(x.shape[1]):
        a0, a1, a2, a3 = w[o0, k], w[o0 + 1, k], w[o0 + 2, k], w[o0 + 3, k]
        v0, v1, v2, v3 = x[i, k], x[i + 1, k], x[i + 2, k], x[i + 3, k]
        s00 += a0 * v0
        s01 += a1 * v0
        s02 += a2 * v0
        s03 += a3 * v0
        s10 += a0 * v1
        s11 += a1 * v1
        s12 += a2 * v1
        s13 += a3 * v1
        s20 += a0 * v2
        s21 += a1 * v2
        s22 += a2 * v2
        s23 += a3 * v2
        s30 += a0 * v3
        s31 += a1 * v3
        s32 += a2 * v3
        s33 += a3 * v3
    for j, (c0, c1, c2, c3) in enumerate(((s00, s01, s02, s03), (s10, s11, s12, s13),
                                          (s20, s21, s22, s23), (s30, s31, s32, s33))):
        y[i + j, o0] = c0 + b[o0]
        y[i + j, o0 + 1] = c1 + b[o0 + 1]
        y[i + j, o0 + 2] = c2 + b[o0 + 2]
        y[i + j, o0 + 3] = c3 + b[o0 + 3]


@jit(parallel=False)
def _one_image(x, w, b, y, i, o0):
    """y[i, o0:o0 + 4] of linear_forward_stream."""
    s0 = s1 = s2 = s3 = np.float32(0.0)
    for k in range(x.shape[1]):
        v = x[i, k]
        s0 += w[o0, k] * v
        s1 += w[o0 + 1, k] * v
        s2 += w[o0 + 2, k] * v
        s3 += w[o0 + 3, k] * v
    y[i, o0] = s0 + b[o0]
    y[i, o0 + 1] = s1 + b[o0 + 1]
    y[i, o0 + 2] = s2 + b[o0 + 2]
    y[i, o0 + 3] = s3 + b[o0 + 3]


@jit(parallel=False)
def linear_forward_stream(t, x, w, b, workers, y):
    """y [N, out] = x [N, in] @ w [out, in]^T + b [out] for small N, reading w once.

    In blocks of 4 output features, worker t of ``workers`` (threads.ThreadPlan.run) taking a
    contiguous share of them; each block streams its 4 weight rows past the images, four
    images at a time (each weight loaded once for all four: fc6 at batch 4 in 0.58 of the time
    of one image at a time, on the shared VM), then the rest one by one (the rows stay in cache
    for the images after the first).
    """
    N = x.shape[0]
    nout = w.shape[0]
    first, last = share((nout + 3) // 4, workers, t, 1)
    for blk in range(first, last):
        o0 = 4 * blk
        if o0 + 4 <= nout:
            i = 0
            while i + 4 <= N:
                _four_images(x, w, b, y, i, o0)
                i += 4
            while i < N:
                _one_image(x, w, b, y, i, o0)
                i += 1
        else:
            for o in range(o0, nout):
                for i in range(N):
                    s = np.float32(0.0)
                    for k in range(x.shape[1]):
                        s += w[o, k] * x[i, k]
                    y[i, o] = s + b[o]


@jit(parallel=False)
def linear_backward(t, dy, x, w, need_dx, need_dw, workers, dx, dw, db, blas):
    """dx [N, in] = dy @ w; dw [out, in] = dy^T @ x; db [out] = column sums of dy.

    dx is split over ``in`` (worker t: dx[:, i0:i1] = dy @ w[:, i0:i1]); dw and db over ``out``
    (worker t: dw[o0:o1] = dy[:, o0:o1]^T @ x). Skipped parts cost nothing.
    """
    N, nin = x.shape[0], x.shape[1]
    nout = w.shape[0]
    xf, wf, dyf = x.reshape(-1), w.reshape(-1), dy.reshape(-1)
    dxf, dwf = dx.reshape(-1), dw.reshape(-1)
    if need_dx:
        i0, i1 = share(nin, workers, t, 16)
        if i1 > i0:
            sgemm(blas, t, TRANS_N, TRANS_N, N, i1 - i0, nout, address(dyf, 0), nout,
                  address(wf, i0), nin, 0, address(dxf, i0), nin)
    if need_dw:
        o0, o1 = share(nout, workers, t, 16)
        if o1 > o0:
            sgemm(blas, t, TRANS_T, TRANS_N, o1 - o0, nin, N, address(dyf, o0), nout,
                  address(xf, 0), nin, 0, address(dwf, o0 * nin), nin)
            for o in range(o0, o1):
                s = 0.0
                for i in range(N):
                    s += dyf[i * nout + o]
                db[o] = s
