"""Winograd F(4x4, 3x3) convolution for K = 3, stride 1, pad 1: the larger-tile sibling of
winograd.py's F(2x2, 3x3).

Why: a 4x4 output tile from a 6x6 input tile takes 36 multiplies per (input channel, output
channel), 2.25 per output against F(2x2)'s 4 and img2col's 9: the GEMM work drops to 0.25 of
img2col's (F(2x2): 0.44), for heavier tile transforms and a larger float32 error (the
transforms' entries reach 5 and 1/8, against F(2x2)'s 1 and 1/2; docs/design-notes.md,
note 4, gives the measured error).

Layout as in winograd.py: x [N, Cin, H, W], w [Cout, Cin, 3, 3], y [N, Cout, H, W]; output
tiles TH = ceil(H/4) by TW = ceil(W/4), the grid reaching up to three rows/columns past the
edge (read as zero padding, cropped when written).

    input transform   V[e, c, t]   = (B^T d_{c,t} B)[e]      d: the 6x6 input patch of tile t
    weight transform  U[e, co, c]  = (G g_{co,c} G^T)[e]     done once per weight array
    36 GEMMs          M[e]         = U[e] [Cout, Cin] @ V[e] [Cin, T]
    output transform  y tile       = A^T m_{co,t} A + b[co]  (a 4x4 block, cropped)

with e = 6*i + j and the interpolation points 0, 1, -1, 1/2, -1/2 and infinity (the
well-conditioned choice: the points +-2 give the same error here, larger points more):

    B^T = [[1,  0, -5,  0, 4, 0],          G = [[   1,    0,    0],
           [0, -1, -1,  4, 4, 0],               [ 1/6,  1/6,  1/6],
           [0,  1, -1, -4, 4, 0],               [ 1/6, -1/6,  1/6],
           [0, -2, -4,  2, 4, 0],               [-2/3, -1/3, -1/6],
           [0,  2, -4, -2, 4, 0],               [-2/3,  1/3, -1/6],
           [0,  1,  0, -5, 0, 4]]               [   0,    0,  1/4]]

    A^T = [[1, 1,  1,   1,    1,   0],
           [0, 1, -1, 1/2, -1/2,   0],
           [0, 1,  1, 1/4,  1/4,   0],
           [0, 1, -1, 1/8, -1/8,   1]].

Tiling as in winograd.py: worker t takes chunks t, t + workers, ... of tile rows of one image,
transforms them into its own part of the work buffer, runs the 36 products on them and writes
the outputs straight into y. Where Numba compiles for AVX-512 the products are
microkernel.gemm_packed's, not sgemm's: U is packed once, when it is transformed, where sgemm
packed all of it again for every chunk, and the chunk's tiles are padded to the GEMM's column
blocks (padded_tiles); elsewhere they are sgemm's (USE_PACKED_GEMM). The tile transforms are
vector code of their own (winograd_tiles.py): the input transform over all tiles of a chunk
at once (one unused tile per tile row makes that possible, see _input_transform), the output
transform a tile row at a time, writing whole rows of y.

Backward dx: the forward run on dy with the kernel flipped and transposed,
g = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]. Unlike F(2x2), whose points are closed under
p -> 1/p, reversing g here maps the point 1/2 to 2, so the dx kernel has a transform of its
own (weight_transform(w, flip=True)), cached beside the forward one.
"""
from __future__ import annotations

import numpy as np

from .blas import TRANS_N, address, sgemm
from .conv import balanced_rows
from .kernel_cache import jit
from .microkernel import KC, MR, NR_EDGE, compiles_for_avx512, gemm_packed
from .winograd import estride, transform_layout, transformed, use_winograd
from .winograd_tiles import input_tiles, output_tiles, split_row, split_row_gated

#: the 36 products on microkernel.gemm_packed (AVX-512 targets, for which its block kernel is
#: built) or on sgemm (elsewhere); fixed at import, a constant in the compiled kernels
USE_PACKED_GEMM = compiles_for_avx512()
#: the weight transform's packing (microkernel.pack_index) and the tiles' padding, 1: none
PACK = MR if USE_PACKED_GEMM else 1
PAD = NR_EDGE if USE_PACKED_GEMM else 1
#: floats per tile of the input transform's scratch: 6 input rows split into 4 column phases
SCRATCH = 24

