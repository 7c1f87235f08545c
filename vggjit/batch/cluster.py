"""The Dask runner: small tasks on a local cluster (``--workers N``) or an existing one
(``--scheduler ADDRESS``), results streamed back as the tasks complete.

Dask (``dask.distributed``) schedules; vggjit only cuts the work into tasks, keeps a bounded
number of them in flight, and hands each finished task's result over as soon as it arrives
(``as_completed``). The network is loaded once per worker process and kept there (see
:func:`vggjit.batch.tasks.network_for`). A worker that dies has its tasks rerun by the
scheduler on the others; a task that kills workers again and again
(``distributed.scheduler.allowed-failures``) is reported as lost, not recorded, so a rerun
retries it.

Threads: each worker runs one task at a time, and its Numba kernels and BLAS get
``cores // workers`` threads of the node, so the workers of a node share its cores without
oversubscribing them. A local cluster gets the setting in its worker processes' environment
before they import Numba; on an existing cluster it is set on each worker before its first task
(the numba-cpu driver reads ``NUMBA_NUM_THREADS`` when it is created). See docs/scale-out.md.
"""
from __future__ import annotations

import itertools
import os
import socket
from dataclasses import dataclass
from typing import Callable, Iterable

from ..errors import InputError, VggjitError

INSTALL_HINT = 'pip install "vggjit[cluster]"'
#: How long to wait for a scheduler before saying it cannot be reached (seconds).
CONNECT_TIMEOUT_S = 10.0
_runs = itertools.count()
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS")


def require_dask():
    """The ``distributed`` module, or a one-line error naming the extra to install."""
    try:
        import distributed
    except ImportError:
        raise VggjitError(f"--workers and --scheduler run on Dask, which is not installed: "
                          f"{INSTALL_HINT}") from None
    return distributed


def machine_cores() -> int:
    """The cores this process may use (its CPU affinity, not the host's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_environment(threads: int) -> dict[str, str]:
    return {var: str(threads) for var in THREAD_VARIABLES}


@dataclass
class Cluster:
    """A connected Dask client, the local cluster it owns (if any) and the thread plan."""

    client: object
    local: object | None
    plan: str

    @property
    def worker_threads(self) -> int:
        """Task threads over all workers: how many tasks run at once."""
        return sum(w["nthreads"] for w in self.client.scheduler_info()["workers"].values())

    def close(self) -> None:
        self.client.close()
        if self.local is not None:
            self.local.close()


def start_local(workers: int, cores: int | None = None) -> Cluster:
    """A local cluster of ``workers`` processes on 127.0.0.1, one task thread each, and
    ``cores // workers`` Numba/BLAS threads each (set before the worker imports Numba)."""
    distributed = require_dask()
    cores = cores or machine_cores()
    threads = max(1, cores // workers)
    local = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=":0", env=thread_environment(threads))
    try:
        client = distributed.Client(local)
        # Dask is importable here (require_dask above); the plugin module needs it at import.
        from .worker_setup import IgnoreInterrupts
        client.register_plugin(IgnoreInterrupts())
    except BaseException:
        local.close()
        raise
    plan = (f"local Dask cluster: {workers} worker process(es), 1 task at a time each, "
            f"{threads} Numba/BLAS thread(s) each ({cores} cores)")
    return Cluster(client, local, plan)


