"""Memory budgets checked before big work starts, so a too-large request fails with a message
instead of growing until the operating system kills the process (and others with it).

The budget is the memory the machine has available now (``MemAvailable`` on Linux), capped by
``$VGGJIT_MEMORY_LIMIT`` when that is set (bytes, or a number with K, M, G or T: ``4G``). The
variable is also how the tests fake a small machine without allocating anything. See
docs/bad-input.md.
"""
from __future__ import annotations

import os
import re

from .errors import InputError

ENV_LIMIT = "VGGJIT_MEMORY_LIMIT"

#: Requests below this are not worth reading /proc for (every driver op is checked).
ALWAYS_FITS = 64 * 2**20

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str, source: str = ENV_LIMIT) -> int:
    """'4G' -> 4 * 2**30 bytes; plain digits are bytes. InputError naming ``source`` if bad."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise InputError(f"{source}={text!r} is not a memory size (bytes, or a number with "
                         f"K, M, G or T, e.g. 4G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def system_available() -> int | None:
    """Bytes the machine can hand out now without swapping, or None where that is unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def available_bytes(environ=os.environ) -> int | None:
    """The budget: available memory, capped by ``$VGGJIT_MEMORY_LIMIT``; None if unknown."""
    system = system_available()
    limit = environ.get(ENV_LIMIT)
    if not limit:
        return system
    limit_bytes = parse_size(limit)
    return limit_bytes if system is None else min(limit_bytes, system)


def format_bytes(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(nbytes) < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def check_fits(nbytes: int, what: str, hint: str = "") -> None:
    """Raise InputError when ``nbytes`` (an estimate of the planned work's peak) exceeds the
    budget. ``what`` names the work; ``hint`` says what would fit (e.g. the largest size)."""
    if nbytes < ALWAYS_FITS and not os.environ.get(ENV_LIMIT):
        return
    budget = available_bytes()
    if budget is None or nbytes <= budget:
        return
    limit = os.environ.get(ENV_LIMIT)
    source = f"${ENV_LIMIT}" if limit and budget == parse_size(limit) else "available"
    raise InputError(f"{what} needs about {format_bytes(nbytes)} of memory, more than the "
                     f"{format_bytes(budget)} {source}{'; ' + hint if hint else ''}")
