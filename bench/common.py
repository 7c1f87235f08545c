"""Shared benchmark plumbing: timing with warm-up, medians, machine facts, result files.

The machines are shared and noisy, so every figure is a median of several runs with min and
max beside it, and every comparison is a ratio measured in the same run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def summary(values) -> dict:
    """median/min/max/runs of a list of figures: how every measurement is reported."""
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> dict:
    """Call ``fn`` ``warmup`` times untimed, then ``repeat`` times; seconds as median/min/max."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return summary(times)


def interleaved(fns: dict, repeat: int, pause: float = 0.0) -> dict[str, dict]:
    """Time each callable ``repeat`` times, alternating between them; median/min/max seconds.

    pause: seconds to sleep before each timed call. Other engines' thread pools (ONNX Runtime,
    OpenVINO, OpenBLAS) keep spinning for a while after a call, which slows whatever runs right
    after them; with a pause every engine starts from an idle machine."""
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            if pause:
                time.sleep(pause)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: summary(t) for name, t in times.items()}


def run_probe(name: str, args: tuple = (), env_extra: dict | None = None, drop: tuple = (),
              timeout: float = 600) -> tuple[float, dict]:
    """Run ``python -m bench.probes.<name> *args`` in a fresh interpreter (environment variables
    in ``drop`` removed, ``env_extra`` added); return (wall seconds, its last stdout line as
    JSON). A failing probe raises RuntimeError with the end of its stderr."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", f"bench.probes.{name}", *map(str, args)],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"benchmark probe {name} failed:\n{out.stderr[-2000:]}")
    return wall, json.loads(out.stdout.strip().splitlines()[-1])


def sgemm_gflops(n: int = 2048, repeat: int = 5) -> dict:
    """The machine's float32 GEMM ceiling: np.dot on n x n float32, GFLOP/s (median/min/max)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    t = timeit(lambda: np.dot(a, b, out=out), repeat=repeat)
    flops = 2.0 * n ** 3
    return {"median": flops / t["median"] / 1e9, "min": flops / t["max"] / 1e9,
            "max": flops / t["min"] / 1e9}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB.

    Reads VmHWM from /proc: getrusage's ru_maxrss survives fork + exec on Linux, so a benchmark
    subprocess started by a large parent would report the parent's peak instead of its own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def torch_or_none():
    """PyTorch when importable (never a dependency), with its threads matched to ours."""
    try:
        import torch
    except Exception:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def machine() -> dict:
    info = {"host": socket.gethostname(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "machine": platform.machine(), "processor": _cpu_model(), "numpy": np.__version__,
            "date": _dt.datetime.now().isoformat(timespec="seconds")}
    try:
        import numba
        info["numba"] = numba.__version__
    except Exception:
        pass
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = [f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')}"
                        for p in threadpool_info() if p.get("user_api") == "blas"]
    except Exception:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(suite: str, data: dict, markdown: str) -> tuple[Path, Path]:
    """Write bench/results/<date>-<host>-<suite>.json and .md; return both paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"{_dt.date.today().isoformat()}-{socket.gethostname()}-{suite}"
    json_path, md_path = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
    payload = {"suite": suite, "machine": machine(), **data}
    json_path.write_text(json.dumps(payload, indent=2, default=float))
    md_path.write_text(markdown + "\n")
    return json_path, md_path


def suite_main(suite: str, run, description: str, argv=None, *,
               quick_help: str = "fewer repetitions", driver_option: bool = False) -> int:
    """``python -m bench.<suite>``: parse --quick (and --driver), run the suite, print its table
    and write its report (:func:`write_results`)."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{suite}", description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if driver_option:
        parser.add_argument("--driver", help="driver to time (default: the best available)")
    args = parser.parse_args(argv)
    options = {"driver": args.driver} if driver_option else {}
    result = run(quick=args.quick, **options)
    print(result["markdown"])
    paths = write_results(suite, {k: v for k, v in result.items() if k != "markdown"},
                          result["markdown"])
    print("wrote " + " and ".join(map(str, paths)))
    return 0
