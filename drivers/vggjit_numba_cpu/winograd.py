"""Winograd F(2x2, 3x3) convolution for K = 3, stride 1, pad 1 (every VGG convolution).

Why: on this machine the img2col convolutions spend 90-98% of their time inside sgemm, so the
only way to go faster is fewer multiplies. F(2x2, 3x3) computes a 2x2 output tile from a 4x4
input tile with 16 multiplies per (input channel, output channel) instead of 36: the GEMM work
drops to 16/36 = 0.44 of img2col's, for the price of the tile transforms (linear in the data,
not in Cin*Cout).

Layout: x [N, Cin, H, W], w [Cout, Cin, 3, 3], y [N, Cout, H, W] (stride 1, pad 1 keeps the
size). Output tiles: TH = ceil(H/2) by TW = ceil(W/2); an odd H or W is handled by a tile grid
that reaches one row/column past the edge (read as zero padding, cropped when written).

    input transform   V[e, c, t]   = (B^T d_{c,t} B)[e]       d: the 4x4 input patch of tile t
    weight transform  U[e, co, c]  = (G g_{co,c} G^T)[e]      done once per weight array
    16 GEMMs          M[e]         = U[e] [Cout, Cin] @ V[e] [Cin, T]
    output transform  y tile       = A^T m_{co,t} A + b[co]   (a 2x2 block, cropped)

with e = 4*i + j indexing the 4x4 transformed tile and

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].

Tiling like conv.py: each worker takes chunks of tile rows of one image (chunks t,
t + workers, ...), transforms them into its own part of the driver's work buffer, runs the 16
single-threaded sgemm calls on them and writes the outputs straight into y. The chunk height is
planned so that workers * (V + M) stays within the driver's ``memory_bound_mb``.

Backward: dx of a 3x3 stride-1 pad-1 convolution is the same convolution of dy with the kernel
flipped in space and its in/out channels swapped, w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1];
the driver runs it through this forward with a zero bias. That kernel needs no transform of its
own: reversing g reverses nothing but rows 0 and 3 of G g (G's middle rows are symmetric), so

    U_dx[4i + j] = U[4 p(i) + p(j)]^T,   p = (3, 1, 2, 0),

and the dx GEMMs read the forward transform U transposed (``flip``). One cached transform per
weight array serves both passes: style transfer keeps half the transform memory.
"""
from __future__ import annotations

import weakref

import numpy as np
from numba import prange

from .allocator import kept_copy
from .blas import TRANS_N, TRANS_T, address, sgemm
from .handoff import share
from .kernel_cache import jit
from .winograd_tiles import input2_tiles, input2_tiles_gated, output2_tiles


@jit(parallel=False)
def _input_transform(x, n, tr0, tr1, TW, T, es, v, mask, c0, c1):
    """V[e, c, t] = (B^T d B)[e] for the tiles of tile rows [tr0, tr1) of image n and the
    input channels c0 <= c < c1, a tile row of a channel at a time
    (winograd_tiles.input2_tiles: read straight from x, the padding and the edges as masked
    loads); columns T0 <= t < T, past the T0 = (tr1 - tr0)*TW tiles, are set to zero (the
    packed GEMM's padding, winograd_split.py).

    v: 1-D, V[e, c, t] at v[e*es + c*T + t], t = (ti - tr0)*TW + tj (es: see estride);
    mask: empty, or an array shaped like x: then x is read as 0 wherever mask <= 0 (or NaN),
    which is the ReLU backward when x is dy and mask the ReLU's output.
    """
    Cin, H, W = x.shape[1], x.shape[2], x.shape[3]
    f = np.uint64(4)
    gated = mask.size > 0
    for c in range(c0, c1):
        plane = np.uint64((n * Cin + c) * H * W) * f
        for ti in range(tr0, tr1):
            at = v.ctypes.data + np.uint64(c * T + (ti - tr0) * TW) * f
            if gated:
                input2_tiles_gated(x.ctypes.data + plane, mask.ctypes.data + plane,
                                   2 * ti - 1, H, W, at, es, TW)
            else:
                input2_tiles(x.ctypes.data + plane, 0, 2 * ti - 1, H, W, at, es, TW)
        for e in range(16):
            for t in range((tr1 - tr0) * TW, T):
                v[e * es + c * T + t] = 0.0


