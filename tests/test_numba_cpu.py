"""numba-cpu specifics that the generic conformance suite cannot see: tiling, the memory
bound, buffer reuse, skipped gradients, threads and BLAS limits, and the cache fallback.

Op-versus-oracle checks on a grid of shapes live in test_conformance.py; here the shapes are
chosen to hit this driver's own edge cases (uneven last tiles, one-row tiles, a buffer that
was grown by an earlier, larger call).
"""
from __future__ import annotations

import gc
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path

import numba
import numpy as np
import pytest
from tolerances import PATH_TOLERANCES, TOLERANCES, assert_close

from vggjit import get_driver
from vggjit.errors import InputError
from vggjit_numba_cpu import (allocator, conv, gram, kernel_cache, microkernel, pool, threads,
                              winograd, winograd4)
from vggjit_numba_cpu.driver import NumbaCpuDriver

#: numba-cpu's tiling and kernels are held to the suite's float32 bound (tests/tolerances.py);
#: every comparison here is of a convolution or its gradients.
TOL = TOLERANCES["float32"]["conv2d"]


def _close(got, want, what=""):
    assert_close(got, want, TOL, what)


@pytest.fixture(scope="module")
def naive():
    return get_driver("naive")


#: the kernels' "no mask" argument (an empty array, typed like a real one)
NO_MASK = np.empty((0, 0, 0, 0), np.float32)


def _case(seed, n, cin, h, w, cout, k):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    wt = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    return rng, x, wt, b


# -- read-only operands --------------------------------------------------------------------------
def _read_only(a):
    """a in a read-only buffer, as an ONNX tensor or np.frombuffer gives it."""
    return np.frombuffer(a.tobytes(), np.float32).reshape(a.shape)


@pytest.mark.parametrize("conv_path", ["auto", "img2col", "shifted", "cout-split", "winograd",
                                       "winograd4", "winograd4-split"])
def test_read_only_operands_on_every_path(naive, conv_path):
    # weights, inputs and gradients in read-only buffers (an ONNX file's tensors, a weight file
    # mapped read-only) are valid operands: every path reads them and writes only its own
    # outputs (the kernels with explicit signatures have read-only ones too)
    rng, x, wt, b = _case(41, 2, 3, 9, 10, 4, 3)
    d = NumbaCpuDriver(conv_path=conv_path)
    x_ro, w_ro, b_ro = _read_only(x), _read_only(wt), _read_only(b)
    assert not (x_ro.flags.writeable or w_ro.flags.writeable or b_ro.flags.writeable)
    y = d.conv2d(x_ro, w_ro, b_ro, 1, 1)
    _close(y, naive.conv2d(x, wt, b, 1, 1), "forward")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    for got, want, label in zip(d.conv2d_backward(_read_only(dy), x_ro, w_ro, 1, 1),
                                naive.conv2d_backward(dy, x, wt, 1, 1), ("dx", "dw", "db")):
        _close(got, want, label)
    features = y.reshape(2, -1)[:, :270]
    fw = _read_only(rng.standard_normal((5, 270)).astype(np.float32))
    fb = _read_only(rng.standard_normal(5).astype(np.float32))
    np.testing.assert_allclose(d.linear(_read_only(features), fw, fb),
                               naive.linear(features, fw, fb), rtol=1e-4, atol=1e-4)
    pooled, _ = d.max_pool2d(x_ro, 2, 2)
    np.testing.assert_array_equal(pooled, naive.max_pool2d(x, 2, 2)[0])


# -- tiling --------------------------------------------------------------------------------------
def test_tile_planner_splits_rows_evenly_over_workers():
    # 14 output rows, at most 13 per tile, 2 workers: 7 + 7, not 13 + 1.
    assert conv.balanced_rows(14, 13, 1, 2) == 7
    # A planner result never exceeds the output height and is at least one row.
    for ho in (1, 5, 14, 224):
        rows = conv.plan_forward(ho, ho, 576, 2, 1, 1 << 20, 128 << 20)
        assert 1 <= rows <= ho


@pytest.mark.parametrize("rows", [1, 3, 4])
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("relu", [False, True])
def test_forward_kernel_with_uneven_last_tile(naive, rows, workers, relu):
    # Ho = 11 rows: with 3 or 4 rows per tile the last tile is short; with 3 workers and
    # 2 images the tiles do not divide evenly among the workers either.
    _, x, wt, b = _case(1, 2, 3, 11, 6, 4, 3)
    y = np.full((2, 4, 11, 6), np.nan, np.float32)
    cols = np.empty(workers * 3 * 9 * rows * 6, np.float32)
    driver = NumbaCpuDriver()
    driver._plan.run(conv.conv2d_forward, workers, x, wt.reshape(4, -1), b, 3, 1, 1, rows,
                     workers, cols, y, driver._sgemm.kernel_args(workers), relu)
    want = naive.conv2d(x, wt, b, 1, 1)
    _close(y, np.maximum(want, 0) if relu else want, f"rows={rows} workers={workers}")


@pytest.mark.parametrize("rows", [1, 3, 4])
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("k, pad", [(3, 1), (5, 1), (3, 0), (2, 1)])
@pytest.mark.parametrize("relu", [False, True])
def test_shifted_forward_kernel_with_uneven_last_tile(naive, rows, workers, k, pad, relu):
    # The stride-1 "shifted rows" kernel: padded-width tiles whose extra columns must be
    # dropped, a short last tile, kernel sizes whose shifted reads reach the tile's tail.
    _, x, wt, b = _case(12, 2, 3, 11, 7, 4, k)
    ho, wo = 11 + 2 * pad - k + 1, 7 + 2 * pad - k + 1
    y = np.full((2, 4, ho, wo), np.nan, np.float32)
    work = np.full(workers * conv.shifted_tile(3, 4, k, 7, pad, rows), np.nan, np.float32)
    wk = np.ascontiguousarray(wt.transpose(3, 0, 1, 2)).reshape(k, 4, 3 * k)
    driver = NumbaCpuDriver()
    driver._plan.run(conv.conv2d_forward_s1, workers, x, wk, b, k, pad, rows, workers, work, y,
                     driver._sgemm.kernel_args(workers), relu)
    want = naive.conv2d(x, wt, b, 1, pad)
    _close(y, np.maximum(want, 0) if relu else want,
           f"k={k} pad={pad} rows={rows} workers={workers}")


@pytest.mark.parametrize("rows", [1, 2, 5])
def test_backward_kernel_with_uneven_tiles_and_channel_blocks(naive, rows):
    # stride 2, K 3: consecutive row tiles overlap in dx (scatter-add across tiles);
    # 5 channels over 3 blocks of unequal width.
    rng, x, wt, b = _case(2, 2, 5, 13, 9, 3, 3)
    dy = rng.standard_normal((2, 3, 7, 5)).astype(np.float32)
    bounds = np.array([0, 2, 3, 5], np.int64)
    floats = conv.input_grad_floats(3, 3, 5, rows, bounds, 2)
    assert floats == 2 * (2 * 9 + 3) * rows * 5     # the widest block's columns + staged dy
    dx = np.full_like(x, np.nan)
    dw = np.full((3, 45), np.nan, np.float32)
    driver = NumbaCpuDriver()
    w2 = wt.reshape(3, -1)
    run = driver._plan.run
    run(conv.input_grad, 2, dy, w2, 3, 2, 1, rows, bounds, 2, np.empty(floats, np.float32), dx,
        driver._sgemm.kernel_args(2))
    run(conv.weight_grad_channels, 2, dy, x, 3, 2, 1, rows, bounds, 2,
        np.empty(floats, np.float32), dw, driver._sgemm.kernel_args(2))
    for kernel, operand, out in ((conv.input_grad, w2, dx.copy()),
                                 (conv.weight_grad_channels, x, dw.copy())):
        with pytest.raises(ValueError, match="too small"):   # never writes past a buffer
            run(kernel, 2, dy, operand, 3, 2, 1, rows, bounds, 2,
                np.empty(floats - 1, np.float32), out, driver._sgemm.kernel_args(2))
    want = naive.conv2d_backward(dy, x, wt, 2, 1)
    _close(dx, want[0], "dx")
    _close(dw.reshape(wt.shape), want[1], "dw")
    # dx through a ReLU's output (the fused ReLU backward), on the same tiles
    relu_out = np.maximum(rng.standard_normal(dy.shape), 0).astype(np.float32)
    masked = np.full_like(x, np.nan)
    for t in range(2):          # the workers one after the other: the same result
        conv.input_grad(t, dy, w2, 3, 2, 1, rows, bounds, 2, np.empty(floats, np.float32),
                        masked, driver._sgemm.kernel_args(2), relu_out=relu_out)
    _close(masked, naive.conv2d_backward(naive.relu_backward(dy, relu_out), x, wt, 2, 1)[0],
           "dx masked")


