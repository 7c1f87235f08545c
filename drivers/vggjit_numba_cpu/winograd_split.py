"""Winograd F(2x2, 3x3) split by output channels, on the packed GEMM: for one image whose map
is too small to share out by tile rows (conv5_x at 14 px in 224 px classification, conv5_1 at
32 px in a 512 px style step).

The transforms and layouts are winograd.py's (x [N, Cin, H, W], V [16, Cin, T], M [16, Cout,
T], T = TH*TW tiles of 2x2); the work is winograd4.py's split path with F(2x2)'s 16 products
instead of F(4x4)'s 36. Per image, two launches:

    split_inputs    worker t transforms its block of the input channels of every tile into the
                    shared V (the columns past the tiles, the GEMM's padding, set to zero)
    split_outputs   worker t its block of output channels: M[e] = U[e] V[e] for the 16 e, then
                    the output transform (bias, optional ReLU) of those channels into y

Why: on 14 px (49 tiles) the img2col product of a conv5_x layer ran at the sgemm ceiling and
F(2x2) with sgemm was no faster (sgemm packs U again on every call and gets 49 columns), so
VGG19 kept img2col there. On the packed GEMM, U packed once when it is transformed and each
worker reading only its rows of it, F(2x2)'s 2.25x fewer multiplies show: a 512 -> 512 layer at
14 px in 0.54-0.62 of the time, at 32 px in 0.82 of F(2x2) by tile rows (medians of 15, the
shared VM, docs/design-notes.md note 23). On batches the tile-row path stays (equal at batch
4), and where Numba does not compile for AVX-512 (winograd4.USE_PACKED_GEMM) the products are
sgemm's and the dispatch does not take this path.

The dx kernel (flip) has its own packed transform (winograd.transformed with flip=True), not
the mirrored read of the forward one that winograd.py's tile-row path uses: the packing fixes
which index is the depth.
"""
from __future__ import annotations

import numpy as np

from .kernel_cache import jit
from .microkernel import KC
from .winograd import (MIN_CHANNELS, _G, _input_transform, _output_transform, estride,
                       transformed)
from .winograd4 import (PACK, USE_PACKED_GEMM, _split_products, padded_tiles,
                        transform_rows)


@jit(parallel=False)
def split_inputs(t, x, n, workers, work, mask, Cout):
    """Step 1: worker t transforms its block of input channels of every tile of image n into
    the shared V at the start of work (layout: split_floats). mask: empty, or shaped like x
    (x read as 0 where mask <= 0: the ReLU backward of dx)."""
    Cin, H, W = x.shape[1], x.shape[2], x.shape[3]
    TH, TW = (H + 1) // 2, (W + 1) // 2
    T = padded_tiles(TH * TW)
    c0, c1 = Cin * t // workers, Cin * (t + 1) // workers
    _input_transform(x, n, 0, TH, TW, T, estride(Cin * T), work, mask, c0, c1)


@jit(parallel=False)
def split_outputs(t, u, b, n, bounds, work, y, blas, relu, Cin):
    """Step 2, when every worker has finished step 1: worker t's block of output channels,
    its 16 products into the shared M (winograd4._split_products), then
    y[n, co0:co1] = A^T m A + b (ReLU when ``relu``). u = weight_transform(w[, flip])."""
    Cout, H, W = y.shape[1], y.shape[2], y.shape[3]
    TH, TW = (H + 1) // 2, (W + 1) // 2
    T = padded_tiles(TH * TW)
    if u.size != 16 * transform_rows(Cout) * Cin:
        raise ValueError("winograd_split.split_outputs: bad weight transform")
    co0, co1, ms, em = _split_products(t, u, 16, bounds, work, blas, Cout, Cin, T)
    if co1 > co0:
        _output_transform(work[ms:ms + 16 * em], b, n, 0, TH, TW, T, em, y, relu, co0, co1)


def split_floats(cin: int, cout: int, h: int, w: int, workers: int) -> int:
    """Floats of the work buffer: the shared V [16, Cin, T] and M [16, Cout', T] of one image
    (each matrix estride apart; T padded to the GEMM's column blocks, Cout' to the packing),
    whatever the workers (winograd4.split_floats' signature; F(2x2)'s input transform needs no
    scratch)."""
    t = int(padded_tiles(((h + 1) // 2) * ((w + 1) // 2)))
    return 16 * (estride(cin * t) + estride(int(transform_rows(cout)) * t))


def weight_transform(w: np.ndarray, flip: bool = False) -> np.ndarray:
    """F(2x2)'s U of w (flip: of the backward-dx kernel), packed for the GEMM like
    winograd4.weight_transform: [16, Cout' * Cin] (Cin' * Cout for flip)."""
    return transformed(w, _G, flip, None, PACK, KC)


# -- when to use it (plain Python) ---------------------------------------------------------------
def use_split(n: int, cin: int, cout: int, h: int, w: int, workers: int) -> bool:
    """One image of SPLIT_TILES tiles of 2x2, at least winograd.MIN_CHANNELS channels in and
    out, two workers or more, and the packed GEMM compiled (AVX-512)."""
    tiles = ((h + 1) // 2) * ((w + 1) // 2)
    return (USE_PACKED_GEMM and n == 1 and workers > 1 and min(cin, cout) >= MIN_CHANNELS
            and tiles in SPLIT_TILES)


#: F(2x2) tiles per image where the split measured faster, 512 -> 512, one image, 2 workers,
#: forward with the fused ReLU, medians of 15 interleaved with the path it replaces (the
#: shared VM): 14 px (49 tiles) 0.54-0.62 of img2col split by output channels; 32 px (256)
#: 0.82 of F(2x2) by tile rows; 7 px (16) 0.88; 28 px (196) level with F(4x4) split by
#: output channels, which keeps it (the driver asks winograd4 first).
SPLIT_TILES = range(16, 257)

#: the bound of the driver's cache of these transforms (forward and dx, 16 Cin Cout floats
#: each): conv5_x's forward ones in classification (67 MB), conv5_1's forward and dx ones in
#: a 512 px style step (34 MB)
CACHE_BYTES = 96 << 20