@jit(parallel=False)
def _output_transform(m, b, n, tr0, tr1, TW, T, es, y, relu, co0, co1):
    """y[n, co, 2*ti + i, 2*tj + j] = (A^T m A)[i, j] + b[co] for tile rows [tr0, tr1) and
    the output channels co0 <= co < co1,
    max(that, 0) when ``relu`` (NaN stays NaN), a tile row of a channel at a time
    (winograd_tiles.output2_tiles).

    m: 1-D, M[e, co, t] at m[e*es + co*T + t]; outputs past the edge of y (odd H/W) are
    dropped.
    """
    Cout, H, W = y.shape[1], y.shape[2], y.shape[3]
    f = np.uint64(4)
    # the ReLU as a clamp at ``floor`` (-inf: none)
    floor = np.float32(0.0) if relu else np.float32(-np.inf)
    for co in range(co0, co1):
        for ti in range(tr0, tr1):
            out = ((n * Cout + co) * H + 2 * ti) * W
            output2_tiles(m.ctypes.data + np.uint64(co * T + (ti - tr0) * TW) * f, es,
                          y.ctypes.data + np.uint64(out) * f, W, min(2, H - 2 * ti), TW,
                          b[co], floor)


# -- forward -----------------------------------------------------------------------------------
@jit(parallel=False)
def estride(size):
    """Distance in floats between the 16 matrices V[e] (or M[e]) of ``size`` floats each.

    Not ``size`` itself: the transforms write (or read) all 16 at once, and when the distance
    is a multiple of 4 KiB (64 channels x 224 tiles is 14 x 4 KiB) the 16 streams alias in
    L1 and the input transform ran 6x slower. Rounded up to 4 KiB and then 256 bytes more,
    the 16 streams start 256 bytes apart modulo 4 KiB.
    """
    return (size + 1023) // 1024 * 1024 + 64


@jit(parallel=False)
def _mirror(i):
    """p(i): the index of row i of G g after g is reversed (rows 0 and 3 swap)."""
    return 3 - i if i == 0 or i == 3 else i