@pytest.mark.parametrize("stride", [1, 2])
def test_forward_by_output_channel_blocks(naive, stride):
    # The forward split over Cout instead of rows (two images, so the per-image loop runs
    # twice; 130 channels: unequal blocks).
    driver = NumbaCpuDriver(threads=2, conv_path="cout-split")
    if driver.threads < 2:
        pytest.skip("needs 2 Numba threads")
    assert driver._forward_path(2, 3, 130, 9, 7, 3, stride, 1) == "cout-split"
    # the measured rule takes it for few output pixels per worker only
    assert conv.use_cout_split(2, 5, 4, 130, 27, 2, driver.memory_bound)
    assert not conv.use_cout_split(2, 16, 16, 130, 27, 2, driver.memory_bound)
    assert list(conv.channel_blocks(130, 2)) == [0, 80, 130]
    _, x, wt, b = _case(14, 2, 3, 9, 7, 130, 3)
    want = naive.conv2d(x, wt, b, stride, 1)
    _close(driver.conv2d(x, wt, b, stride, 1), want, "cout split")
    _close(driver.conv2d(x, wt, b, stride, 1, relu=True), np.maximum(want, 0), "fused ReLU")


@pytest.mark.parametrize("stride", [1, 2])       # 1: shifted-rows kernel, 2: img2col kernel
def test_tiny_memory_bound_forces_one_row_tiles_and_stays_correct(naive, stride):
    rng, x, wt, b = _case(3, 1, 6, 17, 12, 5, 3)
    tiny = NumbaCpuDriver(memory_bound_mb=0.001)      # 1 KB: less than one output row
    roomy = NumbaCpuDriver()
    assert conv.plan_forward(17, 12, 54, tiny.threads, 1, tiny.tile_bytes, tiny.memory_bound) == 1
    assert conv.plan_forward_shifted(17, 12, 1, 6, 5, 3, tiny.threads, 1, tiny.tile_bytes,
                                     tiny.memory_bound) == 1
    y = tiny.conv2d(x, wt, b, stride, 1)
    _close(y, naive.conv2d(x, wt, b, stride, 1), "forward")
    np.testing.assert_allclose(y, roomy.conv2d(x, wt, b, stride, 1), rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    for got, want, label in zip(tiny.conv2d_backward(dy, x, wt, stride, 1),
                                naive.conv2d_backward(dy, x, wt, stride, 1), ("dx", "dw", "db")):
        _close(got, want, label)
    # Under the tiny bound the backward pass splits channels further (one block per channel).
    bounds, rows = conv.plan_backward(6, 3, 17, 12, 5, tiny.threads, tiny.tile_bytes,
                                      tiny.memory_bound)
    assert rows == 1 and len(bounds) - 1 == 6


def test_buffers_stay_under_the_bound_when_a_row_fits():
    driver = NumbaCpuDriver(memory_bound_mb=0.25)      # 256 KB
    _, x, wt, b = _case(4, 1, 16, 40, 40, 8, 3)        # a full column matrix would be 900 KB
    driver.conv2d(x, wt, b, 1, 1)
    dy = np.ones((1, 8, 40, 40), np.float32)
    driver.conv2d_backward(dy, x, wt, 1, 1)
    assert 0 < driver.workspace_bytes <= driver.memory_bound


# -- buffer reuse --------------------------------------------------------------------------------
def test_buffers_are_reused_across_calls_of_different_shapes(naive):
    driver = NumbaCpuDriver()
    big = _case(5, 2, 7, 15, 14, 6, 5)
    small = _case(6, 1, 2, 6, 9, 3, 3)
    other = _case(7, 1, 4, 10, 5, 2, 1)
    outputs = []
    for (rng, x, wt, b), (s, p) in ((big, (1, 2)), (small, (2, 1)), (other, (1, 0)),
                                    (big, (3, 1))):
        y = driver.conv2d(x, wt, b, s, p)
        _close(y, naive.conv2d(x, wt, b, s, p), f"forward {x.shape} s{s} p{p}")
        dy = rng.standard_normal(y.shape).astype(np.float32)
        for got, want, label in zip(driver.conv2d_backward(dy, x, wt, s, p),
                                    naive.conv2d_backward(dy, x, wt, s, p), "dx dw db".split()):
            _close(got, want, f"{label} {x.shape} s{s} p{p}")
        outputs.append(driver._work.array)
    # The first (largest) call's work buffer served every later call.
    assert all(buf is outputs[0] for buf in outputs)


# -- Winograd F(2x2, 3x3) -------------------------------------------------------------------------
def everywhere(**options):
    """A driver that takes Winograd for every 3x3 s1 p1 convolution, whatever its size (the
    dispatch rule would keep these small test shapes on the img2col paths)."""
    return NumbaCpuDriver(conv_path="winograd", **options)


@pytest.mark.parametrize("n, cin, h, w, cout", [(1, 3, 9, 10, 4), (2, 5, 13, 7, 6),
                                                 (1, 2, 1, 1, 3), (1, 4, 2, 3, 5),
                                                 (3, 7, 6, 5, 2), (1, 3, 7, 70, 4),
                                                 (2, 2, 5, 37, 3)])
def test_winograd_forward_and_dx_on_odd_sizes(naive, n, cin, h, w, cout):
    # Odd H/W: the tile grid reaches past the edge (zero input, cropped output); 1x1 is a
    # single tile that is almost all padding; rows of 37 and 70 columns take the tile
    # transforms (winograd_tiles) through two and three vectors of tiles, the last partly
    # masked.
    rng, x, wt, b = _case(20, n, cin, h, w, cout, 3)
    driver = everywhere()
    misses = driver._transforms.misses
    y = driver.conv2d(x, wt, b, 1, 1)
    assert driver._transforms.misses == misses + 1        # it did take the Winograd path
    _close(y, naive.conv2d(x, wt, b, 1, 1), "forward")
    _close(driver.conv2d(x, wt, b, 1, 1, relu=True), np.maximum(y, 0), "fused ReLU")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    for got, want, label in zip(driver.conv2d_backward(dy, x, wt, 1, 1),
                                naive.conv2d_backward(dy, x, wt, 1, 1), ("dx", "dw", "db")):
        _close(got, want, label)
    dx, dw, db = driver.conv2d_backward(dy, x, wt, 1, 1, need_dw=False)
    assert dw is None and db is None
    _close(dx, naive.conv2d_backward(dy, x, wt, 1, 1)[0], "dx alone")
    relu = np.maximum(y, 0)
    dx = driver.conv2d_backward(dy, x, wt, 1, 1, need_dw=False, relu_out=relu)[0]
    _close(dx, naive.conv2d_backward(naive.relu_backward(dy, relu), x, wt, 1, 1)[0],
           "dx through the ReLU")


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("rows", [1, 2, 3])
def test_winograd_kernel_chunk_boundaries(naive, workers, rows):
    # TH = 6 tile rows, 2 images: chunks of 1..3 tile rows, uneven over up to 3 workers.
    _, x, wt, b = _case(21, 2, 3, 11, 9, 4, 3)
    driver = NumbaCpuDriver()
    y = np.full((2, 4, 11, 9), np.nan, np.float32)
    work = np.empty(workers * winograd.chunk_floats(3, 4, 9, rows), np.float32)
    blas = driver._sgemm.kernel_args(workers)
    u = winograd.weight_transform(wt)

    def run(x, b, y, flip, relu, mask):
        driver._plan.run(winograd.winograd_forward, workers, x, u, b, rows, workers, work, y,
                         blas, flip, relu, mask)

    run(x, b, y, False, False, NO_MASK)
    _close(y, naive.conv2d(x, wt, b, 1, 1), f"rows={rows} workers={workers}")
    fused = np.full_like(y, np.nan)
    run(x, b, fused, False, True, NO_MASK)
    _close(fused, np.maximum(y, 0), f"relu rows={rows} workers={workers}")
    # The dx convolution (flip) on the same chunking: dy [2, 4, 11, 9] -> dx [2, 3, 11, 9].
    dy, dx = y, np.full((2, 3, 11, 9), np.nan, np.float32)
    work = np.empty(workers * winograd.chunk_floats(4, 3, 9, rows), np.float32)
    run(dy, np.zeros(3, np.float32), dx, True, False, NO_MASK)
    _close(dx, naive.conv2d_backward(dy, x, wt, 1, 1)[0], f"dx rows={rows} workers={workers}")
    # ... and dy read through a ReLU's output (the fused ReLU backward)
    run(dy, np.zeros(3, np.float32), dx, True, False, fused)
    _close(dx, naive.conv2d_backward(naive.relu_backward(dy, fused), x, wt, 1, 1)[0],
           f"masked dx rows={rows} workers={workers}")


def test_winograd_tiny_memory_bound_gives_one_tile_row_chunks(naive):
    _, x, wt, b = _case(22, 2, 6, 17, 12, 5, 3)
    tiny = everywhere(memory_bound_mb=0.001)
    assert winograd.plan_rows(17, 12, 6, 5, tiny.threads, 2, tiny.tile_bytes,
                              tiny.memory_bound) == 1
    _close(tiny.conv2d(x, wt, b, 1, 1), naive.conv2d(x, wt, b, 1, 1), "forward")
    # a bound that fits a few tile rows (of 9): shorter chunks, workspace within the bound
    _, x, wt, b = _case(22, 2, 40, 17, 12, 40, 3)
    small = everywhere(memory_bound_mb=0.3)
    rows = winograd.plan_rows(17, 12, 40, 40, small.threads, 2, small.tile_bytes,
                              small.memory_bound)
    assert 1 < rows < 9
    _close(small.conv2d(x, wt, b, 1, 1), naive.conv2d(x, wt, b, 1, 1), "forward")
    assert small.workspace_bytes <= small.memory_bound


def test_winograd_weight_cache_follows_the_weights(naive):
    _, x, wt, b = _case(23, 1, 4, 8, 8, 3, 3)
    driver = everywhere()
    driver.conv2d(x, wt, b, 1, 1)
    misses = driver._transforms.misses
    driver.conv2d(x, wt, b, 1, 1)                        # same array, same values: cached
    assert driver._transforms.misses == misses
    wt[2, 3, 1, 0] += 0.5                                # changed in place
    _close(driver.conv2d(x, wt, b, 1, 1), naive.conv2d(x, wt, b, 1, 1), "in place")
    assert driver._transforms.misses == misses + 1
    # A new array that may reuse the freed id (and even the address) of the old one.
    for seed in range(5):
        del wt
        wt = np.random.default_rng(seed).standard_normal((3, 4, 3, 3)).astype(np.float32)
        _close(driver.conv2d(x, wt, b, 1, 1), naive.conv2d(x, wt, b, 1, 1), f"new {seed}")
    # dx reads the forward transform (transposed, mirrored): no second entry, no recompute.
    misses = driver._transforms.misses
    dy = np.ones((1, 3, 8, 8), np.float32)
    _close(driver.conv2d_backward(dy, x, wt, 1, 1, need_dw=False)[0],
           naive.conv2d_backward(dy, x, wt, 1, 1)[0], "dx")
    _close(driver.conv2d(x, wt, b, 1, 1), naive.conv2d(x, wt, b, 1, 1), "forward again")
    assert driver._transforms.misses == misses and len(driver._transforms._entries) <= 6


def test_dx_transform_is_the_mirrored_transpose_of_the_forward_one():
    w = np.random.default_rng(4).standard_normal((5, 3, 3, 3)).astype(np.float32)
    u, u_dx = winograd.weight_transform(w), winograd.weight_transform(w, flip=True)
    mirror = [3, 1, 2, 0]
    for i in range(4):
        for j in range(4):
            np.testing.assert_allclose(u_dx[4 * i + j], u[4 * mirror[i] + mirror[j]].T,
                                       rtol=1e-6, atol=1e-6)


def test_weight_checksum_is_the_same_on_any_workers_and_sees_every_change():
    w = np.random.default_rng(5).standard_normal((7, 11, 3, 3 * 101)).astype(np.float32)

    def shared(workers):
        partial = np.full(winograd.CHECKSUM_BLOCKS, 7, np.uint64)
        for t in range(workers):
            winograd.checksum_blocks(t, w, workers, partial)
        return winograd.combine_checksum(partial)

    first = winograd.checksum(w)
    assert [shared(k) for k in (1, 2, 3, 5)] == [first] * 4
    assert NumbaCpuDriver(threads=2)._checksum(w) == first    # the driver's, on its workers
    bits = w.reshape(-1).view(np.uint32)
    for i in (0, bits.size // 2, bits.size - 1):                # one bit of any block's element
        bits[i] ^= 1
        assert winograd.checksum(w) != first
        bits[i] ^= 1
    assert winograd.checksum(w) == first


def test_winograd_cache_is_bounded_and_keeps_the_first_that_fit():
    # room for three 4x4 transforms: the first three stay, the others are computed per call
    # (a cycle longer than the bound would otherwise miss every time); an entry goes with its
    # weights, which makes room for the next
    cache = winograd.TransformCache(max_bytes=3 * 16 * 4 * 4 * 4)
    ws = [np.full((4, 4, 3, 3), i, np.float32) for i in range(5)]
    for _ in range(2):
        for w in ws:
            u = cache.get(w)
            np.testing.assert_array_equal(u, winograd.weight_transform(w))
    assert len(cache._entries) == 3 and cache.misses == 5 + 2
    assert cache.nbytes <= cache.max_bytes
    del ws[0], w
    gc.collect()
    assert len(cache._entries) == 2
    cache.get(ws[-1])
    assert len(cache._entries) == 3 and cache.misses == 8
    cache.get(ws[-1])
    assert cache.misses == 8
    # forward and dx transforms of one array are two entries
    flipped = cache.get(ws[0], flip=True)
    np.testing.assert_array_equal(flipped, winograd.weight_transform(ws[0], flip=True))


def test_winograd_option_and_dispatch_rule():
    assert NumbaCpuDriver(winograd=False).describe()["winograd"] is False
    with pytest.raises(InputError, match="conv_path"):
        NumbaCpuDriver(conv_path="fft")
    with pytest.raises(InputError, match="dw_path"):
        NumbaCpuDriver(dw_path="both")
    # a forced path where its geometry does not allow it: img2col
    assert everywhere()._forward_path(1, 3, 4, 9, 9, 3, 2, 1) == "img2col"
    assert NumbaCpuDriver(conv_path="shifted")._forward_path(1, 3, 4, 9, 9, 3, 2, 1) == "img2col"
    assert winograd.applies(3, 1, 1) and not winograd.applies(3, 2, 1)
    assert not winograd.applies(3, 1, 0) and not winograd.applies(5, 1, 1)
    # VGG19 at 224, 2 workers: conv1_1 and conv5_x stay on img2col, the rest use Winograd
    assert not winograd.use_winograd(1, 3, 64, 224, 224, 2)
    assert winograd.use_winograd(1, 256, 256, 56, 56, 2)
    assert not winograd.use_winograd(1, 512, 512, 14, 14, 2)


# -- Gram: ssyrk triangles, sgemm blocks, split H*W --------------------------------------------
@pytest.mark.parametrize("path", ["split-k", "blocks", "rows"])
@pytest.mark.parametrize("shape", [(1, 7, 5, 9), (1, 37, 6, 6), (3, 20, 4, 5), (2, 1, 1, 3)])
@pytest.mark.parametrize("workers", [2, 3])
def test_every_gram_path_matches_naive_and_is_symmetric(naive, monkeypatch, path, shape,
                                                        workers):
    # each path forced on uneven shapes (C not a multiple of the blocks, H*W not of the parts,
    # more workers than images and the reverse); the triangle paths mirror, so G == G^T exactly
    plan = gram.plan_gram
    monkeypatch.setattr(gram, "plan_gram", lambda n, c, hw, w: plan(n, c, hw, w, path))
    x = np.random.default_rng(shape[1]).standard_normal(shape).astype(np.float32)
    got = NumbaCpuDriver(threads=workers).gram(x)
    assert_close(got, naive.gram(x), TOLERANCES["float32"]["gram"], f"gram {path}")
    if path != "rows":
        np.testing.assert_array_equal(got, got.transpose(0, 2, 1))


@pytest.mark.parametrize("blas", ["auto", "scipy"])
def test_gram_finds_ssyrk_beside_either_sgemm(naive, blas):
    # ssyrk comes from the library (and integer width) of the sgemm the driver was given
    driver = NumbaCpuDriver(blas=blas, threads=2)
    syrk = gram.syrk_for(driver._sgemm)
    assert syrk.int_dtype == driver._sgemm.int_dtype and "ssyrk" in syrk.symbol
    x = np.random.default_rng(3).standard_normal((1, 9, 6, 7)).astype(np.float32)
    got = driver.gram(x)
    assert_close(got, naive.gram(x), TOLERANCES["float32"]["gram"], f"gram with {blas}")
    np.testing.assert_array_equal(got, got.transpose(0, 2, 1))


def test_gram_paths_follow_the_shape():
    # relu1_1 at 512 px and batch 1: the H*W columns split between the workers, one partial
    # triangle each; relu5_1 at 256 px: triangle blocks; 512 channels at 8x8: rows, unmirrored
    assert gram.plan_gram(1, 64, 512 * 512, 2)[3:] == (2, False)
    assert gram.plan_gram(1, 512, 16 * 16, 2)[3:] == (1, True)
    assert gram.plan_gram(1, 512, 8 * 8, 2)[3:] == (1, False)
    assert gram.plan_gram(2, 64, 512 * 512, 2)[3:] == (1, True)      # one image per worker
    with pytest.raises(ValueError, match="gram path"):
        gram.plan_gram(1, 4, 4, 2, "diagonal")


@pytest.mark.parametrize("workers", [2, 4])
def test_gram_blocks_share_the_flops_evenly(workers):
    # one image's upper-triangle blocks dealt to the workers: a diagonal block (ssyrk) counts
    # half a square, and every worker gets the same share
    items, first, used, parts, mirror = gram.plan_gram(1, 512, 256, workers, "blocks")
    assert used == workers and parts == 1 and mirror
    loads = []
    for t in range(used):
        rows = items[first[t]:first[t + 1]]
        loads.append(sum((r[gram.R1] - r[gram.R0]) * (r[gram.C1] - r[gram.C0])
                         / (2 if r[gram.TRIANGLE] else 1) for r in rows))
    assert max(loads) == min(loads) == 512 * 512 / 2 / workers


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
@pytest.mark.parametrize("shape", [(2, 3, 1, 5), (1, 4, 4, 4), (2, 6, 3, 11), (1, 2, 8, 9)])
def test_gram_backward_shares_every_column_once(naive, workers, shape):
    # H*W of 5, 16, 33 and 72 columns on 16-float edges: shares of none, part of one edge and
    # several; every column written once, fresh (dx poisoned first) and added in place
    rng = np.random.default_rng(shape[3])
    x = rng.standard_normal(shape).astype(np.float32)
    dg = rng.standard_normal((shape[0], shape[1], shape[1])).astype(np.float32)
    s = np.ascontiguousarray(dg + dg.transpose(0, 2, 1))
    blas = NumbaCpuDriver(threads=1)._sgemm.kernel_args(workers)
    tol = TOLERANCES["float32"]["gram_backward"]
    want = naive.gram_backward(dg, x)
    dx = np.full_like(x, np.nan)
    for t in range(workers):
        gram.gram_backward_columns(t, s, x, workers, False, dx, blas)
    assert_close(dx, want, tol, "fresh")
    arriving = rng.standard_normal(shape).astype(np.float32)
    dx = arriving.copy()
    for t in range(workers):
        gram.gram_backward_columns(t, s, x, workers, True, dx, blas)
    assert_close(dx, want + arriving, tol, "accumulated")


# -- the packed GEMM (microkernel.py) -------------------------------------------------------------
@pytest.mark.parametrize("depth", [5, 300])               # one pass; two whole and a short one
def test_pack_puts_each_entry_where_pack_index_says(depth):
    m = np.arange(2 * 13 * depth, dtype=np.float32).reshape(2, 13, depth)
    packed = microkernel.pack(m)
    assert packed.shape == (2, 16 * depth)                   # 13 rows -> 2 blocks of 8
    places = set()
    for p in range(16):
        for q in range(depth):
            want = m[:, p, q] if p < 13 else 0.0             # the added rows are zero
            place = microkernel.pack_index(p, q, 16, depth)
            np.testing.assert_array_equal(packed[:, place], want)
            places.add(place)
    assert len(places) == 16 * depth                         # every place used once


# cols: main blocks of NR = 48, then blocks of 16 and 8 (every mix of them); depth past KC = 128
# adds passes that accumulate (256: two whole passes, 300: a short third); rows [p0, p1) as
# the split path uses them
@pytest.mark.parametrize("cols", [8, 16, 24, 48, 56, 64, 72, 104, 144])
@pytest.mark.parametrize("depth, p, p0, p1", [(5, 8, 0, 8), (37, 13, 0, 16), (300, 24, 8, 24),
                                               (256, 16, 0, 16), (1, 8, 0, 8)])
def test_gemm_packed_against_float64(cols, depth, p, p0, p1):
    rng = np.random.default_rng(cols * 1000 + depth)
    a = rng.standard_normal((p, depth)).astype(np.float32)
    ldb, ldc = cols + 3, cols + 5                             # row strides wider than the rows
    b = rng.standard_normal((depth, ldb)).astype(np.float32)
    rows = microkernel.packed_rows(p)
    c = np.full((rows, ldc), np.nan, np.float32)
    microkernel.gemm_packed(microkernel.pack(a).reshape(-1), 0, b.reshape(-1), 0, ldb,
                            c.reshape(-1), 0, ldc, p0, p1, rows, depth, cols)
    want = np.zeros((rows, cols))
    want[:p] = a.astype(np.float64) @ b[:, :cols].astype(np.float64)
    assert_close(c[p0:p1, :cols], want[p0:p1], TOLERANCES["float32"]["conv2d"], "gemm_packed")
    assert np.isnan(c[:, cols:]).all() and np.isnan(c[:p0]).all() and np.isnan(c[p1:]).all()


# -- Winograd F(4x4, 3x3) -------------------------------------------------------------------------
#: F(4x4)'s own bound in the shared table (tests/tolerances.py, PATH_TOLERANCES)
TOL4 = PATH_TOLERANCES["winograd4"]["conv2d"]


def _close4(got, want, what=""):
    assert_close(got, want, TOL4, what)


def test_winograd4_matrices_compute_the_3_tap_correlation():
    # sum_k A^T[i, k] G[k, j] B^T[k, l] = 1 where l = i + j, else 0: output i of the tile is
    # sum_j g[j] d[i + j], which is what the transforms must compute
    product = np.einsum("ik,kj,kl->ijl", winograd4.AT, winograd4.G, winograd4.BT)
    want = np.zeros((4, 3, 6))
    for i in range(4):
        for j in range(3):
            want[i, j, i + j] = 1.0
    np.testing.assert_allclose(product, want, atol=1e-12)


@pytest.mark.parametrize("n, cin, h, w, cout", [(1, 3, 9, 10, 4), (2, 5, 13, 7, 6),
                                                 (1, 2, 1, 1, 3), (1, 4, 2, 3, 5),
                                                 (3, 7, 6, 5, 2), (1, 6, 8, 12, 3),
                                                 (1, 3, 10, 70, 4), (2, 2, 7, 130, 3)])
def test_winograd4_forward_and_dx_on_odd_sizes(naive, n, cin, h, w, cout):
    # H, W of every residue modulo 4: the tile grid reaches 1-3 rows/columns past the edge;
    # rows of 70 and 130 columns take the tile transforms (winograd_tiles) through two and
    # three vectors of tiles, the last one partly masked
    rng, x, wt, b = _case(24, n, cin, h, w, cout, 3)
    driver = NumbaCpuDriver(conv_path="winograd4")
    y = driver.conv2d(x, wt, b, 1, 1)
    assert driver._transforms4.misses == 1                 # it did take the F(4x4) path
    _close4(y, naive.conv2d(x, wt, b, 1, 1), "forward")
    relu = driver.conv2d(x, wt, b, 1, 1, relu=True)
    np.testing.assert_array_equal(relu, np.maximum(y, 0))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = driver.conv2d_backward(dy, x, wt, 1, 1, need_dw=False)[0]
    assert driver._transforms4.misses == 2                 # ... and dx its own transform
    _close4(dx, naive.conv2d_backward(dy, x, wt, 1, 1)[0], "dx")
    dx = driver.conv2d_backward(dy, x, wt, 1, 1, need_dw=False, relu_out=relu)[0]
    _close4(dx, naive.conv2d_backward(naive.relu_backward(dy, relu), x, wt, 1, 1)[0],
           "dx through the ReLU")


@pytest.mark.parametrize("module, g", [(winograd, winograd._G), (winograd4, winograd4.G)])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("cout, cin", [(7, 5), (11, 150)])   # 150: a second, short depth pass
def test_weight_transform_kernel_matches_the_matrix_product(module, g, flip, cout, cin):
    # the reference: G k G^T as one float64 einsum over all kernels, rounded once
    w = np.random.default_rng(28).standard_normal((cout, cin, 3, 3)).astype(np.float32)
    k = w.astype(np.float64)
    if flip:
        k = k.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    r = g.shape[0]
    want = np.einsum("ia,pqab,jb->ijpq", g, k, g).reshape(r * r, *k.shape[:2])
    if module is winograd4 and winograd4.USE_PACKED_GEMM:   # packed, rows rounded up with 0
        want = microkernel.pack(want)
    got = module.weight_transform(w, flip)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-7, atol=1e-7)


def test_winograd4_transform_per_call_on_large_maps(naive, monkeypatch):
    # from PER_CALL_PIXELS on, F(4x4) computes its transforms per call instead of caching them:
    # the same results, nothing cached
    rng, x, wt, b = _case(29, 1, 6, 12, 12, 5, 3)
    cached = NumbaCpuDriver(conv_path="winograd4")
    y_cached = cached.conv2d(x, wt, b, 1, 1)
    dy = rng.standard_normal(y_cached.shape).astype(np.float32)
    dx_cached = cached.conv2d_backward(dy, x, wt, 1, 1, need_dw=False)[0]
    monkeypatch.setattr(winograd4, "PER_CALL_PIXELS", 12 * 12)
    per_call = NumbaCpuDriver(conv_path="winograd4")
    np.testing.assert_array_equal(per_call.conv2d(x, wt, b, 1, 1), y_cached)
    np.testing.assert_array_equal(per_call.conv2d_backward(dy, x, wt, 1, 1, need_dw=False)[0],
                                  dx_cached)
    assert per_call._transforms4.misses == 0 and not per_call._transforms4._entries
    _close4(y_cached, naive.conv2d(x, wt, b, 1, 1), "forward")


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n, cin, h, w, cout", [(1, 3, 9, 10, 4), (2, 5, 13, 7, 37),
                                                 (1, 2, 1, 1, 3), (1, 17, 6, 5, 40)])
