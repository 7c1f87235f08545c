"""How a kernel reaches the worker threads, and how the caller learns that they are done: by
spinning on a flag for about a millisecond before blocking (threads.ThreadPlan.run uses it).

Why not a queue alone: a thread blocked on a lock takes 50-400 us to wake here (more after a
pause, when its virtual CPU has halted), and a hand-off through ``concurrent.futures`` wakes two
threads per launch, the worker and then the caller. VGG19's forward at batch 1 launches 34
kernels on the workers one after the other. A worker that is still spinning from its last share
sees the next one within microseconds. Launching a trivial kernel on two workers took 113-180
us through a queue and 47-72 us this way; VGG19 at batch 1, 0.3 s idle before each forward (as
the engine comparison runs it), took 0.86-0.91 of the time (docs/design-notes.md, note 20).

Why the spin yields: on two CPUs the scheduler may wake a thread onto the CPU of the thread
that woke it, and a spinner that never gives its CPU up keeps the woken thread waiting until
its time slice ends (1.2-2 ms measured). Every ``YIELD_EVERY`` pauses the spin calls
``sched_yield``, so a woken thread runs at once.

Flags: one int64 per worker and direction, 128 bytes apart (no two on one cache line): ``post``
holds the number of the last kernel given to the worker, ``done`` the last it finished. Those
are written with release and read with acquire order; whether a thread sleeps is decided
under one lock (``Condition``), so a wake-up is never lost: each side writes its flag, then
takes the lock and looks at the other side's state.

Where: x86-64 on Linux and macOS (the pause instruction, the cycle counter, ``sched_yield``).
Elsewhere (SUPPORTED is False) QueueWorkers, a plain queue of blocking worker threads, serve.
"""
from __future__ import annotations

import concurrent.futures
import os
import platform
import sys
import threading
import time

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .kernel_cache import jit
from .threads import KERNEL_LOCK

SUPPORTED = (platform.machine().lower() in ("x86_64", "amd64")
             and sys.platform.startswith(("linux", "darwin")))

#: how long a thread spins before it blocks: a worker after its share, the caller after its
#: own. Longer than the gaps between the launches of one forward (Python and the pooling
#: between two convolutions, 0.05-0.5 ms at batch 1), short enough that an idle process gives
#: its CPUs back almost at once.
SPIN_SECONDS = 1e-3
#: pauses between two sched_yield calls (a pause is 10-140 cycles, a yield about 1 us)
YIELD_EVERY = 16
#: int64 slots between two flags: 128 bytes, two cache lines (the adjacent-line prefetcher)
STRIDE = 16

_I64 = ir.IntType(64)


@intrinsic
def _load_acquire(typingctx, address):
    def codegen(context, builder, signature, args):
        return builder.load_atomic(builder.inttoptr(args[0], _I64.as_pointer()), "acquire", 8)
    return types.int64(types.uint64), codegen


@intrinsic
def _store_release(typingctx, address, value):
    def codegen(context, builder, signature, args):
        builder.store_atomic(args[1], builder.inttoptr(args[0], _I64.as_pointer()), "release", 8)
        return context.get_dummy_value()
    return types.void(types.uint64, types.int64), codegen


@intrinsic
def _cycles(typingctx):
    """The CPU's cycle counter (rdtsc): a clock that costs nothing to read."""
    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter",
                                              fnty=ir.FunctionType(_I64, []))
        return builder.call(fn, [])
    return types.int64(), codegen


