"""TEST DOUBLE for Cambricon's ``pycnml`` module. Not the real library; tests only.

:func:`make_module` returns a module object to put in ``sys.modules["pycnml"]`` (with
monkeypatch). It implements the part of the API that docs/equations.md, section 6 documents,
records every call in order (``module.calls``: (object id, method, args)), and checks arguments the way the
device would need them (types, layer kinds, list lengths). Its ``forward`` computes the network
it was given in float64 from the loaded parameters, interpreted with the documented layouts
(conv weights OIHW, fc weights [out, in], NCHW input, and a flatten layer that hands on the
values in H, W, C order as the MLU's NHWC tensors hold them) and ignoring quantisation - so a
layout, order or index mistake in vggjit shows up as a wrong answer. Like the real library,
``size()`` does not count the last layer until the first ``loadParams`` (the library appends
its closing cast layer then).
"""
from __future__ import annotations

import importlib.machinery
import types

import numpy as np


class QuantParam:
    def __init__(self, position, scale):
        assert isinstance(position, int), f"QuantParam position must be int, got {position!r}"
        assert isinstance(scale, float), f"QuantParam scale must be float, got {scale!r}"
        self.position, self.scale = position, scale

    def __eq__(self, other):
        return (self.position, self.scale) == (other.position, other.scale)

    def __repr__(self):
        return f"QuantParam({self.position}, {self.scale})"


class CnmlNet:
    calls: list  # shared with the module, set by make_module

    def __init__(self, cores):
        self._record("CnmlNet", cores)
        self.layers = []  # [kind, name, args, params or None]
        self.loading = False  # the first loadParams closes the net
        self.input_shape = None
        self.data = None

    def _record(self, method, *args):
        self.calls.append((id(self), method, args))

    def setInputShape(self, n, c, h, w):
        self._record("setInputShape", n, c, h, w)
        self.input_shape = (n, c, h, w)

    def _add(self, kind, name, *args):
        assert self.input_shape is not None, "setInputShape must come first"
        assert isinstance(name, str)
        self._record(f"create{kind}Layer", name, *args)
        self.layers.append([kind, name, args, None])

    def createConvLayer(self, name, out, kernel, stride, dilation, pad, quant):
        assert isinstance(quant, QuantParam)
        self._add("Conv", name, out, kernel, stride, dilation, pad, quant)

    def createReLuLayer(self, name):
        self._add("ReLu", name)

    def createPoolingLayer(self, name, kernel, stride):
        self._add("Pooling", name, kernel, stride)

    def createFlattenLayer(self, name, shape):
        assert isinstance(shape, list) and len(shape) == 4
        self._add("Flatten", name, shape)

    def createMlpLayer(self, name, out, quant):
        assert isinstance(quant, QuantParam)
        self._add("Mlp", name, out, quant)

    def createSoftmaxLayer(self, name, axis):
        self._add("Softmax", name, axis)

    def size(self):
        return len(self.layers) - (0 if self.loading else 1)

    def getLayerName(self, i):
        return self.layers[i][1]

    def loadParams(self, i, weight, bias, quant):
        kind = self.layers[i][0]
        assert kind in ("Conv", "Mlp"), f"loadParams({i}) on a {kind} layer"
        assert isinstance(weight, list) and isinstance(bias, list)
        assert all(isinstance(v, float) for v in bias)
        assert isinstance(quant, QuantParam)
        self._record("loadParams", i, len(weight), len(bias), quant)
        self.loading = True
        self.layers[i][3] = (np.array(weight, np.float64), np.array(bias, np.float64))

    def setInputData(self, data):
        assert isinstance(data, list) and len(data) == int(np.prod(self.input_shape))
        self._record("setInputData", len(data))
        self.data = np.array(data, np.float64).reshape(self.input_shape)

    def forward(self):
        self._record("forward")
        a = self.data
        for kind, _name, args, params in self.layers:
            if kind == "Conv":
                out, k, stride, _, pad, _ = args
                w, b = params
                w = w.reshape(out, a.shape[1], k, k)  # OIHW
                xp = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
                win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
                a = np.einsum("nchwij,ocij->nohw", win[:, :, ::stride, ::stride], w)
                a = a + b[None, :, None, None]
            elif kind == "ReLu":
                a = np.maximum(a, 0)
            elif kind == "Pooling":
                k, s = args
                n, c, h, w = a.shape
                a = a[:, :, :h // s * s, :w // s * s].reshape(n, c, h // s, s, w // s, s)
                a = a.max(axis=(3, 5))
            elif kind == "Flatten":
                assert args[0][1] == a[0].size, f"flatten to {args[0]} of {a.shape}"
                a = a.transpose(0, 2, 3, 1).reshape(a.shape[0], -1)  # NHWC on the device
            elif kind == "Mlp":
                out, _ = args
                w, b = params
                a = a @ w.reshape(out, a.shape[1]).T + b  # [out, in]
            elif kind == "Softmax":
                e = np.exp(a - a.max(axis=1, keepdims=True))
                a = e / e.sum(axis=1, keepdims=True)
        self.output = a

    def getOutputData(self):
        self._record("getOutputData")
        return self.output.reshape(-1).tolist()


def make_module():
    """A fresh ``pycnml`` stand-in; ``module.calls`` lists every call made through it."""
    module = types.ModuleType("pycnml", "TEST DOUBLE of Cambricon's pycnml (tests only)")
    module.__spec__ = importlib.machinery.ModuleSpec("pycnml", loader=None)
    calls: list = []
    net_class = type("CnmlNet", (CnmlNet,), {"calls": calls})
    module.CnmlNet = net_class
    module.QuantParam = QuantParam
    module.calls = calls
    return module
