"""The numba-cpu warm-up on two processes: a cold kernel cache fills in about half the time.

Numba compiles under the GIL and one process-wide compiler lock, so threads cannot compile two
kernels at once; two processes can. :func:`split_warmup` forks a helper process that runs
:data:`HELPER_STEPS` (compiling those kernels into the on-disk cache) while this process runs
:data:`HERE_STEPS`. The driver's ``warmup`` then runs every step (:data:`STEPS`) in this
process, which loads what the helper compiled from the cache and compiles whatever it did not
(all of it, if the helper failed): the split only decides where the compiling happens, never
what is compiled. The steps read the paths they force from the driver, so a new convolution
path is warmed up without a step of its own.

Why fork and not a fresh interpreter: the forked helper starts at once with Numba, the driver
and the kernels compiled at import already in memory (a fresh ``python`` would spend about 2 s
of CPU importing them again). Forking is only safe from a single-threaded process, so the
helper is not used (everything compiles here, as before) when:
the kernel cache is disabled (the helper's work could not reach this process) or warm already
(kernel_cache.cache_is_warm: a complete warm-up filled it, so there is nothing to share and a
fork would only slow the warm start down by a few tenths of a second), the platform is
not Linux, fewer than two CPUs are usable or the driver runs one thread, another Python thread
or Numba's worker threads are running, or a helper failed earlier in this process.

Sharing one cache: Numba writes each cache file under a temporary name and renames it, and
kernel_cache.serialise_cache_writes locks the index updates, so the two processes can add
kernels side by side. The two step lists are disjoint all the same: no kernel of this package,
nor any helper one inlines, is compiled on both sides (the shared ones, sgemm, address and
_img2col, have explicit signatures and were compiled at import, before the fork).

The split (docs/design-notes.md, note 15) follows the compile time of each step on a cold
cache: the Winograd paths with their weight transform and checksum here (30-35 s in one
process since F(4x4)'s own GEMM, note 18); the other convolution paths and weight gradients,
every pooling kernel, linear, softmax, ReLU and Gram in the helper (30-31 s).
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
import warnings

import numba
import numpy as np

from . import linear
from .kernel_cache import CACHE, cache_is_warm

#: the least time the helper is given after this process finished its own share; then 3 times
#: what that share took (a loaded machine slows both alike).
MIN_WAIT_S = 120.0

_helper_failed = False      # a helper failed in this process: say so once, never fork again


# -- the steps: each runs some of the driver's ops once on tiny arrays -------------------------
def _tiny():
    """x [1, 2, 6, 6], w [3, 2, 3, 3], b [3]: what every convolution step runs on."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal((1, 2, 6, 6)).astype(np.float32),
            rng.standard_normal((3, 2, 3, 3)).astype(np.float32), np.zeros(3, np.float32))


@contextlib.contextmanager
def _forced(driver, conv_path: str = "auto", dw_path: str = "auto"):
    """The driver with one convolution path (and weight-gradient split) forced."""
    saved = driver.conv_path, driver.dw_path
    driver.conv_path, driver.dw_path = conv_path, dw_path
    try:
        yield driver
    finally:
        driver.conv_path, driver.dw_path = saved


def _conv_path(driver, path: str) -> None:
    """Forward with the fused ReLU and dx through the ReLU's output on one forced path."""
    x, w, b = _tiny()
    with _forced(driver, conv_path=path):
        y = driver.conv2d(x, w, b, 1, 1, relu=True)
        driver.conv2d_backward(y, x, w, 1, 1, need_dw=False, relu_out=y)


def winograd_paths(driver) -> None:
    """F(2x2, 3x3) and F(4x4, 3x3) by tile rows and split by output channels, forward and dx,
    with the weight transform kernel (winograd.py, winograd4.py)."""
    if driver.winograd:
        for path in driver.winograd_paths:
            _conv_path(driver, path)


def pooling_2x2(driver) -> None:
    """The 2x2 stride-2 max pooling kernels with switches (pool.max_pool2x2_forward/backward)."""
    x, _, _ = _tiny()
    y, switches = driver.max_pool2d(x, 2, 2)
    driver.max_pool2d_backward(y, switches, x.shape)


def img2col_paths(driver) -> None:
    """img2col, shifted and Cout-split forward and dx (every forced path but Winograd's), and
    an unforced dx + dw + db."""
    for path in [p for p in driver.forced_conv_paths if p not in driver.winograd_paths]:
        _conv_path(driver, path)
    x, w, b = _tiny()
    y = driver.conv2d(x, w, b, 1, 1)
    driver.conv2d_backward(y, x, w, 1, 1)


def weight_grads(driver) -> None:
    """dw and db split by row tiles and by channel blocks."""
    x, w, b = _tiny()
    y = driver.conv2d(x, w, b, 1, 1, relu=True)
    for dw_path in driver.forced_dw_paths:
        with _forced(driver, dw_path=dw_path):
            driver.conv2d_backward(y, x, w, 1, 1, need_dx=False)