#: the transform matrices (float64; the kernels below hard-code them as explicit sums)
BT = np.array([[1, 0, -5, 0, 4, 0], [0, -1, -1, 4, 4, 0], [0, 1, -1, -4, 4, 0],
               [0, -2, -4, 2, 4, 0], [0, 2, -4, -2, 4, 0], [0, 1, 0, -5, 0, 4]], np.float64)
G = np.array([[1, 0, 0], [1 / 6, 1 / 6, 1 / 6], [1 / 6, -1 / 6, 1 / 6],
              [-2 / 3, -1 / 3, -1 / 6], [-2 / 3, 1 / 3, -1 / 6], [0, 0, 1 / 4]], np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 1 / 2, -1 / 2, 0], [0, 1, 1, 1 / 4, 1 / 4, 0],
               [0, 1, -1, 1 / 8, -1 / 8, 1]], np.float64)


@jit(parallel=False)
def _input_transform(x, n, tr0, tr1, TW, T, es, rb, v, mask, c0, c1):
    """V[e, c, t] = (B^T d B)[e] for the tiles of tile rows [tr0, tr1) of image n, input
    channels c0 <= c < c1.

    Tiles are numbered t = (ti - tr0)*(TW + 1) + tj: each tile row has one more column than it
    has tiles (tj = TW), unused: the GEMMs carry it along and the output transform never
    reads it. Why: then a tile's inputs sit at t and t + 1 of the phase rows of the whole chunk,
    so one pass of input_tiles covers all T tiles of the chunk (per tile row it would run over
    TW = 7 tiles at 28 px, half of each vector unused). v: 1-D, V[e, c, t] at v[e*es + c*T +
    t]; rb: SCRATCH*T floats, the 6 input rows of every tile row split into column phases,
    [6, 4, T]: rb[(4a + p)*T + (ti - tr0)*(TW + 1) + k] = x[n, c, 4ti - 1 + a, 4k + p - 1]
    (zero outside the image); mask: empty, or shaped like x: x is read as 0 where mask <= 0
    (or NaN).
    """
    H, W = x.shape[2], x.shape[3]
    S = TW + 1
    f = np.uint64(4)
    gated = mask.size > 0
    rb_at, v_at = rb.ctypes.data, v.ctypes.data
    # tiles past the chunk's (T rounded up to the GEMM's column blocks): read as zeros
    for k in range(SCRATCH):
        for t in range((tr1 - tr0) * S, T):
            rb[k * T + t] = 0.0
    for c in range(c0, c1):
        plane = (n * x.shape[1] + c) * H * W
        for ti in range(tr0, tr1):
            for a in range(6):
                ih = 4 * ti - 1 + a
                dst = 4 * a * T + (ti - tr0) * S
                if ih < 0 or ih >= H:
                    for p in range(4):
                        rb[dst + p * T:dst + p * T + S] = 0.0
                    continue
                at = np.uint64(plane + ih * W) * f
                if gated:
                    split_row_gated(x.ctypes.data + at, mask.ctypes.data + at, W,
                                    rb_at + np.uint64(dst) * f, T, S)
                else:
                    split_row(x.ctypes.data + at, 0, W, rb_at + np.uint64(dst) * f, T, S)
        input_tiles(rb_at, 4 * T, T, v_at + np.uint64(c * T) * f, es, T - 1)
        for e in range(36):               # the last tile reads no t + 1: zero, as the padding
            v[e * es + c * T + T - 1] = 0.0


@jit(parallel=False)
def _output_transform(m, b, n, tr0, tr1, TW, T, es, y, relu, co0, co1):
    """y[n, co, 4*ti + i, 4*tj + j] = (A^T m A)[i, j] + b[co] for tile rows [tr0, tr1) and
    output channels co0 <= co < co1, max(that, 0) when ``relu`` (NaN stays NaN).

    m: 1-D, M[e, co, t] at m[e*es + co*T + t], t = (ti - tr0)*(TW + 1) + tj (see
    _input_transform); outputs past the edge of y are dropped."""
    Cout, H, W = y.shape[1], y.shape[2], y.shape[3]
    f = np.uint64(4)
    # ReLU as a clamp at ``floor`` (-inf: none)
    floor = np.float32(0.0) if relu else np.float32(-np.inf)
    for co in range(co0, co1):
        for ti in range(tr0, tr1):
            t0 = co * T + (ti - tr0) * (TW + 1)
            out = ((n * Cout + co) * H + 4 * ti) * W
            output_tiles(m.ctypes.data + np.uint64(t0) * f, es,
                         y.ctypes.data + np.uint64(out) * f, W, min(4, H - 4 * ti), TW,
                         b[co], floor)


