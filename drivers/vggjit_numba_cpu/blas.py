"""Single-threaded sgemm (and ssyrk, for the Gram matrices) callable from inside Numba
kernels, on the BLAS that NumPy uses.

Why not Numba's own ``np.dot``: it needs whole contiguous matrices (our tiles are sub-matrices
of y and dy with a leading dimension), cannot accumulate (beta = 1), and goes to SciPy's BLAS,
which is not the library the ceiling is measured with: on this machine NumPy's OpenBLAS 0.3.31
ran our tile shapes up to 25% faster than SciPy's 0.3.30 (conv1_2's thin products), about
the same on the deep layers.

So kernels call the Fortran-ABI ``sgemm`` through a function pointer found at run time:

1. NumPy's BLAS, when threadpoolctl shows it as a library of its own and it exports an
   unambiguous ILP64 symbol (``scipy_sgemm_64_``, ``sgemm_64_``: 64-bit integers), else
2. ``scipy.linalg.cython_blas.sgemm`` (always 32-bit integers), which works everywhere SciPy
   does. ``find_sgemm(prefer=...)`` (driver option ``blas=``) can force either.

The address is an argument of the kernels, not a constant baked into them, so compiled kernels
stay cacheable and the choice can change between processes.
"""
from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .kernel_cache import jit

#: NumPy-BLAS symbols whose integer width is certain (64-bit), in order of preference.
_ILP64_SYMBOLS = ("scipy_sgemm_64_", "sgemm_64_", "sgemm64_", "scipy_sgemm64_")

TRANS_N, TRANS_T = 0, 1


def _address_call(args):
    """(signature, codegen) of an intrinsic that calls the function at address ``args[0]``
    with ``args[1:]`` as pointer arguments, all given as integers; None for other types."""
    if not all(isinstance(t, types.Integer) for t in args):
        return None
    count = len(args) - 1

    def codegen(context, builder, signature, llargs):
        ptr = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [ptr] * count)
        values = [context.cast(builder, v, t, types.uintp) for v, t in zip(llargs, signature.args)]
        target = builder.inttoptr(values[0], fnty.as_pointer())
        builder.call(target, [builder.inttoptr(v, ptr) for v in values[1:]])
        return context.get_dummy_value()

    return types.void(*args), codegen


@intrinsic
def _call_sgemm(typingctx, fn, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13):
    """Call the function at address ``fn`` with 13 pointer arguments given as integers."""
    return _address_call((fn, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13))


#: a read-only float32 vector (weights or inputs that live in a read-only buffer: an ONNX
#: tensor, np.frombuffer, a memory map opened read-only)
READONLY_F32 = types.Array(types.float32, 1, "C", readonly=True)


# Explicit signatures (compiled at import): callers pass offsets as int64 expressions or as
# the literal 0, which would otherwise be two specialisations, and the warm-up's helper process
# (warmup.py) finds them compiled instead of compiling them a second time. A read-only array
# is a type of its own to Numba, and without its signature such an operand failed to type.
@jit([types.uint64(types.float32[::1], types.int64), types.uint64(READONLY_F32, types.int64)],
     parallel=False)
def address(a, offset):
    """Address of element ``offset`` of the (flat, float32) array ``a``, as uint64."""
    return a.ctypes.data + np.uint64(offset) * np.uint64(4)


#: the ``blas`` tuple of Sgemm.kernel_args: (sgemm address, "NT" characters, (alpha, beta)
#: constants, one row of integer scratch per worker)
BLAS_ARGS = types.Tuple((types.uint64, types.uint8[::1], types.float32[::1],
                         types.int64[:, ::1]))


# One explicit signature: every call site converts its integers to it, so sgemm is compiled
# once, not once per combination of int64 / uint64 arguments (14 of them, 8 s of a cold start).
@jit(types.void(BLAS_ARGS, *([types.int64] * 6), types.uint64, types.int64, types.uint64,
                types.int64, types.int64, types.uint64, types.int64), parallel=False)
