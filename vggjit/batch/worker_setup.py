"""Set-up of the worker processes of a local Dask cluster (imported only where Dask is).

The worker processes of ``--workers N`` share the terminal with the command, so Ctrl-C reaches
them too; they would each print a traceback. They ignore it instead: the command catches it,
keeps what is finished and closes the cluster, which ends the workers.
"""
from __future__ import annotations

import signal
import threading

from distributed import WorkerPlugin


class IgnoreInterrupts(WorkerPlugin):
    """SIGINT ignored in the worker process (applied to workers that the nanny restarts too)."""

    name = "vggjit-ignore-interrupts"

    def setup(self, worker) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