def test_winograd4_split_by_output_channels(naive, threads, n, cin, h, w, cout):
    # every worker transforms its share of the input channels, then its block of outputs:
    # blocks of 16 channels (37, 40 give a short last block; 3, 4 leave workers without one)
    rng, x, wt, b = _case(30, n, cin, h, w, cout, 3)
    driver = NumbaCpuDriver(conv_path="winograd4-split", threads=threads)
    y = driver.conv2d(x, wt, b, 1, 1, relu=True)
    _close4(y, np.maximum(naive.conv2d(x, wt, b, 1, 1), 0), "forward")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = driver.conv2d_backward(dy, x, wt, 1, 1, need_dw=False, relu_out=y)[0]
    _close4(dx, naive.conv2d_backward(naive.relu_backward(dy, y), x, wt, 1, 1)[0], "dx")
    assert driver._transforms4.misses == 2                 # forward and dx, once each


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n, cin, h, w, cout", [(1, 3, 9, 10, 4), (2, 5, 13, 7, 37),
                                                 (1, 2, 1, 1, 3), (1, 17, 6, 5, 40),
                                                 (1, 9, 14, 14, 16)])
def test_winograd_split_by_output_channels(naive, threads, n, cin, h, w, cout):
    # F(2x2) split: every worker transforms its share of the input channels, then its block of
    # outputs on the packed GEMM (tiles 20, 28, 1, 9 and 49: padded to the GEMM's column
    # blocks, the padding zero); forward with the ReLU, dx through it, each with its own
    # transform, cached
    rng, x, wt, b = _case(32, n, cin, h, w, cout, 3)
    driver = NumbaCpuDriver(conv_path="winograd-split", threads=threads)
    y = driver.conv2d(x, wt, b, 1, 1, relu=True)
    assert_close(y, np.maximum(naive.conv2d(x, wt, b, 1, 1), 0),
                 TOLERANCES["float32"]["conv2d"], "forward")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    for _ in range(2):
        dx = driver.conv2d_backward(dy, x, wt, 1, 1, need_dw=False, relu_out=y)[0]
        assert_close(dx, naive.conv2d_backward(naive.relu_backward(dy, y), x, wt, 1, 1)[0],
                     TOLERANCES["float32"]["conv2d_backward"], "dx")
    assert driver._transforms_split.misses == 2 and len(driver._transforms_split._entries) == 2


