"""Peak resident memory of VGG19 inference in a process of its own: random weights, three
forwards at batch 1 and two at batch 4 (224 px), on the given driver. A process of its own
because the benchmark's own process has run other suites (and PyTorch) before, whose freed
memory the allocator may keep.

    python -m bench.probes.network_memory [DRIVER]
"""
import json
import sys

from bench.common import peak_rss_mb
from bench.network import inputs


def main(driver: str = "numba-cpu") -> None:
    from vggjit import VGG19, get_driver

    net = VGG19.random(seed=0, driver=get_driver(driver))
    x1, x4 = inputs()
    for x, runs in ((x1, 3), (x4, 2)):
        for _ in range(runs):
            net.forward(x)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
