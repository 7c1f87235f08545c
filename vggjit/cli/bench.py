"""`vggjit bench`: run the benchmark suites of a source checkout (`python -m bench` does the same)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import subcommand

SUITES = ("kernels", "network", "style", "dlp", "batch")


def _bench_root() -> Path | None:
    """The checkout holding bench/ (benchmarks are not installed with the package)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "bench" / "__main__.py").is_file() else None


def register(subparsers) -> None:
    parser = subcommand(
        subparsers, "bench", help="measure kernels, network, style transfer, the DLP emulator and batches",
        description="Run the benchmark suites and write bench/results/<date>-<host>.json, a "
                    "markdown table and PNG charts.\nFigures are medians of several runs with "
                    "min and max; when PyTorch is importable it is measured\ninterleaved with "
                    "vggjit in the same run. Suites: kernels (the lab's speed-up test, every "
                    "VGG19 conv\nlayer against the sgemm ceiling), network (VGG19 forward latency "
                    "and throughput), style\n(seconds per step and peak memory at 256/512/1024), "
                    "dlp (int8 emulator speed and accuracy),\nbatch (classify images/s in-process and on a "
                    "2-worker local Dask cluster).",
        epilog="examples:\n  vggjit bench --quick            a few minutes, every suite\n"
               "  vggjit bench kernels network    two suites, full repetitions",
        run=run)
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"suites to run (default all: {', '.join(SUITES)})")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and sizes")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG charts")


def run(args: argparse.Namespace) -> int:
    from ..errors import VggjitError

    root = _bench_root()
    if root is None:
        raise VggjitError("the benchmarks live in a source checkout (bench/); clone the "
                          "repository and run `vggjit bench` from an editable install")
    sys.path.insert(0, str(root))
    from bench.__main__ import main as bench_main

    argv = [*args.suites, *(["--quick"] if args.quick else []),
            *(["--no-plots"] if args.no_plots else [])]
    return bench_main(argv)
