"""Fully connected layer, forward and backward: y [N, out] = x [N, in] @ w[out, in]^T + b.

Every worker runs one single-threaded sgemm on its own slice of the output, so the split needs
no reduction: forward and dw split the ``out`` features, dx splits the ``in`` features (see
jit.py for why BLAS is only ever called from inside Numba's workers). For batch 1 (VGG's
classifier) each worker streams its share of the weights, which is what bounds the time.
"""
from __future__ import annotations

from numba import prange

from .blas import TRANS_N, TRANS_T, address, sgemm
from .jit import jit


@jit(parallel=False)
def _split(total, parts, t):
    """[start, stop) of part t when ``total`` items are cut into ``parts`` near-equal pieces,
    piece edges rounded to multiples of 16 floats (a 64-byte cache line)."""
    step = -(-total // parts)
    step = -(-step // 16) * 16
    return min(total, t * step), min(total, (t + 1) * step)


@jit
def linear_forward(x, w, b, workers, y, blas):
    """y [N, out] = x [N, in] @ w [out, in]^T + b [out]; worker t owns a block of out features."""
    N, nin = x.shape[0], x.shape[1]
    nout = w.shape[0]
    xf, wf, yf = x.reshape(-1), w.reshape(-1), y.reshape(-1)
    for t in prange(workers):
        o0, o1 = _split(nout, workers, t)
        if o1 > o0:
            for i in range(N):
                for o in range(o0, o1):
                    yf[i * nout + o] = b[o]
            sgemm(blas, t, TRANS_N, TRANS_T, N, o1 - o0, nin, address(xf, 0), nin,
                  address(wf, o0 * nin), nin, 1, address(yf, o0), nout)


@jit
def linear_backward(dy, x, w, need_dx, need_dw, workers, dx, dw, db, blas):
    """dx [N, in] = dy @ w; dw [out, in] = dy^T @ x; db [out] = column sums of dy.

    dx is split over ``in`` (worker t: dx[:, i0:i1] = dy @ w[:, i0:i1]); dw and db over ``out``
    (worker t: dw[o0:o1] = dy[:, o0:o1]^T @ x). Skipped parts cost nothing.
    """
    N, nin = x.shape[0], x.shape[1]
    nout = w.shape[0]
    xf, wf, dyf = x.reshape(-1), w.reshape(-1), dy.reshape(-1)
    dxf, dwf = dx.reshape(-1), dw.reshape(-1)
    for t in prange(workers):
        if need_dx:
            i0, i1 = _split(nin, workers, t)
            if i1 > i0:
                sgemm(blas, t, TRANS_N, TRANS_N, N, i1 - i0, nout, address(dyf, 0), nout,
                      address(wf, i0), nin, 0, address(dxf, i0), nin)
        if need_dw:
            o0, o1 = _split(nout, workers, t)
            if o1 > o0:
                sgemm(blas, t, TRANS_T, TRANS_N, o1 - o0, nin, N, address(dyf, o0), nout,
                      address(xf, 0), nin, 0, address(dwf, o0 * nin), nin)
                for o in range(o0, o1):
                    s = 0.0
                    for i in range(N):
                        s += dyf[i * nout + o]
                    db[o] = s
