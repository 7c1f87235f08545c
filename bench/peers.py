"""The same VGG19, with the same weights, on the CPU inference engines people deploy: ONNX
Runtime and OpenVINO (PyTorch is in network.py). None of them is a dependency: each is used when
it can be imported, and skipped with the reason otherwise.

Both engines get the network as an ONNX graph built here with the ``onnx`` package's helper API
(Conv 3x3 pad 1, Relu, MaxPool 2x2, Flatten, Gemm with transB, Softmax): OIHW conv weights and
``[out, in]`` fc weights are ONNX's own layouts, so the arrays go in as they are. Both run in
float32 with the thread count vggjit uses; OpenVINO is compiled for each batch size (its static
shapes are its fast path) with the latency hint and f32 inference precision (no bf16 on CPUs
that have it, so that outputs compare).

    peers(net, threads, batches) -> {name: Peer}
"""
from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

#: ONNX operator set of the graph (every op used exists unchanged since opset 13)
OPSET = 17
INPUT, LOGITS, PROB = "data", "logits", "prob"


@dataclass
class Peer:
    """One engine ready to run: ``run[batch](x) -> (logits, prob)``."""

    name: str
    version: str
    threads: int
    run: dict[int, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = field(
        default_factory=dict)


def peer_module(name: str):
    """The module ``name``, or None when it cannot be imported."""
    try:
        return importlib.import_module(name)
    except Exception:          # not installed, or broken: no comparison, never a failure
        return None


def vgg_onnx(net, onnx):
    """The ONNX model of ``net`` (a vggjit Network): input ``data`` [N, 3, H, W] with a
    symbolic batch, outputs ``logits`` (the last fc layer, fc8 in VGG, to compare) and
    ``prob``."""
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    nodes, weights = [], []
    last_fc = [layer for layer in net.layers if layer.kind == "fc"][-1]
    current = INPUT
    flattened = False
    for layer in net.layers:
        out = layer.name
        if layer.kind == "conv":
            w, b = net.weights[layer.name]
            weights += [numpy_helper.from_array(np.asarray(w, np.float32), f"{out}_w"),
                        numpy_helper.from_array(np.asarray(b, np.float32), f"{out}_b")]
            nodes.append(helper.make_node("Conv", [current, f"{out}_w", f"{out}_b"], [out],
                                          kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        elif layer.kind == "relu":
            nodes.append(helper.make_node("Relu", [current], [out]))
        elif layer.kind == "pool":
            nodes.append(helper.make_node("MaxPool", [current], [out], kernel_shape=[2, 2],
                                          strides=[2, 2]))
        elif layer.kind == "fc":
            if not flattened:
                nodes.append(helper.make_node("Flatten", [current], ["flat"], axis=1))
                current, flattened = "flat", True
            w, b = net.weights[layer.name]
            weights += [numpy_helper.from_array(np.asarray(w, np.float32), f"{out}_w"),
                        numpy_helper.from_array(np.asarray(b, np.float32), f"{out}_b")]
            if layer is last_fc:
                out = LOGITS
            nodes.append(helper.make_node("Gemm", [current, f"{layer.name}_w",
                                                   f"{layer.name}_b"], [out], transB=1))
        elif layer.kind == "softmax":
            nodes.append(helper.make_node("Softmax", [current], [PROB], axis=1))
            out = PROB
        else:
            raise ValueError(f"no ONNX form for layer kind {layer.kind!r} ({layer.name})")
        current = out
    classes = last_fc.cout
    graph = helper.make_graph(
        nodes, "vgg", [helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT,
                                                     ["N", 3, None, None])],
        [helper.make_tensor_value_info(LOGITS, onnx.TensorProto.FLOAT, ["N", classes]),
         helper.make_tensor_value_info(PROB, onnx.TensorProto.FLOAT, ["N", classes])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="vggjit bench")
    onnx.checker.check_model(model)
    return model


def peer_version(module) -> str:
    """An engine module's version string (OpenVINO's comes from a function)."""
    version = getattr(module, "get_version", None)
    return version() if callable(version) else module.__version__


def onnxruntime_peer(model_bytes: bytes, threads: int, batches) -> Peer | None:
    ort = peer_module("onnxruntime")
    if ort is None:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])

    def run(x):
        logits, prob = session.run([LOGITS, PROB], {INPUT: x})
        return logits, prob

    return Peer("onnxruntime", peer_version(ort), threads, {n: run for n in batches})


def openvino_peer(model_path: Path, threads: int, batches, size: int) -> Peer | None:
    ov = peer_module("openvino")
    if ov is None:
        return None
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": "f32"}
    runs = {}
    for n in batches:
        model = core.read_model(str(model_path))
        model.reshape({INPUT: [n, 3, size, size]})
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        outputs = (compiled.output(LOGITS), compiled.output(PROB))

        def run(x, request=request, outputs=outputs):
            result = request.infer({INPUT: x})
            return result[outputs[0]], result[outputs[1]]

        runs[n] = run
    return Peer("openvino", peer_version(ov), threads, runs)


#: the deployed engines, which run the ONNX graph built here
ENGINES = ("onnxruntime", "openvino")


def engine_modules() -> tuple[dict, dict[str, str]]:
    """({engine: its module} for each of ENGINES that can run here, {engine: why not} for the
    others): an engine needs its own package and ``onnx``, which builds the graph."""
    if peer_module("onnx") is None:
        return {}, {name: "onnx not importable (the graph is built with it)" for name in ENGINES}
    found, missing = {}, {}
    for name in ENGINES:
        module = peer_module(name)
        if module is None:
            missing[name] = "not importable"
        else:
            found[name] = module
    return found, missing


def peers(net, threads: int, batches=(1, 4), size: int = 224) -> tuple[dict[str, Peer], dict]:
    """Every engine that can run here, built in this process for ``batches``; and {engine: why
    not} for the others."""
    modules, missing = engine_modules()
    if not modules:
        return {}, missing
    model_bytes = vgg_onnx(net, peer_module("onnx")).SerializeToString()
    found = {}
    if "onnxruntime" in modules:
        found["onnxruntime"] = onnxruntime_peer(model_bytes, threads, batches)
    if "openvino" in modules:
        with tempfile.TemporaryDirectory(prefix="vggjit-bench-onnx-") as tmp:
            path = Path(tmp) / "vgg19.onnx"
            path.write_bytes(model_bytes)
            found["openvino"] = openvino_peer(path, threads, batches, size)  # reads it now
    return found, missing