# -- forward -----------------------------------------------------------------------------------
@jit(parallel=False)
def padded_tiles(tiles):
    """Tiles of a chunk as the GEMM sees them: rounded up to gemm_packed's column blocks (none
    for sgemm); the added ones are zero and never written out."""
    return (tiles + PAD - 1) // PAD * PAD


@jit(parallel=False)
def transform_rows(rows):
    """Rows of each of U's 36 matrices as stored: rounded up to the packing."""
    return (rows + PACK - 1) // PACK * PACK


@jit(parallel=False)
def _products(blas, t, uf, planes, Cout, Cin, work, vs, ev, ms, em, T, co0, co1):
    """M[e][co0:co1] = U[e][co0:co1] @ V[e] for the ``planes`` e (36 here, F(2x2)'s 16 in
    winograd_split.py): U[e] at uf[e*rows*Cin] (rows = transform_rows(Cout)), V[e] [Cin, T]
    at work[vs + e*ev], M[e] at work[ms + e*em]; co0 and co1 on the packing."""
    plane = transform_rows(Cout) * Cin
    for e in range(planes):
        if USE_PACKED_GEMM:
            gemm_packed(uf, e * plane, work, vs + e * ev, T, work, ms + e * em, T,
                        co0, co1, transform_rows(Cout), Cin, T)
        else:
            sgemm(blas, t, TRANS_N, TRANS_N, co1 - co0, T, Cin,
                  address(uf, e * plane + co0 * Cin), Cin, address(work, vs + e * ev), T,
                  0, address(work, ms + e * em + co0 * T), T)


@jit(parallel=False)
def winograd4_forward(t, x, u, b, rows, workers, work, y, blas, relu, mask):
    """Worker t's chunks of y = conv3x3(x, w) + b (stride 1, pad 1) by F(4x4, 3x3), tiled
    over rows of tiles: chunks t, t + workers, ...

    x [N, Cin, H, W]; u = weight_transform(w) (for the backward dx, weight_transform(w,
    flip=True) of the forward weights, and x = dy); b [Cout]; y [N, Cout, H, W]
    (overwritten); rows: tile rows per chunk; work: 1-D, per worker
    chunk_floats(Cin, Cout, W, rows) floats (the last SCRATCH*T of them the input transform's
    scratch);
    blas: Sgemm.kernel_args (used where USE_PACKED_GEMM is false); mask: empty, or shaped
    like x (x read as 0 where mask <= 0: the ReLU backward of dx, as in
    winograd.winograd_forward).
    """
    N, Cin, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    Cout = b.shape[0]
    rows_u = transform_rows(Cout)
    TH, TW = (H + 3) // 4, (W + 3) // 4
    per_image = (TH + rows - 1) // rows
    nchunks = N * per_image
    Tmax = padded_tiles(rows * (TW + 1))  # one garbage tile per row, then the GEMM's padding
    scratch = SCRATCH * Tmax
    per_worker = 36 * (estride(Cin * Tmax) + estride(rows_u * Tmax)) + scratch
    if work.shape[0] < workers * per_worker or u.size != 36 * rows_u * Cin or \
            (mask.size and mask.size != x.size):
        raise ValueError("winograd4_forward: work buffer too small, bad weight transform or mask")
    uf = u.reshape(-1)
    vs = t * per_worker
    ms = vs + 36 * estride(Cin * Tmax)
    rs = ms + 36 * estride(rows_u * Tmax)
    for chunk in range(t, nchunks, workers):
        n = chunk // per_image
        tr0 = (chunk % per_image) * rows
        tr1 = min(tr0 + rows, TH)
        T = padded_tiles((tr1 - tr0) * (TW + 1))
        ev, em = estride(Cin * T), estride(rows_u * T)
        _input_transform(x, n, tr0, tr1, TW, T, ev, work[rs:rs + scratch], work[vs:ms], mask,
                         0, Cin)
        _products(blas, t, uf, 36, Cout, Cin, work, vs, ev, ms, em, T, 0, rows_u)
        _output_transform(work[ms:rs], b, n, tr0, tr1, TW, T, em, y, relu, 0, Cout)


