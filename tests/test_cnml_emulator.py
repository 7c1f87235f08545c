"""The cnml-dlp driver's emulator: int8 / fp16 numerics, exact accumulation, whole networks."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from vggjit import get_driver
from vggjit.errors import DriverUnavailableError, InputError
from vggjit.network import Network
from vggjit.quant import (Calibrator, QuantFileError, QuantParam, QuantTable, absmax, calibrate,
                          dequantize, input_sources, quantize, save_quant)
from vggjit.registry import PluginWarning, list_drivers
from vggjit_cnml_dlp import emulator as emu

TINY = dict(blocks=((4, 1), (4, 1), (8, 1), (8, 1), (8, 1)), classifier=(16, 16, 10))


@pytest.fixture
def dlp():
    return get_driver("cnml-dlp", backend="emulator")


def _f16(a):
    return np.asarray(a, np.float32).astype(np.float16).astype(np.float64)


def _ulp16(v):
    return np.spacing(np.abs(np.asarray(v, np.float64)).astype(np.float16)).astype(np.float64)


def _dequantised(a):
    """What the device multiplies: the operand's int8 codes, back in float64."""
    p = calibrate(absmax(a))
    return dequantize(quantize(a, p), p)


def _conv64(x, w, stride, pad):
    """Plain float64 convolution (docs/equations.md, section 2) with einsum over the windows."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[2]
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
    win = win[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", win, w)


def _assert_within_fp16_rounding(got, exact, bias16):
    """got = fp16(fp16(exact) + bias16): off by at most half an fp16 ulp per rounding."""
    got = np.asarray(got, np.float64)
    assert (got == _f16(got)).all(), "output is not fp16-representable"
    bound = 0.5 * _ulp16(exact) + 0.5 * _ulp16(got) + 1e-12 * np.abs(exact)
    err = np.abs(got - (exact + bias16))
    assert (err <= bound).all(), f"max excess {(err - bound).max():.3g}"


# -- fp16 rounding ------------------------------------------------------------------------------
def test_kernel_fp16_rounding_is_numpys_bit_for_bit():
    """Every finite fp16 value, every midpoint between neighbours (exact ties) and the float64
    values just either side, overflow and subnormal edges, random float32 and float64 values."""
    from vggjit_cnml_dlp.kernels import fp16_array

    h = np.arange(2 ** 16, dtype=np.uint16).view(np.float16).astype(np.float64)
    h = np.unique(h[np.isfinite(h)])
    mids = (h[:-1] + h[1:]) / 2
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    v = np.concatenate([h, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf),
                        [65504.0, 65519.99, 65520.0, -65520.0, 1e300, np.inf, -np.inf, np.nan,
                         2.0 ** -25, 2.0 ** -25 * 1.5, 2.0 ** -26, -0.0],
                        bits[np.isfinite(bits)].astype(np.float64),
                        rng.standard_normal(100_000) * np.exp(rng.uniform(-20, 12, 100_000))])
    got = np.empty_like(v)
    fp16_array(v, got)
    with np.errstate(over="ignore"):
        want = v.astype(np.float16).astype(np.float64)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (v[~same][:5], got[~same][:5], want[~same][:5])
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))  # -0.0 included


def test_kernel_quantisation_matches_vggjit_quant():
    from vggjit_cnml_dlp.kernels import quantize_pad

    rng = np.random.default_rng(4)
    x = _f16(rng.standard_normal((3, 7, 9)) * 40).astype(np.float32)
    x[0, 0, :6] = [0.5, -0.5, 2.5, -2.5, 1e4, -1e4]  # ties (param (0, 1)) and saturation
    for param in (QuantParam(0, 1.0), calibrate(absmax(x)), calibrate(20.0)):
        out = np.full((3, 9, 11), np.nan, np.float32)
        quantize_pad(x, param.factor, 1, out)
        want = np.pad(quantize(x, param).astype(np.float32), ((0, 0), (1, 1), (1, 1)))
        np.testing.assert_array_equal(out, want)


# -- ops against float64 on the dequantised operands --------------------------------------------
@pytest.mark.parametrize("n,cin,cout,h,w,k,stride,pad", [
    (1, 3, 4, 9, 10, 3, 1, 1), (2, 5, 7, 13, 7, 3, 2, 0), (1, 2, 3, 11, 6, 5, 3, 2),
    (2, 64, 8, 12, 12, 3, 1, 1), (1, 1, 1, 4, 4, 1, 1, 0),
])
def test_conv_equals_float64_on_dequantised_operands(dlp, n, cin, cout, h, w, k, stride, pad):
    rng = np.random.default_rng(n * 100 + cin + k)
    x = (rng.standard_normal((n, cin, h, w)) * 3).astype(np.float32)
    wt = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    got = dlp.conv2d(x, wt, b, stride, pad)
    exact = _conv64(_dequantised(_f16(x)), _dequantised(wt), stride, pad)
    assert got.shape == exact.shape and got.dtype == np.float32
    _assert_within_fp16_rounding(got, exact, _f16(b)[None, :, None, None])


@pytest.mark.parametrize("n,fin,fout", [(1, 7, 3), (3, 98, 17), (2, 4096, 10)])
def test_linear_equals_float64_on_dequantised_operands(dlp, n, fin, fout):
    rng = np.random.default_rng(fin)
    x = rng.standard_normal((n, fin)).astype(np.float32)
    w = (rng.standard_normal((fout, fin)) * 0.05).astype(np.float32)
    b = rng.standard_normal(fout).astype(np.float32)
    got = dlp.linear(x, w, b)
    exact = _dequantised(_f16(x)) @ _dequantised(w).T
    _assert_within_fp16_rounding(got, exact, _f16(b)[None, :])


def test_accumulation_is_exact_past_float32_integers():
    # 3001 products of 127 * 127: the sum (48.4 M, odd) is past 2**24, where one float32 sgemm
    # would round; the chunked GEMM must still give the integer exactly.
    k = 3001
    wq = np.full((2, k), 127.0, np.float32)
    wq[1, ::2] = -128.0
    xq = np.full((k, 3), 127.0, np.float32)
    xq[-1] = [1.0, -1.0, 3.0]
    chunks = emu.plan_chunks(wq)
    assert len(chunks) > 1 and chunks[0][0] == 0 and chunks[-1][1] == k
    got = emu.int_gemm(wq, xq, chunks)
    want = wq.astype(np.int64) @ xq.astype(np.int64)
    np.testing.assert_array_equal(got, want)
    assert np.abs(want).max() > 2 ** 24
    # and every chunk on its own stays within the exact range
    for s, e in chunks:
        assert np.abs(wq[:, s:e]).sum(axis=1).max() * 128 <= 2 ** 24


def test_a_full_int8_linear_layer_needing_chunks_is_exact(dlp):
    # all-extreme operands: codes +-127 everywhere, so the integer sums are large and odd
    rng = np.random.default_rng(1)
    fin = 5000
    x = np.full((2, fin), 3.0, np.float32)
    w = (np.sign(rng.standard_normal((4, fin))) * 2.0).astype(np.float32)
    got = dlp.linear(x, w, np.zeros(4, np.float32))
    exact = (x.astype(np.float64) @ w.T.astype(np.float64))  # codes are exact: +-absmax
    _assert_within_fp16_rounding(got, exact, 0.0)


def test_elementwise_ops_are_fp16(dlp):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, 3, 9, 10)) * 100).astype(np.float32)
    x16 = _f16(x)
    np.testing.assert_array_equal(dlp.relu(x), np.maximum(x16, 0))
    y, switches = dlp.max_pool2d(x, 3, 2)
    ref_y, ref_switches = get_driver("naive").max_pool2d(x16.astype(np.float32), 3, 2)
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(switches, ref_switches.index)  # naive: a PoolSwitches
    avg = dlp.avg_pool2d(x, 2, 2)
    assert (avg == _f16(avg)).all()
    np.testing.assert_allclose(avg, _f16(x16[:, :, :8, :10].reshape(2, 3, 4, 2, 5, 2)
                                           .mean(axis=(3, 5))), rtol=0, atol=0)
    logits = (rng.standard_normal((3, 1000)) * 4).astype(np.float32)
    p = dlp.softmax(logits)
    assert (p == _f16(p)).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=2e-3)
    e = np.exp(_f16(logits) - _f16(logits).max(axis=1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(axis=1, keepdims=True), atol=2e-3 * p.max())


# -- a whole network ----------------------------------------------------------------------------
def _images(n=2, seed=0):
    """Smooth images in the network's input range (like photos, not white noise)."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(np.cumsum(rng.standard_normal((n, 3, 224, 224)), axis=2), axis=3)
    return (x / np.abs(x).max() * 120).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    """The tiny VGG-shaped net on naive: its float activations and a table calibrated on them."""
    net = Network.random(seed=3, driver="naive", **TINY)
    x = _images(1)
    cal = Calibrator(net)
    names = [layer.name for layer in net.layers if layer.has_params]
    sources = [s for s in input_sources(net).values() if s]
    ref = cal.update(x, also=names + sources + ["prob"])
    return net, x, ref, cal.table(), names