def test_winograd_split_rule():
    # one image of 16..256 tiles of 2x2 and 64+ channels, two workers: conv5_x of 224 px
    # classification (14 px) and conv5_1 of 512 px style transfer (32 px); not batches, not
    # 28 px (F(4x4) split first), not 34 px
    driver = NumbaCpuDriver(threads=2)
    assert driver._forward_path(1, 512, 512, 14, 14, 3, 1, 1) == "winograd-split"
    assert driver._forward_path(1, 512, 512, 32, 32, 3, 1, 1) == "winograd-split"
    assert driver._forward_path(1, 512, 512, 28, 28, 3, 1, 1) == "winograd4-split"
    assert driver._forward_path(4, 512, 512, 14, 14, 3, 1, 1) == "winograd"
    assert driver._forward_path(1, 512, 512, 34, 34, 3, 1, 1) == "winograd"
    assert driver._forward_path(1, 32, 512, 14, 14, 3, 1, 1) != "winograd-split"
    assert NumbaCpuDriver(threads=1)._forward_path(1, 512, 512, 14, 14, 3, 1, 1) != \
        "winograd-split"


def test_winograd4_transform_per_call_rule():
    # large maps: per call; conv4_x of 512 px style transfer and 224 px classification: cached
    assert winograd4.transform_per_call(128 * 128)                    # 512 px style, conv3_x
    assert not winograd4.transform_per_call(64 * 64)                  # 512 px style, conv4_x
    assert not winograd4.transform_per_call(28 * 28)                  # 224 px, conv4_x
    assert not winograd4.transform_per_call(4 * 56 * 56)              # batch 4, conv3_x


