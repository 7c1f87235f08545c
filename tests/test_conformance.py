"""Every available driver against the naive oracle, op by op, on shapes that expose mistakes.

A driver is tested by nothing more than being installed: the driver list comes from the
registry. The grids use odd, non-square sizes, strides, paddings, kernel sizes, channel counts
and batch sizes so that a transposed axis or an off-by-one cannot hide, plus all-zero, constant
and negative inputs and exact ties for max pooling.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from conftest import available_drivers
from tolerances import assert_close, tolerance

from vggjit import get_driver
from vggjit.contract import BACKWARD
from vggjit.errors import InputError
from vggjit.registry import list_drivers

REFERENCE = "naive"
DRIVERS = available_drivers()


def _targets() -> list[tuple[str, str | None]]:
    """(driver, variant) under test: every available driver but the reference, with its default
    options (variant None) and with each option set its record declares
    (vggjit.contract.DriverRecord.variants)."""
    records = {r.name: r for r in list_drivers()}
    return [(name, variant) for name in DRIVERS if name != REFERENCE
            for variant in (None, *records[name].variants)]


TARGETS = _targets()


def _target_id(target) -> str:
    name, variant = target
    return name if variant is None else f"{name}[{variant}]"


@functools.lru_cache(maxsize=None)
def _driver(name, variant=None):
    """One driver per (name, variant) for the whole session (a variant's driver is built with
    its options, which get_driver does not reuse)."""
    if variant is None:
        return get_driver(name)
    options = {r.name: r for r in list_drivers()}[name].variants[variant]
    return get_driver(name, **options)


def _tolerance(driver, op: str) -> float:
    tol = tolerance(driver, op)
    if tol is None:
        pytest.skip(f"{driver.name} makes no accuracy promise for {op}")
    return tol


def _array(rng, shape, kind: str = "normal") -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(shape).astype(np.float32)
    if kind == "zero":
        return np.zeros(shape, np.float32)
    if kind == "constant":
        return np.full(shape, 1.5, np.float32)
    if kind == "negative":
        return -np.abs(rng.standard_normal(shape)).astype(np.float32) - 0.1
    if kind == "ties":  # few distinct values: max-pool windows hold exact ties
        return rng.integers(-1, 2, shape).astype(np.float32)
    raise ValueError(kind)


# -- convolution grid -------------------------------------------------------------------------
# Every geometry (size x kernel x stride x pad) meets a rotating channel/batch combination, and
# every channel/batch combination runs once on an odd geometry: 72 cases per target.
SIZES = [(9, 10), (13, 7)]
KERNELS, STRIDES, PADS = [1, 3, 5], [1, 2, 3], [0, 1, 2]
CHANNELS = list(itertools.product([1, 2], [1, 3, 5], [1, 4, 7]))  # (N, Cin, Cout)
GEOMETRIES = list(itertools.product(SIZES, KERNELS, STRIDES, PADS))
CONV_CASES = ([(g, CHANNELS[i % len(CHANNELS)]) for i, g in enumerate(GEOMETRIES)]
              + [(((11, 6), 3, 2, 1), c) for c in CHANNELS])
# VGG19's layers (3x3, stride 1, pad 1; the channels double as the side halves, from conv1_1
# with 3 input channels at 224 to conv5_x with 512 at 14), channels and sides divided by 4 to 8
# so that the float64 oracle stays fast: every convolution path meets VGG's long dot products
# (up to 128*9 terms), odd sides and batch 2.
VGG_CASES = [(((32, 32), 3, 1, 1), (1, 3, 16)),      # conv1_1
             (((32, 32), 3, 1, 1), (1, 16, 16)),     # conv1_2
             (((16, 16), 3, 1, 1), (1, 16, 32)),     # conv2_1
             (((8, 8), 3, 1, 1), (2, 32, 64)),       # conv3_1, batch 2
             (((7, 7), 3, 1, 1), (1, 64, 64)),       # conv4_x at an odd side
             (((3, 3), 3, 1, 1), (1, 128, 128))]     # conv5_x: few output pixels


def _conv_id(case):
    ((h, w), k, s, p), (n, cin, cout) = case
    return f"n{n}c{cin}o{cout}-{h}x{w}-k{k}s{s}p{p}"


@functools.lru_cache(maxsize=None)
def _conv_reference(case):
    """Inputs and the oracle's outputs of one conv case, computed once for every target."""
    ((h, w), k, s, p), (n, cin, cout) = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x, wt = _array(rng, (n, cin, h, w)), _array(rng, (cout, cin, k, k))
    b = _array(rng, (cout,))
    ref = _driver(REFERENCE)
    y = ref.conv2d(x, wt, b, s, p)
    dy = _array(rng, y.shape)
    relu_out = ref.relu(y)
    return dict(x=x, wt=wt, b=b, y=y, dy=dy, relu_out=relu_out,
                grads=ref.conv2d_backward(dy, x, wt, s, p),
                relu_grads=ref.conv2d_backward(ref.relu_backward(dy, relu_out), x, wt, s, p))


