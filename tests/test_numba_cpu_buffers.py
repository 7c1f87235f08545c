"""The numba-cpu driver's recycled output arrays (drivers/vggjit_numba_cpu/buffers.py): a buffer
comes back only when nothing refers to it, and growing releases the free ones."""
from __future__ import annotations

import numpy as np
import pytest

from vggjit_numba_cpu.buffers import Recycler
from vggjit_numba_cpu.driver import NumbaCpuDriver

MB = 1 << 20


@pytest.fixture
def pool():
    return Recycler(min_bytes=MB)


def test_a_dropped_array_is_reused_and_a_held_one_never(pool):
    a = pool.empty((MB // 4,))
    address = a.ctypes.data
    b = pool.empty((MB // 4,))              # a is alive: a new buffer
    assert b.ctypes.data != address
    del a
    c = pool.empty((256, 1024))            # same bytes, other shape: a's buffer again
    assert c.ctypes.data == address and c.shape == (256, 1024) and c.flags.c_contiguous
    assert pool.reused == 1 and pool.allocated == 2


@pytest.mark.parametrize("keep", [lambda a: a[10:], lambda a: a.reshape(2, -1),
                                  lambda a: memoryview(a), lambda a: np.asarray(a).view(np.int32)])
def test_views_and_exports_keep_the_buffer_in_use(pool, keep):
    a = pool.empty((MB // 4,))
    address = a.ctypes.data
    alive = keep(a)
    del a
    assert pool.empty((MB // 4,)).ctypes.data != address
    del alive


def test_growing_releases_free_buffers_of_other_sizes(pool):
    a, b = pool.empty((MB // 4,)), pool.empty((MB // 2,))
    del a
    assert pool.held_bytes == 3 * MB          # float32: 1 MB and 2 MB
    c = pool.empty((MB,))                  # no free buffer of 4 MB: the free 1 MB one goes
    assert pool.held_bytes == 6 * MB
    del b, c
    pool.release()
    assert pool.held_bytes == 0


def test_small_arrays_and_dtypes(pool):
    small = pool.empty((10,))
    assert small.base is None and pool.allocated == 0       # straight from np.empty
    ints = pool.empty((MB // 4,), np.int32)
    assert ints.dtype == np.int32 and ints.shape == (MB // 4,)


def test_driver_outputs_are_recycled_between_steps():
    # a forward's outputs dropped, the next forward of the same shapes gets their buffers back
    driver = NumbaCpuDriver()
    driver._outputs.min_bytes = MB          # the default (32 MB) would need larger maps
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 192, 192)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    b = np.zeros(8, np.float32)
    first = driver.conv2d(x, w, b, 1, 1)
    want, address = first.copy(), first.ctypes.data
    del first
    again = driver.conv2d(x, w, b, 1, 1)
    assert again.ctypes.data == address
    np.testing.assert_array_equal(again, want)
    kept = driver.conv2d(x, w, b, 1, 1)      # `again` is held: a buffer of its own
    assert kept.ctypes.data != again.ctypes.data
    np.testing.assert_array_equal(kept, want)