def test_winograd4_takes_28_px_maps_on_batches_only():
    # conv4_x of 224 px classification: one image goes to the split by output channels, a
    # batch to F(4x4) by tile rows; 24 px stays on F(2x2)
    assert not winograd4.use_winograd4(1, 512, 512, 28, 28, 2)
    assert winograd4.use_winograd4(2, 512, 512, 28, 28, 2)
    assert winograd4.use_winograd4(4, 256, 512, 28, 28, 2)
    assert not winograd4.use_winograd4(4, 512, 512, 24, 24, 2)
    assert winograd4.use_winograd4(1, 256, 256, 56, 56, 2)


def test_winograd4_chunks_are_longer_on_batches_and_deep_layers():
    # one image of 64 or 128 channels keeps the shorter chunks (512 and 256 px style transfer)
    assert winograd4.min_chunk_tiles(64, 64, 1) == winograd4.MIN_CHUNK_TILES
    assert winograd4.min_chunk_tiles(128, 128, 1) == winograd4.MIN_CHUNK_TILES
    assert winograd4.min_chunk_tiles(128, 256, 1) == winograd4.MIN_CHUNK_TILES_DEEP
    assert winograd4.min_chunk_tiles(64, 64, 4) == winograd4.MIN_CHUNK_TILES_DEEP
    assert winograd4.MIN_CHUNK_TILES_DEEP > winograd4.MIN_CHUNK_TILES
    bound, tile = 128 << 20, 1 << 20
    # 224 px, 256 channels: one image in 2 chunks of 7 tile rows, four images in 1 chunk each
    assert winograd4.plan_rows(56, 56, 256, 256, 2, 1, tile, bound) == 7
    assert winograd4.plan_rows(56, 56, 256, 256, 2, 4, tile, bound) == 14
    assert winograd4.plan_rows(512, 512, 64, 64, 2, 1, tile, bound) == 1


def test_winograd4_split_rule():
    # conv4_x of 224 px classification (28 px, 49 tiles, one image) only
    assert winograd4.use_split(1, 512, 512, 28, 28, 2)
    assert winograd4.use_split(1, 256, 512, 28, 28, 2)
    assert not winograd4.use_split(2, 512, 512, 28, 28, 2)      # batches: by tile rows
    assert not winograd4.use_split(1, 512, 512, 14, 14, 2)      # 16 tiles: img2col's split
    assert not winograd4.use_split(1, 512, 512, 32, 32, 2)      # style transfer's conv5_1
    assert not winograd4.use_split(1, 512, 512, 28, 28, 1)
    assert NumbaCpuDriver(threads=2)._forward_path(1, 512, 512, 28, 28, 3, 1, 1) == \
        "winograd4-split"


@pytest.mark.parametrize("workers, rows", [(1, 1), (2, 2), (3, 1)])
def test_winograd4_kernel_chunk_boundaries(naive, workers, rows):
    # TH = 4 tile rows (H = 15), 2 images: chunks of 1-2 tile rows, uneven over the workers
    _, x, wt, b = _case(25, 2, 3, 15, 9, 4, 3)
    driver = NumbaCpuDriver()
    y = np.full((2, 4, 15, 9), np.nan, np.float32)
    work = np.empty(workers * winograd4.chunk_floats(3, 4, 9, rows), np.float32)
    driver._plan.run(winograd4.winograd4_forward, workers, x, winograd4.weight_transform(wt), b,
                     rows, workers, work, y, driver._sgemm.kernel_args(workers), False, NO_MASK)
    _close4(y, naive.conv2d(x, wt, b, 1, 1), f"rows={rows} workers={workers}")


def test_winograd4_chunks_shrink_to_the_memory_bound(naive):
    _, x, wt, b = _case(27, 2, 40, 33, 20, 40, 3)        # 9 tile rows of 5 tiles
    tiny = NumbaCpuDriver(conv_path="winograd4", memory_bound_mb=0.001)
    assert winograd4.plan_rows(33, 20, 40, 40, tiny.threads, 2, tiny.tile_bytes,
                               tiny.memory_bound) == 1
    _close4(tiny.conv2d(x, wt, b, 1, 1), naive.conv2d(x, wt, b, 1, 1), "one tile row")
    # a bound that holds 3 tile rows per worker (of 9; 4 fill the same padded chunk): shorter
    # chunks, workspace within it
    bound = 2 * 4 * winograd4.chunk_floats(40, 40, 20, 3)
    small = NumbaCpuDriver(conv_path="winograd4", threads=2, memory_bound_mb=bound / 2**20)
    rows = winograd4.plan_rows(33, 20, 40, 40, 2, 2, small.tile_bytes, small.memory_bound)
    assert 1 < rows <= 4 and 2 * 4 * winograd4.chunk_floats(40, 40, 20, rows) <= bound
    _close4(small.conv2d(x, wt, b, 1, 1), naive.conv2d(x, wt, b, 1, 1), f"{rows} tile rows")
    assert small.workspace_bytes <= small.memory_bound