@pytest.mark.parametrize("target", TARGETS, ids=_target_id)
@pytest.mark.parametrize("case", CONV_CASES + VGG_CASES, ids=_conv_id)
def test_conv2d_matches_naive(target, case):
    ((h, w), k, s, p), (n, cin, cout) = case
    if h + 2 * p < k or w + 2 * p < k:
        pytest.skip("kernel larger than the padded input (an error case, tested below)")
    r = _conv_reference(case)
    x, wt, b, dy, relu_out = r["x"], r["wt"], r["b"], r["dy"], r["relu_out"]
    driver = _driver(*target)
    tol = _tolerance(driver, "conv2d")
    assert_close(driver.conv2d(x, wt, b, s, p), r["y"], tol, "conv2d")
    # the fused ReLU is judged against the reference's ReLU of the same convolution
    assert_close(driver.conv2d(x, wt, b, s, p, relu=True), relu_out, tol, "conv2d relu=True")
    if BACKWARD not in driver.capabilities:
        return
    want = r["grads"]
    got = driver.conv2d_backward(dy, x, wt, s, p)
    tol = _tolerance(driver, "conv2d_backward")
    for label, g, ref in zip(("dx", "dw", "db"), got, want):
        assert_close(g, ref, tol, f"conv2d_backward {label}")
    dx_only = driver.conv2d_backward(dy, x, wt, s, p, need_dw=False)
    assert dx_only[1] is None and dx_only[2] is None
    assert_close(dx_only[0], want[0], tol, "conv2d_backward dx (need_dw=False)")
    dw_only = driver.conv2d_backward(dy, x, wt, s, p, need_dx=False)
    assert dw_only[0] is None
    assert_close(dw_only[1], want[1], tol, "conv2d_backward dw (need_dx=False)")
    # the backward of conv + ReLU in one op, with and without dw
    want = r["relu_grads"]
    fused = driver.conv2d_backward(dy, x, wt, s, p, need_dw=False, relu_out=relu_out)
    assert_close(fused[0], want[0], tol, "conv2d_backward dx (relu_out)")
    for label, g, ref in zip(("dx", "dw", "db"),
                             driver.conv2d_backward(dy, x, wt, s, p, relu_out=relu_out), want):
        assert_close(g, ref, tol, f"conv2d_backward {label} (relu_out, need_dw)")


@pytest.mark.parametrize("target", TARGETS, ids=_target_id)
@pytest.mark.parametrize("kind", ["zero", "constant", "negative"])
def test_conv2d_special_inputs(target, kind):
    rng = np.random.default_rng(7)
    x = _array(rng, (2, 3, 8, 5), kind)
    wt, b = _array(rng, (4, 3, 3, 3), kind), _array(rng, (4,), kind)
    driver, ref = _driver(*target), _driver(REFERENCE)
    y = ref.conv2d(x, wt, b, 1, 1)
    assert_close(driver.conv2d(x, wt, b, 1, 1), y, _tolerance(driver, "conv2d"), kind)
    if BACKWARD in driver.capabilities:
        dy = _array(rng, y.shape, kind)
        for g, r in zip(driver.conv2d_backward(dy, x, wt, 1, 1),
                        ref.conv2d_backward(dy, x, wt, 1, 1)):
            assert_close(g, r, _tolerance(driver, "conv2d_backward"), kind)


