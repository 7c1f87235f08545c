"""Memory of one numba-cpu conv forward, 64 channels at 512x512: what the call allocates
(tracemalloc) and the process's RSS growth, beside the input, output, work space and the
driver's bound.

    python -m bench.probes.conv_memory
"""
from __future__ import annotations

import json
import tracemalloc

import numpy as np

import vggjit
from bench.common import peak_rss_mb

MB = 1 / 2 ** 20


def measure() -> dict:
    driver = vggjit.get_driver("numba-cpu")
    driver.conv2d(np.ones((1, 2, 8, 8), np.float32), np.ones((2, 2, 3, 3), np.float32),
                  np.zeros(2, np.float32), 1, 1)               # kernels loaded, small workspace
    driver.release_buffers()
    x = np.random.default_rng(0).standard_normal((1, 64, 512, 512), dtype=np.float32)
    w = np.full((64, 64, 3, 3), 0.01, np.float32)
    b = np.zeros(64, np.float32)
    rss_before = peak_rss_mb()
    tracemalloc.start()
    y = driver.conv2d(x, w, b, 1, 1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = peak_rss_mb()
    return {"input_mb": x.nbytes * MB, "output_mb": y.nbytes * MB,
            "workspace_mb": driver.workspace_bytes * MB,
            "bound_mb": driver.memory_bound * MB,
            "full_column_matrix_mb": 64 * 9 * 512 * 512 * 4 * MB,
            "traced_peak_during_call_mb": peak * MB,
            "rss_before_mb": rss_before, "rss_peak_after_mb": rss_after,
            "rss_growth_mb": rss_after - rss_before}


def main() -> None:
    print(json.dumps(measure()))


if __name__ == "__main__":
    main()
