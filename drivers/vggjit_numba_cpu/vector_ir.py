"""Vector kernels written as LLVM IR, called from Numba: the loop skeleton and helpers of the
Winograd tile transforms (winograd_tiles.py) and the 2x2 max pooling backward (pool.py), and
the intrinsics that call them.

Why IR at all: Numba's loops vectorise only simple loops of a few load streams, pick 8-float
vectors on AVX-512, and cannot keep a dozen vector accumulators or a tile's intermediate rows
in registers (docs/design-notes.md, notes 18 and 19). A kernel here is one LLVM function of
plain addresses (i64) and counts, defined once per module, whose loop steps LANES elements at
a time with masked loads and stores at the edges.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .microkernel import compiles_for_avx512

#: elements per vector: an AVX-512 register; elsewhere 8, an AVX2 register (16 needed twice the
#: registers there: F(4x4)'s input transform spilled and was 1.1x slower than the Numba loops
#: it replaced on 64-128 channels)
LANES = 16 if compiles_for_avx512() else 8

F32 = ir.FloatType()
I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
VEC = ir.VectorType(F32, LANES)
IVEC = ir.VectorType(I64, LANES)
BVEC = ir.VectorType(I1, LANES)
#: let LLVM fuse a multiply and an add into an FMA, as the project's fastmath set does
FLAGS = ("contract",)


class Loop:
    """The shape every kernel shares: a function of i64 (and float) arguments whose body runs for
    k = 0, LANES, 2*LANES, ... < count, with helpers for vectors, masked memory access and
    arithmetic. ``defined``: the module already has the function (then build nothing)."""

    def __init__(self, module: ir.Module, name: str, nargs: int, floats: int = 0):
        fnty = ir.FunctionType(ir.VoidType(), [I64] * nargs + [F32] * floats)
        self.fn = cgutils.get_or_insert_function(module, fnty, name)
        self.defined = not self.fn.is_declaration
        if self.defined:
            return
        self.fn.linkage = "internal"
        self.module = module
        self.args = self.fn.args
        self._entry, self._body, self._done = (self.fn.append_basic_block(n)
                                               for n in ("entry", "body", "done"))
        self.b = ir.IRBuilder(self._entry)
        vptr = VEC.as_pointer()
        self._load = cgutils.get_or_insert_function(
            module, ir.FunctionType(VEC, [vptr, I32, BVEC, VEC]),
            f"llvm.masked.load.v{LANES}f32.p0v{LANES}f32")
        self._store = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [VEC, vptr, I32, BVEC]),
            f"llvm.masked.store.v{LANES}f32.p0v{LANES}f32")

    def start(self, count) -> ir.Value:
        """Open the loop over k < count (skipped when count <= 0); returns k."""
        b = self.b
        self._count = count
        b.cbranch(b.icmp_signed(">", count, self.i64(0)), self._body, self._done)
        b.position_at_end(self._body)
        self._k = b.phi(I64)
        self._k.add_incoming(self.i64(0), self._entry)
        return self._k

    def finish(self) -> ir.Function:
        b = self.b
        k_next = b.add(self._k, self.i64(LANES))
        self._k.add_incoming(k_next, b.block)
        b.cbranch(b.icmp_signed("<", k_next, self._count), self._body, self._done)
        b.position_at_end(self._done)
        b.ret_void()
        return self.fn

    # -- values
    @staticmethod
    def i64(value: int) -> ir.Constant:
        return ir.Constant(I64, value)

    @staticmethod
    def const(value: float) -> ir.Constant:
        return ir.Constant(VEC, [value] * LANES)

    def splat(self, value: ir.Value, vector: ir.VectorType = IVEC) -> ir.Value:
        b = self.b
        first = b.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(I32, 0))
        return b.shuffle_vector(first, ir.Constant(vector, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, LANES), [0] * LANES))

    def below(self, start: ir.Value, limit: ir.Value) -> ir.Value:
        """The lane mask start + lane < limit."""
        lanes = self.b.add(self.splat(start), ir.Constant(IVEC, list(range(LANES))))
        return self.b.icmp_signed("<", lanes, self.splat(limit))

    def within(self, start: ir.Value, limit: ir.Value) -> ir.Value:
        """The lane mask 0 <= start + lane < limit."""
        return self.b.and_(self.b.not_(self.below(start, self.i64(0))), self.below(start, limit))

    def shuffle(self, a: ir.Value, b: ir.Value, picks: list) -> ir.Value:
        return self.b.shuffle_vector(a, b, ir.Constant(ir.VectorType(I32, len(picks)), picks))

    # -- memory: float pointer + element offset, LANES floats, lanes outside ``mask`` untouched
    def pointer(self, address: ir.Value) -> ir.Value:
        return self.b.inttoptr(address, F32.as_pointer())

    def load(self, base: ir.Value, offset: ir.Value, mask: ir.Value) -> ir.Value:
        at = self.b.bitcast(self.b.gep(base, [offset]), VEC.as_pointer())
        return self.b.call(self._load, [at, ir.Constant(I32, 4), mask, self.const(0.0)])

    def store(self, value: ir.Value, base: ir.Value, offset: ir.Value, mask: ir.Value):
        at = self.b.bitcast(self.b.gep(base, [offset]), VEC.as_pointer())
        self.b.call(self._store, [value, at, ir.Constant(I32, 4), mask])

    def load_gated(self, base: ir.Value, gate: ir.Value, offset: ir.Value, mask: ir.Value,
                   gated: bool) -> ir.Value:
        """load(base, offset, mask), read as 0 where gate (at the same offset) is <= 0 or NaN
        when ``gated``: an input read through the forward ReLU's output (the ReLU backward)."""
        value = self.load(base, offset, mask)
        if not gated:
            return value
        open_ = self.b.fcmp_ordered(">", self.load(gate, offset, mask), self.const(0.0))
        return self.b.select(open_, value, self.const(0.0))

    def store_interleaved(self, vectors: list, base: ir.Value, start: ir.Value,
                          limit: ir.Value, mask: ir.Value | None = None):
        """Two or four vectors a, b (c, d) stored interleaved, a0 b0 (c0 d0) a1 b1 ..., from
        base[start]: elements at or past base[limit], and all of them where ``mask`` is false,
        are left untouched. The shuffles that write whole rows of outputs kept as 2 or 4
        vectors (an output tile's columns, a pooling window's two inputs)."""
        b = self.b
        pairs = [k // 2 + LANES * (k % 2) for k in range(2 * LANES)]          # a0 b0 a1 b1
        row = [self.shuffle(vectors[i], vectors[i + 1], pairs)
               for i in range(0, len(vectors), 2)]
        if len(row) == 2:
            quads = [2 * (k // 4) + k % 4 + (0 if k % 4 < 2 else 2 * LANES - 2)
                     for k in range(4 * LANES)]                               # a0 b0 c0 d0
            row = [self.shuffle(row[0], row[1], quads)]
        for q in range(len(vectors)):
            at = b.add(start, self.i64(LANES * q))
            part = self.shuffle(row[0], row[0], list(range(LANES * q, LANES * (q + 1))))
            inside = self.below(at, limit)
            self.store(part, base, at, inside if mask is None else b.and_(mask, inside))

    # -- arithmetic
    def add(self, x, y):
        return self.b.fadd(x, y, flags=FLAGS)

    def sub(self, x, y):
        return self.b.fsub(x, y, flags=FLAGS)

    def scale(self, c: float, x):
        return self.b.fmul(self.const(c), x, flags=FLAGS)

    def clamp(self, value, bias, floor):
        """max(floor, value + bias), NaN kept: a fused bias and ReLU (floor 0, or -inf for
        none)."""
        value = self.b.fadd(value, bias)
        return self.b.select(self.b.fcmp_ordered("<=", value, floor), floor, value)


def _codegen(define, argtypes):
    """The codegen of an intrinsic calling define(module)'s function with ``argtypes``."""

    def codegen(context, builder, signature, values):
        fn = define(builder.module)
        builder.call(fn, [context.cast(builder, v, t, t if t == types.float32 else types.int64)
                          for v, t in zip(values, argtypes)])
        return context.get_dummy_value()

    return codegen


def intrinsic_call(define, argtypes):
    """A Numba intrinsic calling define(module)'s LLVM function with arguments of ``argtypes``
    (ADDR, INT or FLOAT). Numba's intrinsics take no ``*args``, so the function is written out
    with one parameter per argument."""
    params = ", ".join(f"a{i}" for i in range(len(argtypes)))
    namespace = {"signature": types.void(*argtypes), "codegen": _codegen(define, argtypes)}
    exec(f"def call(typingctx, {params}):\n    return signature, codegen", namespace)
    return intrinsic(namespace["call"])


ADDR, INT, FLOAT = types.uint64, types.int64, types.float32
