"""How the numba-cpu driver's kernels run: the worker threads, Numba's threading layer, one
kernel at a time, BLAS at one thread inside them.

Workers (:meth:`ThreadPlan.run`)
    The convolution, Winograd, linear and Gram kernels are written per worker:
    ``kernel(t, ...)`` does worker t's share (tiles t, t + workers, ...) with single-threaded
    sgemm calls on its own tile (blas.py), and the plan runs one call per worker on the
    process's worker threads (the caller is worker 0). The kernels are compiled ``nogil``, so
    the workers run in parallel. Why not one ``prange`` kernel: Numba compiles a parallel loop
    into a separate function and then re-optimises every helper it calls once more in each
    enclosing module; the Winograd kernel took 22-24 s of CPU to compile with ``prange`` and
    10 s as a serial worker, about half of the cold start for all the worker kernels together
    (docs/performance.md, "Cold start").

    The hand-off (handoff.py): a worker spins on a flag for about a millisecond after its
    share, then blocks, and the caller waits for the workers the same way, so the launches of
    one forward find the workers awake: 47-72 us per launch against 113-180 us through a
    queue, which wakes two sleeping threads per launch. The spin yields its CPU every few
    pauses and stops after the millisecond, unlike OpenMP's (below).

    So BLAS's own pool never runs at the same time as the workers and nothing is
    oversubscribed; independent GEMMs per worker also scale better than one 2-thread GEMM.
    While a kernel runs, the BLAS library the kernels call is limited to one thread through
    threadpoolctl (a few microseconds) and restored afterwards.

Numba's threading layer (the pooling kernels with switches, average pooling, the weight
transform and a few reductions use ``prange``; the ReLUs, inference's 2x2 pooling, the
small-batch linear layer, softmax and the weight checksum run on the workers above, which are
still awake between two convolutions)
    ``workqueue`` unless ``NUMBA_THREADING_LAYER`` says otherwise. Numba's default on Linux is
    GNU OpenMP, whose idle workers spin (for a while by default, without end under
    ``OMP_WAIT_POLICY=active``) and starve whatever runs next on the same cores: an im2col +
    sgemm convolution built from a prange region followed by a multi-threaded np.dot measured
    45% of the sgemm ceiling with OpenMP, 84% with workqueue, and with the active policy
    NumPy's own sgemm in the same process dropped to about half (bench/kernels.py;
    docs/design-notes.md, note 'threading layer'). Workqueue workers block on a semaphore when
    idle, cannot spin at all, and the layer ships with Numba. ``OMP_WAIT_POLICY=passive``
    would do the same for OpenMP but only if set before libgomp loads, which a library cannot
    guarantee. Workqueue is not re-entrant, so the driver serialises its kernels with one
    process-wide lock (:data:`KERNEL_LOCK`): calls from several Python threads are safe and
    run one at a time (and the worker threads serve one kernel at a time).

Thread count: ``threads=`` given to the driver, else ``$NUMBA_NUM_THREADS``, else
``$OMP_NUM_THREADS``, else every core Numba sees.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numba


# -- threading layer ---------------------------------------------------------------------------
def _choose_threading_layer() -> str:
    """workqueue unless the user chose one through NUMBA_THREADING_LAYER (see module doc)."""
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return os.environ["NUMBA_THREADING_LAYER"]
    numba.config.THREADING_LAYER = "workqueue"
    return "workqueue"


REQUESTED_THREADING_LAYER = _choose_threading_layer()

#: Held while a kernel of this driver runs: workqueue must not be entered from two threads, and
#: the driver's reusable buffers belong to one call at a time.
KERNEL_LOCK = threading.RLock()


def threading_layer() -> str:
    """The layer actually in use (known after the first parallel kernel ran), else the request."""
    try:
        return numba.threading_layer()
    except ValueError:
        return REQUESTED_THREADING_LAYER


def default_threads(environ=os.environ) -> int:
    """NUMBA_NUM_THREADS, else OMP_NUM_THREADS, else all of Numba's threads (capped by them)."""
    limit = numba.config.NUMBA_NUM_THREADS
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        value = environ.get(var, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return max(1, min(int(value), limit))
    return limit


class ThreadPlan:
    """How many workers a call uses, and BLAS held at one thread while they run."""

    def __init__(self, threads: int | None = None, blas_library: str = "", workers=None):
        limit = numba.config.NUMBA_NUM_THREADS
        if threads is None:
            threads = default_threads()
        threads = int(threads)
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = min(threads, limit)
        self.blas_library = blas_library
        self._workers = workers   # () -> the process's worker threads (handoff.process_workers)
        self._blas = None   # threadpoolctl controllers of the BLAS the kernels call, found lazily

    def _blas_controllers(self):
        if self._blas is None:
            self._blas = _blas_controllers(self.blas_library)
        return self._blas

    @contextlib.contextmanager
    def kernels(self):
        """Run Numba kernels (which may call BLAS from each worker) with this plan."""
        with KERNEL_LOCK:
            if numba.get_num_threads() != self.threads:
                numba.set_num_threads(self.threads)   # per calling thread in Numba
            saved = []
            for lib in self._blas_controllers():
                n = lib.get_num_threads()
                if n != 1:
                    lib.set_num_threads(1)
                    saved.append((lib, n))
            try:
                yield
            finally:
                for lib, n in saved:
                    lib.set_num_threads(n)

    def run(self, kernel, workers: int, *args) -> None:
        """``kernel(t, *args)`` for every worker t in [0, workers), in parallel, under this
        plan (see the module docstring): the calling thread is worker 0, the others run on
        the process's worker threads. Returns when every worker has finished; a worker's
        exception is raised then (no worker is still writing into a buffer by that time)."""
        with self.kernels():
            if workers <= 1:
                kernel(0, *args)
            elif self._workers is None:
                raise RuntimeError("this ThreadPlan was made without worker threads")
            else:
                self._workers().run(kernel, workers, args)

    def describe(self) -> dict:
        libs = self._blas_controllers()
        return {"numba_threads": self.threads, "threading_layer": threading_layer(),
                "blas_limited_to_one_thread": [f"{lib.internal_api} {lib.version} "
                                               f"({lib.filepath})" for lib in libs]
                                              or ["none found (not limited)"]}


def _blas_controllers(library: str) -> list:
    """threadpoolctl controllers of the BLAS library at ``library`` (the one the kernels call);
    every loaded BLAS when the path is unknown, so that none can start its own threads."""
    from threadpoolctl import ThreadpoolController

    libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    if library:
        mine = [lib for lib in libs
                if os.path.realpath(lib.filepath) == os.path.realpath(library)]
        if mine:
            return mine
    return libs


