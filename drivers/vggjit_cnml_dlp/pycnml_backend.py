"""Whole-network inference on a Cambricon MLU through ``pycnml`` (docs/dlp.md; the call sequence:
docs/equations.md, section 6).

The call sequence the lab uses, reproduced exactly:

    net = pycnml.CnmlNet(16)
    net.setInputShape(1, 3, 224, 224)
    net.createConvLayer('conv1_1', 64, 3, 1, 1, 1, QuantParam(pos, scale))  # input quant
    net.createReLuLayer('relu1_1') ... net.createPoolingLayer('pool1', 2, 2) ...
    net.createFlattenLayer('flatten', [1, 25088, 1, 1])                     # before fc6
    net.createMlpLayer('fc6', 4096, QuantParam(...)) ... net.createSoftmaxLayer('softmax', 1)
    net.loadParams(i, weight, bias, QuantParam(...))                          # filter quant
    net.setInputData(image); net.forward(); net.getOutputData()

``i`` is the layer's index in the pycnml net, which has the flatten layer the weight file
lacks: conv layers keep their weight-file index, fc layers are one further on. Weights go as
flat float64 lists (conv OIHW, fc [out, in]); the i-th (position, scale) pair of the file's
``input`` and ``filter`` belongs to the i-th conv/fc layer. Images go one at a time (the lab's
batch of 1), NCHW.

The MLU keeps tensors NHWC, so its flatten layer hands fc6 the pool5 values in H, W, C order;
vggjit's fc6 weights are [out, in] with ``in`` in C, H, W order (NCHW flattened on the host), so
fc6 is loaded with its columns permuted to H, W, C (:func:`device_fc_weight`).

The library counts its layers without the cast layers it wraps around the network, and it
appends the closing one at the first ``loadParams``: until then ``size()`` is one less than the
number of layers created (``getLayerName`` already answers for every one of them).
"""
from __future__ import annotations

import numpy as np

from vggjit.errors import InputError, VggjitError
from vggjit.quant import QuantFileError, param_layers


def device_fc_weight(w: np.ndarray, channels: int) -> np.ndarray:
    """fc6's weight [out, C*H*W] (columns in C, H, W order) -> [out, H*W*C], the order in which
    the MLU's flatten layer hands it pool5 (NHWC)."""
    out, features = w.shape
    side = int(round((features // channels) ** 0.5))
    if channels * side * side != features:
        raise VggjitError(f"fc6 takes {features} features, not {channels} channels of a square "
                          f"map; cannot lay it out for the device")
    return np.ascontiguousarray(
        np.asarray(w).reshape(out, channels, side, side).transpose(0, 2, 3, 1).reshape(out, -1))


class PycnmlGraph:
    """``net`` built on the MLU; calling it maps x [N, 3, S, S] to prob [N, classes]."""

    def __init__(self, net, table, cores: int = 16):
        import pycnml  # noqa: PLC0415 - only where the backend was chosen

        if table is None:
            raise QuantFileError(
                "cnml-dlp (pycnml backend) needs quantisation parameters for every conv/fc "
                "layer: pass --quant PARAMS.npz (or quant= to get_driver); make one with "
                "`vggjit quantize --weights W IMAGES... -o params.npz`")
        if net.pooling != "max":
            raise VggjitError("the pycnml backend builds max-pooling networks only "
                              f"(this network uses {net.pooling!r} pooling)")
        names = [layer.name for layer in param_layers(net)]
        table.check_for(names)
        self.pycnml = pycnml
        first_fc = next(layer for layer in net.layers if layer.kind == "fc")
        channels = first_fc.cin // 49  # pool5 is C x 7 x 7
        pools = sum(layer.kind == "pool" for layer in net.layers)
        self.side = 7 * 2 ** pools
        self.input_shape = (1, net.layers[0].cin, self.side, self.side)
        self.classes = net.layers[[i for i, lay in enumerate(net.layers)
                                   if lay.kind == "fc"][-1]].cout
        cnet = pycnml.CnmlNet(cores)
        cnet.setInputShape(*self.input_shape)
        order: list[str] = []
        k = 0
        for layer in net.layers:
            if layer.kind == "conv":
                cnet.createConvLayer(layer.name, layer.cout, 3, 1, 1, 1, self._qp(table.input[k]))
                k += 1
            elif layer.kind == "relu":
                cnet.createReLuLayer(layer.name)
            elif layer.kind == "pool":
                cnet.createPoolingLayer(layer.name, 2, 2)
            elif layer.kind == "fc":
                if layer is first_fc:
                    cnet.createFlattenLayer("flatten", [1, channels * 49, 1, 1])
                    order.append("flatten")
                cnet.createMlpLayer(layer.name, layer.cout, self._qp(table.input[k]))
                k += 1
            elif layer.kind == "softmax":
                cnet.createSoftmaxLayer("softmax", 1)
                order.append("softmax")
                continue
            order.append(layer.name)
        self._check_layout(cnet, order)
        k = 0
        for i, name in enumerate(order):
            if name not in net.index or not net.layers[net.index[name]].has_params:
                continue
            w, b = net.weights[name]
            # Flat float64 lists (conv OIHW, fc [out, in]), one layer at a time: fc6 alone is
            # 103 M values, so each list is dropped before the next is made.
            if name == first_fc.name:
                w = device_fc_weight(w, channels)
            weight = np.asarray(w, np.float64).reshape(-1).tolist()
            bias = np.asarray(b, np.float64).reshape(-1).tolist()
            cnet.loadParams(i, weight, bias, self._qp(table.filter[k]))
            del weight, bias
            k += 1
        self.net = cnet
        self.order = tuple(order)

    def _qp(self, param):
        return self.pycnml.QuantParam(int(param.position), float(param.scale))

    @staticmethod
    def _check_layout(cnet, order):
        size = int(cnet.size())
        # before the first loadParams the library does not count its last layer (see above)
        found = ([str(cnet.getLayerName(i)) for i in range(len(order))]
                 if size in (len(order) - 1, len(order)) else [])
        if found != order:
            raise VggjitError(f"pycnml reports {size} layers {found} but vggjit created "
                              f"{len(order)}: {order}; refusing to load weights by index")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if x.ndim != 4 or x.shape[1:] != self.input_shape[1:]:
            raise InputError(f"the DLP network was built for input [N, "
                             f"{', '.join(map(str, self.input_shape[1:]))}], got {x.shape}")
        out = np.empty((x.shape[0], self.classes), np.float32)
        for i in range(x.shape[0]):
            self.net.setInputData(np.asarray(x[i], np.float64).reshape(-1).tolist())
            self.net.forward()
            prob = np.asarray(self.net.getOutputData(), np.float32).reshape(-1)
            if prob.size != self.classes:
                raise VggjitError(f"pycnml returned {prob.size} outputs, expected "
                                  f"{self.classes}")
            out[i] = prob
        return out
