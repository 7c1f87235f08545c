"""int8 (position, scale) quantisation: the formula on its edge cases, and parameter files."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vggjit.quant import (QMAX, QMIN, QuantFileError, QuantParam, QuantTable, calibrate,
                          dequantize, load_quant, pack, quantize, quantize_float,
                          round_half_away, save_quant)


# -- calibration formula ------------------------------------------------------------------------
@pytest.mark.parametrize("absmax,position,scale", [
    (127.0, 0, 1.0),               # exactly 127 * 2**0: no rounding trouble at the power of two
    (254.0, 1, 1.0),
    (127.0 * 2.0 ** -7, -7, 1.0),
    (100.0, 0, 1.27),              # ceil(log2(100/127)) = ceil(-0.34) = 0
    (1.0, -6, 127 / 64),           # ceil(log2(1/127)) = ceil(-6.99) = -6
    (128.0, 1, 127 * 2 / 128),
])
def test_calibrate_matches_the_formula(absmax, position, scale):
    p = calibrate(absmax)
    assert p.position == position
    assert p.scale == pytest.approx(scale, rel=1e-7)


def test_calibrate_scale_lies_in_one_to_two_and_maps_absmax_to_127():
    for absmax in np.geomspace(1e-6, 1e6, 997):
        p = calibrate(absmax)
        assert p.position == math.ceil(math.log2(absmax / 127)) or \
            math.ldexp(127, p.position - 1) < absmax <= math.ldexp(127, p.position)
        assert 1.0 <= p.scale < 2.0
        assert quantize(np.float64(absmax), p) == 127
        assert quantize(np.float64(-absmax), p) == -127


def test_absmax_zero_gives_position_zero_scale_one():
    p = calibrate(0.0)
    assert (p.position, p.scale) == (0, 1.0)
    np.testing.assert_array_equal(quantize(np.zeros(5, np.float32), p), 0)


@pytest.mark.parametrize("absmax,position", [(1e-20, -32), (127 * 2.0 ** -40, -32),
                                             (1e20, 32), (127 * 2.0 ** 45, 32)])
def test_position_is_clamped_and_the_scale_still_maps_absmax_to_127(absmax, position):
    p = calibrate(absmax)
    assert p.position == position
    assert not 1.0 <= p.scale < 2.0  # clamping moves the scale out of [1, 2)
    assert p.scale == pytest.approx(math.ldexp(127.0, position) / absmax, rel=1e-7)
    x = np.array([absmax, -absmax, absmax / 2, 0.0])
    np.testing.assert_array_equal(quantize(x, p)[[0, 1, 3]], [127, -127, 0])
    # a round trip keeps every in-range value within half a step
    xs = np.linspace(-absmax, absmax, 101)
    err = np.abs(dequantize(quantize(xs, p), p) - xs)
    assert err.max() <= 0.5 * p.step * (1 + 1e-6)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_calibrate_rejects_negative_and_non_finite(bad):
    with pytest.raises(ValueError):
        calibrate(bad)


# -- quantize / dequantize ---------------------------------------------------------------------
def test_zero_and_plus_minus_absmax():
    p = calibrate(3.0)
    np.testing.assert_array_equal(quantize(np.array([0.0, 3.0, -3.0], np.float32), p),
                                  [0, 127, -127])


def test_values_past_absmax_saturate_to_int8_range():
    p = QuantParam(0, 1.0)  # code = round(x)
    x = np.array([127.49, 127.5, 128, 1e6, -128.49, -128.5, -129, -1e6, np.inf, -np.inf])
    np.testing.assert_array_equal(quantize(x, p), [127, 127, 127, 127, -128, -128, -128, -128,
                                                   127, -128])
    # just past absmax still rounds to 127 (the first code that would overflow is 127.5)
    c = calibrate(5.0)
    just_past = np.nextafter(np.float32(5.0), np.float32(10.0))
    assert quantize(np.array([just_past, -just_past]), c).tolist() == [127, -127]


def test_exact_half_ties_round_away_from_zero():
    p = QuantParam(0, 1.0)
    x = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -127.5], np.float32)
    np.testing.assert_array_equal(quantize(x, p), [1, -1, 2, -2, 3, -3, 127, -128])
    # through a non-trivial (position, scale): x * 1.5 / 2**-2 = 6x; x = 5/12 is not exact,
    # but x = 0.25 gives 1.5 exactly and 0.75 gives 4.5
    q = QuantParam(-2, 1.5)
    np.testing.assert_array_equal(quantize(np.array([0.25, -0.25, 0.75, -0.75], np.float32), q),
                                  [2, -2, 5, -5])
    # not fooled by floor(x + 0.5): the float64 just below 0.5 rounds to 0
    below = np.nextafter(0.5, 0.0)
    assert quantize(np.array([below, -below]), p).tolist() == [0, 0]


def test_round_half_away_from_zero_helper():
    v = np.array([-2.5, -1.5, -0.5, -0.49, 0.0, 0.49, 0.5, 1.5, 2.5, 3.7])
    np.testing.assert_array_equal(round_half_away(v), [-3, -2, -1, 0, 0, 0, 1, 2, 3, 4])


def test_quantize_float_matches_quantize_and_fits_int8():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(10_000) * 7).astype(np.float32)
    p = calibrate(float(np.abs(x).max()) * 0.8)  # some saturation
    f = quantize_float(x, p)
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f, quantize(x, p).astype(np.float32))
    assert f.min() >= QMIN and f.max() <= QMAX and (f == np.round(f)).all()


def test_dequantize_is_code_times_step():
    p = QuantParam(-3, 1.25)
    np.testing.assert_allclose(dequantize(np.array([-128, -1, 0, 1, 127]), p),
                               np.array([-128, -1, 0, 1, 127]) * 2.0 ** -3 / 1.25, rtol=1e-15)
    assert p.step == pytest.approx(2.0 ** -3 / 1.25)


def test_scale_is_held_as_float32():
    assert QuantParam(0, 1.1).scale == float(np.float32(1.1))
    with pytest.raises(ValueError):
        QuantParam(0.5, 1.0)


# -- parameter files ------------------------------------------------------------------------------
def _table(n=19):
    return QuantTable(tuple(QuantParam(k - 10, 1.0 + k / 64) for k in range(n)),
                      tuple(QuantParam(-k, 1.5 + k / 128) for k in range(n)))


def test_round_trip_in_the_lab_layout(tmp_path):
    path = save_quant(tmp_path / "p.npz", _table())
    with np.load(path) as data:
        assert {"input", "filter"} <= set(data.files)
        flat = data["input"]
        assert flat.shape == (38,)  # [pos0, scale0, pos1, scale1, ...]
        assert flat[0] == -10 and flat[1] == 1.0 and flat[2] == -9
    table = load_quant(path, expected=19)
    assert table.input == _table().input and table.filter == _table().filter
    assert table.source == str(path)


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def _pairs(n=19, scale=1.5):
    return pack([QuantParam(0, scale)] * n)


@pytest.mark.parametrize("arrays,words", [
    ({"input": _pairs()}, "keys 'input' and 'filter'"),
    ({"inputs": _pairs(), "filters": _pairs()}, "found keys: filters, inputs"),
    ({"input": _pairs()[:-1], "filter": _pairs()[:-1]}, "even number"),
    ({"input": _pairs(18), "filter": _pairs(19)}, "'input' has 18 pairs but 'filter' has 19"),
    ({"input": _pairs(), "filter": _pairs(scale=0.0)}, "scale must be positive"),
    ({"input": _pairs(scale=-1.0), "filter": _pairs()}, "scale must be positive"),
    ({"input": np.array([np.nan, 1.0] * 19), "filter": _pairs()}, "NaN"),
    ({"input": np.array([0.5, 1.0] * 19), "filter": _pairs()}, "integer"),
    ({"input": np.array([40, 1.0] * 19), "filter": _pairs()}, r"\[-32, 32\]"),
    ({"input": np.zeros((19, 3)), "filter": _pairs()}, "flat array"),
    ({"input": np.array(["a", "b"]), "filter": _pairs()}, "numbers"),
    # an integer file converts only where float32 keeps the value: never a silent truncation
    ({"input": np.array([0, 2**24 + 1] * 19, np.int64), "filter": _pairs()},
     r"int64 values that float32 cannot represent exactly \(16777217\)"),
])
def test_malformed_files_are_clear_errors_naming_the_file(tmp_path, arrays, words):
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(QuantFileError, match=words) as info:
        load_quant(path)
    assert str(path) in str(info.value)


def test_wrong_pair_count(tmp_path):
    path = _write(tmp_path / "short.npz", input=_pairs(16), filter=_pairs(16))
    with pytest.raises(QuantFileError, match=r"short.npz: has 16 .* expected 19"):
        load_quant(path, expected=19)
    table = load_quant(path)
    with pytest.raises(QuantFileError, match="has 16 .* 19 conv/fc layers"):
        table.check_for([f"l{i}" for i in range(19)])


def test_pairs_as_rows_are_accepted(tmp_path):
    path = _write(tmp_path / "rows.npz", input=_pairs().reshape(19, 2),
                  filter=_pairs().reshape(19, 2))
    assert len(load_quant(path)) == 19


def test_not_an_npz_and_missing_file(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(QuantFileError, match="junk.npz: not a readable .npz"):
        load_quant(junk)
    with pytest.raises(QuantFileError, match="nope.npz: no such"):
        load_quant(tmp_path / "nope.npz")


def test_layer_names_are_checked_when_recorded(tmp_path):
    t = _table(3)
    named = QuantTable(t.input, t.filter, ("conv1_1", "fc6", "fc7"))
    table = load_quant(save_quant(tmp_path / "n.npz", named))
    table.check_for(["conv1_1", "fc6", "fc7"])
    with pytest.raises(QuantFileError, match="made for layers conv1_1, fc6, fc7"):
        table.check_for(["conv1_1", "conv1_2", "fc6"])
    with pytest.raises(QuantFileError, match=r"\.npz"):
        save_quant(tmp_path / "wrong.txt", named)


def test_an_exact_integer_file_is_converted(tmp_path):
    path = _write(tmp_path / "ints.npz", input=np.array([1, 3] * 19, np.int64),
                  filter=np.array([-2, 5] * 19, np.int32))
    table = load_quant(path)
    assert table.input[0] == QuantParam(1, 3.0) and table.filter[-1] == QuantParam(-2, 5.0)
