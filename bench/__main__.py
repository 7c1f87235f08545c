"""`python -m bench` / `vggjit bench`: run the benchmark suites, write JSON, markdown and charts.

Each suite module (kernels, network, style, dlp, batch) has ``run(quick: bool) -> dict`` returning
its figures and a ``"markdown"`` table. The combined results go to
``bench/results/<date>-<host>.json`` and ``.md``, with PNG charts beside them.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import socket
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import charts  # noqa: E402
from bench.common import RESULTS, machine  # noqa: E402

SUITES = ("kernels", "network", "style", "dlp", "batch")


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="vggjit bench", description="Run vggjit's benchmarks (medians of several runs; "
        "PyTorch beside vggjit in the same run when it is importable).")
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"which suites to run (default: all of {', '.join(SUITES)})")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions and sizes: a few minutes in all")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG charts")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.suites) - set(SUITES))
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    suites = args.suites or list(SUITES)
    results, failed = {}, []
    for name in suites:
        print(f"== bench {name}{' (quick)' if args.quick else ''}", flush=True)
        start = time.perf_counter()
        try:
            results[name] = importlib.import_module(f"bench.{name}").run(quick=args.quick)
        except Exception:  # one broken suite must not lose the others' figures
            traceback.print_exc()
            failed.append(name)
            continue
        print(f"== {name} took {time.perf_counter() - start:.0f} s", flush=True)
    stem = RESULTS / f"{dt.date.today().isoformat()}-{socket.gethostname()}"
    # A run of some suites updates the day's file: the other suites' figures stay beside them.
    earlier = Path(f"{stem}.json")
    if earlier.exists():
        try:
            results = {**json.loads(earlier.read_text()).get("suites", {}), **results}
        except (OSError, ValueError):
            pass
    write_report(results, stem, quick=args.quick, plots=not args.no_plots)
    print(f"wrote {stem}.json and {stem}.md")
    if failed:
        print(f"suites that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def write_report(results: dict, stem: Path, quick: bool, plots: bool = True) -> None:
    """Write ``<stem>.json`` (every figure), ``<stem>.md`` (the tables) and the PNG charts."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "quick": quick, "suites": results}
    Path(f"{stem}.json").write_text(json.dumps(payload, indent=2, default=float))
    info = payload["machine"]
    sections = [f"# vggjit benchmarks, {info['date']}",
                f"Machine: {info.get('processor')}, {info.get('cpus')} CPUs; "
                f"numpy {info.get('numpy')}, numba {info.get('numba')}"]
    for name, result in results.items():
        sections.append(f"## {name}\n\n{result.get('markdown', '(no table)')}")
    if plots:
        for png in charts.draw(results, stem):
            sections.append(f"![{png.stem}]({png.name})")
    Path(f"{stem}.md").write_text("\n\n".join(sections) + "\n")


if __name__ == "__main__":
    sys.exit(main())
