"""ReLU forward and backward (the ReLUs that are not fused into a convolution).

All take flat views of C-contiguous arrays and split them into one contiguous chunk per
prange iteration, so every worker streams through memory once.
"""
from __future__ import annotations

from numba import prange

from .kernel_cache import jit

#: elements per prange chunk: large enough that the parallel launch (~10 us) is amortised,
#: small enough that 2+ workers share a VGG activation (64x224x224 = 3.2 M elements).
CHUNK = 1 << 16


@jit
def relu_forward(x, y):
    """y = max(x, 0) elementwise; NaN stays NaN (``x <= 0`` is false for NaN). x, y: 1-D views."""
    n = x.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            v = x[i]
            y[i] = 0.0 if v <= 0.0 else v


@jit
def relu_backward(dy, x, dx):
    """dx = dy where x > 0, else 0. x may be the ReLU's input or its output (both are > 0 at
    the same places). dy, x, dx: 1-D views of equal length."""
    n = x.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            g = dy[i]    # loaded unconditionally, so this is a vector select, not a branch
            dx[i] = g if x[i] > 0.0 else 0.0