# -- pooling ------------------------------------------------------------------------------------
POOL_CASES = [  # (N, C, H, W, size, stride): overlap, gaps, and floor dropping rows/columns
    (1, 1, 4, 4, 2, 2), (2, 3, 9, 10, 2, 2), (1, 5, 13, 7, 2, 2), (2, 3, 7, 7, 3, 2),
    (1, 3, 9, 10, 2, 1), (2, 1, 13, 7, 3, 3), (1, 4, 11, 6, 3, 1), (1, 2, 5, 9, 1, 2),
]


@pytest.mark.parametrize("target", TARGETS, ids=_target_id)
@pytest.mark.parametrize("kind", ["normal", "ties", "constant", "negative", "zero"])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "n{}c{}-{}x{}-k{}s{}".format(*c))
def test_pooling_matches_naive(target, kind, case):
    n, c, h, w, size, stride = case
    rng = np.random.default_rng(sum(case))
    x = _array(rng, (n, c, h, w), kind)
    driver, ref = _driver(*target), _driver(REFERENCE)
    y_ref, sw_ref = ref.max_pool2d(x, size, stride)
    y, sw = driver.max_pool2d(x, size, stride)
    assert_close(y, y_ref, _tolerance(driver, "max_pool2d"), "max_pool2d")
    values, no_switches = driver.max_pool2d(x, size, stride, switches=False)   # inference
    assert no_switches is None
    np.testing.assert_array_equal(values, y)
    a_ref = ref.avg_pool2d(x, size, stride)
    assert_close(driver.avg_pool2d(x, size, stride), a_ref, _tolerance(driver, "avg_pool2d"),
                 "avg_pool2d")
    if BACKWARD not in driver.capabilities:
        return
    dy = _array(rng, y_ref.shape) + 3.0  # non-zero everywhere, so every route is visible
    # Ties must route to the first maximum: the gradients would differ otherwise.
    assert_close(driver.max_pool2d_backward(dy, sw, x.shape),
                 ref.max_pool2d_backward(dy, sw_ref, x.shape),
                 _tolerance(driver, "max_pool2d_backward"), "max_pool2d_backward")
    assert_close(driver.avg_pool2d_backward(dy, x.shape, size, stride),
                 ref.avg_pool2d_backward(dy, x.shape, size, stride),
                 _tolerance(driver, "avg_pool2d_backward"), "avg_pool2d_backward")


# -- element-wise, linear, softmax, Gram --------------------------------------------------------
@pytest.mark.parametrize("target", TARGETS, ids=_target_id)
@pytest.mark.parametrize("shape", [(2, 3, 9, 10), (1, 1, 13, 7), (5, 33)])
def test_relu_matches_naive(target, shape):
    rng = np.random.default_rng(len(shape))
    x = _array(rng, shape, "ties")  # exact zeros: dx must be 0 where x == 0
    driver, ref = _driver(*target), _driver(REFERENCE)
    assert_close(driver.relu(x), ref.relu(x), _tolerance(driver, "relu"), "relu")
    if BACKWARD in driver.capabilities:
        dy = _array(rng, shape)
        assert_close(driver.relu_backward(dy, x), ref.relu_backward(dy, x),
                     _tolerance(driver, "relu_backward"), "relu_backward")


@pytest.mark.parametrize("target", TARGETS, ids=_target_id)
# batches up to 8 and beyond: numba-cpu streams the weights for small batches, uses sgemm above
@pytest.mark.parametrize("n,fin,fout", [(1, 1, 1), (2, 7, 4), (5, 33, 10), (3, 98, 17),
                                        (8, 21, 7), (11, 40, 9)])
def test_linear_matches_naive(target, n, fin, fout):
    rng = np.random.default_rng(n * fin * fout)
    x, w, b = _array(rng, (n, fin)), _array(rng, (fout, fin)), _array(rng, (fout,))
    driver, ref = _driver(*target), _driver(REFERENCE)
    assert_close(driver.linear(x, w, b), ref.linear(x, w, b), _tolerance(driver, "linear"),
                 "linear")
    if BACKWARD in driver.capabilities:
        dy = _array(rng, (n, fout))
        for label, g, r in zip(("dx", "dw", "db"), driver.linear_backward(dy, x, w),
                               ref.linear_backward(dy, x, w)):
            assert_close(g, r, _tolerance(driver, "linear_backward"), f"linear_backward {label}")
        assert driver.linear_backward(dy, x, w, need_dw=False)[1:] == (None, None)


