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

import numpy as np

from .errors import InputError


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
    return np.ascontiguousarray(arr, dtype=np.float32)


def positive_int(name: str, value) -> int:
    if int(value) != value or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def nonnegative_int(name: str, value) -> int:
    if int(value) != value or value < 0:
        raise InputError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def conv_output_length(size: int, kernel: int, stride: int, pad: int) -> int:
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
    return conv_output_length(h, kh, stride, pad), conv_output_length(wd, kw, stride, pad)


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
    return conv_output_length(h, size, stride, 0), conv_output_length(w, size, stride, 0)


def linear_shapes(x: np.ndarray, w: np.ndarray) -> None:
    if x.shape[1] != w.shape[1]:
        raise InputError(f"linear: x has {x.shape[1]} features (shape {x.shape}) but the "
                         f"weights [out, in] expect {w.shape[1]} (w shape {w.shape})")