# -- forward on small maps: output channels split among the workers ------------------------------
@jit(parallel=False)
def split_inputs(t, x, n, workers, work, mask, Cout):
    """Step 1 of F(4x4) split by output channels (for maps with too few tiles to share out):
    worker t transforms its block of input channels of every tile of image n into the shared
    V at the start of work (layout: split_floats). Step 2 (split_outputs) starts when every
    worker has finished this one."""
    Cin, H, W = x.shape[1], x.shape[2], x.shape[3]
    TH, TW = (H + 3) // 4, (W + 3) // 4
    T = padded_tiles(TH * (TW + 1))
    ev = estride(Cin * T)
    vsize = 36 * ev
    rs = vsize + 36 * estride(transform_rows(Cout) * T) + t * SCRATCH * T
    c0, c1 = Cin * t // workers, Cin * (t + 1) // workers
    _input_transform(x, n, 0, TH, TW, T, ev, work[rs:rs + SCRATCH * T], work[:vsize], mask,
                     c0, c1)


@jit(parallel=False)
def _split_products(t, u, planes, bounds, work, blas, Cout, Cin, T):
    """The products of step 2 of a split by output channels (F(4x4) here, F(2x2) in
    winograd_split.py): worker t's block of output channels, bounds[t] <= co < bounds[t + 1]
    (int64 block boundaries on multiples of MR, conv.channel_blocks; a worker past the last
    block has none), M[e][co0:co1] = U[e][co0:co1] @ V[e] for the ``planes`` e, V and M shared
    at the start of work (V [planes, Cin, T], then M [planes, Cout', T], each matrix estride
    apart). Returns (co0, co1, ms, em): the block (empty when co0 == co1) and where M lies."""
    rows_u = transform_rows(Cout)
    ev, em = estride(Cin * T), estride(rows_u * T)
    ms = planes * ev
    if t >= bounds.shape[0] - 1:
        return 0, 0, ms, em
    co0, co1 = bounds[t], bounds[t + 1]
    _products(blas, t, u.reshape(-1), planes, Cout, Cin, work, 0, ev, ms, em, T, co0,
              min(rows_u, transform_rows(co1)))
    return co0, co1, ms, em


@jit(parallel=False)
def split_outputs(t, u, b, n, bounds, work, y, blas, relu, Cin):
    """Step 2: worker t's block of output channels (_split_products), then
    y[n, co0:co1] = A^T m A + b (ReLU when ``relu``)."""
    Cout, H, W = y.shape[1], y.shape[2], y.shape[3]
    TH, TW = (H + 3) // 4, (W + 3) // 4
    T = padded_tiles(TH * (TW + 1))
    co0, co1, ms, em = _split_products(t, u, 36, bounds, work, blas, Cout, Cin, T)
    if co1 > co0:
        _output_transform(work[ms:ms + 36 * em], b, n, 0, TH, TW, T, em, y, relu, co0, co1)