@jit(parallel=False)
def _gemm(blas, t, e, flip, uf, Cin, Cout, T, v, m):
    """M[e] [Cout, T] = U[e] [Cout, Cin] @ V[e] [Cin, T] (one sgemm; v, m: addresses).
    flip: the dx kernel's U_dx[e] = U[mirror(e)]^T, read from the forward u [16, Cin, Cout]."""
    if flip:
        mirrored = 4 * _mirror(e // 4) + _mirror(e % 4)
        sgemm(blas, t, TRANS_T, TRANS_N, Cout, T, Cin, address(uf, mirrored * Cout * Cin), Cout,
              v, T, 0, m, T)
    else:
        sgemm(blas, t, TRANS_N, TRANS_N, Cout, T, Cin, address(uf, e * Cout * Cin), Cin,
              v, T, 0, m, T)


@jit(parallel=False)
def winograd_forward(t, x, u, b, rows, workers, work, y, blas, flip, relu, mask):
    """Worker t's chunks of y = conv3x3(x, w) + b (stride 1, pad 1) by F(2x2, 3x3), tiled
    over rows of tiles: chunks t, t + workers, ...

    x [N, Cin, H, W]; u [16, Cout, Cin] = weight_transform(w), or with flip=True
    u [16, Cin, Cout] = weight_transform(w) of the forward weights w [Cin, Cout, 3, 3], for the
    backward-dx convolution (see the module docstring); b [Cout]; y [N, Cout, H, W]
    (overwritten); rows: tile rows per chunk; workers: number of workers;
    work: 1-D, per worker 16*(estride(Cin*rows*TW) + estride(Cout*rows*TW)) floats
    (chunk_floats); mask: empty, or shaped like x: x is read as 0 where mask <= 0 (the
    backward dx of conv + ReLU reads dy through the ReLU's output this way, no masked copy).

    Per chunk (tile rows [tr0, tr1) of image n, T = (tr1 - tr0)*TW tiles): input transform
    into V [16, Cin, T], then M[e] = U[e] @ V[e] (16 sgemm calls, M [16, Cout, T]), then the
    output transform with the bias (and with relu=True the ReLU) into y.
    """
    N, Cin, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    Cout = u.shape[2] if flip else u.shape[1]
    TH, TW = (H + 1) // 2, (W + 1) // 2
    per_image = (TH + rows - 1) // rows
    nchunks = N * per_image
    Tmax = rows * TW
    per_worker = 16 * (estride(Cin * Tmax) + estride(Cout * Tmax))
    if work.shape[0] < workers * per_worker or u.shape[0] != 16 or \
            (u.shape[1] if flip else u.shape[2]) != Cin or (mask.size and mask.size != x.size):
        raise ValueError("winograd_forward: work buffer too small, bad weight transform or mask")
    uf = u.reshape(-1)
    vs = t * per_worker
    ms = vs + 16 * estride(Cin * Tmax)
    end = ms + 16 * estride(Cout * Tmax)
    for chunk in range(t, nchunks, workers):
        n = chunk // per_image
        tr0 = (chunk % per_image) * rows
        tr1 = min(tr0 + rows, TH)
        T = (tr1 - tr0) * TW
        ev, em = estride(Cin * T), estride(Cout * T)
        _input_transform(x, n, tr0, tr1, TW, T, ev, work[vs:ms], mask, 0, Cin)
        for e in range(16):
            _gemm(blas, t, e, flip, uf, Cin, Cout, T, address(work, vs + e * ev),
                  address(work, ms + e * em))
        _output_transform(work[ms:end], b, n, tr0, tr1, TW, T, em, y, relu, 0, Cout)


def chunk_floats(cin: int, cout: int, w: int, rows: int) -> int:
    """Floats per worker of winograd_forward with ``rows`` tile rows per chunk."""
    tw = (w + 1) // 2
    return 16 * (estride(cin * rows * tw) + estride(cout * rows * tw))


#: fewest tiles per chunk: below this each of the 16 sgemm calls is too short to run at speed
MIN_CHUNK_TILES = 256


def plan_rows(h: int, w: int, cin: int, cout: int, workers: int, n: int, tile_bytes: int,
              bound_bytes: int) -> int:
    """Tile rows per chunk: V + M of about ``tile_bytes`` per worker but at least
    MIN_CHUNK_TILES tiles, within ``bound_bytes`` for all workers (never under one tile row),
    then evened out over the workers."""
    from .conv import balanced_rows

    th, tw = (h + 1) // 2, (w + 1) // 2
    row_bytes = 4 * 16 * (cin + cout) * tw
    rows = max(1, tile_bytes // row_bytes, -(-MIN_CHUNK_TILES // tw))
    rows = min(rows, th)
    while rows > 1 and workers * 4 * chunk_floats(cin, cout, w, rows) > bound_bytes:
        rows -= 1
    return balanced_rows(th, rows, n, workers)


# -- weight transform and its cache --------------------------------------------------------------
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


#: kernel entries per step of transform_kernels (q * mr): its taps and rows stay in L1 / L2
STEP_FLOATS = 512


@jit
def transform_kernels(w, g, flip, mr, kc, u):
    """u = G k G^T (float32) for every kernel k of w [Cout, Cin, 3, 3], with G = g [R, 3]
    (float64): F(2x2)'s or F(4x4)'s weight transform, computed in float64 and rounded once.
    flip=False: k = w[p, q] (P = Cout, Q = Cin); flip=True: the backward-dx kernel k = w[q, p]
    rotated 180 degrees (P = Cin, Q = Cout).

    u: 1-D. mr = 1: u is [R*R, P, Q]; mr > 1: each of the R*R matrices [P, Q] is in the
    packed form of microkernel.py (the depth q in passes of kc, within a pass rows in blocks of
    mr, each block [depth, mr]; P rounded up to P', a multiple of mr, the added rows zero),
    u[e, p, q] at e*P'*Q + microkernel.pack_index(p, q, P', Q).

    Parallel over blocks of mr rows p. For each block the 9 taps of its mr*Q kernels are first
    gathered into rows in the packed order (z = q*mr + p % mr), then each product is a row
    operation over z that vectorises: T = G k (R x 3 rows), U = T G^T.

    Why a kernel: NumPy's einsum took 0.7 s for one 512 -> 512 F(4x4) transform, so a transform
    could only be afforded once per weight array and had to be cached; this takes a few
    milliseconds, so the driver computes it per call where caching would cost more memory than
    time (see the driver's _weight_transform).
    """
    R = g.shape[0]
    P, Q = (w.shape[1], w.shape[0]) if flip else (w.shape[0], w.shape[1])
    blocks = (P + mr - 1) // mr
    plane = blocks * Q * mr
    span = max(1, STEP_FLOATS // mr)    # q per step
    kc = kc if mr > 1 else Q            # unpacked: one pass, u[e] is [P, Q] row-major
    span = min(span, kc)                # a step's q stay in one depth pass (kc: its multiple)
    for pb in prange(blocks):
        taps = np.zeros((9, span * mr))     # rows past P stay zero
        t = np.empty((3, span * mr))
        for q0 in range(0, Q, span):
            qn = min(span, Q - q0)
            width = qn * mr
            k0 = q0 // kc * kc                          # the depth pass of these q
            depth = min(kc, Q - k0)
            for q in range(qn):
                for r in range(min(mr, P - pb * mr)):
                    p = pb * mr + r
                    for k in range(9):
                        if flip:
                            taps[k, q * mr + r] = w[q0 + q, p, 2 - k // 3, 2 - k % 3]
                        else:
                            taps[k, q * mr + r] = w[p, q0 + q, k // 3, k % 3]
            for i in range(R):
                g0, g1, g2 = g[i, 0], g[i, 1], g[i, 2]
                for b in range(3):
                    for z in range(width):
                        t[b, z] = g0 * taps[b, z] + g1 * taps[3 + b, z] + g2 * taps[6 + b, z]
                for j in range(R):
                    h0, h1, h2 = g[j, 0], g[j, 1], g[j, 2]
                    # unsigned: Numba then adds no negative-index check per element
                    at = np.uint64((i * R + j) * plane + k0 * blocks * mr + pb * depth * mr
                                   + (q0 - k0) * mr)
                    for z in range(width):
                        u[at + np.uint64(z)] = t[0, z] * h0 + t[1, z] * h1 + t[2, z] * h2


def weight_transform(w: np.ndarray, flip: bool = False, out: np.ndarray | None = None
                     ) -> np.ndarray:
    """U [16, Cout, Cin] float32 with U[4i + j, co, c] = (G g G^T)[i, j], g = w[co, c]; into
    ``out`` when given (C-contiguous, that shape).

    flip=True transforms the kernel of the backward dx instead:
    g = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1] (channels swapped, kernel rotated 180°);
    the driver never needs it (winograd_forward's ``flip`` reads the forward transform), the
    tests use it to check that identity. Computed in float64 so that the transform adds no
    rounding of its own beyond one cast (transform_kernels).
    """
    return transformed(w, _G, flip, out)


def transform_layout(g: np.ndarray, p: int, q: int, mr: int) -> tuple:
    """The shape transform_kernels fills for [P, Q] kernels with G = g: [R*R, P, Q] (mr = 1) or,
    packed, [R*R, P' * Q] (P' = P rounded up to mr; R = g.shape[0])."""
    r2 = g.shape[0] ** 2
    return (r2, p, q) if mr == 1 else (r2, -(-p // mr) * mr * q)


def transformed(w: np.ndarray, g: np.ndarray, flip: bool, out: np.ndarray | None,
                mr: int = 1, kc: int = 0) -> np.ndarray:
    """transform_kernels(w, g, flip, mr, kc) into ``out``, or into a new array of the shape it
    fills (transform_layout; P, Q = Cout, Cin, or Cin, Cout with flip); kc: the depth pass of
    the packing (mr > 1). Both tile sizes' weight transforms go through here."""
    p, q = (w.shape[1], w.shape[0]) if flip else (w.shape[0], w.shape[1])
    shape = transform_layout(g, p, q, mr)
    u = np.empty(shape, np.float32) if out is None else out
    if u.shape != shape or not u.flags.c_contiguous:
        raise ValueError(f"weight transform: out must be C-contiguous {shape}, got {u.shape}")
    if mr > 1 and (kc < 1 or kc % min(STEP_FLOATS // mr, kc)):
        raise ValueError(f"weight transform: depth pass {kc} is not a multiple of the step")
    transform_kernels(w, g, flip, mr, kc, u.reshape(-1))
    return u


#: blocks of a checksum (each summed by one worker, then combined in order)
CHECKSUM_BLOCKS = 64


@jit(parallel=False)
def checksum_blocks(t, w, workers, partial):
    """Worker t's share of a cheap fingerprint of every element of w (any shape, float32,
    C-contiguous), to notice in-place changes: partial[k] = the sum over block k's elements i
    of (bits(w[i]) XOR i) modulo 2^64, for a contiguous share of the CHECKSUM_BLOCKS blocks.
    A change of any one element changes its block's sum; the XOR with the position makes
    most swaps of two elements count too. No multiplies: a position-weighted sum with 64-bit
    products ran at 2-3 ms for a 512x512x3x3 kernel, a sixth of that layer's convolution."""
    bits = w.reshape(-1).view(np.uint32)
    total = bits.shape[0]
    blocks = partial.shape[0]
    step = (total + blocks - 1) // blocks
    first, last = share(blocks, workers, t, 1)
    for k in range(first, last):
        s = np.uint64(0)
        for i in range(np.uint64(k * step), np.uint64(min(total, (k + 1) * step))):
            s += np.uint64(bits[i]) ^ i
        partial[k] = s


def combine_checksum(partial: np.ndarray) -> int:
    """The fingerprint from checksum_blocks' partial sums (the same whatever the workers)."""
    s = 0
    for p in partial.tolist():
        s = (s * 1000003 + p) % (1 << 64)
    return s


def checksum(w: np.ndarray) -> int:
    """checksum_blocks on one thread, combined (TransformCache's default fingerprint)."""
    partial = np.empty(CHECKSUM_BLOCKS, np.uint64)
    checksum_blocks(0, w, 1, partial)
    return combine_checksum(partial)


class TransformCache:
    """Weight transforms kept between calls (the same weights serve every call in
    classification and style transfer), first come, first kept.

    Key: (id(w), flip). An entry is used only when the array at that id still has the same
    data address, shape and checksum (so weights changed in place recompute), and it goes when
    its weight array is freed. Bounded by ``max_bytes``: a transform that would not fit is
    computed for its call and not kept. Evicting older entries instead (least recently used)
    would miss on every call once a cycle of layers (a style step's forward and backward) needs
    more than the bound; this way the first layers of the cycle stay cached and the rest pay
    their transforms per call. Kept transforms live in mappings of their own, outside the heap
    (allocator.kept_copy).
    """

    def __init__(self, max_bytes: int = 512 << 20, transform=weight_transform,
                 fingerprint=checksum):
        self.max_bytes = max_bytes
        self.transform = transform      # (w, flip) -> its transform (winograd4.py has its own)
        self.fingerprint = fingerprint  # w -> int (the driver's runs on its workers)
        self._entries: dict = {}
        self.misses = 0

    def get(self, w: np.ndarray, flip: bool = False) -> np.ndarray:
        """transform(w, flip), from the cache while w is unchanged."""
        key = (id(w), flip)
        stamp = (w.ctypes.data, w.shape, int(self.fingerprint(w)))
        hit = self._entries.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        self.misses += 1
        self._entries.pop(key, None)    # w changed in place (or a new array at a freed id)
        u = self.transform(w, flip)
        if self.nbytes + u.nbytes > self.max_bytes:
            return u
        self._entries[key] = (stamp, kept_copy(u))
        weakref.finalize(w, self._entries.pop, key, None)
        return self._entries[key][1]

    @property
    def nbytes(self) -> int:
        # a copy of the values: an entry's finalizer may run in another thread meanwhile
        return sum(entry[1].nbytes for entry in list(self._entries.values()))

    def clear(self) -> None:
        self._entries.clear()


# -- when to use it (plain Python) ---------------------------------------------------------------
def applies(k: int, stride: int, pad: int) -> bool:
    """The geometry this file implements: 3x3, stride 1, pad 1."""
    return k == 3 and stride == 1 and pad == 1


def use_winograd(n: int, cin: int, cout: int, h: int, w: int, workers: int) -> bool:
    """Where F(2x2, 3x3) measured faster than the img2col paths: enough channels that the
    16 GEMMs, not the transforms, dominate, and enough tiles per worker that each of the 16
    sgemm calls of a chunk has columns to run at speed (see the constants)."""
    tiles = n * ((h + 1) // 2) * ((w + 1) // 2)
    return min(cin, cout) >= MIN_CHANNELS and tiles >= MIN_TILES_PER_WORKER * workers


#: VGG19 at 224, batch 1, 2 workers (winograd=False vs True, medians of 9, interleaved, forward
#: and backward dx): conv1_1 (Cin = 3) 2.5x slower (the transforms are all there is);
#: conv1_2 (64 -> 64) 12-23% faster, conv2_1 (64 -> 128) 4-12%; 128..512 channels at 112..28 px
#: 19-56% faster; conv5_x at 14x14 (49 tiles per image) 15-20% slower: each of the 16 sgemm
#: calls of a chunk gets under 50 columns.
MIN_CHANNELS = 64
MIN_TILES_PER_WORKER = 64