def test_whole_tiny_network_agrees_with_naive_to_int8_accuracy(tiny):
    """Every conv/fc output within 4x the error int8 predicts, and the same top-1 class.

    Prediction: a tensor quantised with step s carries uniform noise of RMS s / sqrt(12); as a
    fraction of the tensor's RMS that is eps = s / (sqrt(12) rms). Input and filter noise of
    every layer up to l add in quadrature: sqrt(sum eps^2) (about 1% per tensor here, 4% at
    fc8). The factor 4 leaves room for layers whose gain amplifies relative error (small fc
    fan-in, outputs that partly cancel); measured ratios are 0.3 to 2.4 over several seeds.
    """
    net, x, ref, table, names = tiny
    dlp = get_driver("cnml-dlp", quant=table, backend="emulator")
    out = dlp.emulate(net).run(x, names + ["prob"])
    sources = input_sources(net)
    predicted = 0.0
    for k, name in enumerate(names):
        xin = x if sources[name] is None else ref[sources[name]]
        w = net.weights[name][0]
        for step, tensor in ((table.input[k].step, xin), (table.filter[k].step, w)):
            rms = np.sqrt(np.mean(np.square(tensor, dtype=np.float64)))
            predicted += (step / np.sqrt(12) / rms) ** 2
        err = np.linalg.norm(out[name] - ref[name]) / np.linalg.norm(ref[name])
        assert err <= 4 * np.sqrt(predicted), (name, err, np.sqrt(predicted))
    np.testing.assert_array_equal(out["prob"].argmax(axis=1), ref["prob"].argmax(axis=1))
    # the driver's own graph path (Network.forward for "prob") is this emulator
    net_dlp = Network(net.layers, net.weights, driver=dlp)
    np.testing.assert_array_equal(net_dlp.forward(x)["prob"], out["prob"])


