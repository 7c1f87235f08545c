"""One run per output: a lock file beside the result, so that two runs given the same ``-o`` do
not both report success while one's result silently replaces the other's.

``out.png``'s lock is ``.out.png.lock``, created with O_EXCL (exactly one run can create it)
and holding the owner's pid, host and start time; it is removed when the run ends. A lock left
by a run that was killed hard (its pid no longer runs on this host) is stale and taken over; a
lock from another host cannot be checked, so the message says how to remove it by hand.
docs/bad-input.md lists what the user sees.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import time
from pathlib import Path

from ..errors import OutputExistsError
from ..fileio import shown

#: A lock file without a readable owner (its run was killed between creating and writing it)
#: counts as stale once it is this old.
UNREADABLE_STALE_SECONDS = 30.0


def lock_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.lock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # another user's process
        return True
    except OSError:
        return True
    return True


class RunLock:
    """The lock of the run writing ``output``; :meth:`acquire` and :meth:`release`."""

    def __init__(self, output: Path):
        self.output = Path(output)
        self.path = lock_path(self.output)
        self.token = f"{os.getpid()}-{id(self)}-{time.time()}"
        self.held = False

    def _owner(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None
        except (OSError, ValueError):
            return None

    def _stale(self, owner: dict | None) -> bool:
        if owner is None:
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                return True          # gone meanwhile: try again
            return age > UNREADABLE_STALE_SECONDS
        return owner.get("host") == socket.gethostname() and not _alive(owner["pid"])

    def acquire(self) -> None:
        """Create the lock, or raise OutputExistsError naming the run that holds it."""
        if self.held:
            return
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if self._stale(owner):
                    try:
                        self.path.unlink()   # its run was killed hard: take the lock over
                    except FileNotFoundError:
                        pass
                    continue
                who = (f"process {owner['pid']} on {owner.get('host', '?')}, started "
                       f"{owner.get('started', '?')}" if owner else "a run that is starting")
                raise OutputExistsError(
                    f"{shown(self.output)} is being written by another vggjit run ({who}); "
                    f"wait for it to finish or choose another -o (if no such run exists, "
                    f"remove {shown(self.path)})") from None
            with os.fdopen(fd, "w") as handle:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "token": self.token}, handle)
            self.held = True
            atexit.register(self.release)
            return
        raise OutputExistsError(f"{shown(self.path)}: the lock of {shown(self.output)} keeps "
                                f"changing hands; another run is starting with the same -o")

    def release(self) -> None:
        """Remove the lock if it is still this run's."""
        if not self.held:
            return
        self.held = False
        atexit.unregister(self.release)
        owner = self._owner()
        if owner is not None and owner.get("token") == self.token:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
