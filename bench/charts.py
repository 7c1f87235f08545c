"""PNG charts of a benchmark run (matplotlib, no display needed).

Each chart reads the dicts the suites return; a suite that did not run, or lacks a figure
(PyTorch not importable), simply leaves its chart out.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def draw(results: dict, stem: Path) -> list[Path]:
    """Draw every chart the results allow; return the PNG paths, named ``<stem>-<chart>.png``."""
    made = []
    for name, chart in (("conv-layers", _conv_layers), ("vs-pytorch", _vs_pytorch),
                        ("vs-engines", _vs_engines), ("style", _style)):
        path = Path(f"{stem}-{name}.png")
        try:
            figure = chart(results)
        except (KeyError, TypeError, ValueError, IndexError):
            figure = None  # a suite missing or shaped differently: no chart, not a crash
        if figure is not None:
            figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(figure)
            made.append(path)
    return made


def _conv_layers(results: dict):
    """Per-layer GFLOP/s (forward, backward dx, backward full) against the sgemm ceiling."""
    shapes = results["kernels"]["vgg_layers"]["shapes"]
    labels = [f"{s['layers'][0]}\n{s['cin']}->{s['cout']}@{s['side']}" for s in shapes]
    figure, axis = plt.subplots(figsize=(11, 4.5))
    width = 0.2
    series = [("forward", "forward"), ("backward_dx", "backward dx"),
              ("backward_full", "backward dx+dw+db"), ("torch_forward", "PyTorch forward")]
    for k, (key, label) in enumerate(series):
        if key not in shapes[0]:
            continue
        values = [s[key]["pct_of_sgemm"]["median"] for s in shapes]
        axis.bar([i + (k - 1.5) * width for i in range(len(shapes))], values, width, label=label)
    axis.axhline(100, color="black", linewidth=1, label="sgemm ceiling (same run)")
    axis.axhline(75, color="grey", linestyle="--", linewidth=1, label="forward target 75%")
    axis.set_xticks(range(len(shapes)), labels, fontsize=8)
    axis.set_ylabel("% of measured sgemm GFLOP/s")
    axis.set_title("VGG19 conv layers at 224x224, batch 1 (numba-cpu)")
    axis.legend(fontsize=8, ncol=3)
    return figure


def _vs_pytorch(results: dict):
    """vggjit / PyTorch time ratios measured in the same run (below 1: vggjit faster)."""
    bars = []
    torch_net = (results.get("network") or {}).get("torch") or {}
    for key, label in (("ratio_b1", "VGG19 forward b1"), ("ratio_b4", "VGG19 forward b4")):
        if torch_net.get(key):
            bars.append((label, torch_net[key]))
    style = results.get("style") or {}
    rows = style.get("results", [])
    for size in style.get("sizes", []):
        ours = [r for r in rows if r.get("size") == size and r.get("impl") == "vggjit"
                and "seconds" in r]
        theirs = [r for r in rows if r.get("size") == size and r.get("impl") == "torch"
                  and "seconds" in r]
        if ours and theirs:
            bars.append((f"style step {size}px",
                         ours[0]["seconds"]["median"] / theirs[0]["seconds"]["median"]))
    if not bars:
        return None
    figure, axis = plt.subplots(figsize=(8, 3.5))
    axis.bar([b[0] for b in bars], [b[1] for b in bars], color="tab:blue")
    axis.axhline(1.0, color="black", linewidth=1)
    for i, (_, ratio) in enumerate(bars):
        axis.text(i, ratio, f"{ratio:.2f}", ha="center", va="bottom", fontsize=9)
    axis.set_ylabel("vggjit time / PyTorch time")
    axis.set_title("vggjit vs PyTorch, same machine, same run (lower is better)")
    axis.tick_params(axis="x", labelsize=8)
    return figure


def _vs_engines(results: dict):
    """VGG19 forward: vggjit / engine time ratios for every engine the network suite compared
    (PyTorch, ONNX Runtime, OpenVINO), batch 1 and 4, measured in the same run."""
    engines = (results.get("network") or {}).get("peers") or {}
    if not engines:
        return None
    names = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
    figure, axis = plt.subplots(figsize=(8, 3.5))
    width = 0.38
    for k, (key, label) in enumerate((("ratio_b1", "batch 1"), ("ratio_b4", "batch 4"))):
        values = [engines[name][key] for name in engines]
        xs = [i + (k - 0.5) * width for i in range(len(engines))]
        axis.bar(xs, values, width, label=label)
        for x, v in zip(xs, values):
            axis.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    axis.axhline(1.0, color="black", linewidth=1)
    axis.set_xticks(range(len(engines)), [names.get(n, n) for n in engines])
    axis.set_ylabel("vggjit time / engine time")
    axis.set_title("VGG19 forward at 224, same weights and threads, same run (lower is better)")
    axis.legend(fontsize=8)
    return figure


def _style(results: dict):
    """Style transfer seconds per step and peak RSS against image size."""
    style = results["style"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for impl in ("vggjit", "torch"):
        rows = [r for r in style["results"] if r.get("impl") == impl and "seconds" in r]
        if not rows:
            continue
        sizes = [r["size"] for r in rows]
        left.plot(sizes, [r["seconds"]["median"] for r in rows], marker="o", label=impl)
        right.plot(sizes, [r["peak_rss_mb"] / 1024 for r in rows], marker="o", label=impl)
    left.set_xlabel("image side (px)")
    left.set_ylabel("seconds per step (forward + backward)")
    right.set_xlabel("image side (px)")
    right.set_ylabel("peak RSS (GiB)")
    for axis in (left, right):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.suptitle("Style transfer, lab layers (relu4_2; relu1_1..relu5_1)")
    return figure
