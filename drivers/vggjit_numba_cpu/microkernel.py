"""A register-blocked GEMM for the Winograd convolutions: C = A @ B with A packed once, B read
in place.

Why not sgemm: each of F(4x4)'s 36 products per chunk, U[e] [Cout, Cin] @ V[e] [Cin, T], is
short (T = 32..264 tiles), and sgemm packs both operands on every call: all of U, 9.4 MB for
256 channels, again for every chunk. Here U is packed once, when it is transformed (pack_index),
V is read where the input transform wrote it, and the product of an 8 x 48 block of C stays in
24 AVX-512 registers while it sums 128 input channels at a time (docs/design-notes.md, note 18,
has the figures).

The block kernel is LLVM IR built with llvmlite (_define_block), called from Numba code through
an intrinsic: Numba's loops do not keep 24 vector accumulators in registers. It uses
``llvm.fmuladd`` on <16 x float>: one AVX-512 FMA each. It is built for AVX-512's 32 vector
registers, and only used where Numba compiles for AVX-512 (compiles_for_avx512); elsewhere
F(4x4) keeps sgemm (winograd4.USE_PACKED_GEMM).

Layouts (float32, all 1-D with offsets):

    A packed  a[pack_index(p, q, P', Q)]: the depth in passes of KC columns, one after the
              other; within a pass the rows p in blocks of MR, each block [depth, MR] (MR
              consecutive rows' q-th entries side by side). P is padded to P' (packed_rows),
              a multiple of MR, with zero rows. So the blocks one pass of the GEMM reads lie
              in one run of memory: on VGG's conv4_x at batch 1 (A from memory every call)
              the products took 0.91 of the time of a layout whose passes were interleaved
              (design note 21).
    B         b[b0 + q*ldb + j], j < cols, cols a multiple of NR_EDGE (the caller pads).
    C         c[c0 + p*ldc + j] for p < the padded P and j < cols (overwritten).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .kernel_cache import jit



def compiles_for_avx512() -> bool:
    """Does Numba compile for a CPU with AVX-512 (32 vector registers of 16 floats)? Its own
    answer: the host's features, or $NUMBA_CPU_FEATURES when set. The block kernel is built
    for that register file: compiled for AVX2 (16 registers of 8 floats) its 24 accumulators
    spill, and the products ran at 0.4-0.5x OpenBLAS's speed, so only AVX-512 targets use it
    (winograd4.USE_PACKED_GEMM)."""
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    features = config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
        features = features.flatten() if hasattr(features, "flatten") else str(features)
    return "+avx512f" in str(features).split(",")


#: rows of C per block (A's packing width), and columns of C per block: NR for the main
#: blocks, then blocks of 16 and 8 for the rest (cols is padded to a multiple of NR_EDGE).
#: 8 x 48 keeps 24 of AVX-512's 32 vector registers as accumulators (design note 18: the
#: block shapes measured).
MR, NR, NR_EDGE = 8, 48, 8
#: input channels per pass over a block: B's panel of KC x NR floats (24 KB) stays in L1 (128
#: against 256 and 512: 1.0-1.1x the GFLOP/s on the F(4x4) shapes, design note 18)
KC = 128

_F32 = ir.FloatType()
_I64 = ir.IntType(64)


def _define_block(module: ir.Module, nv: int, lanes: int) -> ir.Function:
    """The LLVM function for one MR x (nv * lanes) block of C (defined once per module):
    block(a, b, ldb, c, ldc, k, accumulate), all i64, a/b/c addresses:

        C[r, j] (+)= sum_{q < k} a[q*MR + r] * b[q*ldb + j],   c[r*ldc + j]

    for r < MR, j < nv*lanes (a: a packed block, see pack_index), with C added to
    (accumulate != 0) or overwritten. The accumulators are loop phis, so they live in
    registers; a[q*MR + r] is broadcast to a vector (an embedded broadcast operand of the FMA
    on AVX-512)."""
    name = f"vggjit_gemm_block_{MR}x{nv}x{lanes}"
    fnty = ir.FunctionType(ir.VoidType(), [_I64] * 7)
    fn = cgutils.get_or_insert_function(module, fnty, name)
    if not fn.is_declaration:
        return fn
    fn.linkage = "internal"
    vec = ir.VectorType(_F32, lanes)
    a_addr, b_addr, ldb, c_addr, ldc, depth, accumulate = fn.args
    entry, loop, done, add, store = (fn.append_basic_block(n)
                                     for n in ("entry", "loop", "done", "add", "store"))
    b = ir.IRBuilder(entry)
    fmuladd = cgutils.get_or_insert_function(module, ir.FunctionType(vec, [vec] * 3),
                                             f"llvm.fmuladd.v{lanes}f32")
    fptr, vptr = _F32.as_pointer(), vec.as_pointer()
    a_p, b_p, c_p = (b.inttoptr(v, fptr) for v in (a_addr, b_addr, c_addr))
    zero = ir.Constant(vec, [0.0] * lanes)
    splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    b.cbranch(b.icmp_signed(">", depth, ir.Constant(_I64, 0)), loop, done)

    b.position_at_end(loop)
    q = b.phi(_I64)
    acc = [[b.phi(vec) for _ in range(nv)] for _ in range(MR)]
    q.add_incoming(ir.Constant(_I64, 0), entry)
    b_row = b.gep(b_p, [b.mul(q, ldb)])
    b_vec = [b.load(b.bitcast(b.gep(b_row, [ir.Constant(_I64, lanes * v)]), vptr), align=4)
             for v in range(nv)]
    a_col = b.gep(a_p, [b.mul(q, ir.Constant(_I64, MR))])
    summed = []
    for r in range(MR):
        s = b.load(b.gep(a_col, [ir.Constant(_I64, r)]), align=4)
        s = b.shuffle_vector(b.insert_element(ir.Constant(vec, ir.Undefined), s,
                                              ir.Constant(ir.IntType(32), 0)),
                             ir.Constant(vec, ir.Undefined), splat)
        summed.append([b.call(fmuladd, [s, b_vec[v], acc[r][v]]) for v in range(nv)])
    q_next = b.add(q, ir.Constant(_I64, 1))
    q.add_incoming(q_next, loop)
    for r in range(MR):
        for v in range(nv):
            acc[r][v].add_incoming(zero, entry)
            acc[r][v].add_incoming(summed[r][v], loop)
    b.cbranch(b.icmp_signed("<", q_next, depth), loop, done)

    b.position_at_end(done)
    totals = [[b.phi(vec) for _ in range(nv)] for _ in range(MR)]    # phis first
    for r in range(MR):
        for v in range(nv):
            totals[r][v].add_incoming(zero, entry)
            totals[r][v].add_incoming(summed[r][v], loop)
    b.cbranch(b.icmp_signed("!=", accumulate, ir.Constant(_I64, 0)), add, store)
    # overwrite without reading C first (C may hold anything, NaN included)
    for block, adding in ((add, True), (store, False)):
        b.position_at_end(block)
        for r in range(MR):
            c_row = b.gep(c_p, [b.mul(ir.Constant(_I64, r), ldc)])
            for v in range(nv):
                target = b.bitcast(b.gep(c_row, [ir.Constant(_I64, lanes * v)]), vptr)
                total = totals[r][v]
                if adding:
                    total = b.fadd(b.load(target, align=4), total)
                b.store(total, target, align=4)
        b.ret_void()
    return fn


def _block_intrinsic(nv: int, lanes: int):
    """An intrinsic calling _define_block(nv, lanes): block(a, b, ldb, c, ldc, k, accumulate)."""

    @intrinsic
    def block(typingctx, a, b, ldb, c, ldc, k, accumulate):
        sig = types.void(types.uint64, types.uint64, types.int64, types.uint64, types.int64,
                         types.int64, types.int64)

        def codegen(context, builder, signature, args):
            fn = _define_block(builder.module, nv, lanes)
            values = [context.cast(builder, v, t, types.int64)
                      for v, t in zip(args, signature.args)]
            builder.call(fn, values)
            return context.get_dummy_value()

        return sig, codegen

    return block


_block_main = _block_intrinsic(NR // 16, 16)
_block_16 = _block_intrinsic(1, 16)
_block_8 = _block_intrinsic(1, 8)


@jit(parallel=False)
def gemm_packed(a, a0, b, b0, ldb, c, c0, ldc, p0, p1, p_size, q_size, cols):
    """C[p, :cols] = sum_q A[p, q] B[q, :cols] for the rows p0 <= p < p1 (multiples of MR, p1
    at most p_size) of A packed at a[a0:] (pack_index, P' = p_size, Q = q_size >= 1), B at
    b[b0 + q*ldb] and C at c[c0 + p*ldc]; cols a multiple of NR_EDGE (see the module
    docstring).

    Loops: the depth in passes of KC, then column blocks, then row blocks: one block of B
    (KC x NR) is read from L1 by every row block, and A's packed blocks stream from L2, one
    32-byte run per step of the depth (read in place, MR rows q_size apart, A ran the products
    0.6-1.0x as fast, design note 18)."""
    f = np.uint64(4)
    a_base = a.ctypes.data + np.uint64(a0) * f
    b_base = b.ctypes.data + np.uint64(b0) * f
    c_base = c.ctypes.data + np.uint64(c0) * f
    main = cols - cols % NR
    for k0 in range(0, q_size, KC):
        depth = min(KC, q_size - k0)
        later = 1 if k0 > 0 else 0
        b_pass = b_base + np.uint64(k0 * ldb) * f
        j = 0
        while j < cols:
            width = NR if j < main else (16 if cols - j >= 16 else 8)
            b_at = b_pass + np.uint64(j) * f
            for p in range(p0, p1, MR):
                a_at = a_base + np.uint64(k0 * p_size + p * depth) * f
                c_at = c_base + np.uint64(p * ldc + j) * f
                if width == NR:
                    _block_main(a_at, b_at, ldb, c_at, ldc, depth, later)
                elif width == 16:
                    _block_16(a_at, b_at, ldb, c_at, ldc, depth, later)
                else:
                    _block_8(a_at, b_at, ldb, c_at, ldc, depth, later)
            j += width


def packed_rows(p: int) -> int:
    """P rounded up to a multiple of MR: the rows of a packed matrix (and of its C)."""
    return (p + MR - 1) // MR * MR


def pack_index(p, q, p_size, q_size):
    """Where A[p, q] of a [P, q_size] matrix sits in its packed form (p_size = P', see
    packed_rows)."""
    k0 = q // KC * KC
    depth = min(KC, q_size - k0)
    return k0 * p_size + (p // MR) * depth * MR + (q - k0) * MR + p % MR


def pack(m: np.ndarray) -> np.ndarray:
    """A [P, Q] matrix (or a stack [E, P, Q]) in packed form: [E, P' * Q] (zero rows added; for
    tests: the weight transforms write this layout directly)."""
    m = np.asarray(m)
    stack = m.reshape((-1,) + m.shape[-2:])
    e, p, q = stack.shape
    rows = packed_rows(p)
    padded = np.zeros((e, rows, q), m.dtype)
    padded[:, :p] = stack
    passes = []
    for k0 in range(0, q, KC):
        depth = min(KC, q - k0)
        block = padded[:, :, k0:k0 + depth].reshape(e, rows // MR, MR, depth)
        passes.append(block.transpose(0, 1, 3, 2).reshape(e, -1))
    return np.ascontiguousarray(np.concatenate(passes, axis=1))