"""One process's view of a threading layer (the parent sets NUMBA_THREADING_LAYER and
OMP_WAIT_POLICY): a 256->256 conv at 56x56 as GFLOP/s and as % of the sgemm ceiling measured
in the same process, and how much a short multi-threaded np.dot started right after a Numba
parallel region is slowed against the same np.dot after a pause (docs/design-notes.md, note 2).

    python -m bench.probes.threading_layers --reps 3
"""
from __future__ import annotations

import argparse
import json
import time

import numba
import numpy as np

import vggjit

CONV_FLOPS = 2.0 * 256 * 256 * 9 * 56 * 56
SGEMM_N = 2048
SMALL_N = 512            # ~2 ms of np.dot: short enough to feel spinning workers


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(reps: int) -> dict:
    """Lists of per-repetition figures, and the threading layer Numba ended up using."""
    driver = vggjit.get_driver("numba-cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 256, 56, 56)).astype(np.float32)
    w = (rng.standard_normal((256, 256, 3, 3)) * 0.05).astype(np.float32)
    b = np.zeros(256, np.float32)
    act = rng.standard_normal((1, 64, 112, 112)).astype(np.float32)
    big = rng.standard_normal((SGEMM_N, SGEMM_N)).astype(np.float32)
    big_out = np.empty_like(big)
    small = rng.standard_normal((SMALL_N, SMALL_N)).astype(np.float32)
    small_out = np.empty_like(small)
    sgemm_flops = 2.0 * SGEMM_N ** 3
    driver.conv2d(x, w, b, 1, 1)
    driver.relu(act)
    np.dot(big, big, out=big_out)
    np.dot(small, small, out=small_out)
    out = {"conv_pct": [], "conv_gflops": [], "sgemm_gflops": [], "small_after_over_alone": []}
    for _ in range(reps):
        time.sleep(0.3)
        t_sgemm = _seconds(lambda: np.dot(big, big, out=big_out))
        time.sleep(0.3)
        t_conv = _seconds(lambda: driver.conv2d(x, w, b, 1, 1))
        out["conv_gflops"].append(CONV_FLOPS / t_conv / 1e9)
        out["sgemm_gflops"].append(sgemm_flops / t_sgemm / 1e9)
        out["conv_pct"].append(100 * (CONV_FLOPS / t_conv) / (sgemm_flops / t_sgemm))
        # A Numba parallel region (the ReLU), then at once the short sgemm; against the same
        # sgemm after a pause.
        for _ in range(5):
            time.sleep(0.05)
            alone = _seconds(lambda: np.dot(small, small, out=small_out))
            time.sleep(0.05)
            driver.relu(act)
            after = _seconds(lambda: np.dot(small, small, out=small_out))
            out["small_after_over_alone"].append(after / alone)
    out["layer"] = numba.threading_layer()
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.probes.threading_layers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="conv/sgemm pairs to time")
    print(json.dumps(measure(parser.parse_args(argv).reps)))


if __name__ == "__main__":
    main()