def test_winograd4_on_sgemm_where_numba_compiles_without_avx512(tmp_path):
    # The packed GEMM's block is built for AVX-512's registers; compiled for AVX2 the 36
    # products (and F(2x2)'s 16 of its split path) go to sgemm, U is not packed, the dispatch
    # never takes F(2x2)'s split path, and the tile transforms (F(2x2)'s too) and the
    # 2x2 max pooling backward take 8 elements per vector (37 columns: several vectors, the
    # last partly masked). Forced here with NUMBA_CPU_FEATURES,
    # in a process of its own (the choices are constants of the compiled kernels).
    script = textwrap.dedent("""
        import numpy as np
        from vggjit import get_driver
        from vggjit_numba_cpu import winograd4, winograd_tiles
        from vggjit_numba_cpu.driver import NumbaCpuDriver
        rng = np.random.default_rng(31)
        x = rng.standard_normal((2, 5, 13, 37)).astype(np.float32)
        w = rng.standard_normal((37, 5, 3, 3)).astype(np.float32)
        b = rng.standard_normal(37).astype(np.float32)
        dy = rng.standard_normal((2, 37, 13, 37)).astype(np.float32)
        naive = get_driver("naive")
        want, want_dx = naive.conv2d(x, w, b, 1, 1), naive.conv2d_backward(dy, x, w, 1, 1)[0]
        relu = np.maximum(want, 0)
        want_gated = naive.conv2d_backward(naive.relu_backward(dy, relu), x, w, 1, 1)[0]
        errors = []
        for path in ("winograd", "winograd-split", "winograd4", "winograd4-split"):
            d = NumbaCpuDriver(conv_path=path, threads=2)
            got = (d.conv2d(x, w, b, 1, 1), d.conv2d_backward(dy, x, w, 1, 1, need_dw=False)[0],
                   d.conv2d_backward(dy, x, w, 1, 1, need_dw=False, relu_out=relu)[0])
            for g, v in zip(got, (want, want_dx, want_gated)):
                errors.append(float(np.abs(g - v).max() / np.abs(v).max()))
        print(winograd4.USE_PACKED_GEMM, winograd_tiles.LANES)
        # the 2x2 max pooling backward's vector code on 8-float vectors (pool.py)
        d = NumbaCpuDriver(threads=2)
        py, switches = d.max_pool2d(x, 2, 2)
        gy = rng.standard_normal(py.shape).astype(np.float32)
        ny, nswitches = naive.max_pool2d(x, 2, 2)
        print(np.array_equal(d.max_pool2d_backward(gy, switches, x.shape),
                             naive.max_pool2d_backward(gy, nswitches, x.shape)))
        print(winograd4.weight_transform(w).shape)
        print(NumbaCpuDriver(threads=2)._forward_path(1, 512, 512, 14, 14, 3, 1, 1))
        print(max(errors))
    """)
    env = dict(os.environ, VGGJIT_HOME=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               NUMBA_CPU_NAME="haswell",
               NUMBA_CPU_FEATURES="+avx,+avx2,+fma,+sse4.2,+popcnt,+f16c,-avx512f")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    packed, pooled, shape, conv5, error = out.stdout.strip().splitlines()[-5:]
    assert packed == "False 8" and pooled == "True" and shape == "(36, 37, 5)"
    assert conv5 == "cout-split"
    assert float(error) <= TOL4


def test_winograd4_error_on_a_deep_layer_stays_in_its_bound(naive):
    # 512 input channels, the deepest sum of VGG: the larger transform entries of F(4x4)
    # (tests/tolerances.py says what they cost) must stay inside its bound
    rng = np.random.default_rng(26)
    x = rng.standard_normal((1, 512, 8, 8)).astype(np.float32)
    wt = (rng.standard_normal((8, 512, 3, 3)) / np.sqrt(9 * 512)).astype(np.float32)
    b = np.zeros(8, np.float32)
    _close4(NumbaCpuDriver(conv_path="winograd4").conv2d(x, wt, b, 1, 1),
           naive.conv2d(x, wt, b, 1, 1), "512 channels")


# -- skipped gradients -------------------------------------------------------------------------
def test_need_dw_false_gives_the_same_dx_and_no_dw():
    rng, x, wt, b = _case(8, 2, 3, 9, 8, 4, 3)
    driver = NumbaCpuDriver()
    dy = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    dx, dw, db = driver.conv2d_backward(dy, x, wt, 1, 1)
    dx_only = driver.conv2d_backward(dy, x, wt, 1, 1, need_dw=False)
    assert dx_only[1] is None and dx_only[2] is None
    np.testing.assert_array_equal(dx_only[0], dx)
    dw_only = driver.conv2d_backward(dy, x, wt, 1, 1, need_dx=False)
    assert dw_only[0] is None
    np.testing.assert_array_equal(dw_only[1], dw)
    np.testing.assert_array_equal(dw_only[2], db)
    assert driver.conv2d_backward(dy, x, wt, 1, 1, need_dx=False, need_dw=False) == (None,) * 3
    # dx and dw by channel blocks run one after the other in the same work buffer, so the
    # full pass needs no more work space than the dx pass alone.
    fresh = NumbaCpuDriver(dw_path="channels")
    fresh.conv2d_backward(dy, x, wt, 1, 1, need_dw=False)
    dx_only_bytes = fresh.workspace_bytes
    fresh.release_buffers()
    fresh.conv2d_backward(dy, x, wt, 1, 1)
    assert fresh.workspace_bytes == dx_only_bytes > 0


@pytest.mark.parametrize("by_rows", [True, False])
@pytest.mark.parametrize("geometry", [(13, 11, 1, 1), (13, 11, 2, 1), (3, 7, 1, 0)],
                         ids=["s1", "s2", "one-output-row"])
def test_weight_gradient_by_rows_and_by_channels(naive, by_rows, geometry):
    # Small layers get dw by row tiles with per-worker partial sums, others by channel blocks;
    # force each path on the same inputs. "one-output-row": fewer tiles than workers, so a
    # worker contributes an all-zero partial.
    h, w, stride, pad = geometry
    driver = NumbaCpuDriver(dw_path="rows" if by_rows else "channels")
    assert driver._rows_dw(2, 5, 27, 1, 1) is by_rows
    rng, x, wt, b = _case(13, 2, 3, h, w, 5, 3)
    y = naive.conv2d(x, wt, b, stride, pad)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    want = naive.conv2d_backward(dy, x, wt, stride, pad)
    for got, ref, label in zip(driver.conv2d_backward(dy, x, wt, stride, pad), want,
                               ("dx", "dw", "db")):
        _close(got, ref, label)
    dw_only = driver.conv2d_backward(dy, x, wt, stride, pad, need_dx=False)
    assert dw_only[0] is None
    _close(dw_only[1], want[1], "dw only")


def test_linear_backward_skips_what_is_not_needed():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 37)).astype(np.float32)
    w = rng.standard_normal((29, 37)).astype(np.float32)
    dy = rng.standard_normal((3, 29)).astype(np.float32)
    driver = NumbaCpuDriver()
    dx, dw, db = driver.linear_backward(dy, x, w)
    only_dx = driver.linear_backward(dy, x, w, need_dw=False)
    only_dw = driver.linear_backward(dy, x, w, need_dx=False)
    assert only_dx[1:] == (None, None) and only_dw[0] is None
    np.testing.assert_array_equal(only_dx[0], dx)
    np.testing.assert_array_equal(only_dw[1], dw)


# -- threads -----------------------------------------------------------------------------------
def test_one_thread_and_all_threads_agree(naive):
    rng, x, wt, b = _case(10, 1, 8, 12, 10, 6, 3)
    one, many = NumbaCpuDriver(threads=1), NumbaCpuDriver()
    assert one.threads == 1
    np.testing.assert_allclose(one.conv2d(x, wt, b, 1, 1), many.conv2d(x, wt, b, 1, 1),
                               rtol=1e-5, atol=1e-5)
    g1, g2 = one.gram(x), many.gram(x)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-4)