def general_pooling(driver) -> None:
    """Max pooling of any window (3x3 here) and average pooling, forward and backward, and the
    2x2 pooling of inference (pool.max_pool2x2_values)."""
    x, _, _ = _tiny()
    y, switches = driver.max_pool2d(x, 3, 3)
    driver.max_pool2d_backward(y, switches, x.shape)
    driver.max_pool2d(x, 2, 2, switches=False)
    a = driver.avg_pool2d(x, 2, 2)
    driver.avg_pool2d_backward(a, x.shape, 2, 2)


def dense_ops(driver) -> None:
    """Linear (streamed and by sgemm) with its backward, softmax, ReLU both ways, Gram both
    ways."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    b = np.zeros(3, np.float32)
    for batch in (1, linear.STREAM_MAX_BATCH + 1):
        fx = rng.standard_normal((batch, 4)).astype(np.float32)
        logits = driver.linear(fx, w, b)
        driver.linear_backward(logits, fx, w)
    driver.softmax(logits)
    x, _, _ = _tiny()
    r = driver.relu(x)
    driver.relu_backward(r, x)
    g = driver.gram(r)
    driver.gram_backward(g, r)
    driver.gram_backward(g, r, accumulate=np.zeros_like(r))


#: what this process compiles while the helper compiles HELPER_STEPS (half the time each).
HERE_STEPS = (winograd_paths,)
HELPER_STEPS = (img2col_paths, weight_grads, general_pooling, pooling_2x2, dense_ops)
#: every step: the whole warm-up, which the driver's warmup runs in this process after the split
STEPS = HERE_STEPS + HELPER_STEPS


# -- the helper process ------------------------------------------------------------------------
def helper_unavailable(driver) -> str | None:
    """Why the warm-up cannot share its work with a forked helper here, or None."""
    if _helper_failed:
        return "a helper process failed earlier in this process"
    if not CACHE.enabled:
        return "the kernel cache is disabled"
    if cache_is_warm():
        return "the kernel cache is warm: nothing to compile"
    if not (sys.platform.startswith("linux") and hasattr(os, "fork")):
        return "the helper process needs fork (Linux)"
    if len(os.sched_getaffinity(0)) < 2 or driver.threads < 2:
        return "one CPU, or a driver of one thread"
    if threading.active_count() > 1:
        return "other threads are running (fork copies only this one)"
    try:
        numba.threading_layer()     # raises until Numba's worker threads have started
    except ValueError:
        return None
    return "Numba's worker threads are running (fork copies only this thread)"


def split_warmup(driver, here=HERE_STEPS, helper=HELPER_STEPS) -> str:
    """Run ``here`` in this process while a forked helper runs ``helper``; return one line
    saying how it went. Where no helper can be used (:func:`helper_unavailable`) nothing runs
    here either: the driver's full warm-up that follows compiles everything in this process.
    A helper that fails or hangs is reported once (RuntimeWarning); its kernels are then
    compiled by that full warm-up."""
    global _helper_failed
    reason = helper_unavailable(driver)
    if reason:
        return f"one process: {reason}"
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns on fork whenever the process has other OS threads; here those
            # can only be the BLAS library's idle pool (Python's and Numba's were checked
            # above), which OpenBLAS shuts down around a fork by itself.
            warnings.filterwarnings("ignore", ".*fork", DeprecationWarning)
            pid = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        return f"one process: no fork ({exc})"
    if pid == 0:                                      # the helper: never returns
        os.close(read_fd)
        _run_helper(driver, helper, write_fd)
    os.close(write_fd)
    try:
        start = time.monotonic()
        for step in here:
            step(driver)
        failure = _wait(pid, read_fd, max(MIN_WAIT_S, 3 * (time.monotonic() - start)))
        pid = 0
    finally:
        if pid:                                       # this process failed or was interrupted
            _kill(pid)
        os.close(read_fd)
    if failure is None:
        return "two processes"
    _helper_failed = True
    warnings.warn(f"numba-cpu warm-up: the helper process failed ({failure}); its kernels "
                  f"compile in this process instead", RuntimeWarning, stacklevel=3)
    return f"helper failed: {failure}"


def _run_helper(driver, steps, report_fd: int) -> None:
    """The forked helper's whole life: run the steps quietly, report a failure through the
    pipe, leave without running the parent's exit handlers or flushing its buffers."""
    status = 1
    try:
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        for step in steps:
            step(driver)
        status = 0
    except BaseException as exc:                     # noqa: BLE001 - reported to the parent
        with contextlib.suppress(Exception):
            os.write(report_fd, f"{type(exc).__name__}: {exc}".encode()[:1000])
    finally:
        os._exit(status)


def _wait(pid: int, report_fd: int, timeout: float) -> str | None:
    """Wait for the helper (its end of the pipe closes when it exits); None when it succeeded,
    else why not. A helper still running after ``timeout`` seconds is killed."""
    deadline = time.monotonic() + timeout
    message = b""
    while True:
        ready, _, _ = select.select([report_fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            _kill(pid)
            return f"it did not finish within {timeout:.3g} s"
        chunk = os.read(report_fd, 4096)
        if not chunk:
            break
        message += chunk
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return None
    if message:
        return message.decode(errors="replace")
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
