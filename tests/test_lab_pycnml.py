"""The pycnml emulator (vggjit_cnml_dlp.pycnml_emulator): the library's counting, its
numbers (the cnml-dlp driver's, exactly) and the errors a student's mistakes get."""
from __future__ import annotations

import importlib.machinery
import sys

import numpy as np
import pytest

from vggjit.errors import InputError
from vggjit.network import Network, RandomWeights, vgg_layers
from vggjit.quant import QuantParam, QuantTable
from vggjit_cnml_dlp import pycnml_emulator as pycnml
from vggjit_cnml_dlp import EMULATOR_STATE, pycnml_present
from vggjit_cnml_dlp.driver import CnmlDlpDriver

BLOCKS, CLASSIFIER = ((4, 1), (4, 1), (8, 1), (8, 1), (8, 1)), (16, 16, 10)


def _small_net():
    layers = vgg_layers(BLOCKS, CLASSIFIER)
    random = RandomWeights(layers, seed=7)
    rng = np.random.default_rng(7)
    weights = {name: (random[name][0] * np.float32(0.5),
                      (rng.standard_normal(random[name][1].shape) * 0.1).astype(np.float32))
               for name in random}
    return Network(layers, weights)


def _table(net):
    names = [layer.name for layer in net.layers if layer.has_params]
    return QuantTable(tuple(QuantParam(k % 3 - 1, 1.25 + k / 50) for k in range(len(names))),
                      tuple(QuantParam(-6 - k % 2, 1.5 - k / 40) for k in range(len(names))))


def _build(net, table):
    """The documented call sequence, as a student writes it against pycnml."""
    cnet = pycnml.CnmlNet(16)
    cnet.setInputShape(1, 3, 224, 224)
    k = 0
    for layer in net.layers:
        qp = None
        if layer.has_params:
            qp = pycnml.QuantParam(table.input[k].position, table.input[k].scale)
            k += 1
        if layer.kind == "conv":
            cnet.createConvLayer(layer.name, layer.cout, 3, 1, 1, 1, qp)
        elif layer.kind == "relu":
            cnet.createReLuLayer(layer.name)
        elif layer.kind == "pool":
            cnet.createPoolingLayer(layer.name, 2, 2)
        elif layer.kind == "fc":
            if layer.name == "fc6":
                cnet.createFlattenLayer("flatten", [1, layer.cin, 1, 1])
            cnet.createMlpLayer(layer.name, layer.cout, qp)
        else:
            cnet.createSoftmaxLayer("softmax", 1)
    return cnet


def _load(cnet, net, table, fc6_order="hwc"):
    k = 0
    for i in range(cnet.size()):
        if not cnet.needToBeQuantized(i):
            continue
        w, b = net.weights[cnet.getLayerName(i)]
        if cnet.getLayerName(i) == "fc6" and fc6_order == "hwc":
            w = w.reshape(16, 8, 7, 7).transpose(0, 2, 3, 1).reshape(16, -1)
        f = table.filter[k]
        cnet.loadParams(i, np.asarray(w, np.float64).ravel(), list(map(float, b)),
                        pycnml.QuantParam(f.position, f.scale))
        k += 1


def test_the_emulated_library_gives_the_cnml_dlp_drivers_numbers_exactly():
    net = _small_net()
    table = _table(net)
    cnet = _build(net, table)
    # the library counts the created layers without its cast layers, and counts the last
    # one only once loadParams has appended the closing cast layer
    created = len(net.layers) + 1  # with the flatten layer the weight file lacks
    assert cnet.size() == created - 1
    assert [cnet.getLayerName(i) for i in range(3)] == ["conv1_1", "relu1_1", "pool1"]
    assert cnet.getLayerName(15) == "flatten" and cnet.getLayerName(16) == "fc6"
    assert cnet.needToBeQuantized(16) and not cnet.needToBeQuantized(15)
    _load(cnet, net, table)
    assert cnet.size() == created
    x = (np.random.default_rng(1).standard_normal((1, 3, 224, 224)) * 50).astype(np.float32)
    cnet.setInputData(x.astype(np.float64).ravel().tolist())
    cnet.forward()
    out = cnet.getOutputData()
    assert isinstance(out, list) and len(out) == 10
    want = CnmlDlpDriver(quant=table, backend="emulator").build_graph(net)(x)[0]
    np.testing.assert_array_equal(np.array(out, np.float32), want)
    assert np.sort(want)[-2] > 0.01  # not a one-hot answer: every class is compared

    # fc6 loaded in vggjit's (host) C, H, W order is what a real MLU would misread
    wrong = _build(net, table)
    _load(wrong, net, table, fc6_order="chw")
    wrong.setInputData(x.ravel())
    wrong.forward()
    assert not np.array_equal(np.array(wrong.getOutputData(), np.float32), want)


