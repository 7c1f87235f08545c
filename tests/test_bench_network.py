"""The network benchmark's arithmetic and report, and the ONNX graph it hands to the other
engines. No timing: the figures are made up, the graph runs on a test-sized network, and an
engine that is not importable (none is a dependency) skips its check."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import network as bench_network  # noqa: E402
from bench import charts  # noqa: E402
from bench import peers as bench_peers  # noqa: E402

from vggjit import get_driver  # noqa: E402
from vggjit.network import Network, param_shapes, vgg_layers  # noqa: E402

LAYERS = vgg_layers([(4, 1), (8, 2)], [16, 10])       # input 28 x 28: 7 x 7 after two pools


def _stat(value):
    return {"median": value, "min": value, "max": value, "runs": 1}


def test_each_layer_gets_its_own_limit():
    net = SimpleNamespace(layers=LAYERS)
    rows = [{"layer": layer.name, "kind": layer.kind, "seconds": 1e-3} for layer in LAYERS]
    bench_network.add_limits(rows, net, sgemm_gflops=100.0, bandwidth_gbs=10.0, size=28)
    by_name = {row["layer"]: row for row in rows}
    # conv2_2: 2*8*8*9*14*14 flops at 100 GFLOP/s against 4*(8*196*2 + 576) bytes at 10 GB/s
    flops, moved = 2.0 * 8 * 8 * 9 * 14 * 14, 4.0 * (8 * 196 * 2 + 8 * 8 * 9)
    assert by_name["conv2_2"]["limit_s"] == pytest.approx(max(flops / 1e11, moved / 1e10))
    assert by_name["pool1"]["limit"] == "bandwidth"
    # fc6 at batch 1 reads its weights once: bound by bandwidth
    assert by_name["fc6"]["limit"] == "bandwidth"
    assert by_name["fc6"]["limit_s"] == pytest.approx(4.0 * (392 + 16 + 392 * 16) / 1e10)
    assert by_name["fc6"]["pct_of_limit"] == pytest.approx(100 * by_name["fc6"]["limit_s"] / 1e-3)
    assert "limit" not in by_name["relu1_1"] and "limit" not in by_name["prob"]


def _peer(ratio, diff=1e-6):
    return {"version": "9.9", "threads": 2, "fc8_max_relative_difference": diff,
            "outputs_match": diff <= bench_network.OUTPUT_MATCH,
            "interleaved_b1": {"vggjit": _stat(0.2), "x": _stat(0.2 / ratio)},
            "interleaved_b4": {"vggjit": _stat(0.6), "x": _stat(0.6 / ratio)},
            "ratio_b1": ratio, "ratio_b4": ratio}


def test_report_shows_every_engine_and_flags_a_mismatch():
    peers = {"onnxruntime": _peer(0.9), "openvino": _peer(1.1, diff=0.5)}
    for name, peer in peers.items():    # each engine's own column is keyed by its name
        for key in ("interleaved_b1", "interleaved_b4"):
            peer[key][name] = peer[key].pop("x")
    result = {"driver": "numba-cpu", "size": 224, "repeat": 3, "first_forward_s": 1.0,
              "gflop_per_image": 39.3, "latency_b1": _stat(0.2), "gflops_b1": 190.0,
              "throughput_b4_images_per_s": 6.6, "peak_rss_mb": 900.0,
              "classify_startup_s": _stat(2.0), "sgemm_ceiling_gflops": _stat(150.0),
              "memory_bandwidth_gbs": _stat(12.0), "peers": peers,
              "peers_missing": {"torch": "not importable"}, "torch": None,
              "ratio_b1_fastest_engine": 1.1, "ratio_b4_fastest_engine": 1.1,
              "layers": [{"layer": "conv1_1", "kind": "conv", "seconds": 0.01, "gflops": 17.0,
                          "limit": "sgemm", "limit_s": 0.001, "pct_of_limit": 10.0}]}
    text = bench_network.markdown(result)
    assert "ONNX Runtime 9.9" in text and "OpenVINO 9.9" in text
    assert text.count("MISMATCH") == 1
    assert "PyTorch (not importable)" in text
    assert "faster of ONNX Runtime and OpenVINO, batch 1" in text
    assert "| conv1_1 | 10.00 | 17.0 | sgemm | 1.00 | 10% |" in text


def test_onnx_graph_computes_what_vggjit_computes():
    onnx = pytest.importorskip("onnx")
    rng = np.random.default_rng(0)
    params = {name: (rng.standard_normal(w).astype(np.float32) * 0.3,
                     rng.standard_normal(b).astype(np.float32))
              for name, (w, b) in param_shapes(LAYERS).items()}
    net = Network(LAYERS, params, driver=get_driver("numba-cpu"))
    model = bench_peers.vgg_onnx(net, onnx)          # the checker has passed it
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Conv") == 3 and ops.count("Gemm") == 2 and ops[-1] == "Softmax"
    x = rng.standard_normal((2, 3, 28, 28)).astype(np.float32)
    want = net.forward(x, ("fc7",))["fc7"]
    found, _ = bench_peers.peers(net, threads=1, batches=(2,), size=28)
    if not found:
        pytest.skip("neither ONNX Runtime nor OpenVINO is importable")
    for name, peer in found.items():
        logits, prob = peer.run[2](x)
        assert np.abs(logits - want).max() <= 1e-4 * np.abs(want).max(), name
        np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)


def test_engines_chart_is_drawn_for_every_engine(tmp_path):
    peers = {"torch": _peer(0.5), "onnxruntime": _peer(0.9), "openvino": _peer(1.1)}
    made = charts.draw({"network": {"peers": peers}}, tmp_path / "run")
    chart = tmp_path / "run-vs-engines.png"
    assert chart in made and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert charts.draw({"network": {"peers": {}}}, tmp_path / "none") == []
