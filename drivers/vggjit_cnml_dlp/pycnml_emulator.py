"""An emulator of Cambricon's ``pycnml`` module: the lab's DLP code runs without an MLU.

A student's ``vgg19_demo.py`` written against the real library runs unchanged with this module
in its place (``vggjit lab run`` puts it there when ``import pycnml`` would fail; or
``import vggjit_cnml_dlp.pycnml_emulator as pycnml``). The numbers are exactly those of the
cnml-dlp driver's emulator (``vggjit classify --driver cnml-dlp --quant PARAMS.npz``), because
every layer runs on the same functions (:mod:`.emulator`): fp32 input cast to fp16, int8
conv/mlp with the given (position, scale) pairs and exact accumulation, fp16 bias, ReLU,
pooling and softmax, fp32 output. See docs/dlp.md and docs/lab.md.

What the library does, and so this module:

* ``CnmlNet(core_num)``, ``setInputShape(n, c, h, w)``, then the layers in order:
  ``createConvLayer(name, out_channel, kernel_size, stride, dilation, pad, QuantParam)``,
  ``createReLuLayer(name)``, ``createPoolingLayer(name, kernel_size, stride)`` (max, floor),
  ``createFlattenLayer(name, [n, features, 1, 1])``, ``createMlpLayer(name, output_num,
  QuantParam)``, ``createSoftmaxLayer(name, axis)``; the QuantParam given at creation quantises
  the layer's *input*.
* ``size()``, ``getLayerName(i)``, ``needToBeQuantized(i)``: indices count the created layers
  from 0. The library wraps the network in two cast layers it does not count, and appends the
  closing one at the first ``loadParams``: until then ``size()`` is one less than the number of
  layers created.
* ``loadParams(i, weight, bias, QuantParam)``: flat sequences; conv weights in OIHW order, mlp
  weights [out, in]; the QuantParam quantises the filter. Creating layers ends here.
* ``setInputData(flat NCHW values)``, ``forward()``, ``getOutputData()`` (a flat list).
* The MLU keeps tensors NHWC: a flatten (or mlp) layer reads its input in H, W, C order, so
  fc6's weight columns must be in that order (the .mat's ``W.reshape(-1, out).T``).

Where the library would print an error and exit (or read out of bounds) this module raises
:class:`PycnmlError` (a ``VggjitError``) saying what to do.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from vggjit.errors import InputError, VggjitError
from vggjit.quant import QuantParam as _Quant

from . import emulator as emu

#: Marks this module as vggjit's stand-in wherever it is imported as ``pycnml``.
EMULATOR = True


class PycnmlError(VggjitError, RuntimeError):
    """A call the MLU library would refuse (or crash on): out of order or inconsistent."""


class LayerIndexError(PycnmlError, IndexError):
    """A layer index outside the network."""


class QuantParam:
    """``pycnml.QuantParam(position, scale)``: x ~ q * 2**position / scale (docs/dlp.md)."""

    def __init__(self, position, scale):
        if isinstance(position, bool) or not isinstance(position, numbers.Integral):
            raise InputError(f"QuantParam position must be an int, got {position!r}")
        if not isinstance(scale, numbers.Real) or not math.isfinite(scale) or not scale > 0:
            raise InputError(f"QuantParam scale must be a positive float, got {scale!r}")
        self.position = int(position)
        self.scale = float(scale)

    def _param(self) -> _Quant:
        return _Quant(self.position, self.scale)  # the device's float32 scale

    def __repr__(self) -> str:
        return f"QuantParam({self.position}, {self.scale})"


class _Layer:
    """One created layer: its kind, name, shapes [n, c, h, w] and what it needs to run."""

    def __init__(self, kind, name, in_shape, out_shape, **config):
        self.kind, self.name = kind, name
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.config = config
        self.weights = None  # emu.QuantWeights once loaded
        self.bias16 = None

    @property
    def has_params(self) -> bool:
        return self.kind in ("conv", "mlp")


def _check_name(name) -> str:
    if not isinstance(name, str):
        raise InputError(f"a layer name must be a str, got {name!r}")
    return name


def _positive(what: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{what} must be a positive int, got {value!r}")
    return int(value)


def _quant(what: str, value) -> QuantParam:
    if not isinstance(value, QuantParam):
        raise InputError(f"{what} must be a pycnml.QuantParam(position, scale), got "
                         f"{type(value).__name__}")
    return value


def _floats(what: str, values, expected: int, layout: str) -> np.ndarray:
    """A flat sequence of numbers as the float32 values the library's vector<float> holds."""
    if isinstance(values, (str, bytes)):
        raise InputError(f"{what} must be a flat list or array of numbers, got a string")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a flat list or array of numbers") from None
    arr = arr.reshape(-1)
    if arr.size != expected:
        raise InputError(f"{what} has {arr.size} values, expected {expected} ({layout})")
    return arr.astype(np.float32)


