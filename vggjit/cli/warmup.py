"""`vggjit warmup`: compile (or load from cache) a driver's kernels ahead of time."""
from __future__ import annotations

from . import add_driver_option, subcommand


def register(subparsers) -> None:
    parser = subcommand(
        subparsers, "warmup", help="compile the JIT kernels now instead of on first use",
        description="Run every op of a driver once on tiny arrays. For numba-cpu this compiles "
                    "all kernels into the\non-disk cache (a minute or so the first time), so "
                    "later processes start in about a second.",
        run=run)
    add_driver_option(parser)


def run(args) -> int:
    import time

    from ..registry import get_driver

    driver = get_driver(args.driver)
    start = time.perf_counter()
    driver.warmup()
    print(f"{driver.name}: warm-up took {time.perf_counter() - start:.1f} s")
    return 0