@intrinsic
def _pause(typingctx, give_up_cpu):
    """One spin step: the pause instruction, and sched_yield when ``give_up_cpu``."""
    def codegen(context, builder, signature, args):
        module = builder.module
        builder.call(cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"), [])
        with builder.if_then(builder.icmp_signed("!=", args[0], _I64(0))):
            builder.call(cgutils.get_or_insert_function(
                module, ir.FunctionType(ir.IntType(32), []), "sched_yield"), [])
        return context.get_dummy_value()
    return types.void(types.int64), codegen


@jit(types.int64(types.uint64, types.int64, types.boolean, types.int64), parallel=False)
def wait_for(address, value, until_equal, budget):
    """Spin until the int64 at ``address`` equals ``value`` (``until_equal``) or differs from
    it (not ``until_equal``), or about ``budget`` cycles have passed; returns the last value
    read. Runs without the GIL."""
    start = _cycles()
    steps = 0
    while True:
        seen = _load_acquire(address)
        if (seen == value) == until_equal:
            return seen
        steps += 1
        _pause(1 if steps % YIELD_EVERY == 0 else 0)
        if steps % YIELD_EVERY == 0 and _cycles() - start > budget:
            return seen


@jit(types.void(types.uint64, types.int64), parallel=False)
def publish(address, value):
    """Write ``value`` to the int64 at ``address`` with release order: everything written before
    is seen by a thread that reads the value with acquire order."""
    _store_release(address, value)


@jit(types.int64(), parallel=False)
def cycle_count():
    """The cycle counter, read from Python (to time its rate)."""
    return _cycles()


def cycles_per_second(seconds: float = 2e-3) -> float:
    """The cycle counter's rate, timed against perf_counter for ``seconds``."""
    t0, c0 = time.perf_counter(), cycle_count()
    while time.perf_counter() - t0 < seconds:
        pass
    return (cycle_count() - c0) / (time.perf_counter() - t0)


@jit(parallel=False)
def share(total, parts, t, align):
    """[start, stop) of part t when ``total`` items are cut into ``parts`` near-equal
    contiguous pieces, piece edges on multiples of ``align`` items (16 floats: a 64-byte cache
    line, so no two workers write one line; 1 for rows, planes or blocks)."""
    step = -(-total // parts)
    step = -(-step // align) * align
    return min(total, t * step), min(total, (t + 1) * step)


class SpinningWorkers:
    """``helpers`` worker threads (numbered 1..helpers; the caller is worker 0) that run one
    kernel at a time, handed over through flags (see the module docstring). Not re-entrant:
    threads.ThreadPlan.run holds KERNEL_LOCK around ``run``."""

    def __init__(self, helpers: int):
        self.helpers = helpers
        self._flags = np.zeros(STRIDE * 2 * (helpers + 1), np.int64)
        base = self._flags.ctypes.data
        self._post = [np.uint64(base + 8 * STRIDE * 2 * t) for t in range(helpers + 1)]
        self._done = [np.uint64(base + 8 * STRIDE * (2 * t + 1)) for t in range(helpers + 1)]
        self._jobs: list = [None] * (helpers + 1)
        self._errors: list = [None] * (helpers + 1)
        self._asleep = [False] * (helpers + 1)
        self._caller_asleep = False
        self._state = threading.Condition()
        self._count = 0
        self.budget = int(SPIN_SECONDS * cycles_per_second())
        for t in range(1, helpers + 1):
            threading.Thread(target=self._serve, args=(t,), name=f"vggjit-worker-{t}",
                             daemon=True).start()

    def _flag(self, t: int, done: bool) -> int:
        return int(self._flags[STRIDE * (2 * t + done)])

    def _serve(self, t: int) -> None:
        seen = 0
        while True:
            posted = wait_for(self._post[t], seen, False, self.budget)
            if posted == seen:
                with self._state:
                    self._asleep[t] = True
                    while self._flag(t, False) == seen:
                        self._state.wait()
                    self._asleep[t] = False
                posted = self._flag(t, False)
            seen = posted
            kernel, args = self._jobs[t]
            self._jobs[t] = None
            try:
                kernel(t, *args)
            except BaseException as exc:   # raised again in the caller (run)
                self._errors[t] = exc
            # drop the job before waiting for the next one: its arrays (a 64 MB activation in a
            # 512 px style step) must not outlive the call; holding them added 70 MB of peak RSS
            kernel = args = None
            publish(self._done[t], seen)
            with self._state:
                if self._caller_asleep:
                    self._state.notify_all()

    def run(self, kernel, workers: int, args: tuple) -> None:
        """kernel(t, *args) for t < workers, the caller running t = 0 and any t beyond the
        helpers (tests ask for more workers than threads); returns when all have finished,
        raising the caller's exception, else the first helper's, if any."""
        self._count += 1
        count = self._count
        helpers = range(1, min(workers, self.helpers + 1))
        for t in helpers:
            self._jobs[t] = (kernel, args)
            publish(self._post[t], count)
        with self._state:
            if any(self._asleep[t] for t in helpers):
                self._state.notify_all()
        try:
            for t in (0, *range(self.helpers + 1, workers)):   # more workers than threads
                kernel(t, *args)
        finally:   # no helper may still be writing into the caller's buffers after this
            for t in helpers:
                if wait_for(self._done[t], count, True, self.budget) != count:
                    with self._state:
                        self._caller_asleep = True
                        while self._flag(t, True) != count:
                            self._state.wait()
                        self._caller_asleep = False
            errors = [self._errors[t] for t in helpers]
            for t in helpers:
                self._errors[t] = None
        for error in errors:   # the caller's own exception, if any, went first
            if error is not None:
                raise error


class QueueWorkers:
    """Worker threads fed through a queue, blocking when idle: where SpinningWorkers are not
    built (SUPPORTED is False)."""

    def __init__(self, helpers: int):
        self._pool = concurrent.futures.ThreadPoolExecutor(helpers,
                                                           thread_name_prefix="vggjit-worker")

    def run(self, kernel, workers: int, args: tuple) -> None:
        futures = [self._pool.submit(kernel, t, *args) for t in range(1, workers)]
        try:
            kernel(0, *args)
        finally:
            concurrent.futures.wait(futures)
        for future in futures:
            future.result()


_WORKERS = None


def process_workers():
    """The process's worker threads (one fewer than Numba's thread limit: the caller is the
    other), created on first use: SpinningWorkers where they are built, else QueueWorkers."""
    global _WORKERS
    with KERNEL_LOCK:
        if _WORKERS is None:
            helpers = max(1, numba.config.NUMBA_NUM_THREADS - 1)
            _WORKERS = SpinningWorkers(helpers) if SUPPORTED else QueueWorkers(helpers)
        return _WORKERS


def _forget_workers_after_fork() -> None:
    """A forked child has none of the parent's threads: it starts workers of its own when
    needed (the parent's would take work and never run it)."""
    global _WORKERS
    _WORKERS = None


os.register_at_fork(after_in_child=_forget_workers_after_fork)