@pytest.mark.parametrize("target", TARGETS, ids=_target_id)
def test_softmax_matches_naive_and_is_stable(target):
    rng = np.random.default_rng(3)
    x = np.concatenate([_array(rng, (3, 10)), np.full((1, 10), 2.0, np.float32),
                        _array(rng, (2, 10)) * 30 + 1000.0]).astype(np.float32)
    # fp16-representable logits: an fp16 device holds 1000 only to +-0.5, which would test its
    # input rounding rather than its softmax. Rows near 1000 still overflow a naive exp().
    x = x.astype(np.float16).astype(np.float32)
    driver, ref = _driver(*target), _driver(REFERENCE)
    got = driver.softmax(x)
    assert_close(got, ref.softmax(x), _tolerance(driver, "softmax"), "softmax")
    np.testing.assert_allclose(np.asarray(got, np.float64).sum(axis=1), 1.0, atol=2e-3)


@pytest.mark.parametrize("target", TARGETS, ids=_target_id)
@pytest.mark.parametrize("shape", [(1, 1, 3, 5), (2, 5, 9, 10), (1, 7, 13, 7)])
def test_gram_matches_naive(target, shape):
    x = _array(np.random.default_rng(shape[1]), shape)
    driver, ref = _driver(*target), _driver(REFERENCE)
    got = driver.gram(x)
    assert_close(got, ref.gram(x), _tolerance(driver, "gram"), "gram")
    assert got.shape == (shape[0], shape[1], shape[1])


@pytest.mark.parametrize("target", TARGETS, ids=_target_id)
@pytest.mark.parametrize("shape", [(1, 1, 3, 5), (2, 5, 9, 10), (1, 7, 13, 7), (1, 3, 4, 8)])
def test_gram_backward_matches_naive(target, shape):
    # (dg + dg^T) X, fresh and added in place to a given gradient; H*W of 15, 90, 91 and 32
    # columns, shared among the workers on 16-float edges
    driver, ref = _driver(*target), _driver(REFERENCE)
    if BACKWARD not in driver.capabilities:
        pytest.skip("driver has no backward pass")
    rng = np.random.default_rng(shape[2])
    x = _array(rng, shape)
    dg = _array(rng, (shape[0], shape[1], shape[1]))
    tol = _tolerance(driver, "gram_backward")
    want = ref.gram_backward(dg, x)
    assert_close(driver.gram_backward(dg, x), want, tol, "gram_backward")
    arriving = _array(rng, shape)
    into = arriving.copy()
    got = driver.gram_backward(dg, x, accumulate=into)
    assert got is into
    assert_close(got, ref.gram_backward(dg, x, accumulate=arriving.copy()), tol,
                 "gram_backward accumulated")
    assert_close(got, want + arriving, tol, "gram_backward accumulated")


