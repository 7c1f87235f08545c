"""Argument checks shared by every driver, so that all of them reject bad input alike.

The :class:`vggjit.contract.Driver` base class calls these before handing arrays to a driver's
kernel; a driver therefore receives float32, C-contiguous arrays of consistent shapes and never
has to validate anything itself.

NaN policy: inputs are *not* scanned for NaN or Inf (that would cost a full pass over every
activation). Non-finite values propagate through conv, linear, ReLU (NaN stays NaN), pooling and
softmax as IEEE arithmetic makes them; which element max-pooling picks in a window that contains
NaN is driver-defined. The style-transfer loop checks its loss and stops on the first non-finite
value.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .errors import InputError
from .memory import ALWAYS_FITS, ENV_LIMIT, check_fits

#: Largest stride, padding or window size an op accepts: every kernel indexes with int32-safe
#: arithmetic, and anything larger could only describe an array no machine holds.
MAX_INDEX = 2**31 - 1


def as_float32(name: str, a, ndim: int | tuple[int, ...]) -> np.ndarray:
    """Return ``a`` as a C-contiguous float32 array (no copy when it already is one).

    Raises InputError for a non-array, a non-floating dtype or the wrong number of axes.
    """
    arr = np.asarray(a)
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{name} must be a floating-point array, got dtype {arr.dtype} "
                         f"with shape {arr.shape}")
    wanted = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in wanted:
        names = " or ".join(f"{d}-D" for d in wanted)
        raise InputError(f"{name} must be {names}, got shape {arr.shape}")
    if arr.size == 0:
        # the same answer from every driver, rather than whatever each kernel's loop bounds,
        # divisions by the batch size or BLAS calls with a zero dimension would do
        raise InputError(f"{name} is empty (shape {arr.shape}): every axis must have at "
                         f"least one element")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _integer(name: str, value, minimum: int, wording: str) -> int:
    """``value`` as an int in ``minimum .. MAX_INDEX``; InputError for anything else (None,
    strings, inf, NaN, 2.5, 2**63)."""
    if isinstance(value, (bool, np.bool_)):  # True is an int to Python, not a stride
        raise InputError(f"{name} must be a {wording} integer, got {value!r}")
    try:
        as_int = int(value)
        exact = as_int == value
    except (TypeError, ValueError, OverflowError):
        exact = False
    if not exact or isinstance(value, (str, bytes)) or not minimum <= as_int <= MAX_INDEX:
        raise InputError(f"{name} must be a {wording} integer no larger than {MAX_INDEX}, "
                         f"got {value!r}")
    return as_int


def positive_int(name: str, value) -> int:
    return _integer(name, value, 1, "positive")


def nonnegative_int(name: str, value) -> int:
    return _integer(name, value, 0, "non-negative")


def shape_tuple(name: str, shape, ndim: int) -> tuple[int, ...]:
    """A shape argument (``x_shape`` of a backward op) as ``ndim`` positive ints."""
    try:
        entries = tuple(shape)
    except TypeError:
        raise InputError(f"{name} must be a tuple of {ndim} positive integers, "
                         f"got {shape!r}") from None
    if len(entries) != ndim:
        raise InputError(f"{name} must have {ndim} entries, got {entries}")
    return tuple(positive_int(f"{name}[{i}]", s) for i, s in enumerate(entries))


def fits_in_memory(op: str, *shapes: tuple[int, ...], itemsize: int = 4) -> None:
    """Refuse an op whose new arrays (``shapes``: outputs and padded copies) exceed the memory
    budget. The estimate is float32 (what the contract returns); Python ints keep the product
    exact for any declared shape, however absurd."""
    nbytes = itemsize * sum(map(math.prod, shapes))  # Python ints: exact for any shape
    if nbytes >= ALWAYS_FITS or os.environ.get(ENV_LIMIT):  # the message only when needed
        check_fits(nbytes, f"{op} on these shapes "
                           f"({', '.join(str(tuple(s)) for s in shapes)})")


def output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """floor((size + 2 pad - kernel) / stride) + 1, the output length along one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def conv_shapes(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> tuple[int, int]:
    """Check a convolution's operands; return (Hout, Wout).

    x: [N, Cin, H, W]; w: [Cout, Cin, K, K].
    """
    n, cin, h, wd = x.shape
    cout, wcin, kh, kw = w.shape
    if wcin != cin:
        raise InputError(f"conv2d: input has {cin} channels (x shape {x.shape}) but the weights "
                         f"expect {wcin} (w shape {w.shape}, OIHW)")
    if kh != kw:
        raise InputError(f"conv2d: only square kernels are supported, got w shape {w.shape}")
    if h + 2 * pad < kh or wd + 2 * pad < kw:
        raise InputError(f"conv2d: kernel {kh}x{kw} is larger than the padded input "
                         f"{h + 2 * pad}x{wd + 2 * pad} (x shape {x.shape}, pad {pad})")
    hout, wout = output_size(h, kh, stride, pad), output_size(wd, kw, stride, pad)
    fits_in_memory("conv2d", (n, cout, hout, wout), (n, cin, h + 2 * pad, wd + 2 * pad))
    return hout, wout


def conv_bias(b, cout: int, w_shape) -> np.ndarray:
    b = as_float32("conv2d bias", b, 1)
    if b.shape != (cout,):
        raise InputError(f"conv2d: bias shape {b.shape} does not match {cout} output channels "
                         f"(w shape {tuple(w_shape)})")
    return b


def expect_shape(name: str, a: np.ndarray, shape: tuple[int, ...], context: str) -> None:
    if tuple(a.shape) != tuple(shape):
        raise InputError(f"{name} has shape {a.shape}, expected {tuple(shape)} ({context})")


def pool_shapes(x: np.ndarray, size: int, stride: int) -> tuple[int, int]:
    """Check a pooling window against x [N, C, H, W]; return (Hout, Wout) with floor rounding."""
    h, w = x.shape[2], x.shape[3]
    if size > h or size > w:
        raise InputError(f"pooling window {size}x{size} is larger than the input "
                         f"{h}x{w} (x shape {x.shape})")
    hout, wout = output_size(h, size, stride, 0), output_size(w, size, stride, 0)
    fits_in_memory("pooling", x.shape[:2] + (hout, wout))
    return hout, wout


def linear_shapes(x: np.ndarray, w: np.ndarray) -> None:
    if x.shape[1] != w.shape[1]:
        raise InputError(f"linear: x has {x.shape[1]} features (shape {x.shape}) but the "
                         f"weights [out, in] expect {w.shape[1]} (w shape {w.shape})")
