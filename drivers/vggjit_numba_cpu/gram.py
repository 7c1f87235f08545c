"""Gram matrix: G[n] = F F^T with F = x[n] viewed as [C, H*W]; one single-threaded sgemm per
(image, block of G's rows), so workers never share an output row. (A symmetric rank-k update
would halve the flops, but Numba binds only gemm; the Gram is a small part of a style-transfer
step.)
"""
from __future__ import annotations

import numpy as np

from .blas import TRANS_N, TRANS_T, address, sgemm
from .kernel_cache import jit


@jit(parallel=False)
def gram_forward(t, x, blocks, workers, g, blas):
    """Worker t's items of g [N, C, C] = x[n] x[n]^T over the flattened H*W axis; x [N, C, H, W].

    blocks: rows of G per work item; the items (n, row block) go round-robin to the workers
    (worker t: items t, t + workers, ...), each one sgemm into rows of G no other item writes.
    """
    N, C = x.shape[0], x.shape[1]
    HW = x.shape[2] * x.shape[3]
    xf, gf = x.reshape(-1), g.reshape(-1)
    per_image = (C + blocks - 1) // blocks
    for item in range(t, N * per_image, workers):
        n = item // per_image
        r0 = (item % per_image) * blocks
        r1 = min(C, r0 + blocks)
        f = n * C * HW
        sgemm(blas, t, TRANS_N, TRANS_T, r1 - r0, C, HW, address(xf, f + r0 * HW), HW,
              address(xf, f), HW, 0, address(gf, n * C * C + r0 * C), C)