def split_floats(cin: int, cout: int, h: int, w: int, workers: int) -> int:
    """Floats of the split path's work buffer: the shared V [36, Cin, T] and M [36, Cout, T]
    of one image (each matrix estride apart; T padded, Cout rounded up to the packing) and
    each worker's SCRATCH*T input transform scratch."""
    t = int(padded_tiles(((h + 3) // 4) * ((w + 3) // 4 + 1)))
    return (36 * (estride(cin * t) + estride(int(transform_rows(cout)) * t))
            + workers * SCRATCH * t)


def chunk_floats(cin: int, cout: int, w: int, rows: int) -> int:
    """Floats per worker of winograd4_forward with ``rows`` tile rows per chunk."""
    t = int(padded_tiles(rows * ((w + 3) // 4 + 1)))
    return 36 * (estride(cin * t) + estride(int(transform_rows(cout)) * t)) + SCRATCH * t


#: fewest tiles per chunk: below this each of the 36 products is too short to run at speed
#: (measured with sgemm; with gemm_packed, 48 and 64 tiles measured no faster, design note 18)
MIN_CHUNK_TILES = 128
#: ... and on batches and from 128 x 256 channels (min_chunk_tiles): longer products, and
#: fewer chunks, each of which read all 36 of U's matrices again (sgemm also packed them).
#: Forward + dx, 256 against 128 tiles, medians of 11 interleaved in one process on the shared
#: VM, with sgemm: batch 4 at 224 px 0.85-0.88
#: of the time (64, 128 and 256 channels), 256 channels at 128 px 0.83, 128 -> 256 at 128 px
#: 0.93, 512 channels at 64 px 0.94; but one image of 64 channels at 512 px 1.05 and of 128
#: at 256 px 1.04 (their larger chunks no longer fit the 2 MB L2), so those keep 128.
MIN_CHUNK_TILES_DEEP = 256


def min_chunk_tiles(cin: int, cout: int, n: int) -> int:
    """Fewest tiles per chunk for this layer and batch (see MIN_CHUNK_TILES_DEEP)."""
    return MIN_CHUNK_TILES_DEEP if n > 1 or cin * cout >= 128 * 256 else MIN_CHUNK_TILES


def plan_rows(h: int, w: int, cin: int, cout: int, workers: int, n: int, tile_bytes: int,
              bound_bytes: int) -> int:
    """Tile rows per chunk: V + M of about ``tile_bytes`` per worker but at least
    min_chunk_tiles tiles, within ``bound_bytes`` for all workers (never under one tile row),
    then evened out over the workers (as winograd.plan_rows)."""
    th, tw = (h + 3) // 4, (w + 3) // 4
    row_bytes = 4 * 36 * (cin + cout) * (tw + 1)
    rows = max(1, tile_bytes // row_bytes, -(-min_chunk_tiles(cin, cout, n) // tw))
    rows = min(rows, th)
    while rows > 1 and workers * 4 * chunk_floats(cin, cout, w, rows) > bound_bytes:
        rows -= 1
    return balanced_rows(th, rows, n, workers)


# -- weight transform ----------------------------------------------------------------------------
def weight_transform(w: np.ndarray, flip: bool = False, out: np.ndarray | None = None
                     ) -> np.ndarray:
    """U[6i + j, co, c] = (G g G^T)[i, j], g = w[co, c], float32: [36, Cout, Cin], each of the
    36 matrices packed for microkernel.gemm_packed where USE_PACKED_GEMM
    ([36, Cout' * Cin], see transform_shape); flip=True: g = w.transpose(1, 0, 2,
    3)[:, :, ::-1, ::-1], the backward-dx kernel (Cin and Cout swapped). Computed in float64,
    one rounding to float32 (winograd.transformed); into ``out`` when given (C-contiguous,
    that shape)."""
    return transformed(w, G, flip, out, PACK, KC)


def transform_shape(rows: int, cols: int) -> tuple:
    """The shape of weight_transform's result for [rows, cols] kernels (Cout, Cin; Cin, Cout
    for flip)."""
    return transform_layout(G, rows, cols, PACK)


# -- when to use it (plain Python) ---------------------------------------------------------------
def use_winograd4(n: int, cin: int, cout: int, h: int, w: int, workers: int) -> bool:
    """Where F(4x4, 3x3) measured faster than F(2x2): wherever F(2x2) is taken
    (winograd.use_winograd) and each image has MIN_IMAGE_TILES tiles of 4x4 (on a batch,
    MIN_BATCH_IMAGE_TILES) and each worker MIN_TILES_PER_WORKER of them or an image of its
    own, so that each of the 36 products of a chunk (one image's tile rows) has columns to
    run at speed. The same rule serves the forward and dx."""
    tiles = ((h + 3) // 4) * ((w + 3) // 4)
    enough = tiles >= (MIN_IMAGE_TILES if n == 1 else MIN_BATCH_IMAGE_TILES)
    return (use_winograd(n, cin, cout, h, w, workers) and enough
            and (n * tiles >= MIN_TILES_PER_WORKER * workers or n >= workers))


def transform_per_call(pixels: int) -> bool:
    """Compute the weight transform for this call instead of caching it? Where it costs little
    next to the convolution: from PER_CALL_PIXELS output pixels on."""
    return pixels >= PER_CALL_PIXELS


def use_split(n: int, cin: int, cout: int, h: int, w: int, workers: int) -> bool:
    """Where F(4x4) split by output channels (split_inputs / split_outputs) measured faster
    than the other paths: one image whose SPLIT_TILES tiles are too few to share out by tile
    rows (conv4_x at 28 px in 224 px classification), on any channel count."""
    tiles = ((h + 3) // 4) * ((w + 3) // 4)
    return (n == 1 and workers > 1 and tiles in SPLIT_TILES
            and use_winograd(n, cin, cout, h, w, workers))


#: VGG19's conv4_x at 28 px, batch 1 (49 tiles), 2 workers, forward with the fused ReLU against
#: the dispatch before it (F(2x2) by tile rows), interleaved medians of 9 on the shared VM:
#: 512 -> 512 0.84-0.91 of its time, 256 -> 512 0.70; at 24 px (36 tiles) equal, at 14 px (16
#: tiles) 1.35x slower, at batch 2 1.07x slower. It stops below 64 tiles (32 px: conv5_1 of a
#: 512 px style step, where its cached forward and dx transforms would add 75 MB).
SPLIT_TILES = range(42, 64)

#: VGG19 at 224, batch 1, 2 workers (conv_path "winograd4" against "winograd" and "img2col",
#: medians of 11, interleaved, forward with the fused ReLU / backward dx; the machine was
#: shared): conv1_2 0.83-0.84 / 0.87 of F(2x2)'s time, conv2_x 0.81-0.90 / 0.82-0.89,
#: conv3_x 0.78-0.91 / 0.81-0.85; conv4_x at 28 px (49 tiles per image) 1.04-1.10 / 0.93-0.94,
#: conv5_x at 14 px 1.3-1.6x slower (12-16 tiles per image: each sgemm gets a few columns).
MIN_IMAGE_TILES = 100

#: On a batch a chunk is a whole image of 28 px, and F(4x4) against F(2x2), forward + dx, medians
#: of 7 interleaved in one process (the shared VM): 512 -> 512 at 28 px (49 tiles) 0.84 of the
#: time at batch 4, 0.86 at batch 2, 0.93 at batch 8; 256 -> 512 0.84-0.89; 256 -> 256 at 32 px
#: 0.87; but at 24 px (36 tiles) 1.00-1.03 for 512 channels and at 20 px 1.14.
MIN_BATCH_IMAGE_TILES = 49

#: From this many output pixels per call (N*H*W) the weight transform is computed per call
#: instead of cached (the driver's _transform4). A 256 -> 256 transform takes about 2-3 ms
#: (winograd.transform_kernels), under 5 % of a conv3_x call at 128 x 128 (512 px style transfer),
#: and the cached forward and dx transforms of conv1_2..conv3_x held 74 MB of a 512 px step's
#: peak RSS; below (e.g. 224 px classification, 49-3136 tiles per image) the cache stays.
#: Below, conv4_x of a 512 px style step (64 x 64 pixels) caches too: a 512 -> 512 transform
#: takes 10-12 ms there, a quarter of its call, and the step's backward frees what it has
#: passed (Network.backward's ``release``), which leaves room for most of conv4_x's cached
#: forward and dx copies (CACHE_BYTES).
PER_CALL_PIXELS = 128 * 128

#: The bound of the driver's cache of F(4x4) transforms, forward and dx together (36 Cin Cout
#: floats each, 4x the weights: 37.7 MB for a 512 -> 512 layer); a transform past it is
#: computed per call (winograd.TransformCache: first come, first kept). 224 px classification
#: keeps all of VGG19's forward transforms (170 MB). A 512 px style step keeps conv4_x's
#: forward ones and the dx ones of conv4_4 and conv4_3 (208 MB; with conv4_1's too, 226 MB, and
#: F(2x2)'s split transforms of conv5_1 beside them, its peak RSS was 953 MiB).
CACHE_BYTES = 208 << 20
MIN_TILES_PER_WORKER = 64