def sgemm(blas, worker, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """Row-major C[m, n] = op(A) op(B) + beta C with one single-threaded BLAS call.

    blas: the tuple from ``Sgemm.kernel_args``; worker: this worker's index (its own row of
    the integer scratch); ta, tb: TRANS_N or TRANS_T; a, b, c: addresses of the first element
    of each matrix (see ``address``), lda/ldb/ldc their row strides in elements; beta: 0 or 1.
    Fortran BLAS is column-major and sees a row-major matrix as its transpose, so we ask for
    C^T = op(B)^T op(A)^T: the operands swap, the flags stay.
    """
    fn, chars, consts, ints = blas
    ints[worker, 0] = n
    ints[worker, 1] = m
    ints[worker, 2] = k
    ints[worker, 3] = ldb
    ints[worker, 4] = lda
    ints[worker, 5] = ldc
    size = np.uint64(ints.itemsize)
    ip = ints.ctypes.data + np.uint64(worker) * np.uint64(ints.shape[1]) * size
    cp = chars.ctypes.data
    kp = consts.ctypes.data
    _call_sgemm(fn, cp + np.uint64(tb), cp + np.uint64(ta), ip, ip + size,
                ip + np.uint64(2) * size, kp, b, ip + np.uint64(3) * size, a,
                ip + np.uint64(4) * size, kp + np.uint64(4) * np.uint64(1 - beta), c,
                ip + np.uint64(5) * size)


@dataclass(frozen=True)
class Sgemm:
    """A Fortran-ABI sgemm: where it is, its integer width, and which library it is in."""

    address: int
    int_dtype: type
    library: str        # file path of the shared library ("" when unknown)
    symbol: str

    def kernel_args(self, workers: int):
        """The ``blas`` tuple a kernel passes to ``sgemm`` (fresh scratch per call).

        The integer scratch is int64 for both ABIs, so the kernels compile once for both: a
        32-bit sgemm reads the low half of each int64, which on a little-endian machine is
        the first four bytes, where it looks (find_sgemm refuses a big-endian one)."""
        return (np.uint64(self.address), _CHARS, _CONSTS,
                np.zeros((max(1, workers), 8), np.int64))

    def describe(self) -> str:
        bits = 64 if self.int_dtype == np.int64 else 32
        return f"{self.symbol} ({bits}-bit ints) in {self.library or 'unknown library'}"


_CHARS = np.array([ord("N"), ord("T")], np.uint8)
_CONSTS = np.array([1.0, 0.0], np.float32)      # alpha = 1; beta = consts[1 - beta]


def _blas_libraries() -> list:
    from threadpoolctl import ThreadpoolController
    return [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]


def _inside(path: str, package_dir: str) -> bool:
    parent = os.path.dirname(os.path.realpath(package_dir))
    name = os.path.basename(package_dir)
    real = os.path.realpath(path)
    return real.startswith(os.path.realpath(package_dir) + os.sep) or real.startswith(
        os.path.join(parent, name + ".libs") + os.sep) or real.startswith(
        os.path.join(parent, "." + name + ".mesonpy.libs") + os.sep)


def _numpy_sgemm() -> Sgemm | None:
    numpy_dir = str(Path(np.__file__).resolve().parent)
    for lib in _blas_libraries():
        if not _inside(lib.filepath, numpy_dir):
            continue
        try:
            handle = ctypes.CDLL(lib.filepath)
        except OSError:
            continue
        for symbol in _ILP64_SYMBOLS:
            fn = getattr(handle, symbol, None)
            if fn is not None:
                return Sgemm(ctypes.cast(fn, ctypes.c_void_p).value, np.int64, lib.filepath,
                             symbol)
    return None


def _scipy_sgemm() -> Sgemm:
    import scipy

    pointer = _cython_blas_address("sgemm")
    scipy_dir = str(Path(scipy.__file__).resolve().parent)
    libs = _blas_libraries()
    mine = [lib.filepath for lib in libs if _inside(lib.filepath, scipy_dir)]
    library = mine[0] if mine else (libs[0].filepath if len(libs) == 1 else "")
    return Sgemm(pointer, np.int32, library, "scipy.linalg.cython_blas.sgemm")


def find_sgemm(prefer: str = "auto") -> Sgemm:
    """The sgemm kernels call: "auto" (NumPy's if usable, else SciPy's), "numpy" or "scipy"."""
    if prefer not in ("auto", "numpy", "scipy"):
        raise ValueError(f"blas must be 'auto', 'numpy' or 'scipy', got {prefer!r}")
    if prefer in ("auto", "numpy"):
        found = _numpy_sgemm()
        if found is not None:
            return found
        if prefer == "numpy":
            raise ValueError("NumPy's BLAS exports no sgemm with a known integer width here; "
                             "use blas='scipy' or 'auto'")
    return _scipy_sgemm()


# -- ssyrk: the symmetric rank-k update (C = A A^T, one triangle), for the Gram matrices -------
@intrinsic
def _call_ssyrk(typingctx, fn, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10):
    """Call the function at address ``fn`` with 10 pointer arguments given as integers."""
    return _address_call((fn, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10))


@jit(types.void(BLAS_ARGS, types.int64, types.int64, types.int64, types.uint64, types.int64,
                types.uint64, types.int64), parallel=False)
def ssyrk(blas, worker, n, k, a, lda, c, ldc):
    """Row-major upper triangle of C[n, n] = A A^T, A [n, k], with one single-threaded call.

    blas: the tuple from ``Ssyrk.kernel_args``; a, c: addresses (see ``address``), lda/ldc
    their row strides in elements. The strictly lower triangle of C is left as it was. Fortran
    sees row-major A as the column-major k x n matrix A^T, so we ask for its lower triangle of
    (A^T)^T (A^T) (uplo "L", trans "T"), which is the row-major upper one.
    """
    fn, chars, consts, ints = blas
    ints[worker, 0] = n
    ints[worker, 1] = k
    ints[worker, 2] = lda
    ints[worker, 3] = ldc
    size = np.uint64(ints.itemsize)
    ip = ints.ctypes.data + np.uint64(worker) * np.uint64(ints.shape[1]) * size
    cp = chars.ctypes.data
    kp = consts.ctypes.data
    _call_ssyrk(fn, cp, cp + np.uint64(1), ip, ip + size, kp, a, ip + np.uint64(2) * size,
                kp + np.uint64(4), c, ip + np.uint64(3) * size)


_SYRK_CHARS = np.array([ord("L"), ord("T")], np.uint8)


@dataclass(frozen=True)
class Ssyrk:
    """A Fortran-ABI ssyrk from the same library (and integer width) as an ``Sgemm``."""

    address: int
    int_dtype: type
    symbol: str

    def kernel_args(self, workers: int):
        """The ``blas`` tuple a kernel passes to ``ssyrk``: the same layout as
        ``Sgemm.kernel_args`` (so the same int64 scratch serves both ABIs)."""
        return (np.uint64(self.address), _SYRK_CHARS, _CONSTS,
                np.zeros((max(1, workers), 8), np.int64))


def find_ssyrk(gemm: Sgemm) -> Ssyrk:
    """The ssyrk beside ``gemm``: the same library's (same integer width) when it exports one
    under the matching name, else SciPy's ``cython_blas.ssyrk``."""
    if not gemm.symbol.startswith("scipy.linalg.cython_blas"):
        try:
            fn = getattr(ctypes.CDLL(gemm.library), gemm.symbol.replace("sgemm", "ssyrk"), None)
        except OSError:
            fn = None
        if fn is not None:
            return Ssyrk(ctypes.cast(fn, ctypes.c_void_p).value, gemm.int_dtype,
                         gemm.symbol.replace("sgemm", "ssyrk"))
    return Ssyrk(_cython_blas_address("ssyrk"), np.int32, "scipy.linalg.cython_blas.ssyrk")


def _cython_blas_address(name: str) -> int:
    """Address of SciPy's ``cython_blas`` function ``name`` (32-bit integers, little-endian
    only: see Sgemm.kernel_args)."""
    import scipy.linalg.cython_blas as cython_blas

    if sys.byteorder != "little":
        raise ValueError(f"SciPy's {name} takes 32-bit integers, which this driver passes as "
                         "the low half of 64-bit ones: big-endian machines are not supported")
    capsule = cython_blas.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object,
                                                                  ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))