# -- bad input: the same InputError (a ValueError) from every driver ----------------------------
BAD_CALLS = {
    "conv kernel larger than padded input": (
        lambda d: d.conv2d(np.zeros((1, 2, 3, 3), np.float32), np.zeros((1, 2, 5, 5), np.float32),
                           np.zeros(1, np.float32), 1, 0), "larger than the padded input"),
    "conv wrong channel count": (
        lambda d: d.conv2d(np.zeros((1, 3, 8, 8), np.float32), np.zeros((4, 2, 3, 3), np.float32),
                           np.zeros(4, np.float32), 1, 1), "channels"),
    "conv wrong ndim": (
        lambda d: d.conv2d(np.zeros((3, 8, 8), np.float32), np.zeros((4, 3, 3, 3), np.float32),
                           np.zeros(4, np.float32), 1, 1), "4-D"),
    "conv integer input": (
        lambda d: d.conv2d(np.zeros((1, 3, 8, 8), np.int32), np.zeros((4, 3, 3, 3), np.float32),
                           np.zeros(4, np.float32), 1, 1), "floating-point"),
    "conv bias shape": (
        lambda d: d.conv2d(np.zeros((1, 3, 8, 8), np.float32), np.zeros((4, 3, 3, 3), np.float32),
                           np.zeros(5, np.float32), 1, 1), "bias"),
    "conv zero stride": (
        lambda d: d.conv2d(np.zeros((1, 3, 8, 8), np.float32), np.zeros((4, 3, 3, 3), np.float32),
                           np.zeros(4, np.float32), 0, 1), "stride"),
    "pool window larger than input": (
        lambda d: d.max_pool2d(np.zeros((1, 1, 2, 5), np.float32), 3, 1), "larger than the input"),
    "pool integer input": (
        lambda d: d.avg_pool2d(np.zeros((1, 1, 4, 4), np.uint8), 2, 2), "floating-point"),
    "linear feature mismatch": (
        lambda d: d.linear(np.zeros((2, 5), np.float32), np.zeros((3, 6), np.float32),
                           np.zeros(3, np.float32)), "features"),
    "softmax wrong ndim": (lambda d: d.softmax(np.zeros((2, 3, 4), np.float32)), "2-D"),
    "gram wrong ndim": (lambda d: d.gram(np.zeros((2, 3), np.float32)), "4-D"),
    # numbers Python itself would reject with TypeError, OverflowError or ZeroDivisionError
    "conv kernel size 0": (
        lambda d: d.conv2d(_f32(1, 2, 4, 4), _f32(3, 2, 0, 0), _f32(3), 1, 0), "empty"),
    "gram of an empty batch": (lambda d: d.gram(_f32(0, 3, 4, 4)), "empty"),
    "relu of an empty array": (lambda d: d.relu(_f32(2, 0)), "empty"),
    "linear with no features": (lambda d: d.linear(_f32(2, 0), _f32(3, 0), _f32(3)), "empty"),
    "conv pad None": (lambda d: d.conv2d(*_conv_args(), 1, None), "pad"),
    "conv stride inf": (lambda d: d.conv2d(*_conv_args(), float("inf"), 1), "stride"),
    "conv pad NaN": (lambda d: d.conv2d(*_conv_args(), 1, float("nan")), "pad"),
    "conv stride 2**63": (lambda d: d.conv2d(*_conv_args(), 2**63, 1), "stride"),
    "conv pad 2**62": (lambda d: d.conv2d(*_conv_args(), 1, 2**62), "pad"),
    "conv pad 2.5": (lambda d: d.conv2d(*_conv_args(), 1, 2.5), "pad"),
    "conv stride True": (lambda d: d.conv2d(*_conv_args(), True, 1), "stride"),
    "pool size string": (lambda d: d.max_pool2d(_f32(1, 1, 4, 4), "2", 2), "pool size"),
    "pool stride inf": (lambda d: d.avg_pool2d(_f32(1, 1, 4, 4), 2, float("inf")), "stride"),
    # shapes whose output no machine holds: refused before any allocation
    "conv output beyond memory": (
        lambda d: d.conv2d(*_conv_args(), 1, 2**20), "memory"),
}


def _f32(*shape) -> np.ndarray:
    return np.zeros(shape, np.float32)


def _conv_args():
    return _f32(1, 2, 4, 4), _f32(3, 2, 3, 3), _f32(3)


def _corrupt_switches(switches, value=-1):
    """The driver's own switches with the first arg-max position replaced by ``value``,
    whatever their format (an integer array, or a tuple or named tuple that holds one); None if
    there is no such array."""
    parts = list(switches) if isinstance(switches, tuple) else [switches]
    for position, part in enumerate(parts):
        if isinstance(part, np.ndarray) and np.issubdtype(part.dtype, np.integer):
            parts[position] = part.copy()
            parts[position].flat[0] = value
            if not isinstance(switches, tuple):
                return parts[0]
            return type(switches)(*parts) if hasattr(switches, "_fields") else tuple(parts)
    return None


def _stray_switch(d, value):
    """max_pool2d_backward with the first window's switch set to ``value``: -1, or 15, the
    last pixel of the 4x4 plane, inside the plane but in another window (every format a
    driver has used, a flat plane index or a position inside the window, refuses both)."""
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    y, switches = d.max_pool2d(x, 2, 2)
    bad = _corrupt_switches(switches, value)
    if bad is None:
        pytest.skip(f"{d.name}'s switches hold no integer array to corrupt")
    d.max_pool2d_backward(np.ones_like(y), bad, x.shape)
