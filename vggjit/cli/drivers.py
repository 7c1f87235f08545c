"""`vggjit drivers`: the table of installed drivers."""
from __future__ import annotations

from . import subcommand


def register(subparsers) -> None:
    parser = subcommand(
        subparsers, "drivers", help="list the device drivers found and whether they can run",
        description="List every driver plugin found through the `vggjit.drivers` entry points: "
                    "name, whether it can run here\n(and why not), capabilities, priority "
                    "(the highest available one is the default) and where it came from.",
        run=run)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    import json
    import warnings

    from ..registry import list_drivers

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = list_drivers()
    if args.json:
        print(json.dumps([{"name": r.name, "available": r.available,
                           "reason": r.unavailable_reason, "capabilities": sorted(r.capabilities),
                           "priority": r.priority, "origin": r.origin,
                           "description": r.description} for r in records], indent=2))
    else:
        rows = [("NAME", "AVAILABLE", "CAPABILITIES", "PRIORITY", "ORIGIN")]
        rows += [(r.name, "yes" if r.available else f"no: {r.unavailable_reason}",
                  ",".join(sorted(r.capabilities)), str(r.priority), r.origin) for r in records]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
        for r in records:
            print(f"  {r.name}: {r.description}")
    for warning in caught:
        print(f"warning: {warning.message}")
    return 0
