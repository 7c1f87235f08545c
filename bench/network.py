"""VGG19 forward at 224 x 224: latency, throughput, per-layer times against their limits,
memory; PyTorch, ONNX Runtime and OpenVINO beside it.

* latency: batch 1, the whole forward pass to ``prob`` (median of several runs);
* throughput: batch 4, images per second;
* per layer: batch 1, every op of the pass timed on its own (median per layer), with GFLOP/s
  for the conv and fc layers and the share of its own limit each layer reaches: its flops at
  the sgemm ceiling, or its bytes at the copy bandwidth (pooling, fc6 at batch 1), both
  measured in the same run;
* peak RSS of three forwards at batch 1 and two at batch 4 in a process of its own
  (bench/probes/network_memory.py);
* `vggjit classify` on one image in a new process, start to printed result, with converted
  weights (the random ones, written as a native file) and a warm JIT cache;
* PyTorch, ONNX Runtime and OpenVINO (CPU, float32, the same thread count) running the same
  network with the same weights, each when it is importable (none is a dependency; the ONNX
  graph for the last two is built in bench/peers.py), each in a process of its own beside one
  more for vggjit (bench.lockstep: no engine runs under another's process-wide settings); their
  runs alternate so that all see the same machine state, each engine's logits are checked
  against vggjit's, and the report gives the ratios vggjit / engine (below 1.0: vggjit is
  faster).

Weights are ``VGG19.random`` (He-normal, fc included): timing does not depend on their values.

    python -m bench.network [--quick] [--driver NAME]
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (markdown_table, run_probe, sgemm_gflops, suite_main,  # noqa: E402
                          timeit, torch_or_none)
from bench.lockstep import Lockstep  # noqa: E402
from bench.peers import engine_modules, peer_module, peer_version, vgg_onnx  # noqa: E402

#: the image side; one VGG19 pass at 224 x 224 is 19.6 G multiply-adds (docs/equations.md,
#: section 3)
SIZE = 224


def layer_flops(net, size: int = SIZE) -> dict[str, float]:
    """{layer: floating-point operations (2 per multiply-add)} for one image."""
    flops, side = {}, size
    for layer in net.layers:
        if layer.kind == "conv":
            flops[layer.name] = 2.0 * layer.cout * layer.cin * 9 * side * side
        elif layer.kind == "pool":
            side //= 2
        elif layer.kind == "fc":
            flops[layer.name] = 2.0 * layer.cout * layer.cin
    return flops


class _TimedDriver:
    """Wraps a driver; records (op, seconds) of every op call, in call order."""

    OPS = ("conv2d", "relu", "max_pool2d", "avg_pool2d", "linear", "softmax")

    def __init__(self, driver):
        self._driver = driver
        self.capabilities = frozenset(c for c in driver.capabilities if c != "graph")
        self.times: list[tuple[str, float]] = []

    def __getattr__(self, name):
        attr = getattr(self._driver, name)
        if name not in self.OPS:
            return attr

        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = attr(*args, **kwargs)
            self.times.append((name, time.perf_counter() - start))
            return result
        return timed


def per_layer(net, x, repeat: int) -> list[dict]:
    """Median seconds of each layer's op over ``repeat`` batch-1 passes.

    A ReLU that the network fused into the conv before it (conv2d relu=True) makes no call of
    its own: its row gets 0 s and ``fused``, and its time is in the conv's row."""
    from vggjit.network import Network

    timed = _TimedDriver(net.driver)
    probe = Network(net.layers, net.weights, driver=timed, mean_pixel=net.mean_pixel)
    runs = []
    for _ in range(repeat):
        timed.times.clear()
        probe.forward(x, ("prob",))
        runs.append(list(timed.times))
    flops = layer_flops(net, x.shape[2])
    rows = []
    call = 0                               # index into each run's list of op calls
    for layer in net.layers:
        if layer.kind == "relu" and runs[0][call][0] != "relu":
            rows.append({"layer": layer.name, "kind": layer.kind, "seconds": 0.0, "fused": True})
            continue
        seconds = statistics.median(run[call][1] for run in runs)
        call += 1
        row = {"layer": layer.name, "kind": layer.kind, "seconds": seconds}
        if layer.name in flops:
            row["gflops"] = flops[layer.name] / seconds / 1e9
        rows.append(row)
    return rows


