"""Style transfer: seconds per step (forward + backward to the image) and peak RSS.

The lab's layers (content relu4_2; style relu1_1..relu5_1), alpha 1, beta 500, on VGG19 with
random He-normal weights (speed and memory do not depend on the weight values) at 256x256,
512x512 and 1024x1024. PyTorch (CPU, same threads) runs the same loss in the same benchmark when
it is importable: a VGG19 conv stack to relu5_1 with the same He-normal initialisation, the
same content and Gram losses, autograd to the image.

Per size: each implementation runs alone in its own subprocess (its peak RSS is that size's
alone, and its first step), then both run again, each in a process of its own, step for step in
turn (bench.lockstep): the seconds per step and the ratio come from that run, so a busy spell of
this shared machine slows both alike instead of whichever ran at the time, and neither runs
under the other's process-wide settings (vggjit's malloc settings made PyTorch's step 15-30 %
faster when both shared a process).

    python -m bench.style              # 256, 512, 1024
    python -m bench.style --quick      # 256 and 512, fewer repeats
    python -m bench.style --one vggjit 512 --repeat 3    (one measurement; prints JSON)
    python -m bench.style --pair 512 --repeat 5          (both in turn; prints JSON)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import markdown_table, peak_rss_mb, timeit, torch_or_none  # noqa: E402
from bench.lockstep import ChildError, Lockstep  # noqa: E402

SIZES = (256, 512, 1024)
QUICK_SIZES = (256, 512)
CONTENT = ("relu4_2",)
STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
ALPHA, BETA = 1.0, 500.0


def _images(size: int):
    import numpy as np

    rng = np.random.default_rng(0)
    content = rng.uniform(-100, 100, (1, 3, size, size)).astype(np.float32)
    style = rng.uniform(-100, 100, (1, 3, size, size)).astype(np.float32)
    x = (content + rng.uniform(-20, 20, content.shape)).astype(np.float32)
    return content, style, x


def vggjit_step(size: int):
    """(driver name, one style step: forward + backward to the image) on vggjit."""
    from vggjit.contract import BACKWARD
    from vggjit.losses import StyleObjective, layer_weights, style_targets
    from vggjit.network import VGG19
    from vggjit.registry import get_driver

    driver = get_driver(require={BACKWARD})
    net = VGG19.random(0, driver, pooling="max")
    content, style, x = _images(size)
    grams = style_targets(net, [style], [1.0], STYLE, size, size)
    obj = StyleObjective(net, content, layer_weights(CONTENT, None, "content"),
                         layer_weights(STYLE, None, "style"), grams, alpha=ALPHA, beta=BETA)
    return driver.name, lambda: obj(x)


def _time_steps(step, repeat: int) -> dict:
    """The first step on its own (JIT compile or cache load, buffer allocation), then the
    median/min/max of ``repeat`` more; with the process's peak RSS after them."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    return {"seconds": timeit(step, repeat=repeat, warmup=0), "first_step_s": first,
            "peak_rss_mb": peak_rss_mb()}


def measure_vggjit(size: int, repeat: int) -> dict:
    name, step = vggjit_step(size)
    return {"impl": "vggjit", "driver": name, "size": size, **_time_steps(step, repeat)}


def torch_step(torch, size: int):
    """One style step of the same loss in PyTorch (autograd to the image)."""
    import numpy as np

    from vggjit.network import VGG19_BLOCKS

    gen = torch.Generator().manual_seed(0)
    layers, names, cin = [], [], 3
    for b, (channels, convs) in enumerate(VGG19_BLOCKS, start=1):
        for i in range(1, convs + 1):
            w = torch.randn(channels, cin, 3, 3, generator=gen) * float(np.sqrt(2.0 / (cin * 9)))
            layers.append(("conv", w, torch.zeros(channels)))
            layers.append(("relu", None, None))
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
            cin = channels
        layers.append(("pool", None, None))
        names.append(f"pool{b}")
    last = names.index("relu5_1")
    wanted = set(CONTENT + STYLE)

    def forward(img):
        feats, h = {}, img
        for (kind, w, bias), name in zip(layers[:last + 1], names[:last + 1]):
            if kind == "conv":
                h = torch.nn.functional.conv2d(h, w, bias, padding=1)
            elif kind == "relu":
                h = torch.relu(h)
            else:
                h = torch.nn.functional.max_pool2d(h, 2, 2)
            if name in wanted:
                feats[name] = h
        return feats

    def gram(f):
        n, c = f.shape[:2]
        flat = f.reshape(n, c, -1)
        return flat @ flat.transpose(1, 2)

    content, style, x0 = (torch.from_numpy(a) for a in _images(size))
    with torch.no_grad():
        y = {k: v for k, v in forward(content).items() if k in CONTENT}
        a = {k: gram(v) for k, v in forward(style).items() if k in STYLE}

    def step():
        x = x0.clone().requires_grad_(True)
        feats = forward(x)
        loss = 0.0
        for k in CONTENT:
            loss = loss + ALPHA / len(CONTENT) * 0.5 * torch.mean((feats[k] - y[k]) ** 2)
        for k in STYLE:
            f = feats[k]
            n, c, h, w = f.shape
            loss = loss + BETA / len(STYLE) * torch.sum((gram(f) - a[k]) ** 2) / (
                4.0 * n * c * c * (h * w) ** 2)
        loss.backward()
        return x.grad

    return step