@pytest.fixture
def small():
    cnet = pycnml.CnmlNet(4)
    cnet.setInputShape(1, 2, 4, 4)
    q = pycnml.QuantParam(0, 1.0)
    cnet.createConvLayer("conv", 3, 3, 1, 1, 1, q)
    cnet.createReLuLayer("relu")
    cnet.createPoolingLayer("pool", 2, 2)
    cnet.createMlpLayer("fc", 5, q)
    return cnet, q


def test_misuse_gets_the_error_a_user_needs(small):
    cnet, q = small
    with pytest.raises(IndexError, match="layer index 4 is out of range; this network has 4"):
        cnet.getLayerName(4)
    with pytest.raises(IndexError, match="out of range"):
        cnet.loadParams(-1, [0.0], [0.0], q)
    with pytest.raises(pycnml.PycnmlError, match="relu layer, which has no parameters"):
        cnet.loadParams(1, [0.0], [0.0], q)
    with pytest.raises(InputError, match=r"weight has 5 values, expected 54 \(3 x 2 x 3 x 3, OIHW"):
        cnet.loadParams(0, [0.0] * 5, [0.0] * 3, q)
    with pytest.raises(InputError, match="bias has 2 values, expected 3"):
        cnet.loadParams(0, [0.0] * 54, [0.0] * 2, q)
    with pytest.raises(InputError, match="must be a pycnml.QuantParam"):
        cnet.loadParams(0, [0.0] * 54, [0.0] * 3, (0, 1.0))
    with pytest.raises(pycnml.PycnmlError, match="no input; call setInputData"):
        cnet.forward()
    cnet.setInputData(np.zeros(32))
    with pytest.raises(pycnml.PycnmlError, match="parameters of layer conv are not loaded"):
        cnet.forward()
    with pytest.raises(InputError, match="has 31 values, expected 32"):
        cnet.setInputData([0.0] * 31)
    with pytest.raises(pycnml.PycnmlError, match="no output yet"):
        cnet.getOutputData()
    cnet.loadParams(0, np.ones(54), np.zeros(3), q)
    with pytest.raises(pycnml.PycnmlError, match="closed once loadParams"):
        cnet.createReLuLayer("late")
    cnet.loadParams(3, np.ones(5 * 12), np.zeros(5), q)
    cnet.forward()
    assert len(cnet.getOutputData()) == 5


def test_building_mistakes_are_caught_when_made():
    cnet = pycnml.CnmlNet(1)
    with pytest.raises(pycnml.PycnmlError, match="setInputShape"):
        cnet.createReLuLayer("relu")
    cnet.setInputShape(1, 512, 7, 7)
    with pytest.raises(pycnml.PycnmlError, match=r"\[1, 4096, 1, 1\] does not hold"):
        cnet.createFlattenLayer("flatten", [1, 4096, 1, 1])
    with pytest.raises(InputError, match="position must be an int"):
        pycnml.QuantParam(0.5, 1.0)


def test_the_driver_is_not_fooled_by_the_emulator_served_as_pycnml(monkeypatch):
    served = type(sys)("pycnml")
    served.EMULATOR = True
    monkeypatch.setitem(sys.modules, "pycnml", served)
    assert not pycnml_present()
    monkeypatch.delitem(sys.modules, "pycnml")

    class Finder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "pycnml":
                return importlib.machinery.ModuleSpec(name, None, loader_state=EMULATOR_STATE)
            return None

    monkeypatch.setattr(sys, "meta_path", [Finder, *sys.meta_path])
    assert not pycnml_present()
    assert CnmlDlpDriver().pycnml_module() is pycnml
