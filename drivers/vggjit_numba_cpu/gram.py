"""Gram matrix and softmax.

gram: G[n] = F F^T with F = x[n] viewed as [C, H*W]; one single-threaded sgemm per (image, block
of G's rows), so workers never share an output row. (A symmetric rank-k update would halve the
flops, but Numba binds only gemm; the Gram is a small part of a style-transfer step.)

softmax: rows in parallel, computed stably (subtract the row maximum), exp and sum in float64.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from .blas import TRANS_N, TRANS_T, address, sgemm
from .jit import jit


@jit
def gram_forward(x, blocks, g, blas):
    """g [N, C, C] = x[n] x[n]^T over the flattened H*W axis; x [N, C, H, W].

    blocks: rows of G per work item; items (n, row block) are spread over prange, and
    ``blas`` holds one scratch row per item (see blas.sgemm).
    """
    N, C = x.shape[0], x.shape[1]
    HW = x.shape[2] * x.shape[3]
    xf, gf = x.reshape(-1), g.reshape(-1)
    per_image = (C + blocks - 1) // blocks
    for item in prange(N * per_image):
        n = item // per_image
        r0 = (item % per_image) * blocks
        r1 = min(C, r0 + blocks)
        f = n * C * HW
        sgemm(blas, item, TRANS_N, TRANS_T, r1 - r0, C, HW, address(xf, f + r0 * HW), HW,
              address(xf, f), HW, 0, address(gf, n * C * C + r0 * C), C)


@jit
def softmax_forward(x, y):
    """y [N, K] = exp(x - max) / sum exp(x - max), row by row; x [N, K]."""
    N, K = x.shape[0], x.shape[1]
    for i in prange(N):
        m = x[i, 0]
        for k in range(1, K):
            if x[i, k] > m or x[i, k] != x[i, k]:
                m = x[i, k]
        s = 0.0
        for k in range(K):
            s += math.exp(np.float64(x[i, k]) - m)
        inv = 1.0 / s
        for k in range(K):
            y[i, k] = math.exp(np.float64(x[i, k]) - m) * inv