def connect(address: str, timeout: float = CONNECT_TIMEOUT_S) -> Cluster:
    """A client of the scheduler at ``address``; a clear error if it cannot be reached or
    has no workers. Sets each worker's Numba/BLAS threads to its node's cores // workers."""
    distributed = require_dask()
    try:
        client = distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise VggjitError(f"cannot reach the Dask scheduler at {address} within {timeout:g} s "
                          f"({type(exc).__name__}: {exc}); is `dask scheduler` running there "
                          f"and the address (tcp://HOST:PORT) right?") from None
    try:
        workers = client.scheduler_info()["workers"]
        if not workers:
            raise VggjitError(f"the Dask scheduler at {address} has no workers; start some "
                              f"with `dask worker {address}`")
        cores = client.run(machine_cores)
        per_host: dict[str, list[str]] = {}
        for address_w, info in workers.items():
            per_host.setdefault(info["host"], []).append(address_w)
        notes = []
        for host, names in sorted(per_host.items()):
            threads = max(1, cores[names[0]] // len(names))
            client.run(_set_threads, threads, workers=names)
            notes.append(f"{host}: {len(names)} worker(s) x {threads} Numba/BLAS thread(s)")
    except BaseException:
        client.close()
        raise
    task_threads = sum(w["nthreads"] for w in workers.values())
    plan = (f"Dask cluster {address}: {len(workers)} worker(s), {task_threads} task thread(s); "
            + "; ".join(notes))
    return Cluster(client, None, plan)


def _set_threads(threads: int) -> None:
    """On a worker: the thread count its numba-cpu driver (created later) and BLAS will use."""
    os.environ.update(thread_environment(threads))
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except Exception:  # no BLAS found, or threadpoolctl missing: the environment still holds
        pass


def check_workers(cluster: Cluster, check: Callable, *args) -> None:
    """Run ``check(*args)`` on every worker; raise one error listing each worker's complaint
    (``check`` returns None when all is well there)."""
    answers = cluster.client.run(check, *args)
    bad = {worker: why for worker, why in answers.items() if why}
    if bad:
        lines = "\n".join(f"  {worker}: {why}" for worker, why in sorted(bad.items()))
        raise VggjitError(f"{len(bad)} of {len(answers)} Dask worker(s) cannot run the job "
                          f"(paths are read on the workers, so they must exist there):\n{lines}")


def run_tasks(cluster: Cluster, fn: Callable, items: Iterable, on_result: Callable,
              on_lost: Callable, *args, in_flight: int | None = None) -> None:
    """Submit ``fn(*args, item)`` for each item, at most ``in_flight`` at a time (default:
    twice the task threads), and call ``on_result(item, result)`` as each completes.

    A task whose workers kept dying goes to ``on_lost(item, message)``; any other exception
    in a task stops the run (after cancelling the rest) and is raised here. Interrupting
    (Ctrl-C) cancels the tasks in flight: what was handed over stays handed over.
    """
    distributed = require_dask()
    client = cluster.client
    limit = in_flight or max(2, 2 * cluster.worker_threads)
    items = iter(items)
    numbers = itertools.count()
    prefix = f"vggjit-{socket.gethostname()}-{os.getpid()}-{next(_runs)}"
    pending: dict = {}  # key -> (future, item)
    completed = distributed.as_completed()

    def submit() -> bool:
        item = next(items, None)
        if item is None:
            return False
        future = client.submit(fn, *args, item, key=f"{prefix}-{next(numbers)}")
        pending[future.key] = (future, item)
        completed.add(future)
        return True

    try:
        while len(pending) < limit and submit():
            pass
        for future in completed:
            _, item = pending.pop(future.key)
            if future.status == "error":
                exc = future.exception()
                if not isinstance(exc, distributed.KilledWorker):
                    raise exc
                on_lost(item, f"the workers running it died ({exc})")
            else:
                on_result(item, future.result())
            future.release()
            while len(pending) < limit and submit():
                pass
    finally:
        if pending:
            client.cancel([future for future, _ in pending.values()], force=True)


@dataclass
class Where:
    """Where a run executes: in-process (the default), ``workers`` local Dask processes, or the
    Dask ``scheduler`` at an address (``connect_timeout`` seconds to reach it)."""

    workers: int | None = None
    scheduler: str | None = None
    connect_timeout: float | None = None

    def __post_init__(self):
        if self.workers is not None and self.scheduler:
            raise InputError("give --workers (a local cluster) or --scheduler (an existing "
                             "one), not both")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be at least 1, got {self.workers}")

    @property
    def in_process(self) -> bool:
        return self.workers is None and not self.scheduler

    def open(self) -> Cluster:
        if self.scheduler:
            timeout = self.connect_timeout
            return connect(self.scheduler, **({"timeout": timeout} if timeout else {}))
        return start_local(self.workers)
