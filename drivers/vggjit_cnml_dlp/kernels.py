"""Numba kernels of the emulator's hot loops: quantise + img2col, and rescale + bias (+ ReLU).

Each fuses several numpy passes into one. They are single-threaded (the GEMMs between them use
BLAS's threads), so they start no Numba thread pool and cannot disturb numba-cpu's. Compiled
on first use and cached beside this file (``__pycache__``) when it is writable.

fp16 rounding (:func:`round_fp16`) is done in float64 arithmetic: round to nearest, ties to
even, fp16 subnormals kept, overflow (|v| >= 65520) to inf, NaN kept - bit for bit what
``numpy.float16`` conversion gives (tests/test_cnml_emulator.py checks it on every fp16 value,
every midpoint between two and its neighbours, and random float32 bit patterns).
"""
from __future__ import annotations

import math

import numba
import numpy as np

_OPTIONS = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)
_SUBNORMAL = 2.0 ** -14   # smallest normal fp16
_TINY_ULP = 2.0 ** -24    # fp16 spacing below it
_OVERFLOW = 65520.0       # 65504 + half its ulp: from here on rounding gives inf
_SPLIT = 2.0 ** 42 + 1.0  # Veltkamp: 53 - 42 = 11 significant bits kept
_TINY_MAGIC = 1.5 * 2.0 ** 28  # its float64 spacing is 2**-24


@numba.njit(inline="always", **_OPTIONS)
def round_fp16(v):
    """The fp16 value nearest to float64 ``v`` (ties to even), as a float64.

    Normal range: Veltkamp's split with 2**42 + 1 keeps the leading 11 of float64's 53
    significand bits, rounded to nearest even by the hardware. Below 2**-14 fp16 has a fixed
    spacing 2**-24: adding and subtracting 1.5 * 2**28 rounds to it. No fast-math here: the
    compiler must not simplify ``t - (t - v)``.
    """
    a = abs(v)
    if a < _SUBNORMAL:
        return math.copysign((a + _TINY_MAGIC) - _TINY_MAGIC, v)  # keeps -0.0
    if a < _OVERFLOW:
        t = v * _SPLIT
        return t - (t - v)
    if a != a:
        return v
    return math.copysign(math.inf, v)


@numba.njit(inline="always", **_OPTIONS)
def quantize_one(v, factor):
    """int8 code of ``v``: clamp(round_half_away(v * factor), -128, 127), as float32."""
    t = v * factor
    a = abs(t)
    f = math.floor(a)
    if a - f >= 0.5:
        f += 1.0
    if t < 0:
        return np.float32(-128.0 if f > 128.0 else -f)
    return np.float32(127.0 if f > 127.0 else f)


@numba.njit(**_OPTIONS)
def fp16_array(x, out):
    """out[...] = fp16(x) for C-contiguous float32 / float64 arrays of one shape."""
    src = x.reshape(-1)
    dst = out.reshape(-1)
    for i in range(src.size):
        dst[i] = round_fp16(np.float64(src[i]))


@numba.njit(**_OPTIONS)
def quantize_pad(x, factor, pad, out):
    """x [C, H, W] -> int8 codes (float32) in out [C, H + 2 pad, W + 2 pad], zeros around."""
    c_, h, w = x.shape
    out[:] = 0.0
    for c in range(c_):
        for i in range(h):
            for j in range(w):
                out[c, i + pad, j + pad] = quantize_one(np.float64(x[c, i, j]), factor)


@numba.njit(**_OPTIONS)
def img2col_padded(xp, k, stride, hout, wout, cols):
    """Padded xp [C, Hp, Wp] -> cols [C*k*k, hout*wout] (rows ordered c, kh, kw)."""
    c_ = xp.shape[0]
    for c in range(c_):
        for kh in range(k):
            for kw in range(k):
                row = (c * k + kh) * k + kw
                dst = cols[row]
                for i in range(hout):
                    src = xp[c, i * stride + kh]
                    base = i * wout
                    if stride == 1:  # contiguous: a vectorised copy
                        for j in range(wout):
                            dst[base + j] = src[j + kw]
                    else:
                        for j in range(wout):
                            dst[base + j] = src[j * stride + kw]


@numba.njit(**_OPTIONS)
def rescale(acc, step, bias16, relu, out):
    """out[m, p] = fp16(fp16(acc[m, p] * step) + bias16[m]), then max(., 0) when ``relu``.

    acc: [M, P] exact integer sums (float32 or float64); bias16: [M] fp16 values. The fp16 sum
    of two fp16 values is exact in float64 before its one rounding.
    """
    m_, p_ = acc.shape
    for m in range(m_):
        b = np.float64(bias16[m])
        for p in range(p_):
            y = round_fp16(round_fp16(np.float64(acc[m, p]) * step) + b)
            if relu and y < 0.0:
                y = 0.0
            out[m, p] = y
