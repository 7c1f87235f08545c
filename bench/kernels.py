"""numba-cpu kernel benchmarks: speed-up, GEMM efficiency, threads, start-up, memory.

How they measure and the targets they check: docs/design-notes.md, note 12.

* lab speed-up test: seed 1234, x and dy 1x256x24x40, 256->256 3x3 stride 1 pad 1; the naive
  driver against numba-cpu, forward and backward (dx+dw+db); speed-up ratios and the mean squared
  difference of every output (the lab asks MSE < 0.003; targets 200x and 150x);
* every VGG19 conv layer shape at 224x224, batch 1: forward, backward dx only, backward
  dx+dw+db; GFLOP/s and the percentage of the sgemm ceiling (np.dot on 2048x2048 float32)
  measured in the same run, each op paired with its own ceiling measurement (see _paired);
  PyTorch's F.conv2d beside ours when torch is importable;
* threading layers: workqueue (the driver's choice) against OpenMP with the default, passive
  and active wait policy, in fresh processes run in interleaved rounds: a conv as % of the
  sgemm ceiling, that ceiling itself, and a short np.dot started right after a Numba parallel
  region against the same np.dot after a pause;
* cold compile of every kernel (empty cache) and warm start of a new process (import + first
  conv, cache filled);
* peak memory of one conv forward, 64 channels at 512x512, against workspace bound + in + out.

    python -m bench.kernels [--quick]

The fresh-process measurements are the modules of bench/probes/ (threading_layers, warm_start,
cold_compile, conv_memory), each runnable on its own with ``python -m bench.probes.NAME``.

Every time is a median of several runs with min and max beside it. The machine is shared and
its speed drifts by 2x within seconds, so percentages come from pairs (ceiling, op) measured
back to back and the median of the per-pair ratios is reported.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import vggjit  # noqa: E402
import vggjit.network  # noqa: E402
from bench.common import (markdown_table, run_probe, summary, timeit,  # noqa: E402
                          suite_main, torch_or_none)

DRIVER = "numba-cpu"


def conv_shapes(blocks=vggjit.network.VGG19_BLOCKS, side: int = 224) -> list[tuple]:
    """(name, Cin, Cout, side) of every conv layer in the network's layer table for a
    side x side input (each pool halves the side)."""
    shapes = []
    for layer in vggjit.network.vgg_layers(blocks):
        if layer.kind == "conv":
            shapes.append((layer.name, layer.cin, layer.cout, side))
        elif layer.kind == "pool":
            side //= 2
    return shapes


#: VGG19's 16 conv layers: (name, Cin, Cout, side) at 224x224 input.
VGG19_CONVS = conv_shapes()

#: the targets (docs/design-notes.md, note 12)
TARGET_FWD, TARGET_BWD = 75.0, 65.0
TARGET_SPEEDUP_FWD, TARGET_SPEEDUP_BWD = 200.0, 150.0
TARGET_WARM_START_S = 2.0

#: after an np.dot, NumPy's OpenBLAS workers spin for a while and slow whatever runs next
#: (measured: a conv right after np.dot ran ~40% slower); the pairs leave this gap.
SPIN_GAP_S = 0.25

_SGEMM_N = 2048


class _Ceiling:
    """np.dot on 2048x2048 float32 (NumPy's BLAS, all threads): the GEMM ceiling."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((_SGEMM_N, _SGEMM_N), dtype=np.float32)
        self.b = rng.standard_normal((_SGEMM_N, _SGEMM_N), dtype=np.float32)
        self.out = np.empty((_SGEMM_N, _SGEMM_N), np.float32)
        self.samples: list[float] = []
        np.dot(self.a, self.b, out=self.out)

    def measure(self) -> float:
        start = time.perf_counter()
        np.dot(self.a, self.b, out=self.out)
        gflops = 2.0 * _SGEMM_N ** 3 / (time.perf_counter() - start) / 1e9
        self.samples.append(gflops)
        return gflops


def _paired(fn, flops: float, ceiling: _Ceiling, pairs: int) -> dict:
    """Time ``fn`` ``pairs`` times, each between two ceiling measurements (the spin gap after
    the first); percent of the mean of the two ceilings per run, reported as median/min/max."""
    fn()                                     # warm: compile or load, fault the buffers in
    times, pct = [], []
    for _ in range(pairs):
        before = ceiling.measure()
        time.sleep(SPIN_GAP_S)
        start = time.perf_counter()
        fn()
        t = time.perf_counter() - start
        after = ceiling.measure()
        times.append(t)
        pct.append(100.0 * flops / t / 1e9 / ((before + after) / 2))
    gf = [flops / t / 1e9 for t in times]
    return {"seconds": summary(times), "gflops": summary(gf), "pct_of_sgemm": summary(pct)}


# -- the lab's speed-up test -------------------------------------------------------------------
def lab_speedup(quick: bool) -> dict:
    fast, naive = vggjit.get_driver(DRIVER), vggjit.get_driver("naive")
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((1, 256, 24, 40)).astype(np.float32)
    w = (rng.standard_normal((256, 256, 3, 3)) * 0.02).astype(np.float32)
    b = rng.standard_normal(256).astype(np.float32)
    dy = rng.standard_normal((1, 256, 24, 40)).astype(np.float32)
    runs_naive = 1 if quick else 2
    runs_fast = 5 if quick else 15

    y_naive = naive.conv2d(x, w, b, 1, 1)
    t_naive_f = timeit(lambda: naive.conv2d(x, w, b, 1, 1), repeat=runs_naive, warmup=0)
    y_fast = fast.conv2d(x, w, b, 1, 1)
    t_fast_f = timeit(lambda: fast.conv2d(x, w, b, 1, 1), repeat=runs_fast, warmup=1)

    g_naive = naive.conv2d_backward(dy, x, w, 1, 1)
    t_naive_b = timeit(lambda: naive.conv2d_backward(dy, x, w, 1, 1), repeat=runs_naive - 1,
                       warmup=0) if runs_naive > 1 else None
    if t_naive_b is None:
        start = time.perf_counter()
        naive.conv2d_backward(dy, x, w, 1, 1)
        s = time.perf_counter() - start
        t_naive_b = {"median": s, "min": s, "max": s, "runs": 1}
    g_fast = fast.conv2d_backward(dy, x, w, 1, 1)
    t_fast_b = timeit(lambda: fast.conv2d_backward(dy, x, w, 1, 1), repeat=runs_fast, warmup=1)

    def mse(a, b_):
        return float(np.mean((np.asarray(a, np.float64) - b_) ** 2))

    return {
        "shape": "x, dy 1x256x24x40; w 256x256x3x3; stride 1, pad 1; seed 1234",
        "naive_forward_s": t_naive_f, "fast_forward_s": t_fast_f,
        "naive_backward_s": t_naive_b, "fast_backward_s": t_fast_b,
        "speedup_forward": t_naive_f["median"] / t_fast_f["median"],
        "speedup_backward": t_naive_b["median"] / t_fast_b["median"],
        "mse_forward": mse(y_fast, y_naive),
        "mse_backward": {k: mse(a, r) for k, a, r in zip(("dx", "dw", "db"), g_fast, g_naive)},
    }


# -- VGG19 layers --------------------------------------------------------------------------------
def vgg_layers(quick: bool, ceiling: _Ceiling) -> dict:
    fast = vggjit.get_driver(DRIVER)
    torch = torch_or_none()
    pairs = 3 if quick else 5
    shapes: dict[tuple, list[str]] = {}
    for name, cin, cout, side in VGG19_CONVS:
        shapes.setdefault((cin, cout, side), []).append(name)
    if quick:   # the two hardest and two easiest shapes
        keep = [(64, 64, 224), (128, 128, 112), (256, 256, 56), (512, 512, 14)]
        shapes = {k: v for k, v in shapes.items() if k in keep}
    rows = []
    for (cin, cout, side), names in shapes.items():
        rng = np.random.default_rng(cin * 7 + cout)
        x = rng.standard_normal((1, cin, side, side)).astype(np.float32)
        w = (rng.standard_normal((cout, cin, 3, 3)) * 0.05).astype(np.float32)
        b = rng.standard_normal(cout).astype(np.float32)
        dy = rng.standard_normal((1, cout, side, side)).astype(np.float32)
        flops = 2.0 * cout * cin * 9 * side * side
        entry = {"layers": names, "cin": cin, "cout": cout, "side": side, "gflop": flops / 1e9}
        entry["forward"] = _paired(lambda: fast.conv2d(x, w, b, 1, 1), flops, ceiling, pairs)
        entry["backward_dx"] = _paired(
            lambda: fast.conv2d_backward(dy, x, w, 1, 1, need_dw=False), flops, ceiling, pairs)
        entry["backward_full"] = _paired(
            lambda: fast.conv2d_backward(dy, x, w, 1, 1), 2 * flops, ceiling, pairs)
        if torch is not None:
            tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
            entry["torch_forward"] = _paired(
                lambda: torch.nn.functional.conv2d(tx, tw, tb, 1, 1), flops, ceiling, pairs)
        rows.append(entry)
        print(f"  {'/'.join(names)}: fwd {entry['forward']['pct_of_sgemm']['median']:.0f}% "
              f"bwd-dx {entry['backward_dx']['pct_of_sgemm']['median']:.0f}% "
              f"bwd-full {entry['backward_full']['pct_of_sgemm']['median']:.0f}%", flush=True)
    return {"shapes": rows, "torch": None if torch is None else torch.__version__,
            "pairs": pairs}


# -- where the time goes -------------------------------------------------------------------------
def _share(op, gemms, ceiling: _Ceiling, runs: int) -> dict:
    """Time ``op`` and ``gemms`` back to back ``runs`` times: the median share of the op's time
    that its sgemm calls alone take, and both against the ceiling measured around each pair."""
    op(), gemms()
    share, op_s, gemm_s, ceil = [], [], [], []
    for _ in range(runs):
        before = ceiling.measure()
        time.sleep(SPIN_GAP_S)
        start = time.perf_counter()
        op()
        mid = time.perf_counter()
        gemms()
        end = time.perf_counter()
        after = ceiling.measure()
        op_s.append(mid - start)
        gemm_s.append(end - mid)
        share.append((end - mid) / (mid - start))
        ceil.append((before + after) / 2)
    return {"gemm_share_of_op_time": summary(share), "op_s": summary(op_s),
            "gemm_s": summary(gemm_s), "ceiling_gflops": summary(ceil)}


def gemm_share(quick: bool, ceiling: _Ceiling) -> dict:
    """The op against the very same single-threaded sgemm calls alone (same shapes, library,
    workers; no img2col, bias or output), timed back to back: the share of the op's time that
    is BLAS, and the GFLOP/s BLAS itself reaches on the shapes the driver feeds it."""
    from numba import prange

    from vggjit_numba_cpu import conv
    from vggjit_numba_cpu.blas import TRANS_N, address, sgemm
    from vggjit_numba_cpu.kernel_cache import jit

    @jit(cache=False)
    def calls(a, b, c, count, m, n, k, lda, ldb, ldc, accumulate, blas):
        # each of 2 workers: ``count`` sgemm calls on its own halves of b and c
        for t in prange(2):
            for i in range(count):
                sgemm(blas, t, TRANS_N, TRANS_N, m, n, k, address(a, 0), lda,
                      address(b, t * (b.shape[0] // 2)), ldb, 1 if accumulate and i > 0 else 0,
                      address(c, t * (c.shape[0] // 2)), ldc)

    fast = vggjit.get_driver(DRIVER)
    if fast.threads != 2:
        return {"skipped": "written for 2 workers"}
    blas = fast._sgemm.kernel_args(2)
    runs = 5 if quick else 11
    rng = np.random.default_rng(5)
    out = {}
    # conv1_2 forward: shifted-rows kernel, K=3 calls of Cout x rows*Wp x Cin*3 per tile
    cin = cout = 64
    side = 224
    rows = conv.plan_forward_shifted(side, side, 1, cin, cout, 3, 2, 1, fast.tile_bytes,
                                     fast.memory_bound)
    cols = rows * (side + 2)
    tiles = -(-side // rows) // 2
    x = rng.standard_normal((1, cin, side, side)).astype(np.float32)
    w = (rng.standard_normal((cout, cin, 3, 3)) * 0.05).astype(np.float32)
    b = np.zeros(cout, np.float32)
    a_ = rng.standard_normal(cout * cin * 3).astype(np.float32)
    b_ = rng.standard_normal(2 * cin * 3 * (cols + 2)).astype(np.float32)
    c_ = np.zeros(2 * cout * cols, np.float32)
    flops = 2.0 * cout * cin * 9 * side * side
    out["conv1_2 forward"] = {
        "sgemm": f"3 x {cout}x{cols}x{cin * 3} per tile, {tiles} tiles per worker",
        "gflop": flops / 1e9, "gemm_gflop": flops * cols / (rows * side) / 1e9,
        **_share(lambda: fast.conv2d(x, w, b, 1, 1),
                 lambda: calls(a_, b_, c_, 3 * tiles, cout, cols, cin * 3, cin * 3, cols + 2,
                               cols, True, blas), ceiling, runs)}
    # conv5 forward: output-channel split, one 256 x 196 x 4608 sgemm per worker
    cin = cout = 512
    side = 14
    x = rng.standard_normal((1, cin, side, side)).astype(np.float32)
    w = (rng.standard_normal((cout, cin, 3, 3)) * 0.05).astype(np.float32)
    b = np.zeros(cout, np.float32)
    kd = cin * 9
    a_ = rng.standard_normal(cout * kd).astype(np.float32)
    b_ = rng.standard_normal(2 * kd * side * side).astype(np.float32)
    c_ = np.zeros(2 * cout // 2 * side * side, np.float32)
    flops = 2.0 * cout * kd * side * side
    out["conv5 forward"] = {
        "sgemm": f"1 x {cout // 2}x{side * side}x{kd} per worker",
        "gflop": flops / 1e9, "gemm_gflop": flops / 1e9,
        **_share(lambda: fast.conv2d(x, w, b, 1, 1),
                 lambda: calls(a_, b_, c_, 1, cout // 2, side * side, kd, kd, side * side,
                               side * side, False, blas), ceiling, runs)}
    return out


# -- threading layers -------------------------------------------------------------------------
def threading_layers(quick: bool) -> dict:
    """workqueue vs OpenMP (default, passive, active wait) in fresh processes, interleaved rounds
    so that the machine's drift hits all three alike (docs/design-notes.md, note 2)."""
    rounds = 1 if quick else 3
    configs = {
        "workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
        "omp (default wait policy)": {"NUMBA_THREADING_LAYER": "omp"},
        "omp + OMP_WAIT_POLICY=passive": {"NUMBA_THREADING_LAYER": "omp",
                                          "OMP_WAIT_POLICY": "passive"},
        "omp + OMP_WAIT_POLICY=active": {"NUMBA_THREADING_LAYER": "omp",
                                         "OMP_WAIT_POLICY": "active"},
    }
    samples: dict[str, dict] = {label: {} for label in configs}
    for _ in range(rounds):
        for label, env in configs.items():
            if "error" in samples[label]:
                continue
            try:
                _, data = run_probe("threading_layers", ("--reps", 3), env,
                                   drop=("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER"))
            except Exception as exc:       # e.g. no OpenMP runtime on this machine
                samples[label] = {"error": str(exc).splitlines()[-1] if str(exc) else repr(exc)}
                continue
            for key, value in data.items():
                if isinstance(value, list):
                    samples[label].setdefault(key, []).extend(value)
                else:
                    samples[label][key] = value
    results = {}
    for label, data in samples.items():
        if "error" in data:
            results[label] = data
            continue
        results[label] = {"layer": data["layer"],
                          "conv_gflops": summary(data["conv_gflops"])["median"],
                          "conv_pct_of_sgemm": summary(data["conv_pct"])["median"],
                          "sgemm_gflops": summary(data["sgemm_gflops"])["median"],
                          "small_sgemm_after_parallel_region": summary(
                              data["small_after_over_alone"])}
    return results


# -- start-up ------------------------------------------------------------------------------------
def startup(quick: bool) -> dict:
    vggjit.get_driver(DRIVER).warmup()     # make sure this user's cache is filled
    warm = []
    for _ in range(3 if quick else 5):
        wall, data = run_probe("warm_start")
        warm.append((wall, data["import_and_first_conv_s"]))
    result = {"warm_process_wall_s": summary([w for w, _ in warm]),
              "warm_import_and_first_conv_s": summary([d for _, d in warm])}
    if quick:
        result["cold_compile"] = "skipped (--quick)"
    else:
        with tempfile.TemporaryDirectory(prefix="vggjit-cold-cache-") as cache:
            wall, data = run_probe("cold_compile", env_extra={"NUMBA_CACHE_DIR": cache})
        result["cold_compile"] = {"process_wall_s": wall, **data}
    return result


# -- memory --------------------------------------------------------------------------------------
def memory() -> dict:
    _, data = run_probe("conv_memory")
    # What the call allocated (output + workspace) must stay under bound + output; the input
    # was allocated before the measurement started.
    data["within_bound"] = (data["traced_peak_during_call_mb"]
                            <= data["bound_mb"] + data["output_mb"] + 1.0)
    return data


# -- report --------------------------------------------------------------------------------------
def _fmt_pct(entry: dict) -> str:
    p = entry["pct_of_sgemm"]
    return f"{p['median']:.0f}% ({p['min']:.0f}-{p['max']:.0f})"


def markdown(result: dict) -> str:
    out = []
    lab = result["lab_speedup"]
    out.append("### Lab speed-up test (seed 1234, 1x256x24x40, 256->256 3x3 s1 p1)\n")
    out.append(markdown_table(
        ["", "naive s", "numba-cpu ms (min-max)", "speed-up", "target", "MSE"],
        [["forward", f"{lab['naive_forward_s']['median']:.2f}",
          f"{lab['fast_forward_s']['median'] * 1e3:.2f} ({lab['fast_forward_s']['min'] * 1e3:.2f}"
          f"-{lab['fast_forward_s']['max'] * 1e3:.2f})",
          f"{lab['speedup_forward']:.0f}x", f">= {TARGET_SPEEDUP_FWD:.0f}x",
          f"{lab['mse_forward']:.2e}"],
         ["backward (dx+dw+db)", f"{lab['naive_backward_s']['median']:.2f}",
          f"{lab['fast_backward_s']['median'] * 1e3:.2f} ({lab['fast_backward_s']['min'] * 1e3:.2f}"
          f"-{lab['fast_backward_s']['max'] * 1e3:.2f})",
          f"{lab['speedup_backward']:.0f}x", f">= {TARGET_SPEEDUP_BWD:.0f}x",
          ", ".join(f"{k} {v:.2e}" for k, v in lab["mse_backward"].items())]]))
    layers = result["vgg_layers"]
    ceil = result["sgemm_ceiling_gflops"]
    out.append(f"\n### VGG19 conv layers at 224x224, batch 1\n\nsgemm ceiling (np.dot 2048^2 "
               f"float32, measured through the run): median {ceil['median']:.0f} GFLOP/s "
               f"(min {ceil['min']:.0f}, max {ceil['max']:.0f}). Percentages: median of "
               f"{layers['pairs']} (ceiling, op) pairs, min-max in brackets. Targets: forward "
               f">= {TARGET_FWD:.0f}% (not conv1_1), backward >= {TARGET_BWD:.0f}%.\n")
    header = ["layers", "Cin->Cout @side", "GFLOP", "fwd ms", "fwd GFLOP/s", "fwd %",
              "bwd dx ms", "bwd dx %", "bwd full ms", "bwd full %"]
    if layers["torch"]:
        header += ["torch fwd %"]
    rows = []
    for e in layers["shapes"]:
        row = [", ".join(e["layers"]), f"{e['cin']}->{e['cout']} @{e['side']}", f"{e['gflop']:.2f}",
               f"{e['forward']['seconds']['median'] * 1e3:.1f}",
               f"{e['forward']['gflops']['median']:.0f}", _fmt_pct(e["forward"]),
               f"{e['backward_dx']['seconds']['median'] * 1e3:.1f}", _fmt_pct(e["backward_dx"]),
               f"{e['backward_full']['seconds']['median'] * 1e3:.1f}", _fmt_pct(e["backward_full"])]
        if layers["torch"]:
            row.append(_fmt_pct(e["torch_forward"]))
        rows.append(row)
    out.append(markdown_table(header, rows))
    if not layers["torch"]:
        out.append("\n(PyTorch is not importable here, so no F.conv2d column.)")
    share = result.get("gemm_share", {})
    if share and "skipped" not in share:
        out.append("\n### Where the time goes: the op against its own sgemm calls alone\n\n"
                   "The same single-threaded sgemm calls (shapes, library, workers) without "
                   "img2col, bias or output, timed right after the op; median of the runs.\n")
        rows_ = []
        for name, e in share.items():
            c = e["ceiling_gflops"]["median"]
            g = e["gemm_share_of_op_time"]
            rows_.append([name, e["sgemm"], f"{100 * g['median']:.0f}% ({100 * g['min']:.0f}"
                          f"-{100 * g['max']:.0f})",
                          f"{100 * e['gflop'] / e['op_s']['median'] / c:.0f}%",
                          f"{100 * e['gemm_gflop'] / e['gemm_s']['median'] / c:.0f}%"])
        out.append(markdown_table(["op", "sgemm calls", "sgemm share of the op's time",
                                   "op % sgemm", "sgemm calls alone % sgemm"], rows_))
    out.append("\n### Threading layer (fresh processes, interleaved rounds)\n\nconv: 256->256 "
               "@56 forward, and as % of the sgemm ceiling measured in the same process "
               "(np.dot 2048^2 after a 0.3 s pause, the next column). after/alone: time of a "
               "512^2 np.dot "
               "(NumPy's BLAS, 2 threads, ~2 ms) started right after a Numba parallel region "
               "(a ReLU over 64x112x112), divided by its time after a 50 ms pause; 1.00 = "
               "no interference.\n")
    trows = []
    for label, d in result["threading_layers"].items():
        if "error" in d:
            trows.append([label, "-", "-", "-", "-", d["error"]])
            continue
        r = d["small_sgemm_after_parallel_region"]
        trows.append([label, f"{d['conv_gflops']:.0f}", f"{d['conv_pct_of_sgemm']:.0f}%",
                      f"{d['sgemm_gflops']:.0f}",
                      f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})", d["layer"]])
    out.append(markdown_table(["choice", "conv GFLOP/s", "conv % sgemm", "sgemm GFLOP/s",
                               "sgemm after / alone", "layer in use"], trows))
    st = result["startup"]
    cold = st["cold_compile"]
    cold_text = cold if isinstance(cold, str) else (
        f"{cold['compile_all_s']:.1f} s to compile every kernel (process wall "
        f"{cold['process_wall_s']:.1f} s)")
    out.append("\n### Start-up\n")
    out.append(markdown_table(["", "median s", "min", "max"], [
        ["warm start: import + first conv (in process)",
         f"{st['warm_import_and_first_conv_s']['median']:.2f}",
         f"{st['warm_import_and_first_conv_s']['min']:.2f}",
         f"{st['warm_import_and_first_conv_s']['max']:.2f}"],
        ["warm start: whole new process",
         f"{st['warm_process_wall_s']['median']:.2f}", f"{st['warm_process_wall_s']['min']:.2f}",
         f"{st['warm_process_wall_s']['max']:.2f}"]]))
    out.append(f"\nCold compile (empty cache): {cold_text}. Target warm start < "
               f"{TARGET_WARM_START_S:.0f} s.")
    mem = result["memory"]
    out.append("\n### Memory: one conv forward, 64 channels at 512x512\n")
    out.append(markdown_table(["input MB", "output MB", "workspace MB", "bound MB",
                               "full columns would be MB", "allocated during call MB (peak)",
                               "RSS growth MB", "within bound + in + out"],
                              [[f"{mem['input_mb']:.0f}", f"{mem['output_mb']:.0f}",
                                f"{mem['workspace_mb']:.1f}", f"{mem['bound_mb']:.0f}",
                                f"{mem['full_column_matrix_mb']:.0f}",
                                f"{mem['traced_peak_during_call_mb']:.1f}",
                                f"{mem['rss_growth_mb']:.0f}",
                                "yes" if mem["within_bound"] else "NO"]]))
    drv = result["driver"]
    out.append(f"\nDriver: {drv['numba_threads']} workers, Numba's threading layer "
               f"{drv['threading_layer']}, sgemm in workers: {drv['sgemm']}; "
               f"tile {drv['tile_kb']} KB per worker, bound {drv['memory_bound_mb']:.0f} MB.")
    return "\n".join(out)


def run(quick: bool = False) -> dict:
    """All kernel benchmarks; returns the figures with a ``markdown`` report."""
    driver = vggjit.get_driver(DRIVER)
    driver.warmup()
    ceiling = _Ceiling()
    result: dict = {"quick": quick}
    steps = [("lab_speedup", lambda: lab_speedup(quick)),
             ("vgg_layers", lambda: vgg_layers(quick, ceiling)),
             ("gemm_share", lambda: gemm_share(quick, ceiling)),
             ("threading_layers", lambda: threading_layers(quick)),
             ("startup", lambda: startup(quick)),
             ("memory", memory)]
    for key, step in steps:
        start = time.perf_counter()
        print(f"- {key} ...", flush=True)
        result[key] = step()
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    result["sgemm_ceiling_gflops"] = summary(ceiling.samples)
    result["driver"] = driver.describe()
    result["markdown"] = markdown(result)
    return result


def main(argv=None) -> int:
    return suite_main("kernels", run, __doc__.split("\n\n")[0], argv,
                      quick_help="fewer shapes and repetitions")


if __name__ == "__main__":
    sys.exit(main())
