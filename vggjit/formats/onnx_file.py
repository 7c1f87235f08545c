"""ONNX graphs of VGG, read with the ``onnx`` package by following the graph, not its names.

From the graph's one input, the reader walks the chain of nodes that carries the data (a
``Shape`` side branch, as exporters add to compute a ``Reshape``'s target, is skipped):

* the convolution stack: ``Conv`` (3x3, stride 1, padding 1, one group; weights and biases from
  initializers or ``Constant`` nodes), ``Relu``, ``MaxPool`` (2x2, stride 2), with ``Transpose``
  nodes tracked so that an NHWC input (Keras / TensorFlow exports) is recognised, and
  ``Identity`` / ``Dropout`` passed through; five poolings end it. Any other operation there is
  an error that names it.
* the head: ``Flatten`` or ``Reshape``, then fully connected layers as ``Gemm`` or ``MatMul`` +
  ``Add``, ``Relu``, optional ``Dropout``, optional ``Softmax``. When these have the shape of
  VGG's classifier (three layers, the first two equally wide: 4096, 4096, 1000) they are
  imported, fc6's flatten order taken from the layout pool5 had when it was flattened
  (NCHW: C, H, W; NHWC: H, W, C). Any other head (a fine-tuned model's own) is left out, the
  note says what it held, and the network is the convolution stack: style transfer takes it,
  classification refuses it.

ONNX does not record how the input was preprocessed; the user states it (--preprocess).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import WeightFileError
from .layout import CHW, HWC, ParsedVGG, Tensor, is_vgg_classifier
from .optional import require

VERSION = "onnx"
POOLS = 5
_PASS = ("Identity", "Dropout")
_STACK_OPS = "Conv, Relu, MaxPool, Transpose, Identity, Dropout"


def read_onnx(path) -> ParsedVGG:
    path = Path(path)
    onnx = require("onnx", path, "an ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise WeightFileError(f"{path}: cannot read this ONNX file; it is truncated or corrupt "
                              f"({type(exc).__name__}: {exc})") from None
    return _GraphWalk(path, model, onnx).parse()


class _GraphWalk:
    def __init__(self, path: Path, model, onnx):
        self.path = path
        graph = model.graph
        self.graph = graph
        self.producer = f"{model.producer_name} {model.producer_version}".strip()
        self.attr = onnx.helper.get_attribute_value
        self.consts = {t.name: t for t in graph.initializer}
        self.to_array = onnx.numpy_helper.to_array
        self.outputs = {o.name for o in graph.output}
        self.consumers: dict[str, list] = {}
        self.producers = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            for name in node.output:
                self.producers[name] = node
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value":
                        self.consts[node.output[0]] = a.t

    # -- helpers ----------------------------------------------------------------------------
    def fail(self, node, message: str):
        raise WeightFileError(f"{self.path}: node {node.name or node.output[0]!r} "
                              f"({node.op_type}): {message}")

    def const(self, name: str) -> np.ndarray | None:
        seen = 0
        while name not in self.consts and name in self.producers and seen < 8:
            node = self.producers[name]
            if node.op_type != "Identity":
                return None
            name, seen = node.input[0], seen + 1
        tensor = self.consts.get(name)
        return None if tensor is None else self.to_array(tensor)

    def attrs(self, node) -> dict:
        return {a.name: self.attr(a) for a in node.attribute}

    def next_node(self, value: str):
        """The node that carries the data on from ``value`` (None at the graph's end)."""
        nodes = [n for n in self.consumers.get(value, []) if n.op_type != "Shape"]
        if len(nodes) > 1:
            raise WeightFileError(f"{self.path}: the graph branches after {value!r} (into "
                                  f"{', '.join(n.op_type for n in nodes)}); a VGG is one chain")
        return nodes[0] if nodes else None

    # -- the walk ---------------------------------------------------------------------------
    def parse(self) -> ParsedVGG:
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise WeightFileError(f"{self.path}: the graph has {len(inputs)} inputs "
                                  f"({', '.join(i.name for i in inputs)}); a VGG has one image")
        dims = [d.dim_value or d.dim_param or "?" for d in inputs[0].type.tensor_type.shape.dim]
        layout = "NHWC" if len(dims) == 4 and dims[3] == 3 and dims[1] != 3 else "NCHW"
        notes = [f"ONNX graph from {self.producer or 'an unknown producer'}, input "
                 f"{inputs[0].name!r} {'x'.join(map(str, dims))} ({layout}); the convolution "
                 f"stack takes any image size"]
        value, layout, blocks = self.stack(inputs[0].name, layout)
        classifier, order = self.head(value, layout, notes)
        return ParsedVGG(blocks, classifier, order, None, VERSION, notes)

    def stack(self, value: str, layout: str):
        blocks: list[list[tuple[Tensor, Tensor]]] = [[]]
        previous = None  # the last Conv / Relu / MaxPool
        pools = 0
        while pools < POOLS:
            node = self.next_node(value)
            if node is None:
                raise WeightFileError(f"{self.path}: the graph ends after {pools} max-poolings; "
                                      f"a VGG convolution stack has {POOLS}")
            op = node.op_type
            if op == "Transpose":
                perm = self.attrs(node).get("perm", list(range(len(layout)))[::-1])
                layout = "".join(layout[p] for p in perm)
            elif op == "Conv":
                if layout != "NCHW":
                    self.fail(node, f"a convolution of an {layout} tensor")
                if previous not in (None, "Relu", "MaxPool"):
                    self.fail(node, f"a convolution right after {previous}")
                blocks[-1].append(self.conv(node))
            elif op == "Relu":
                if previous != "Conv":
                    self.fail(node, "a ReLU not after a convolution")
            elif op == "MaxPool":
                if previous != "Relu" or layout != "NCHW":
                    self.fail(node, "a max-pooling not after a convolution and its ReLU")
                self.check_pool(node)
                pools += 1
                if pools < POOLS:
                    blocks.append([])
            elif op not in _PASS:
                self.fail(node, f"an operation vggjit's VGG reader does not support in the "
                                f"convolution stack (it takes {_STACK_OPS})")
            if op in ("Conv", "Relu", "MaxPool"):
                previous = op
            value = node.output[0]
        return value, layout, blocks

    def conv(self, node) -> tuple[Tensor, Tensor]:
        a = self.attrs(node)
        w = self.const(node.input[1]) if len(node.input) > 1 else None
        if w is None:
            self.fail(node, "its weights are not a constant of the graph")
        if w.ndim != 4 or w.shape[2:] != (3, 3):
            self.fail(node, f"weights of shape {list(w.shape)}, expected [Cout, Cin, 3, 3]")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        same = auto in ("SAME_UPPER", "SAME_LOWER")
        if (not same and pads != [1, 1, 1, 1]) or list(a.get("strides", [1, 1])) != [1, 1] \
                or list(a.get("dilations", [1, 1])) != [1, 1] or a.get("group", 1) != 1:
            self.fail(node, f"padding {pads} (auto_pad {auto}), stride {a.get('strides')}, "
                            f"dilation {a.get('dilations')}, group {a.get('group', 1)}; VGG "
                            f"convolutions have padding 1, stride 1, one group")
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        b = self.const(bias_name) if bias_name else np.zeros(w.shape[0], w.dtype)
        if b is None:
            self.fail(node, "its bias is not a constant of the graph")
        return Tensor(node.input[1], w), Tensor(bias_name or f"{node.name} (no bias)", b)

    def check_pool(self, node) -> None:
        a = self.attrs(node)
        if list(a.get("kernel_shape", [])) != [2, 2] or list(a.get("strides", [1, 1])) != [2, 2] \
                or any(a.get("pads", [0, 0, 0, 0])):
            self.fail(node, f"window {a.get('kernel_shape')}, stride {a.get('strides')}, "
                            f"padding {a.get('pads')}; VGG pools 2x2 with stride 2")

    # -- the head ---------------------------------------------------------------------------
    def head(self, value: str, layout: str, notes: list[str]):
        """(classifier, fc6 order): VGG's classifier if the head is exactly that, else []."""
        nodes = []
        node = self.next_node(value)
        while node is not None:
            if node.op_type not in _PASS:
                nodes.append(node)
            node = self.next_node(node.output[0])
        if not nodes:
            notes.append("no classifier: the graph ends at pool5 (the convolution stack only)")
            return [], CHW
        classifier, order = self.match_classifier(nodes, layout)
        if classifier:
            return classifier, order
        notes.append(f"left out the head after pool5 ({self.describe(nodes)}): not VGG's "
                     f"ImageNet classifier (fc6, fc7, fc8: 4096, 4096, 1000); the convolution "
                     f"stack only")
        return [], CHW

    def match_classifier(self, nodes, layout: str):
        fcs: list[tuple[Tensor, Tensor]] = []
        order = None
        i = 0
        while i < len(nodes):
            node, op = nodes[i], nodes[i].op_type
            if op == "Transpose" and order is None:
                perm = self.attrs(node).get("perm", list(range(len(layout)))[::-1])
                layout = "".join(layout[p] for p in perm)
            elif op in ("Flatten", "Reshape") and order is None and not fcs:
                if op == "Flatten" and self.attrs(node).get("axis", 1) != 1:
                    return [], None
                order = {"NCHW": CHW, "NHWC": HWC}.get(layout)
                if order is None:
                    return [], None
            elif op == "Gemm" and order is not None:
                fc = self.gemm(node)
                if fc is None:
                    return [], None
                fcs.append(fc)
            elif op == "MatMul" and order is not None and i + 1 < len(nodes) \
                    and nodes[i + 1].op_type == "Add":
                fc = self.matmul_add(node, nodes[i + 1])
                if fc is None:
                    return [], None
                fcs.append(fc)
                i += 1
            elif op == "Relu" and fcs and len(fcs) < 3:
                pass
            elif op == "Softmax" and len(fcs) == 3 and i == len(nodes) - 1:
                pass
            else:
                return [], None
            i += 1
        widths = tuple(b.array.size for _, b in fcs)
        return (fcs, order) if is_vgg_classifier(widths) else ([], None)

    def gemm(self, node):
        a = self.attrs(node)
        w = self.const(node.input[1])
        b = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if w is None or b is None or w.ndim != 2 or a.get("transA", 0) \
                or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            return None
        w = w if a.get("transB", 0) else w.T
        return Tensor(node.input[1], w), Tensor(node.input[2], b.reshape(-1))

    def matmul_add(self, matmul, add):
        w = self.const(matmul.input[1])
        other = [n for n in add.input if n != matmul.output[0]]
        b = self.const(other[0]) if len(other) == 1 else None
        if w is None or b is None or w.ndim != 2:
            return None
        return Tensor(matmul.input[1], w.T), Tensor(other[0], b.reshape(-1))

    def describe(self, nodes) -> str:
        parts = []
        for node in nodes:
            if node.op_type in ("MatMul", "Gemm"):
                w = self.const(node.input[1])
                shape = "" if w is None else " " + "x".join(map(str, w.shape))
                parts.append(f"{node.op_type}{shape}")
            else:
                parts.append(node.op_type)
        return ", ".join(parts)