BAD_BACKWARD_CALLS = {
    "conv backward dy shape": (
        lambda d: d.conv2d_backward(np.zeros((1, 4, 7, 8), np.float32),
                                    np.zeros((1, 3, 8, 8), np.float32),
                                    np.zeros((4, 3, 3, 3), np.float32), 1, 1), "expected"),
    "relu backward shape": (
        lambda d: d.relu_backward(np.zeros((1, 2, 3, 3), np.float32),
                                  np.zeros((1, 2, 3, 4), np.float32)), "must match"),
    "conv backward relu_out shape": (
        lambda d: d.conv2d_backward(np.zeros((1, 4, 8, 8), np.float32),
                                    np.zeros((1, 3, 8, 8), np.float32),
                                    np.zeros((4, 3, 3, 3), np.float32), 1, 1,
                                    relu_out=np.zeros((1, 4, 8, 7), np.float32)), "must match"),
    "max-pool backward negative switch": (lambda d: _stray_switch(d, -1), "switch"),
    "max-pool backward switch outside its window": (lambda d: _stray_switch(d, 15), "switch"),
    "max-pool backward x_shape None": (
        lambda d: d.max_pool2d_backward(_f32(1, 1, 2, 2), None, None), "x_shape"),
    "avg-pool backward x_shape with a zero": (
        lambda d: d.avg_pool2d_backward(_f32(1, 1, 2, 2), (1, 1, 0, 4)), "x_shape"),
    "max-pool backward x_shape beyond memory": (
        lambda d: d.max_pool2d_backward(_f32(1, 1, 2, 2), None, (1, 1, 2**30, 2**30)),
        "memory"),
    "gram backward dg of another channel count": (
        lambda d: d.gram_backward(_f32(1, 3, 3), _f32(1, 4, 5, 5)), "expected"),
    "gram backward into a read-only array": (
        lambda d: d.gram_backward(_f32(1, 2, 2), _f32(1, 2, 3, 3),
                                  accumulate=np.broadcast_to(_f32(1), (1, 2, 3, 3))),
        "writable"),
    "gram backward into an array of another shape": (
        lambda d: d.gram_backward(_f32(1, 2, 2), _f32(1, 2, 3, 3), accumulate=_f32(1, 2, 3, 4)),
        "shape"),
    "gram backward into x itself": (
        lambda d: (lambda x: d.gram_backward(_f32(1, 2, 2), x, accumulate=x))(_f32(1, 2, 3, 3)),
        "share memory"),
    "conv backward empty dy": (
        lambda d: d.conv2d_backward(_f32(0, 3, 4, 4), _f32(0, 2, 4, 4), _f32(3, 2, 3, 3),
                                    1, 1), "empty"),
}


@pytest.mark.parametrize("name", DRIVERS)
@pytest.mark.parametrize("case", list(BAD_CALLS) + list(BAD_BACKWARD_CALLS))
def test_bad_input_raises_value_error_naming_the_problem(name, case):
    driver = _driver(name)
    call, words = {**BAD_CALLS, **BAD_BACKWARD_CALLS}[case]
    if case in BAD_BACKWARD_CALLS and BACKWARD not in driver.capabilities:
        pytest.skip("driver has no backward pass")
    with pytest.raises(InputError, match=words):
        call(driver)


@pytest.mark.parametrize("name", DRIVERS)
def test_relu_keeps_nan_and_infinities(name):
    # the contract's NaN policy (vggjit/checks.py): NaN stays NaN, -inf -> 0, +inf stays
    x = np.array([[np.nan, -np.inf, np.inf, -1.0, 2.0]], np.float32)
    got = np.asarray(_driver(name).relu(x), np.float64)
    assert np.isnan(got[0, 0]), f"{name}: relu(NaN) = {got[0, 0]}"
    np.testing.assert_array_equal(got[0, 1:], [0.0, np.inf, 0.0, 2.0])


def test_every_bundled_and_example_driver_is_under_test():
    # The suite must not silently shrink: these are installed by pyproject and conftest, and
    # numba-cpu (the default driver) is a dependency: a broken install fails here, not skips.
    assert {"naive", "example-numpy", "numba-cpu"} <= set(DRIVERS)
    variants = {v for name, v in TARGETS if name == "numba-cpu"}
    assert {None, "img2col", "shifted", "cout-split", "winograd"} <= variants