def test_thread_count_follows_the_environment():
    cap = threads.numba.config.NUMBA_NUM_THREADS
    assert threads.default_threads({"OMP_NUM_THREADS": "1"}) == 1
    assert threads.default_threads({"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "8"}) == 1
    assert threads.default_threads({"OMP_NUM_THREADS": "4,2"}) == min(4, cap)
    assert threads.default_threads({}) == cap
    with pytest.raises(InputError):
        NumbaCpuDriver(threads=0)


def test_calls_from_several_python_threads_are_serialised_and_correct(naive):
    # The workqueue layer aborts the process on concurrent launches; the driver's lock must
    # serialise them, and each thread must get its own correct result.
    import threading

    cases = [_case(20 + i, 1, 3 + i, 20, 19, 4, 3) for i in range(4)]
    want = [naive.conv2d(x, wt, b, 1, 1) for _, x, wt, b in cases]
    driver = NumbaCpuDriver()
    got, errors = [None] * 4, []

    def work(i):
        try:
            _, x, wt, b = cases[i]
            for _ in range(5):
                got[i] = driver.conv2d(x, wt, b, 1, 1)
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(exc)

    callers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert not errors
    for g, w in zip(got, want):
        _close(g, w, "threaded conv")


@numba.njit(nogil=True)
def _count_share(t, counts, fail_on):
    counts[t] += 1
    if 0 <= fail_on <= t:
        raise ValueError("worker failed on purpose")


@pytest.mark.parametrize("kind", ["spinning", "queue"])
def test_workers_run_every_share_wake_from_sleep_and_report_errors(kind):
    # Launches back to back (workers still spinning), after a pause longer than the spin
    # (workers asleep), and with failing workers (the last; all, the caller too): every share
    # runs exactly once, an error reaches the caller once, and the next launch runs cleanly.
    from vggjit_numba_cpu import handoff

    if kind == "spinning" and not handoff.SUPPORTED:
        pytest.skip("spinning workers are built for x86-64 Linux and macOS only")
    workers = (handoff.SpinningWorkers(2) if kind == "spinning" else handoff.QueueWorkers(2))
    counts = np.zeros(3, np.int64)
    for _ in range(500):
        workers.run(_count_share, 3, (counts, -1))
    time.sleep(20 * handoff.SPIN_SECONDS)
    workers.run(_count_share, 3, (counts, -1))
    workers.run(_count_share, 2, (counts, -1))      # fewer workers than threads
    assert counts.tolist() == [502, 502, 501]
    more = np.zeros(5, np.int64)
    workers.run(_count_share, 5, (more, -1))        # more: the caller runs the rest
    assert more.tolist() == [1] * 5
    for failing in (0, 2):
        with pytest.raises(ValueError, match="on purpose"):
            workers.run(_count_share, 3, (counts, failing))
    workers.run(_count_share, 3, (counts, -1))
    assert counts.tolist() == [505, 505, 504]
    # no worker keeps a job's arrays once the call returned (a style step's activations)
    passed = np.zeros(3, np.int64)
    gone = weakref.ref(passed)
    workers.run(_count_share, 3, (passed, -1))
    del passed
    assert gone() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_runs_kernels_on_workers_of_its_own(naive):
    # The child of a fork has none of the parent's worker threads; it must not queue work
    # for them (it would wait for ever) but start its own.
    rng, x, wt, b = _case(11, 1, 4, 12, 10, 5, 3)
    driver = NumbaCpuDriver(threads=2, conv_path="img2col")
    driver.conv2d(x, wt, b, 1, 1)                       # the parent's pool exists now
    pid = os.fork()
    if pid == 0:                                        # pragma: no cover - child process
        try:
            y = driver.conv2d(x, wt, b, 1, 1)
            ok = np.allclose(y, naive.conv2d(x, wt, b, 1, 1), rtol=1e-4, atol=1e-4)
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    deadline = 120
    while deadline > 0:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
        deadline -= 0.1
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the parent's worker threads")
    assert os.waitstatus_to_exitcode(status) == 0


def test_blas_is_single_threaded_inside_kernels_and_restored_after():
    plan = threads.ThreadPlan()
    libs = plan._blas_controllers()
    if not libs:
        pytest.skip("threadpoolctl finds no BLAS library here")
    before = [lib.get_num_threads() for lib in libs]
    for lib in libs:
        lib.set_num_threads(2)
    try:
        with plan.kernels():
            assert [lib.get_num_threads() for lib in libs] == [1] * len(libs)
        assert [lib.get_num_threads() for lib in libs] == [2] * len(libs)
    finally:
        for lib, n in zip(libs, before):
            lib.set_num_threads(n)


def test_scipy_sgemm_fallback_gives_the_oracle_results(naive):
    # The fallback used when NumPy's BLAS cannot be called directly: SciPy's cython_blas
    # sgemm with 32-bit integers (the default path, NumPy's BLAS, runs in every other test).
    driver = NumbaCpuDriver(blas="scipy")
    assert driver._sgemm.int_dtype == np.int32
    rng, x, wt, b = _case(11, 2, 5, 9, 7, 6, 3)
    _close(driver.conv2d(x, wt, b, 2, 1), naive.conv2d(x, wt, b, 2, 1), "scipy-BLAS conv")
    with pytest.raises(InputError):
        NumbaCpuDriver(blas="mkl")


# -- pooling switches and NaN --------------------------------------------------------------------
def test_foreign_or_stale_switches_are_rejected():
    driver = NumbaCpuDriver()
    x = np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6)
    y, switches = driver.max_pool2d(x, 2, 2)
    dy = np.ones_like(y)
    with pytest.raises(InputError, match="int32"):
        driver.max_pool2d_backward(dy, switches._replace(index=switches.index.astype(np.int64)),
                                   x.shape)
    with pytest.raises(InputError, match="what this driver's max_pool2d returned"):
        driver.max_pool2d_backward(dy, switches.index, x.shape)  # the bare array: no window
    with pytest.raises(InputError, match="outside"):
        driver.max_pool2d_backward(dy, switches, (2, 3, 4, 4))   # plane too small for them
    stray = switches._replace(index=switches.index.copy())
    stray.index[0, 0, 0, 0] = 3 * 6 + 3     # inside the plane, in the window below-right
    with pytest.raises(InputError, match="outside their 2x2 window"):
        driver.max_pool2d_backward(dy, stray, x.shape)
    y3, switches3 = driver.max_pool2d(x, 3, 2)     # the general kernel checks windows too
    switches3.index[1, 2, 1, 1] = 0
    with pytest.raises(InputError, match="outside their 3x3 window"):
        driver.max_pool2d_backward(np.ones_like(y3), switches3, x.shape)


def test_nan_propagates_through_relu_and_max_pool():
    driver = NumbaCpuDriver()
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    assert np.isnan(driver.relu(x)[0, 0, 1, 1])
    y, _ = driver.max_pool2d(x, 2, 2)
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1, 1])


@pytest.mark.parametrize("h, w", [(4, 4), (9, 10), (13, 7), (5, 70), (6, 37)])
def test_2x2_pooling_kernels_equal_the_general_ones(h, w):
    # the branch-free 2x2 kernels against the general ones, exactly: ties (first maximum
    # wins), NaN (the first NaN wins), odd edges dropped; rows of 35 and 18 windows take the
    # backward's vector code through several vectors, the last partly masked
    rng = np.random.default_rng(h * w)
    x = rng.integers(-1, 2, (2, 3, h, w)).astype(np.float32)
    x[0, 0, 0, 1] = x[1, 2, h - 2, 0] = x[1, 0, 1, 1] = np.nan
    ho, wo = h // 2, w // 2
    y, sw = np.empty((2, 3, ho, wo), np.float32), np.empty((2, 3, ho, wo), np.int32)
    y2, sw2 = np.empty_like(y), np.empty_like(sw)
    pool.max_pool2d_forward(x, 2, 2, y, sw)
    pool.max_pool2x2_forward(x, y2, sw2)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(sw2, sw)
    for workers in (1, 2, 5):                      # inference: the values alone, shared out
        y3 = np.full_like(y, np.nan)
        for t in range(workers):
            pool.max_pool2x2_values(t, x, y3, workers)
        np.testing.assert_array_equal(y3, y)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dx2 = np.full(x.shape, np.nan, np.float32), np.full(x.shape, np.nan, np.float32)
    assert pool.max_pool2d_backward(dy, sw, dx, 2, 2) == 0
    assert pool.max_pool2x2_backward(dy, sw, dx2) == 0
    np.testing.assert_array_equal(dx2, dx)
    # a switch outside its own window (inside the plane): both kernels count it the same
    sw[0, 0, 0, 0] = w + 2 if wo > 1 else w
    sw[1, 2, ho - 1, wo - 1] = 0                   # the last window of a row, in a later vector
    assert pool.max_pool2x2_backward(dy, sw, dx2) == 2
    assert pool.max_pool2d_backward(dy, sw, dx, 2, 2) == 2


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 17, 70001])
def test_streaming_kernels_cover_every_element_once_whatever_the_workers(workers, n):
    # The ReLU, small-batch linear and softmax kernels cut their work into one share per
    # worker; the driver shares out only big arrays (MIN_SHARE), so the edges are checked
    # here: shares of 0, 1 and many elements (softmax: 5 rows), a NaN on an edge, every
    # output poisoned first.
    from vggjit_numba_cpu import elementwise, linear, softmax

    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32)
    x[n // 2] = np.nan
    dy = rng.standard_normal(n).astype(np.float32)
    y, dx = np.full(n, -7.0, np.float32), np.full(n, -7.0, np.float32)
    for t in range(workers):
        elementwise.relu_forward(t, x, y, workers)
        elementwise.relu_backward(t, dy, x, dx, workers)
    np.testing.assert_array_equal(y, np.where(x <= 0, 0, x))
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, 0))
    fin, fout = 9, n % 11 + 1                      # 1..11 outputs: whole and partial blocks of 4
    a = rng.standard_normal((5, fin)).astype(np.float32)
    w = rng.standard_normal((fout, fin)).astype(np.float32)
    b = rng.standard_normal(fout).astype(np.float32)
    out = np.full((5, fout), np.nan, np.float32)
    for t in range(workers):
        linear.linear_forward_stream(t, a, w, b, workers, out)
    np.testing.assert_allclose(out, a.astype(np.float64) @ w.T.astype(np.float64) + b,
                               rtol=1e-5, atol=1e-5)
    probs = np.full_like(out, np.nan)
    for t in range(workers):
        softmax.softmax_forward(t, out, probs, workers)
    e = np.exp(out.astype(np.float64) - out.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(axis=1, keepdims=True), rtol=1e-6, atol=1e-7)


