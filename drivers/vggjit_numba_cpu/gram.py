"""Gram matrix: G[n] = F F^T with F = x[n] viewed as [C, H*W], from single-threaded BLAS calls
inside the workers (docs/design-notes.md, note 1).

G is symmetric, so most shapes compute only its upper triangle, half the flops of a full
product: ssyrk (the symmetric rank-k update) for triangles, sgemm for the square blocks above
them, then the upper triangle is copied to the lower one, which also makes G exactly symmetric.
``plan_gram`` picks one of three work splits by shape (measured on VGG19's style layers:
docs/performance.md, "Gram matrices"):

- "split-k": fewer images than workers and H*W at least ``SPLIT_K_MIN_RATIO`` times C (the
  style layers at 512 px but relu5_1, batch 1): each worker one ssyrk over its share of the H*W
  columns into a partial G of its own; the calling thread then adds the partials and mirrors.
  Each worker reads only its part of F, and the partials are small next to F.
- "blocks": each image's C cut into ceil(workers / N) row blocks; the blocks on and above the
  diagonal (ssyrk on it, sgemm above) dealt to the workers by flops, each mirrored by its
  own worker, as no other block writes its mirror image.
- "rows": H*W at most C / ``ROWS_MAX_RATIO`` (e.g. 512 channels at 8x8): a full sgemm per
  block of G's rows, no mirror. There the product is so short that copying the triangle
  costs more than the halved flops save.
"""
from __future__ import annotations

import functools

import numpy as np

from .blas import TRANS_N, TRANS_T, Sgemm, Ssyrk, address, find_ssyrk, sgemm, ssyrk
from .handoff import share
from .kernel_cache import jit

#: "split-k" when H*W >= SPLIT_K_MIN_RATIO * C (and fewer images than workers)
SPLIT_K_MIN_RATIO = 4
#: "rows" when H*W * ROWS_MAX_RATIO <= C
ROWS_MAX_RATIO = 4
#: side of the tiles the mirror copies, small enough that a tile's rows (a power-of-two stride
#: apart for VGG's channel counts) do not evict each other from the L1 cache
MIRROR_TILE = 16

GRAM_PATHS = ("auto", "split-k", "blocks", "rows")

#: columns of the item table of ``gram_upper``
N_, R0, R1, C0, C1, K0, K1, DEST, TRIANGLE = range(9)


@functools.lru_cache(maxsize=None)
def syrk_for(gemm: Sgemm) -> Ssyrk:
    """The ssyrk the Gram kernels call beside ``gemm`` (blas.find_ssyrk)."""
    return find_ssyrk(gemm)


@jit(parallel=False)
def gram_upper(t, x, items, first, mirror, out, gemm_blas, syrk_blas):
    """Worker t's items of out [S, C, C]: blocks of x[n] x[n]^T over a range of H*W columns.

    x [N, C, H, W]; items [M, 9] int64, one row per item (columns N_ .. TRIANGLE): image n,
    the block's rows r0..r1 and columns c0..c1, the H*W columns k0..k1 summed over, dest, the
    matrix of out written, and whether the block is a triangle (a square on the diagonal, of
    which one ssyrk writes the upper triangle only; else one sgemm writes all of it). Worker t
    does items first[t] .. first[t + 1] - 1. With ``mirror`` each item then copies the part of
    its block above the diagonal to its mirror image (for a block above the diagonal: rows
    c0..c1 of columns r0..r1), which no other item writes.
    """
    C = x.shape[1]
    HW = x.shape[2] * x.shape[3]
    xf, of = x.reshape(-1), out.reshape(-1)
    for item in range(first[t], first[t + 1]):
        n, r0, r1 = items[item, N_], items[item, R0], items[item, R1]
        c0, c1 = items[item, C0], items[item, C1]
        k0, k1 = items[item, K0], items[item, K1]
        f = n * C * HW + k0
        o = items[item, DEST] * C * C
        if items[item, TRIANGLE]:
            ssyrk(syrk_blas, t, r1 - r0, k1 - k0, address(xf, f + r0 * HW), HW,
                  address(of, o + r0 * C + r0), C)
        else:
            sgemm(gemm_blas, t, TRANS_N, TRANS_T, r1 - r0, c1 - c0, k1 - k0,
                  address(xf, f + r0 * HW), HW, address(xf, f + c0 * HW), HW, 0,
                  address(of, o + r0 * C + c0), C)
        if mirror:
            _mirror_block(of, o, C, r0, r1, c0, c1)


@jit(parallel=False)
def _mirror_block(of, o, C, r0, r1, c0, c1):
    """Copy the part of block rows r0..r1 x columns c0..c1 of the [C, C] matrix at of[o:]
    that lies above the diagonal to its mirror image below it, tile by tile."""
    for i0 in range(r0, r1, MIRROR_TILE):
        for j0 in range(c0, c1, MIRROR_TILE):
            if j0 + MIRROR_TILE <= i0:
                continue
            for i in range(i0, min(r1, i0 + MIRROR_TILE)):
                for j in range(max(i + 1, j0), min(c1, j0 + MIRROR_TILE)):
                    of[o + j * C + i] = of[o + i * C + j]


