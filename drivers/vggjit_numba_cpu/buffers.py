"""Large output arrays recycled once nothing references them.

Why: a style-transfer step allocates the same activations and gradients every step, and glibc's
malloc hands every block of 32 MB or more (its largest mmap threshold) straight back to the
kernel when it is freed. The next step's array of that size is then fresh pages again: mapped
and zeroed on first touch, and with NumPy's transparent-huge-page advice the kernel may first
compact memory to find huge pages. On the 2-core VM that was a large share of a 512 px step's
system time, and single ops such as the first pooling's backward ran several times slower
inside a step than alone (docs/design-notes.md, note 16). Smaller blocks malloc keeps and reuses
by itself, so they are left to it.

How: every array of at least ``MIN_BYTES`` that the driver returns is a view of a byte buffer
kept here. A buffer is free again when no array refers to it any more (its reference count is
back to what this module's own list holds), and the next request for the same number of bytes
gets it back: the pages stay mapped and warm. Nothing is reused while any view, slice or array
derived from it is alive, because those hold a reference to the buffer (``ndarray.base``).

Memory: when a request finds no free buffer of its size, every free buffer is released before
the new one is allocated, as malloc would have released them, so the process never holds more
at the moments it grows than it would without recycling. Free buffers stay held until the next
such allocation or :meth:`Recycler.release`.
"""
from __future__ import annotations

import math
import sys
import threading

import numpy as np

#: smaller arrays come straight from np.empty: malloc keeps and reuses blocks below its mmap
#: threshold (at most 32 MB on 64-bit glibc) by itself
MIN_BYTES = 32 << 20


def _reference_counts(buffers: list) -> list[int]:
    return [sys.getrefcount(buffer) for buffer in buffers]


#: what _reference_counts reports for a buffer that only its list holds (calibrated here
#: rather than written down: the count of a list element depends on the interpreter version)
_UNREFERENCED = _reference_counts([np.empty(1, np.uint8)])[0]


class Recycler:
    """Hands out arrays backed by reusable buffers; thread-safe."""

    def __init__(self, min_bytes: int = MIN_BYTES):
        self.min_bytes = int(min_bytes)
        self._buffers: dict[int, list[np.ndarray]] = {}
        self._lock = threading.Lock()
        self.reused = 0        # requests served by a free buffer
        self.allocated = 0     # requests that allocated a new one

    def empty(self, shape, dtype=np.float32) -> np.ndarray:
        """An uninitialised C-contiguous array, like ``np.empty(shape, dtype)``."""
        dtype = np.dtype(dtype)
        shape = tuple(int(s) for s in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.min_bytes:
            return np.empty(shape, dtype)
        with self._lock:
            same_size = self._buffers.setdefault(nbytes, [])
            for i, count in enumerate(_reference_counts(same_size)):
                if count == _UNREFERENCED:
                    self.reused += 1
                    return same_size[i].view(dtype).reshape(shape)
            self._release_free()
            buffer = np.empty(nbytes, np.uint8)
            self._buffers.setdefault(nbytes, []).append(buffer)
            self.allocated += 1
        return buffer.view(dtype).reshape(shape)

    def empty_like(self, a: np.ndarray) -> np.ndarray:
        return self.empty(a.shape, a.dtype)

    def release(self) -> None:
        """Give every free buffer back to the allocator now."""
        with self._lock:
            self._release_free()

    def _release_free(self) -> None:
        for nbytes in list(self._buffers):
            counts = _reference_counts(self._buffers[nbytes])
            held = [b for b, c in zip(self._buffers[nbytes], counts) if c != _UNREFERENCED]
            if held:
                self._buffers[nbytes] = held
            else:
                del self._buffers[nbytes]

    @property
    def held_bytes(self) -> int:
        """Bytes of every buffer kept here, in use or free."""
        return sum(nbytes * len(b) for nbytes, b in self._buffers.items())
