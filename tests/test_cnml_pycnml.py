"""The cnml-dlp pycnml backend, driven against a recording TEST DOUBLE of pycnml.

The double (tests/pycnml_double.py) records every call and computes the network it was given
in float64 with the documented layouts, so these tests prove the call sequence, the layouts,
the fc index offset and the order of the quantisation parameters.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import pycnml_double

from vggjit import get_driver
from vggjit import registry
from vggjit.errors import VggjitError
from vggjit.network import Network, RandomWeights, vgg_layers
from vggjit.quant import QuantFileError, QuantParam, QuantTable

BLOCKS, CLASSIFIER = ((4, 1), (4, 1), (8, 1), (8, 1), (8, 1)), (16, 16, 10)


@pytest.fixture
def pycnml(monkeypatch):
    module = pycnml_double.make_module()
    monkeypatch.setitem(sys.modules, "pycnml", module)
    registry.reload()
    yield module
    monkeypatch.undo()
    registry.reload()


def _net(driver=None, pooling="max"):
    layers = vgg_layers(BLOCKS, CLASSIFIER)
    random = RandomWeights(layers, seed=5)
    rng = np.random.default_rng(5)
    weights = {name: (random[name][0], rng.standard_normal(random[name][1].shape)
                      .astype(np.float32)) for name in random}  # non-zero biases
    return Network(layers, weights, driver=driver, pooling=pooling)


def _table(n=8):
    # distinct values, so a swapped pair or a shifted index cannot go unnoticed
    return QuantTable(tuple(QuantParam(k - 10, 1.0 + k / 64) for k in range(n)),
                      tuple(QuantParam(-k, 1.5 + k / 128) for k in range(n)))


def _qp(param):
    return pycnml_double.QuantParam(param.position, param.scale)


def test_backend_is_chosen_and_shown(pycnml):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", registry.PluginWarning)
        record = next(r for r in registry.list_drivers() if r.name == "cnml-dlp")
    assert "backend: pycnml" in record.description
    assert get_driver("cnml-dlp", quant=_table()).backend == "pycnml"


def test_documented_call_sequence_layouts_offsets_and_quant_order(pycnml):
    table = _table()
    net = _net(get_driver("cnml-dlp", quant=table))
    x = (np.random.default_rng(0).standard_normal((1, 3, 224, 224)) * 40).astype(np.float32)
    prob = net.forward(x)["prob"]

    calls = [(method, args) for _, method, args in pycnml.calls]
    q_in = [_qp(p) for p in table.input]
    q_filter = [_qp(p) for p in table.filter]
    build = [("CnmlNet", (16,)), ("setInputShape", (1, 3, 224, 224))]
    for b in range(5):
        build += [("createConvLayer", (f"conv{b + 1}_1", BLOCKS[b][0], 3, 1, 1, 1, q_in[b])),
                  ("createReLuLayer", (f"relu{b + 1}_1",)),
                  ("createPoolingLayer", (f"pool{b + 1}", 2, 2))]
    build += [("createFlattenLayer", ("flatten", [1, 8 * 7 * 7, 1, 1])),
              ("createMlpLayer", ("fc6", 16, q_in[5])), ("createReLuLayer", ("relu6",)),
              ("createMlpLayer", ("fc7", 16, q_in[6])), ("createReLuLayer", ("relu7",)),
              ("createMlpLayer", ("fc8", 10, q_in[7])),
              ("createSoftmaxLayer", ("softmax", 1))]
    assert calls[:len(build)] == build

    # loadParams: pycnml's index. conv layers sit where the weight file has them; fc layers one
    # further on, past the flatten layer the weight file lacks.
    names = [f"conv{b}_1" for b in range(1, 6)] + ["fc6", "fc7", "fc8"]
    loads = [args for method, args in calls if method == "loadParams"]
    expected = []
    for k, name in enumerate(names):
        w, b = net.weights[name]
        index = net.index[name] + (1 if name.startswith("fc") else 0)
        expected.append((index, w.size, b.size, q_filter[k]))
    assert loads == expected
    assert net.index["fc6"] == 15 and loads[5][0] == 16

    # weights flattened as float64: conv OIHW and fc [out, in] unchanged, except that fc6's
    # columns follow the device's flatten (pool5 in H, W, C order, not vggjit's C, H, W)
    device = net._graph.net
    for index, name in ((0, "conv1_1"), (18, "fc7")):
        w, b = net.weights[name]
        np.testing.assert_array_equal(device.layers[index][3][0], w.reshape(-1))
        np.testing.assert_array_equal(device.layers[index][3][1], b)
    w6, b6 = net.weights["fc6"]
    hwc = w6.reshape(16, 8, 7, 7).transpose(0, 2, 3, 1).reshape(-1)
    np.testing.assert_array_equal(device.layers[16][3][0], hwc)
    np.testing.assert_array_equal(device.layers[16][3][1], b6)

    assert calls[len(build) + len(loads):] == [("setInputData", (3 * 224 * 224,)),
                                               ("forward", ()), ("getOutputData", ())]
    np.testing.assert_array_equal(device.data[0], x[0])  # NCHW, mean already subtracted

    # with the documented layouts, the double's float64 network is vggjit's network
    want = _net(get_driver("naive")).forward(x)["prob"]
    assert prob.shape == (1, 10) and prob.dtype == np.float32
    np.testing.assert_allclose(prob, want, rtol=1e-4, atol=1e-6)


def test_a_batch_runs_one_image_at_a_time(pycnml):
    net = _net(get_driver("cnml-dlp", quant=_table()))
    x = np.zeros((3, 3, 224, 224), np.float32)
    x[1] += 50.0
    prob = net.forward(x)["prob"]
    assert prob.shape == (3, 10)
    methods = [m for _, m, _ in pycnml.calls]
    assert methods.count("CnmlNet") == 1 and methods.count("forward") == 3
    np.testing.assert_allclose(prob[0], prob[2])


def test_pycnml_backend_needs_quant_parameters(pycnml):
    net = _net(get_driver("cnml-dlp"))
    with pytest.raises(QuantFileError, match="needs quantisation parameters .* --quant"):
        net.forward(np.zeros((1, 3, 224, 224), np.float32))
    assert pycnml.calls == []


def test_wrong_pair_count_and_avg_pooling_are_refused(pycnml):
    with pytest.raises(QuantFileError, match="has 7 .* 8 conv/fc layers"):
        _net(get_driver("cnml-dlp", quant=_table(7))).forward(np.zeros((1, 3, 224, 224),
                                                                       np.float32))
    with pytest.raises(VggjitError, match="max-pooling"):
        _net(get_driver("cnml-dlp", quant=_table()), pooling="avg").forward(
            np.zeros((1, 3, 224, 224), np.float32))


def test_layers_other_than_prob_run_on_the_emulator(pycnml):
    net = _net(get_driver("cnml-dlp", quant=_table()))
    out = net.forward(np.ones((1, 3, 32, 32), np.float32), ("relu1_1",))
    assert out["relu1_1"].shape == (1, 4, 32, 32)
    assert pycnml.calls == []