def torch_vgg(torch, net):
    """The same network in PyTorch, with the same weights (OIHW and [out, in] are torch's)."""
    modules = []
    for layer in net.layers:
        if layer.kind == "conv":
            conv = torch.nn.Conv2d(layer.cin, layer.cout, 3, padding=1)
            w, b = net.weights[layer.name]
            conv.weight.data = torch.from_numpy(np.array(w))
            conv.bias.data = torch.from_numpy(np.array(b))
            modules.append(conv)
        elif layer.kind == "relu":
            modules.append(torch.nn.ReLU())
        elif layer.kind == "pool":
            modules.append(torch.nn.MaxPool2d(2, 2))
        elif layer.kind == "fc":
            if not any(isinstance(m, torch.nn.Flatten) for m in modules):
                modules.append(torch.nn.Flatten())
            fc = torch.nn.Linear(layer.cin, layer.cout)
            w, b = net.weights[layer.name]
            fc.weight.data = torch.from_numpy(np.array(w))
            fc.bias.data = torch.from_numpy(np.array(b))
            modules.append(fc)
        elif layer.kind == "softmax":
            modules.append(torch.nn.Softmax(dim=1))
    return torch.nn.Sequential(*modules).eval()


def classify_startup(net, driver_name: str, repeat: int) -> dict:
    """Seconds from process start to the printed result of `vggjit classify` on one image.

    The weights (this run's random VGG19, 575 MB) are written as a native file first, so this
    is the "cached weights" case; one untimed run first warms the JIT cache and the page cache.
    """
    import subprocess
    import tempfile

    from PIL import Image

    from vggjit.weights import WeightSet, write_native

    with tempfile.TemporaryDirectory(prefix="vggjit-bench-") as tmp:
        weights = Path(tmp) / "vgg19.npz"
        ws = WeightSet(layers=net.layers, params={k: net.weights[k] for k in net.weights},
                       mean_pixel=net.mean_pixel, wnids=[], descriptions=[], source="random",
                       version="random")
        write_native(weights, ws)
        image = Path(tmp) / "image.png"
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), np.uint8)
                        ).save(image)
        command = [sys.executable, "-m", "vggjit", "classify", str(image), "--weights",
                   str(weights), "--driver", driver_name, "--top-k", "1"]
        env = {**os.environ, "VGGJIT_HOME": tmp}
        # The first run converts the weights into the fresh VGGJIT_HOME: untimed.
        return timeit(lambda: subprocess.run(command, env=env, check=True, capture_output=True),
                      repeat=repeat, warmup=1)


