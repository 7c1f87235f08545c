"""`vggjit warmup`: compile (or load from cache) a driver's kernels ahead of time."""
from __future__ import annotations

from . import add_driver_option, subcommand

DESCRIPTION = """\
Run every op of a driver once on tiny arrays. For numba-cpu this compiles all kernels into the
on-disk cache, so later processes start in about a second. The first time takes half a minute
or so: where two CPUs are free the kernels compile in two processes at once (a helper process
forked for the purpose; NUMBA_NUM_THREADS=1 keeps it to one). `vggjit demo` does the same
warm-up before its first image."""

EPILOG = """\
examples:
  vggjit warmup                          numba-cpu (the default driver): every kernel
  NUMBA_NUM_THREADS=1 vggjit warmup      on one CPU, no helper process
  vggjit warmup --driver naive           any driver: each op once"""


def register(subparsers) -> None:
    parser = subcommand(
        subparsers, "warmup", help="compile the JIT kernels now instead of on first use",
        description=DESCRIPTION, epilog=EPILOG, run=run)
    add_driver_option(parser)


def run(args) -> int:
    import time

    from ..registry import get_driver

    driver = get_driver(args.driver)
    start = time.perf_counter()
    driver.warmup()
    print(f"{driver.name}: warm-up took {time.perf_counter() - start:.1f} s")
    return 0
