"""VGG19 forward at 224 x 224: latency, throughput, per-layer times, memory; PyTorch beside it.

* latency: batch 1, the whole forward pass to ``prob`` (median of several runs);
* throughput: batch 4, images per second;
* per layer: batch 1, every op of the pass timed on its own (median per layer), with GFLOP/s
  for the conv and fc layers;
* peak RSS of this process after vggjit's runs, before PyTorch is touched;
* `vggjit classify` on one image in a new process, start to printed result, with converted
  weights (the random ones, written as a native file) and a warm JIT cache;
* PyTorch (CPU, same thread count) running the same network with the same weights, when it is
  importable; its runs alternate with vggjit's so that both see the same machine state, and the
  report gives the ratio vggjit / PyTorch (below 1.0: vggjit is faster).

Weights are ``VGG19.random`` (He-normal, fc included): timing does not depend on their values.

    python -m bench.network [--quick] [--driver NAME]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (interleaved, markdown_table, peak_rss_mb, sgemm_gflops,  # noqa: E402
                          timeit, torch_or_none, write_results)

#: the image side; one VGG19 pass at 224 x 224 is 19.6 G multiply-adds (SPEC section 3)
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
    import os
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
    rng = np.random.default_rng(0)
    x1 = rng.uniform(-120, 130, (1, 3, SIZE, SIZE)).astype(np.float32)
    x4 = rng.uniform(-120, 130, (4, 3, SIZE, SIZE)).astype(np.float32)
    total_flops = sum(layer_flops(net).values())

    start = time.perf_counter()
    logits = net.forward(x1, ("fc8", "prob"))["fc8"]  # compiles (or loads the JIT cache)
    first = time.perf_counter() - start
    alone1 = timeit(lambda: net.forward(x1), repeat=repeat, warmup=0)
    alone4 = timeit(lambda: net.forward(x4), repeat=max(2, repeat // 2), warmup=1)
    layers = per_layer(net, x1, repeat=3 if quick else 5)
    rss = peak_rss_mb()

    result = {
        "driver": d.name, "size": SIZE, "repeat": repeat, "first_forward_s": first,
        "gflop_per_image": total_flops / 1e9,
        "latency_b1": alone1, "gflops_b1": total_flops / alone1["median"] / 1e9,
        "throughput_b4_images_per_s": 4 / alone4["median"], "batch4": alone4,
        "peak_rss_mb": rss, "layers": layers,
        "sgemm_ceiling_gflops": sgemm_gflops(repeat=3 if quick else 5),
        "classify_startup_s": classify_startup(net, d.name, repeat=2 if quick else 3),
    }

    torch = torch_or_none()
    if torch is None:
        result["torch"] = None
    else:
        model = torch_vgg(torch, net)
        t1, t4 = torch.from_numpy(x1), torch.from_numpy(x4)
        with torch.inference_mode():
            # random weights saturate the softmax, so compare the logits
            theirs = model[:-1](t1).numpy()
            diff = float(np.abs(theirs - logits).max() / np.abs(theirs).max())
            model(t1)  # warm-up
            b1 = interleaved({"vggjit": lambda: net.forward(x1), "torch": lambda: model(t1)},
                             repeat)
            b4 = interleaved({"vggjit": lambda: net.forward(x4), "torch": lambda: model(t4)},
                             max(2, repeat // 2))
        result["torch"] = {
            "version": torch.__version__, "threads": torch.get_num_threads(),
            "fc8_max_relative_difference": diff,
            "interleaved_b1": b1, "interleaved_b4": b4,
            "ratio_b1": b1["vggjit"]["median"] / b1["torch"]["median"],
            "ratio_b4": b4["vggjit"]["median"] / b4["torch"]["median"],
            "gflops_b1": total_flops / b1["torch"]["median"] / 1e9,
        }
    result["markdown"] = markdown(result)
    return result


def markdown(r: dict) -> str:
    ms = 1e3
    rows = [["latency, batch 1 (s)", r["latency_b1"]["median"],
             f"{r['latency_b1']['min']:.3f}-{r['latency_b1']['max']:.3f}"],
            ["GFLOP/s, batch 1", r["gflops_b1"], ""],
            ["throughput, batch 4 (images/s)", r["throughput_b4_images_per_s"], ""],
            ["first forward incl. JIT / cache load (s)", r["first_forward_s"], ""],
            ["peak RSS (MiB)", r["peak_rss_mb"], "vggjit's runs, before PyTorch is loaded"],
            ["`vggjit classify` one image, process start to result (s)",
             r["classify_startup_s"]["median"], "warm JIT cache, converted weights"],
            ["sgemm ceiling (GFLOP/s)", r["sgemm_ceiling_gflops"]["median"], ""]]
    t = r.get("torch")
    if t:
        rows += [[f"PyTorch {t['version']} latency, batch 1 (s, interleaved)",
                  t["interleaved_b1"]["torch"]["median"], ""],
                 ["vggjit latency, batch 1 (s, interleaved)", t["interleaved_b1"]["vggjit"]["median"],
                  ""],
                 ["ratio vggjit / PyTorch, batch 1", t["ratio_b1"], "< 1.0: vggjit faster"],
                 ["ratio vggjit / PyTorch, batch 4", t["ratio_b4"], ""],
                 ["fc8 logits: max difference / max value vs PyTorch",
                  t["fc8_max_relative_difference"], "the same network"]]
    else:
        rows.append(["PyTorch", "not importable", "no comparison in this run"])
    head = (f"VGG19 forward, {r['size']}x{r['size']}, driver {r['driver']}, "
            f"{r['gflop_per_image']:.1f} GFLOP per image, medians of {r['repeat']} runs\n\n")
    table = markdown_table(["figure", "value", "note"], rows)
    layer_rows = [[row["layer"], f"{row['seconds'] * ms:.2f}",
                   f"{row['gflops']:.1f}" if "gflops" in row else ""]
                  for row in r["layers"] if row["kind"] != "relu" or row["seconds"] * ms > 1]
    return (head + table + "\n\nPer layer, batch 1 (each conv's time includes the ReLU fused "
            "into it; other ReLUs under 1 ms omitted):\n\n"
            + markdown_table(["layer", "ms", "GFLOP/s"], layer_rows))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--driver", help="driver to time (default: the best available)")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, driver=args.driver)
    print(result["markdown"])
    paths = write_results("network", {k: v for k, v in result.items() if k != "markdown"},
                          result["markdown"])
    print("wrote " + " and ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