def run(quick: bool = False, driver: str | None = None) -> dict:
    from vggjit import VGG19, get_driver

    repeat = 3 if quick else 7
    d = get_driver(driver)
    net = VGG19.random(seed=0, driver=d)
    x1, x4 = inputs()
    total_flops = sum(layer_flops(net).values())

    start = time.perf_counter()
    logits = net.forward(x1, ("fc8", "prob"))["fc8"]  # compiles (or loads the JIT cache)
    first = time.perf_counter() - start
    alone1 = timeit(lambda: net.forward(x1), repeat=repeat, warmup=0)
    alone4 = timeit(lambda: net.forward(x4), repeat=max(2, repeat // 2), warmup=1)
    layers = per_layer(net, x1, repeat=3 if quick else 5)
    rss = run_probe("network_memory", (d.name,))[1]["peak_rss_mb"]

    result = {
        "driver": d.name, "size": SIZE, "repeat": repeat, "first_forward_s": first,
        "gflop_per_image": total_flops / 1e9,
        "latency_b1": alone1, "gflops_b1": total_flops / alone1["median"] / 1e9,
        "throughput_b4_images_per_s": 4 / alone4["median"], "batch4": alone4,
        "peak_rss_mb": rss, "layers": layers,
        "sgemm_ceiling_gflops": sgemm_gflops(repeat=3 if quick else 5),
        "classify_startup_s": classify_startup(net, d.name, repeat=2 if quick else 3),
    }
    result["memory_bandwidth_gbs"] = memory_bandwidth(repeat=3 if quick else 5)
    add_limits(result["layers"], net, result["sgemm_ceiling_gflops"]["median"],
               result["memory_bandwidth_gbs"]["median"])
    threads = getattr(d, "threads", None) or os.cpu_count() or 1
    result.update(compare_with_peers(net, d.name, threads, logits, repeat))
    result["markdown"] = markdown(result)
    return result


def inputs(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The batch-1 and batch-4 inputs every engine gets (the same in every process)."""
    rng = np.random.default_rng(0)
    x1 = rng.uniform(-120, 130, (1, 3, size, size)).astype(np.float32)
    x4 = rng.uniform(-120, 130, (4, 3, size, size)).astype(np.float32)
    return x1, x4


# -- lockstep builders (bench.lockstep): each engine in a process of its own ----------------------
def vggjit_forwards(driver: str) -> dict:
    from vggjit import VGG19, get_driver

    net = VGG19.random(seed=0, driver=get_driver(driver))
    x1, x4 = inputs()
    return {"b1": (lambda: net.forward(x1), lambda: net.forward(x1, ("fc8", "prob"))["fc8"]),
            "b4": (lambda: net.forward(x4), None)}


def torch_forwards(threads: int) -> dict:
    from vggjit import VGG19, get_driver

    torch = torch_or_none()
    torch.set_num_threads(threads)
    # the weights only: the naive driver sets nothing process-wide (numba-cpu's malloc settings
    # would be vggjit's, not PyTorch's)
    model = torch_vgg(torch, VGG19.random(seed=0, driver=get_driver("naive")))
    t1, t4 = (torch.from_numpy(x) for x in inputs())

    def run(t):
        with torch.inference_mode():
            return model(t)

    def logits():
        with torch.inference_mode():
            return model[:-1](t1).numpy()           # fc8, before the softmax

    return {"b1": (lambda: run(t1), logits), "b4": (lambda: run(t4), None)}


def engine_forwards(engine: str, model_path: str, threads: int) -> dict:
    from bench.peers import onnxruntime_peer, openvino_peer

    x1, x4 = inputs()
    if engine == "onnxruntime":
        peer = onnxruntime_peer(Path(model_path).read_bytes(), threads, (1, 4))
    else:
        peer = openvino_peer(Path(model_path), threads, (1, 4), SIZE)
    return {"b1": (lambda: peer.run[1](x1), lambda: peer.run[1](x1)[0]),
            "b4": (lambda: peer.run[4](x4), None)}


def compare_with_peers(net, driver: str, threads: int, logits, repeat: int) -> dict:
    """PyTorch, ONNX Runtime and OpenVINO on the same network and weights, with vggjit's
    thread count, each one that is importable in a process of its own, timed in turn with
    vggjit (in a process of its own too) so that all see the same machine state
    (bench.lockstep); every engine's logits are compared with vggjit's ``logits``.

    Returns {"peers": {engine: figures}, "peers_missing": {engine: why}, "torch": figures or
    None (the PyTorch entry again, under the key earlier reports used)}."""
    builders = {"vggjit": ("bench.network:vggjit_forwards", (driver,))}
    info, missing = {}, {}
    torch = torch_or_none()
    if torch is None:
        missing["torch"] = "not importable"
    else:
        builders["torch"] = ("bench.network:torch_forwards", (threads,))
        info["torch"] = {"version": torch.__version__, "threads": threads}
    out = {"peers": {}, "peers_missing": missing, "torch": None}
    modules, why = engine_modules()
    missing.update(why)
    with tempfile.TemporaryDirectory(prefix="vggjit-bench-onnx-") as tmp:
        path = Path(tmp) / "vgg19.onnx"
        if modules:
            path.write_bytes(vgg_onnx(net, peer_module("onnx")).SerializeToString())
        for engine, module in modules.items():
            builders[engine] = ("bench.network:engine_forwards", (engine, str(path), threads))
            info[engine] = {"version": peer_version(module), "threads": threads}
        if not info:
            return out
        with Lockstep(builders) as engines:
            engines.untimed("b1")                          # each engine's first runs: untimed
            engines.untimed("b4")
            b1 = engines.interleaved("b1", repeat, PAUSE_S)
            b4 = engines.interleaved("b4", max(2, repeat // 2), PAUSE_S)
            theirs_all = engines.outputs("b1")
    for name, figures in info.items():
        theirs = theirs_all[name].reshape(logits.shape)
        # random weights saturate the softmax, so the logits are compared
        diff = float(np.abs(theirs - logits).max() / np.abs(theirs).max())
        out["peers"][name] = {
            **figures, "fc8_max_relative_difference": diff,
            "outputs_match": diff <= OUTPUT_MATCH,
            "interleaved_b1": {"vggjit": b1["vggjit"], name: b1[name]},
            "interleaved_b4": {"vggjit": b4["vggjit"], name: b4[name]},
            "ratio_b1": b1["vggjit"]["median"] / b1[name]["median"],
            "ratio_b4": b4["vggjit"]["median"] / b4[name]["median"],
            "gflops_b1": sum(layer_flops(net).values()) / b1[name]["median"] / 1e9,
        }
    out["torch"] = out["peers"].get("torch")
    deployed = [p for name, p in out["peers"].items() if name != "torch"]
    if deployed:     # the targets name the faster of the deployed engines
        out["ratio_b1_fastest_engine"] = max(p["ratio_b1"] for p in deployed)
        out["ratio_b4_fastest_engine"] = max(p["ratio_b4"] for p in deployed)
    return out


#: seconds of idle before each timed run of the engine comparison (bench.common.interleaved):
#: without it OpenVINO, timed right after ONNX Runtime's spinning pool, measured 0.222 s at
#: batch 1 against 0.180 s with it (vggjit 0.190 against 0.183 s, ONNX Runtime 0.179 / 0.173 s)
PAUSE_S = 0.3

#: largest relative difference of the logits that counts as the same output (float32 sums
#: over up to 25088 terms in another order)
OUTPUT_MATCH = 1e-3


def memory_bandwidth(mb: int = 256, repeat: int = 5) -> dict:
    """Copy bandwidth of this machine in GB/s (bytes read + written per second), median/min/max:
    the limit of the layers that touch each byte once (pooling, fc6 at batch 1)."""
    src = np.ones(mb * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    t = timeit(lambda: np.copyto(dst, src), repeat=repeat)
    moved = 2.0 * src.nbytes
    return {"median": moved / t["median"] / 1e9, "min": moved / t["max"] / 1e9,
            "max": moved / t["min"] / 1e9}


def add_limits(rows: list[dict], net, sgemm_gflops: float, bandwidth_gbs: float,
               size: int = SIZE) -> None:
    """Each layer's own limit at batch 1: the time its flops take at the sgemm ceiling, or its
    bytes (input, output, weights: each touched once) at the copy bandwidth, whichever is
    longer; ``pct_of_limit`` = limit / measured time. Both limits are measured in the same run."""
    flops = layer_flops(net, size)
    side, channels = size, 3
    for layer, row in zip(net.layers, rows):
        if layer.kind == "conv":
            inputs, outputs, weights = channels * side * side, layer.cout * side * side, \
                layer.cin * layer.cout * 9
            channels = layer.cout
        elif layer.kind == "pool":
            inputs, outputs, weights = channels * side * side, channels * (side // 2) ** 2, 0
            side //= 2
        elif layer.kind == "fc":
            inputs, outputs, weights = layer.cin, layer.cout, layer.cin * layer.cout
        else:                                     # relu (fused or not), softmax
            continue
        compute_s = flops.get(layer.name, 0.0) / (sgemm_gflops * 1e9)
        memory_s = 4.0 * (inputs + outputs + weights) / (bandwidth_gbs * 1e9)
        row["limit"] = "sgemm" if compute_s >= memory_s else "bandwidth"
        row["limit_s"] = max(compute_s, memory_s)
        if row["seconds"] > 0:
            row["pct_of_limit"] = 100.0 * row["limit_s"] / row["seconds"]


def markdown(r: dict) -> str:
    ms = 1e3
    rows = [["latency, batch 1 (s)", r["latency_b1"]["median"],
             f"{r['latency_b1']['min']:.3f}-{r['latency_b1']['max']:.3f}"],
            ["GFLOP/s, batch 1", r["gflops_b1"], ""],
            ["throughput, batch 4 (images/s)", r["throughput_b4_images_per_s"], ""],
            ["first forward incl. JIT / cache load (s)", r["first_forward_s"], ""],
            ["peak RSS (MiB)", r["peak_rss_mb"], "3 runs at batch 1 and 2 at batch 4, in a process "
             "of its own"],
            ["`vggjit classify` one image, process start to result (s)",
             r["classify_startup_s"]["median"], "warm JIT cache, converted weights"],
            ["sgemm ceiling (GFLOP/s)", r["sgemm_ceiling_gflops"]["median"], ""]]
    if "memory_bandwidth_gbs" in r:
        rows.append(["copy bandwidth (GB/s, read + write)", r["memory_bandwidth_gbs"]["median"],
                     ""])
    for key, label in (("ratio_b1_fastest_engine", "batch 1"),
                       ("ratio_b4_fastest_engine", "batch 4")):
        if key in r:
            rows.append([f"ratio vggjit / faster of ONNX Runtime and OpenVINO, {label}", r[key],
                         "< 1.0: vggjit faster"])
    head = (f"VGG19 forward, {r['size']}x{r['size']}, driver {r['driver']}, "
            f"{r['gflop_per_image']:.1f} GFLOP per image, medians of {r['repeat']} runs\n\n")
    text = head + markdown_table(["figure", "value", "note"], rows)
    peers = r.get("peers") or ({"torch": r["torch"]} if r.get("torch") else {})
    if peers:
        peer_rows = []
        for name, p in peers.items():
            b1, b4 = p["interleaved_b1"], p["interleaved_b4"]
            peer_rows.append([
                f"{ENGINE_NAMES.get(name, name)} {str(p['version']).split('-')[0]}",
                p["threads"], f"{b1[name]['median']:.3f}", f"{b1['vggjit']['median']:.3f}",
                f"{p['ratio_b1']:.2f}", f"{b4[name]['median']:.3f}",
                f"{b4['vggjit']['median']:.3f}", f"{p['ratio_b4']:.2f}",
                f"{p['fc8_max_relative_difference']:.1e}"
                + ("" if p.get("outputs_match", True) else " MISMATCH")])
        text += ("\n\nOther engines, same weights and thread count, each in a process of its "
                 "own, their runs interleaved with vggjit's (in a process of its own too) in "
                 f"this run, {PAUSE_S} s idle before every timed run (seconds; ratio = vggjit "
                 "/ engine, below 1.0: vggjit faster):\n\n"
                 + markdown_table(["engine", "threads", "b1 engine", "b1 vggjit", "ratio b1",
                                   "b4 engine", "b4 vggjit", "ratio b4",
                                   "fc8 max rel. diff"], peer_rows))
    missing = r.get("peers_missing") or ({} if r.get("torch") else {"torch": "not importable"})
    if missing:
        text += "\n\nNot compared: " + "; ".join(
            f"{ENGINE_NAMES.get(name, name)} ({why})" for name, why in missing.items()) + "."
    layer_rows = [[row["layer"], f"{row['seconds'] * ms:.2f}",
                   f"{row['gflops']:.1f}" if "gflops" in row else "",
                   row.get("limit", ""),
                   f"{row['limit_s'] * ms:.2f}" if "limit_s" in row else "",
                   f"{row['pct_of_limit']:.0f}%" if "pct_of_limit" in row else ""]
                  for row in r["layers"] if row["kind"] != "relu" or row["seconds"] * ms > 1]
    return (text + "\n\nPer layer, batch 1 (each conv's time includes the ReLU fused into it; "
            "other ReLUs under 1 ms omitted). Limit: the layer's flops at the sgemm ceiling or "
            "its bytes at the copy bandwidth, whichever takes longer, both measured in this "
            "run:\n\n"
            + markdown_table(["layer", "ms", "GFLOP/s", "bound by", "limit ms", "% of limit"],
                             layer_rows))


ENGINE_NAMES = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def main(argv=None) -> int:
    return suite_main("network", run, __doc__.split("\n\n")[0], argv, driver_option=True)


if __name__ == "__main__":
    sys.exit(main())