def test_dynamic_calibration_without_a_file(tiny):
    net, x, ref, _, _ = tiny
    dlp = get_driver("cnml-dlp", backend="emulator")
    net_dlp = Network(net.layers, net.weights, driver=dlp)
    batch = np.concatenate([x, _images(1, seed=9) * 0.5])
    prob = net_dlp.forward(batch)["prob"]
    assert prob[0].argmax() == ref["prob"][0].argmax()
    # per image: an image's result does not depend on the rest of its batch
    np.testing.assert_array_equal(net_dlp.forward(batch[:1])["prob"], prob[:1])
    np.testing.assert_array_equal(net_dlp.forward(batch[1:])["prob"], prob[1:])


def test_quant_file_must_fit_the_network(tiny, tmp_path):
    net, x, _, table, _ = tiny
    short = QuantTable(table.input[:-1], table.filter[:-1])
    path = save_quant(tmp_path / "short.npz", short)
    dlp = get_driver("cnml-dlp", quant=str(path), backend="emulator")
    with pytest.raises(QuantFileError, match=r"short.npz: has 7 .* 8 conv/fc layers"):
        Network(net.layers, net.weights, driver=dlp).forward(x[:1])


def test_classification_input_must_be_224(tiny):
    net, _, _, table, _ = tiny
    dlp = get_driver("cnml-dlp", quant=table, backend="emulator")
    with pytest.raises(InputError, match="224"):
        Network(net.layers, net.weights, driver=dlp).forward(np.zeros((1, 3, 64, 64), np.float32))


# -- the driver's declaration -------------------------------------------------------------------
def test_backward_is_a_clear_error_naming_the_capability(dlp):
    x = np.zeros((1, 2, 5, 5), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(DriverUnavailableError, match=r"lacks the 'backward' capability; "
                                                     r"drivers that have it: .*naive"):
        dlp.conv2d_backward(np.zeros((1, 3, 5, 5), np.float32), x, w, 1, 1)
    with pytest.raises(DriverUnavailableError, match="lacks the backward capability"):
        get_driver("cnml-dlp", require={"backward"})
    net = Network.random(driver=dlp, **TINY)
    net.forward(np.zeros((1, 3, 32, 32), np.float32), ("relu1_1",), keep=True)
    with pytest.raises(DriverUnavailableError, match="backward"):
        net.backward({"relu1_1": np.ones((1, 4, 32, 32), np.float32)})


def test_record_and_options():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        record = next(r for r in list_drivers() if r.name == "cnml-dlp")
    assert record.available and record.priority == 10
    assert record.capabilities == frozenset({"forward", "graph"})
    assert "backend: emulator" in record.description  # no pycnml on this machine
    d = get_driver("cnml-dlp")
    assert d.tolerance_class == "int8" and d.backend == "emulator"
    with pytest.raises(InputError, match="backend must be one of"):
        get_driver("cnml-dlp", backend="gpu")
    with pytest.raises(DriverUnavailableError, match="pycnml module is not installed"):
        get_driver("cnml-dlp", backend="pycnml")
    with pytest.raises(QuantFileError, match="missing.npz: no such"):
        get_driver("cnml-dlp", quant="missing.npz")


def test_weights_quantised_once_with_the_file_filter_params(tiny):
    net, _, _, table, names = tiny
    special = QuantTable(table.input, (QuantParam(-9, 1.0),) + table.filter[1:])
    graph = get_driver("cnml-dlp", quant=special, backend="emulator").build_graph(net)
    qw = graph.weights[names[0]]
    assert qw.param == QuantParam(-9, 1.0)
    w = net.weights[names[0]][0]
    np.testing.assert_array_equal(qw.q, quantize(w, qw.param).reshape(w.shape[0], -1))