def measure_torch(size: int, repeat: int) -> dict | None:
    torch = torch_or_none()
    if torch is None:
        return None
    step = torch_step(torch, size)
    return {"impl": "torch", "version": torch.__version__, "threads": torch.get_num_threads(),
            "size": size, **_time_steps(step, repeat)}


def vggjit_steps(size: int) -> dict:
    """Lockstep builder (bench.lockstep): vggjit's style step."""
    return {"step": (vggjit_step(size)[1], None)}


def torch_steps(size: int) -> dict:
    """Lockstep builder: PyTorch's style step."""
    return {"step": (torch_step(torch_or_none(), size), None)}


def measure_pair(size: int, repeat: int) -> dict | None:
    """Both implementations, each in a process of its own, one step each in turn (after a
    warm-up step each): {"vggjit": seconds, "torch": seconds} (median/min/max/runs), or
    {"error": why}."""
    if torch_or_none() is None:
        return None
    builders = {"vggjit": ("bench.style:vggjit_steps", (size,)),
                "torch": ("bench.style:torch_steps", (size,))}
    try:
        with Lockstep(builders) as pair:
            pair.untimed("step")
            return pair.interleaved("step", repeat)
    except ChildError as exc:
        return {"error": " | ".join(str(exc).strip().splitlines()[-3:])}


def _subprocess(impl: str, size: int, repeat: int) -> dict | None:
    cmd = [sys.executable, "-m", "bench.style", "--one", impl, str(size), "--repeat", str(repeat)]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"impl": impl, "size": size, "error": " | ".join(tail)}
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "null"
    return json.loads(last)


def run(quick: bool = False) -> dict:
    sizes = QUICK_SIZES if quick else SIZES
    rows, results = [], []
    have_torch = torch_or_none() is not None
    for size in sizes:
        repeat = 2 if quick or size >= 1024 else 3
        ours = _subprocess("vggjit", size, repeat)
        theirs = _subprocess("torch", size, repeat) if have_torch else None
        pair = measure_pair(size, repeat + 2) if _ok(ours) and _ok(theirs) else None
        if pair and "error" not in pair:
            for r in (ours, theirs):     # the interleaved figures replace the solo ones
                r["seconds_alone"], r["seconds"] = r["seconds"], pair[r["impl"]]
                r["interleaved"] = True
        results += [r for r in (ours, theirs) if r]
        print(f"  {size}: vggjit {_fmt(ours)}; torch {_fmt(theirs)}", flush=True)
        ratio = (ours["seconds"]["median"] / theirs["seconds"]["median"]
                 if _ok(ours) and _ok(theirs) else "n/a")
        rows.append([f"{size}x{size}", _s(ours), _s(theirs), ratio, _mb(ours), _mb(theirs)])
    header = ["size", "vggjit s/step", "PyTorch s/step", "ratio (vggjit/PyTorch)",
              "vggjit peak RSS MB", "PyTorch peak RSS MB"]
    note = ("Forward + backward to the image with the lab's layers (relu4_2; relu1_1..relu5_1), "
            "median of repeats after one warm-up step. Seconds per step: each implementation "
            "in a process of its own, a step of each in turn; peak RSS: each alone in a "
            "process of its own."
            + ("" if have_torch else " PyTorch was not importable: no comparison."))
    return {"sizes": list(sizes), "results": results, "torch": have_torch,
            "markdown": note + "\n\n" + markdown_table(header, rows)}


def _ok(r) -> bool:
    return bool(r) and "seconds" in r


def _s(r):
    return r["seconds"]["median"] if _ok(r) else (r.get("error", "n/a") if r else "n/a")


def _mb(r):
    return round(r["peak_rss_mb"]) if _ok(r) else "n/a"


def _fmt(r) -> str:
    if not r:
        return "n/a"
    if "error" in r:
        return f"error: {r['error']}"
    return (f"{r['seconds']['median']:.3f} s/step (min {r['seconds']['min']:.3f}), "
            f"first {r['first_step_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", nargs=2, metavar=("IMPL", "SIZE"))
    parser.add_argument("--pair", type=int, metavar="SIZE")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=lambda s: tuple(int(v) for v in s.split(",")))
    args = parser.parse_args(argv)
    if args.one:
        impl, size = args.one[0], int(args.one[1])
        fn = measure_vggjit if impl == "vggjit" else measure_torch
        print(json.dumps(fn(size, args.repeat)))
        return 0
    if args.pair:
        print(json.dumps(measure_pair(args.pair, args.repeat)))
        return 0
    global SIZES, QUICK_SIZES
    if args.sizes:
        SIZES = QUICK_SIZES = args.sizes
    from bench.common import write_results

    result = run(args.quick)
    paths = write_results("style", result, result["markdown"])
    print(result["markdown"])
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