class CnmlNet:
    """A network built layer by layer and run with the DLP's numerics (see the module doc)."""

    def __init__(self, core_num: int = 1):
        self.core_num = _positive("core_num", core_num)
        self._input_shape: tuple[int, ...] | None = None
        self._layers: list[_Layer] = []
        self._closed = False  # the first loadParams appends the closing cast layer
        self._input: np.ndarray | None = None
        self._output: np.ndarray | None = None

    # -- building ----------------------------------------------------------------------------
    def setInputShape(self, dim_1, dim_2, dim_3, dim_4):
        if self._layers:
            raise PycnmlError("setInputShape must come before the first layer is created")
        self._input_shape = tuple(_positive("input shape entries", d)
                                  for d in (dim_1, dim_2, dim_3, dim_4))

    def _current_shape(self, creating: str) -> tuple[int, ...]:
        if self._input_shape is None:
            raise PycnmlError(f"{creating}: the input shape is empty; call "
                              f"setInputShape(n, c, h, w) before creating layers")
        if self._closed:
            raise PycnmlError(f"{creating}: the network is closed once loadParams has been "
                              f"called; create every layer first, then load the parameters")
        return self._layers[-1].out_shape if self._layers else self._input_shape

    def createConvLayer(self, layer_name, out_channel, kernel_size, stride, dilation, pad,
                        quant_param):
        name = _check_name(layer_name)
        n, c, h, w = self._current_shape(f"createConvLayer({name!r})")
        out = _positive("out_channel", out_channel)
        k = _positive("kernel_size", kernel_size)
        s = _positive("stride", stride)
        if dilation != 1:
            raise PycnmlError(f"createConvLayer({name!r}): the emulator supports dilation 1 only "
                              f"(VGG's), got {dilation!r}")
        if isinstance(pad, bool) or not isinstance(pad, numbers.Integral) or pad < 0:
            raise InputError(f"pad must be a non-negative int, got {pad!r}")
        hout, wout = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
        if hout < 1 or wout < 1:
            raise PycnmlError(f"createConvLayer({name!r}): a {k}x{k} kernel does not fit the "
                              f"{h}x{w} input with pad {pad}")
        self._layers.append(_Layer("conv", name, (n, c, h, w), (n, out, hout, wout), kernel=k,
                                   stride=s, pad=int(pad),
                                   input_quant=_quant("quant_param", quant_param)))

    def createMlpLayer(self, layer_name, output_num, quant_param):
        name = _check_name(layer_name)
        shape = self._current_shape(f"createMlpLayer({name!r})")
        out = _positive("output_num", output_num)
        self._layers.append(_Layer("mlp", name, shape, (shape[0], out, 1, 1),
                                   input_quant=_quant("quant_param", quant_param)))

    def createReLuLayer(self, layer_name):
        name = _check_name(layer_name)
        shape = self._current_shape(f"createReLuLayer({name!r})")
        self._layers.append(_Layer("relu", name, shape, shape))

    def createPoolingLayer(self, layer_name, kernel_size, stride):
        name = _check_name(layer_name)
        n, c, h, w = self._current_shape(f"createPoolingLayer({name!r})")
        k, s = _positive("kernel_size", kernel_size), _positive("stride", stride)
        if k > h or k > w:
            raise PycnmlError(f"createPoolingLayer({name!r}): a {k}x{k} window does not fit "
                              f"the {h}x{w} input")
        self._layers.append(_Layer("pool", name, (n, c, h, w),
                                   (n, c, (h - k) // s + 1, (w - k) // s + 1), kernel=k, stride=s))

    def createFlattenLayer(self, layer_name, output_shape):
        name = _check_name(layer_name)
        shape = self._current_shape(f"createFlattenLayer({name!r})")
        try:
            out = tuple(int(d) for d in output_shape)
        except (TypeError, ValueError):
            raise InputError(f"createFlattenLayer({name!r}): output_shape must be 4 ints such "
                             f"as [1, 25088, 1, 1], got {output_shape!r}") from None
        if len(out) != 4 or min(out) < 1 or math.prod(out) != math.prod(shape):
            raise PycnmlError(f"createFlattenLayer({name!r}): output shape {list(out)} does not "
                              f"hold the {list(shape)} input ({math.prod(shape)} values); "
                              f"for VGG19's pool5 use [1, 25088, 1, 1]")
        self._layers.append(_Layer("flatten", name, shape, out))

    def createSoftmaxLayer(self, layer_name, axis):
        name = _check_name(layer_name)
        shape = self._current_shape(f"createSoftmaxLayer({name!r})")
        if axis != 1:
            raise PycnmlError(f"createSoftmaxLayer({name!r}): the emulator supports axis 1 "
                              f"(the channels, as the lab uses) only, got {axis!r}")
        self._layers.append(_Layer("softmax", name, shape, shape))

    # -- inspecting --------------------------------------------------------------------------
    def size(self) -> int:
        return len(self._layers) - (0 if self._closed or not self._layers else 1)

    def _layer(self, what: str, layer_id) -> _Layer:
        if isinstance(layer_id, bool) or not isinstance(layer_id, numbers.Integral):
            raise InputError(f"{what}: the layer index must be an int, got {layer_id!r}")
        if not 0 <= layer_id < len(self._layers):
            raise LayerIndexError(
                f"{what}: layer index {layer_id} is out of range; this network has "
                f"{len(self._layers)} layers, indices 0..{len(self._layers) - 1} in creation "
                f"order" + (f" ({self._layers[0].name} .. {self._layers[-1].name})"
                            if self._layers else ""))
        return self._layers[int(layer_id)]

    def getLayerName(self, layer_id) -> str:
        return self._layer("getLayerName", layer_id).name

    def needToBeQuantized(self, layer_id) -> bool:
        return self._layer("needToBeQuantized", layer_id).has_params

    # -- parameters and data -----------------------------------------------------------------
    def loadParams(self, layer_id, filter_data, bias_data, quant_param):
        layer = self._layer("loadParams", layer_id)
        self._closed = True
        what = f"loadParams({layer_id}) ({layer.name})"
        if not layer.has_params:
            raise PycnmlError(f"{what}: this is a {layer.kind} layer, which has no parameters; "
                              f"only conv and mlp layers take loadParams (needToBeQuantized(i) "
                              f"tells them apart)")
        n, c, h, w = layer.in_shape
        out = layer.out_shape[1]
        if layer.kind == "conv":
            k = layer.config["kernel"]
            weight = _floats(f"{what} weight", filter_data, out * c * k * k,
                             f"{out} x {c} x {k} x {k}, OIHW")
            weight = weight.reshape(out, c, k, k)
        else:
            weight = _floats(f"{what} weight", filter_data, out * c * h * w,
                             f"[{out}, {c * h * w}]: output x input, the input in H, W, C order")
            weight = weight.reshape(out, c * h * w)
        bias = _floats(f"{what} bias", bias_data, out, "one per output channel")
        layer.weights = emu.QuantWeights(weight, _quant("quant_param", quant_param)._param())
        layer.bias16 = emu.fp16(bias)

    def setInputData(self, data):
        if self._input_shape is None:
            raise PycnmlError("setInputData: call setInputShape(n, c, h, w) first")
        size = math.prod(self._input_shape)
        values = _floats("setInputData data", data, size,
                         f"the input shape {list(self._input_shape)}, flattened in NCHW order")
        self._input = values.reshape(self._input_shape)

    def forward(self):
        if self._input is None:
            raise PycnmlError("forward: no input; call setInputData(image) first")
        if not self._layers:
            raise PycnmlError("forward: the network has no layers")
        missing = [layer.name for layer in self._layers
                   if layer.has_params and layer.weights is None]
        if missing:
            raise PycnmlError(f"forward: the parameters of layer {missing[0]} are not loaded "
                              f"(not loaded: {', '.join(missing)}); call loadParams(i, ...) for "
                              f"every conv and mlp layer, i from 0 to size() - 1")
        a = emu.fp16(self._input)  # the device's input cast: fp32 -> fp16
        fused = False
        for i, layer in enumerate(self._layers):
            if layer.kind == "conv":
                # a following ReLU is applied as the conv writes its output (exact either way)
                fused = i + 1 < len(self._layers) and self._layers[i + 1].kind == "relu"
                a = emu.conv(a, layer.weights, layer.bias16, layer.config["stride"],
                             layer.config["pad"], layer.config["input_quant"]._param(),
                             relu=fused)
            elif layer.kind == "relu":
                a = a if fused else emu.relu(a)
                fused = False
            elif layer.kind == "pool":
                a = emu.max_pool(a, layer.config["kernel"], layer.config["stride"])
            elif layer.kind == "flatten":
                a = _nhwc_rows(a).reshape(layer.out_shape)
            elif layer.kind == "mlp":
                y = emu.linear(_nhwc_rows(a), layer.weights, layer.bias16,
                               layer.config["input_quant"]._param())
                a = y.reshape(layer.out_shape)
            elif layer.kind == "softmax":
                n, c, h, w = a.shape
                rows = emu.softmax(np.ascontiguousarray(a.transpose(0, 2, 3, 1)).reshape(-1, c))
                a = np.ascontiguousarray(rows.reshape(n, h, w, c).transpose(0, 3, 1, 2))
        self._output = a  # the device's output cast: fp16 values as fp32

    def getOutputData(self) -> list:
        if self._output is None:
            raise PycnmlError("getOutputData: no output yet; call forward() first")
        return self._output.reshape(-1).astype(np.float64).tolist()


def _nhwc_rows(a: np.ndarray) -> np.ndarray:
    """[N, C, H, W] -> [N, H*W*C]: the order in which the MLU's NHWC tensor holds the values."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).reshape(a.shape[0], -1)


__all__ = ["CnmlNet", "QuantParam", "PycnmlError", "LayerIndexError", "EMULATOR"]