def test_warmup_compiles_every_kernel():
    # `vggjit warmup` must leave nothing to compile on first use: every kernel of the package
    # that the driver calls (the public ones; the private helpers are compiled into them) has
    # a compiled signature after it (fresh process, so other tests cannot help).
    script = textwrap.dedent("""
        import numba
        from vggjit_numba_cpu import (conv, elementwise, gram, linear, pool, softmax, winograd,
                                      winograd4, winograd_split)
        from vggjit_numba_cpu.driver import NumbaCpuDriver
        NumbaCpuDriver(threads=2).warmup()
        missing = [f"{m.__name__}.{name}" for m in (conv, elementwise, gram, linear, pool,
                                                    softmax, winograd, winograd4, winograd_split)
                   for name, f in vars(m).items()
                   if isinstance(f, numba.core.registry.CPUDispatcher) and not f.signatures
                   and f.py_func.__module__ == m.__name__ and not name.startswith("_")]
        print(missing)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- compiled-kernel cache -----------------------------------------------------------------------
def test_cache_choice_falls_back_to_the_user_directory(tmp_path):
    pkg = tmp_path / "pkg"
    home = tmp_path / "home"
    def writable(path):          # the package directory is read-only, everything else is not
        return not str(path).startswith(str(pkg))

    choice = kernel_cache.choose_cache(pkg, {"VGGJIT_HOME": str(home)}, writable)
    assert choice.enabled and choice.directory == str(home / "numba")
    assert "read-only" in choice.reason
    choice = kernel_cache.choose_cache(pkg, {"VGGJIT_HOME": str(home)}, lambda p: True)
    assert choice.directory == str(pkg / "__pycache__")
    choice = kernel_cache.choose_cache(pkg, {"NUMBA_CACHE_DIR": str(tmp_path / "mine")},
                                       lambda p: True)
    assert choice.directory == str(tmp_path / "mine")
    choice = kernel_cache.choose_cache(pkg, {"VGGJIT_HOME": str(home)}, lambda p: False)
    assert not choice.enabled and "compile in every process" in choice.reason


def test_changed_sources_purge_the_cached_kernels(tmp_path):
    pkg, cache = tmp_path / "pkg", tmp_path / "cache"
    pkg.mkdir()
    cache.mkdir()
    (pkg / "conv.py").write_text("A = 1\n")
    (pkg / "blas.py").write_text("B = 1\n")
    kernel = cache / "conv.conv2d_forward-120.py311.nbi"
    other = cache / "someone_else.f-1.py311.nbi"       # not ours: never touched
    kernel.write_text("")
    other.write_text("")
    kernel_cache.purge_stale_cache(cache, pkg)               # first sight: stamp written
    kernel.write_text("")
    assert not kernel_cache.purge_stale_cache(cache, pkg)    # nothing changed: kept
    assert kernel.exists()
    (pkg / "blas.py").write_text("B = 2\n")          # a helper changed, conv.py did not
    assert kernel_cache.purge_stale_cache(cache, pkg)
    assert not kernel.exists() and other.exists()


def test_a_new_cache_directory_gets_its_stamp_at_once(tmp_path):
    # A fresh $VGGJIT_HOME: the first process compiles into it, the second must load, not purge.
    pkg, cache = tmp_path / "pkg", tmp_path / "home" / "numba" / "sub"
    pkg.mkdir()
    (pkg / "conv.py").write_text("A = 1\n")
    assert not kernel_cache.purge_stale_cache(cache, pkg)        # first process: nothing yet
    kernel = cache / "conv.conv2d_forward-120.py311.nbi"
    kernel.write_text("")                                         # ... which it then compiles
    assert not kernel_cache.purge_stale_cache(cache, pkg)        # second process: kept
    assert kernel.exists()


def test_read_only_package_caches_kernels_in_vggjit_home(tmp_path):
    # A copy of the package whose __pycache__ cannot be created (a file of that name is in the
    # way: this holds even for root, unlike file permissions).
    site = tmp_path / "site"
    source = Path(kernel_cache.__file__).parent
    shutil.copytree(source, site / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    (site / source.name / "__pycache__").write_text("not a directory")
    home = tmp_path / "home"
    script = textwrap.dedent("""
        import numpy as np
        import vggjit_numba_cpu.kernel_cache as j
        from vggjit_numba_cpu import elementwise
        x = np.array([-1.0, 2.0], np.float32)
        y = np.empty_like(x)
        elementwise.relu_forward(0, x, y, 1)
        print(j.__file__)
        print(j.CACHE.directory)
        print(y.tolist())
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(VGGJIT_HOME=str(home), PYTHONPATH=os.pathsep.join(
        [str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    module_file, cache_dir, result = out.stdout.strip().splitlines()[-3:]
    assert module_file.startswith(str(site)), "the read-only copy was not the one imported"
    assert cache_dir == str(home / "numba")
    assert result == "[0.0, 2.0]"
    assert list((home / "numba").rglob("*relu_forward*.nbi")), "no cache index was written"


def test_each_declared_variant_forces_its_path():
    # The conformance suite runs every op under each variant of the driver's record; this is
    # what makes those runs reach each path on its small shapes.
    from vggjit_numba_cpu import VARIANTS

    paths = {}
    for name, options in VARIANTS.items():
        driver = NumbaCpuDriver(**options)
        paths[name] = (driver._forward_path(1, 3, 4, 9, 10, 3, 1, 1),
                       driver._rows_dw(1, 4, 27, 9, 10))
    assert paths["img2col"] == ("img2col", False)
    assert paths["shifted"] == ("shifted", True)
    assert paths["cout-split"] == ("cout-split", True)
    assert paths["winograd"] == ("winograd", False)
    assert paths["winograd4"] == ("winograd4", True)
    # only a driver that may take F(4x4) gets its looser bound (tests/tolerances.py)
    assert NumbaCpuDriver(**VARIANTS["winograd4"]).accuracy_paths == ("winograd4",)
    assert NumbaCpuDriver().accuracy_paths == ("winograd4",)
    assert NumbaCpuDriver(**VARIANTS["winograd"]).accuracy_paths == ()
    assert NumbaCpuDriver(winograd=False).accuracy_paths == ()
    # by default these small shapes take the shifted path and dw by channel blocks
    assert NumbaCpuDriver()._forward_path(1, 3, 4, 9, 10, 3, 1, 1) == "shifted"


def test_malloc_keeps_freed_memory_on_glibc():
    settled = NumbaCpuDriver().describe()["malloc_keeps_freed_memory"]
    assert settled == (platform.libc_ver()[0] == "glibc")
    assert allocator.settle_malloc() == settled               # once per process, same answer


def test_kept_copy_lives_in_a_mapping_of_its_own():
    # the transform caches' arrays: equal to the source, independent of it, writable, and
    # backed by an anonymous mapping (mmap), not by the heap
    import mmap

    a = np.arange(3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7)
    kept = allocator.kept_copy(a)
    np.testing.assert_array_equal(kept, a)
    assert kept.shape == a.shape and kept.dtype == a.dtype and kept.flags.c_contiguous
    a[0, 0, 0] = -1.0
    kept[1, 1, 1] = -2.0
    assert kept[0, 0, 0] == 0.0 and a[1, 1, 1] != -2.0
    owner = kept
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(owner.obj if isinstance(owner, memoryview) else owner, mmap.mmap)
    assert allocator.kept_copy(np.zeros((0, 4), np.float32)).shape == (0, 4)


def test_kept_copy_falls_back_to_the_array_when_no_mapping_can_be_made(monkeypatch):
    import mmap

    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(mmap, "mmap", refuse)
    a = np.ones((2, 3), np.float32)
    assert allocator.kept_copy(a) is a


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not Path("/proc/self/statm").exists(),
                    reason="glibc's malloc settings, read through /proc")
def test_large_arrays_reuse_heap_memory_until_released():
    import resource

    NumbaCpuDriver()                                          # settles malloc
    size = 128 << 20                                          # far above glibc's mmap threshold
    np.ones(size // 4, np.float32)                            # mapped once, then freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    again = np.ones(size // 4, np.float32)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # glibc's default maps a block this large afresh: 32768 page faults (64 with huge pages)
    assert faults < 16, f"{faults} page faults: the freed block was not reused"
    del again

    def resident_bytes():
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    kept = resident_bytes()
    NumbaCpuDriver().release_buffers()                        # hands the free heap back
    assert kept - resident_bytes() > size // 2