"""glibc malloc held at the thresholds it reaches by itself, from the start.

Why: glibc serves a block of at least its mmap threshold with a fresh mapping, which is unmapped
again when freed, and it keeps that threshold moving: it starts at 128 KB and rises to the size
of each mapped block freed, up to 32 MB on 64-bit systems (with the trim threshold at twice
that). So whether the activations of a forward (1.6-12.8 MB each for VGG19 at 224 px) come
back from the heap or as fresh pages that the kernel must map and zero depends on which blocks
the process happened to free before: the same network faulted 0 or 1100-1700 pages per
forward depending on the order in which the driver's buffers were first allocated, and was
5-8 % slower in the second case (docs/design-notes.md, note 16). Setting both thresholds to
where glibc's own rule ends makes that independent of history.

What it changes for the whole process (the driver cannot limit it to its own arrays): blocks
under 32 MB always come from the heap, and up to 64 MB of free memory at the top of the heap is
kept rather than returned. Only on glibc; elsewhere nothing happens.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

#: mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's largest dynamic mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX), and
#: the trim threshold it pairs with it
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

_settled: bool | None = None


def settle_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds (once per process); True when they are set."""
    global _settled
    if _settled is None:
        _settled = False
        if platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _settled = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                                and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
            except (OSError, AttributeError):
                _settled = False
    return _settled
