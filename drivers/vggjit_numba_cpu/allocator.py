"""glibc malloc set to reuse the memory it has instead of mapping and zeroing it afresh.

Why: by default glibc serves every block of at least its mmap threshold (which moves with the
history of the process, from 128 KB up to 32 MB) with a fresh mapping, unmapped again when it
is freed, and it returns free memory at the top of the heap to the system once there is more
than a trim threshold (twice the mmap threshold) of it. A network's activations are large
arrays that live for one call and come back in the same sizes on the next, so every call paid
for new pages: the kernel maps them, zeroes them and, for NumPy's arrays of 4 MB and more
(madvised for transparent huge pages), may first compact memory to find 2 MB pages. A
512 px style step spent 0.3-0.5 s of CPU in the kernel that way (1.8 s wall), a first max-pool
backward into fresh pages took 118 ms against 24 ms into reused ones, and whether a 224 px
forward faulted at all depended on which blocks the process had freed before
(docs/design-notes.md, note 16).

So the driver, when it is built:
- serves every block from the heap (``M_MMAP_MAX`` 0: glibc maps no block of its own; it still
  maps more heap when the heap cannot grow in place), and
- keeps up to ``TRIM_THRESHOLD`` of free memory at the top of the heap instead of returning it.

What that changes for the whole process (the driver cannot limit it to its own arrays): memory
freed after a large call stays with the process, ready for the next one, instead of going back
to the system; the peak hardly moves (a 512 px style step peaked at 958 MB against 986 MB
before, a 1024 px step at 2904 against 2830 MB). :func:`release_memory` (the driver's
``release_buffers``) hands the free memory back.
Only on glibc; elsewhere nothing happens.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import platform

import numpy as np

#: mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: free memory at the top of the heap that is kept rather than returned: mallopt's largest
#: value (a C int). A run whose peak is larger returns the excess after it and maps it again.
TRIM_THRESHOLD = 2**31 - 1

_settled: bool | None = None
_libc = None


def _glibc():
    """glibc through ctypes, or None (another C library, or it cannot be loaded)."""
    global _libc
    if _libc is None and platform.libc_ver()[0] == "glibc":
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            _libc = None
    return _libc


def settle_malloc() -> bool:
    """Serve every block from the heap and keep freed memory (once per process); True when
    glibc took both settings."""
    global _settled
    if _settled is None:
        libc = _glibc()
        try:
            _settled = bool(libc is not None and libc.mallopt(M_MMAP_MAX, 0)
                            and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        except AttributeError:
            _settled = False
    return _settled


def release_memory() -> bool:
    """Return the heap's free memory to the system (glibc's malloc_trim); True when some was."""
    libc = _glibc()
    try:
        return bool(libc is not None and libc.malloc_trim(0))
    except AttributeError:
        return False


def kept_copy(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` in a mapping of its own, outside the heap: for arrays kept across calls
    (the Winograd transform caches). Made on the heap, a kept array lies between the
    activations that come and go around it, and the heap cannot reuse the space it pins: a
    512 px style step that cached conv4_x's transforms (264 MB) on the heap peaked at 1009-1033
    MB, 60-90 MB more than the activations and the copies need together. The mapping goes back
    to the system when the array is freed. Where no mapping can be made (a limit on mappings
    or address space), ``a`` itself is kept: the same results, on the heap."""
    if a.nbytes == 0:
        return a.copy()
    try:
        mapping = mmap.mmap(-1, a.nbytes)
    except (OSError, ValueError):
        return a
    kept = np.frombuffer(mapping, a.dtype).reshape(a.shape)
    kept[...] = a
    return kept
