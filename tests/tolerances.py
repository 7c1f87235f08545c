"""The one tolerance table of the test suite: how far a driver's op may be from the naive
float64 oracle, and the check that applies it.

Every test that compares a driver with the oracle (the conformance suite, the numba-cpu
driver's own tests of its tiling and kernels) reads its bound from here, so a bound is argued
once, next to its reason, and no test can quietly loosen it.

The bound is on max |got - want| relative to max(max |want|, 1e-3): the scale of the output,
so that a result near zero is not judged by a relative error it cannot have.
"""
from __future__ import annotations

import numpy as np

#: {tolerance class: {op: bound}}. A driver declares its class with a ``tolerance_class``
#: attribute (default "float32"); an op missing from its class is one the driver makes no
#: accuracy promise for (the test is skipped, saying so).
TOLERANCES = {
    "float32": {
        # float32 accumulation over up to Cin*K*K = 1152 terms (VGG-shaped cases; N*H*W for
        # dw), against a float64 oracle: a few hundred ulps of the largest output is the honest
        # bound. The same bound covers every convolution path of numba-cpu: img2col, shifted
        # rows and the Cout split sum the same products in another order, and Winograd
        # F(2x2, 3x3)'s transforms add a handful of float32 roundings of values within 4x of
        # the inputs' (G's and B's entries are 0, +-1/2, +-1), well inside it. F(4x4, 3x3)
        # does not fit it: see PATH_TOLERANCES.
        "conv2d": 2e-5, "conv2d_backward": 2e-5, "linear": 2e-5, "linear_backward": 2e-5,
        "gram": 2e-5,
        # Sums of C products per output (C <= 512 in VGG), like the Gram's own.
        "gram_backward": 2e-5,
        # Selection and masking are exact.
        "relu": 0.0, "relu_backward": 0.0, "max_pool2d": 0.0,
        # Overlapping windows (stride < size) add up to 4 routed gradients per input in
        # float32, and averaging sums up to 9 terms: a few ulps, not exact.
        "max_pool2d_backward": 1e-6, "avg_pool2d": 1e-6, "avg_pool2d_backward": 1e-6,
        "softmax": 1e-6,
    },
    "int8": {
        # Per-tensor int8 quantisation of both operands: each carries up to half a step
        # (1/254 of its absmax); summed over the window the output error stays within a few
        # percent of the output's range, then the result is rounded to fp16.
        "conv2d": 6e-2, "linear": 6e-2, "gram": 6e-2,
        # fp16 activations: 11 significant bits, so relative error 2^-11 ~ 4.9e-4.
        "relu": 1e-3, "max_pool2d": 1e-3, "avg_pool2d": 1e-3, "softmax": 2e-3,
    },
}


#: {path: {op: bound}}: looser bounds for a computation path that a driver says it may take
#: (its ``accuracy_paths``), over its class's bound for the ops that path serves.
PATH_TOLERANCES = {
    # numba-cpu's Winograd F(4x4, 3x3) (drivers/vggjit_numba_cpu/winograd4.py): its transforms
    # have entries up to 5 (B^T) and down to 1/8 (A^T), so a transformed input is up to ~144x
    # the inputs before the 36 products are summed in float32; measured against the float64
    # oracle on VGG19's layer shapes (64..512 channels, 56..14 px, He-normal weights, normal
    # and ReLU'd inputs): up to 1.2e-5 forward and 1.6e-5 dx, against 5-7e-7 for img2col and
    # F(2x2). The bound leaves 2.5x of that.
    "winograd4": {"conv2d": 4e-5, "conv2d_backward": 4e-5},
}


def tolerance(driver, op: str) -> float | None:
    """The bound for ``op`` of ``driver``, or None when its class makes no promise for it:
    its class's bound, loosened by PATH_TOLERANCES for each path in the driver's
    ``accuracy_paths``."""
    bound = TOLERANCES[getattr(driver, "tolerance_class", "float32")].get(op)
    if bound is None:
        return None
    for path in getattr(driver, "accuracy_paths", ()):
        bound = max(bound, PATH_TOLERANCES.get(path, {}).get(op, bound))
    return bound


def assert_close(got, want, tol: float, what: str) -> None:
    """max |got - want| <= tol * max(max |want|, 1e-3), same shapes, and got all finite."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-3)
    err = float(np.abs(got - want).max(initial=0.0))
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} x scale {scale:.3g}"
