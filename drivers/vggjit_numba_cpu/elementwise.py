"""ReLU forward and backward (the ReLUs that are not fused into a convolution).

Both take flat views of C-contiguous arrays; worker t of ``workers`` (threads.ThreadPlan.run)
streams through one contiguous share of them, its edges on 64-byte cache lines. They run on
the driver's workers, not as prange loops: inference runs the forward after fc6 and fc7, when
those workers are still awake from the layer before (handoff.py).
"""
from __future__ import annotations

from .handoff import share
from .kernel_cache import jit


@jit(parallel=False)
def relu_forward(t, x, y, workers):
    """y = max(x, 0) elementwise; NaN stays NaN (``x <= 0`` is false for NaN). x, y: 1-D views."""
    start, stop = share(x.shape[0], workers, t, 16)
    for i in range(start, stop):
        v = x[i]
        y[i] = 0.0 if v <= 0.0 else v


@jit(parallel=False)
def relu_backward(t, dy, x, dx, workers):
    """dx = dy where x > 0, else 0. x may be the ReLU's input or its output (both are > 0 at
    the same places). dy, x, dx: 1-D views of equal length."""
    start, stop = share(x.shape[0], workers, t, 16)
    for i in range(start, stop):
        g = dy[i]    # loaded unconditionally, so this is a vector select, not a branch
        dx[i] = g if x[i] > 0.0 else 0.0