@jit(parallel=False)
def gram_sum_mirror(partial, parts, g):
    """g[n] = the sum over p of partial[n * parts + p], upper triangles only, mirrored.

    partial [N * parts, C, C], g [N, C, C]; the partials are added in the order of p, so the
    result does not depend on timing.
    """
    N, C = g.shape[0], g.shape[1]
    pf, gf = partial.reshape(-1), g.reshape(-1)
    CC = C * C
    for n in range(N):
        src = n * parts * CC
        dst = n * CC
        for i0 in range(0, C, MIRROR_TILE):
            for j0 in range(i0, C, MIRROR_TILE):
                for i in range(i0, min(C, i0 + MIRROR_TILE)):
                    for j in range(max(i, j0), min(C, j0 + MIRROR_TILE)):
                        s = pf[src + i * C + j]
                        for p in range(1, parts):
                            s += pf[src + p * CC + i * C + j]
                        gf[dst + i * C + j] = s
                        gf[dst + j * C + i] = s


def plan_gram(n: int, c: int, hw: int, workers: int, path: str = "auto"):
    """How to compute the Gram matrices of x [n, c, H, W] (hw = H*W) with ``workers`` workers.

    Returns (items, first, workers used, parts, mirror) for ``gram_upper``: with parts > 1
    the items write n * parts partial matrices that ``gram_sum_mirror`` adds up; path forces
    "split-k", "blocks" or "rows" (see the module docstring), "auto" picks by shape.
    """
    if path not in GRAM_PATHS:
        raise ValueError(f"gram path must be one of {', '.join(GRAM_PATHS)}, got {path!r}")
    if path == "auto":
        if hw * ROWS_MAX_RATIO <= c:
            path = "rows"
        elif n < workers and hw >= SPLIT_K_MIN_RATIO * c:
            path = "split-k"
        else:
            path = "blocks"
    parts = max(1, min(hw, -(-workers // n)))
    if path == "split-k" and parts > 1:      # (one part per image: the blocks plan does it)
        chunk = -(-hw // parts)
        items = [(parts * (k1 - k0), (img, 0, c, 0, c, k0, k1, img * parts + p, 1))
                 for img in range(n)
                 for p, (k0, k1) in enumerate((k, min(hw, k + chunk))
                                              for k in range(0, hw, chunk))]
        return (*_deal(items, workers), parts, False)
    if path == "rows":      # rows of G per item as before the triangle paths: a full sgemm each
        per_image = max(1, -(-workers // n))
        rows = max(1, -(-c // per_image))
        items = [(2 * (min(c, r + rows) - r), (img, r, min(c, r + rows), 0, c, 0, hw, img, 0))
                 for img in range(n) for r in range(0, c, rows)]
        return (*_deal(items, workers), 1, False)
    per_side = max(1, min(c, -(-workers // n)))
    size = -(-c // per_side)
    edges = list(range(0, c, size)) + [c]
    items = []
    for img in range(n):
        for a in range(len(edges) - 1):
            for b in range(a, len(edges) - 1):
                rows, cols = edges[a + 1] - edges[a], edges[b + 1] - edges[b]
                flops = rows * cols * (1 if a == b else 2)   # ssyrk does half a square's
                items.append((flops, (img, edges[a], edges[a + 1], edges[b], edges[b + 1],
                                      0, hw, img, int(a == b))))
    return (*_deal(items, workers), 1, True)


def _deal(items, workers: int):
    """(item table, first, workers used): the (cost, item) pairs given to the least loaded
    worker, largest first (the same plan for the same shape: deterministic)."""
    items = sorted(items, key=lambda ci: -ci[0])
    load = [0] * min(workers, len(items))
    mine = [[] for _ in load]
    for cost, item in items:
        w = load.index(min(load))
        load[w] += cost
        mine[w].append(item)
    table = np.array([item for m in mine for item in m], np.int64).reshape(-1, 9)
    first = np.cumsum([0] + [len(m) for m in mine]).astype(np.int64)
    return table, first, len(mine)


@jit(parallel=False)
def gram_backward_columns(t, s, x, workers, accumulate, dx, blas):
    """Worker t's share of dx[n] = S[n] X[n] (+ dx[n] when ``accumulate``) for every image n,
    X = x[n] as [C, H*W]: a contiguous share of the H*W columns (edges on 16 floats, so no two
    workers write one cache line), one sgemm per image. The backward of the Gram matrix, with
    S = dg + dg^T (symmetric: its rows are its columns) from the driver.

    s [N, C, C]; x, dx [N, C, H, W]. With ``accumulate`` the sgemm's beta is 1: the gradient is
    added to what dx holds as it is written, with no pass of its own.
    """
    N, C = x.shape[0], x.shape[1]
    HW = x.shape[2] * x.shape[3]
    first, last = share(HW, workers, t, 16)
    if last <= first:
        return
    xf, sf, df = x.reshape(-1), s.reshape(-1), dx.reshape(-1)
    beta = 1 if accumulate else 0
    for n in range(N):
        f = n * C * HW + first
        sgemm(blas, t, TRANS_N, TRANS_N, C, last - first, C, address(sf, n * C * C), C,
              address(xf, f), HW, beta, address(df, f), HW)
