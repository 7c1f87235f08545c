"""Safe file output: atomic writes, no silent overwrites, early writability checks; cache paths."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import OutputExistsError, VggjitError

ENV_HOME = "VGGJIT_HOME"


def home_dir(environ=os.environ) -> Path:
    """The user cache directory: ``$VGGJIT_HOME``, default ``~/.cache/vggjit`` (not created).

    A leading ``~`` in the variable is expanded (it often arrives quoted from a shell or a file).
    """
    return Path(environ.get(ENV_HOME) or "~/.cache/vggjit").expanduser()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mkstemp_like_open(directory: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """mkstemp, but with the permissions a plain open() would give (mkstemp's are 0600)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    os.chmod(tmp, 0o666 & ~_umask())
    return fd, tmp


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail now, before hours of work, if ``path`` cannot be written.

    Creates missing parent directories. Raises OutputExistsError if the file exists and
    ``overwrite`` is false, VggjitError if the directory is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise VggjitError(f"output path {path} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=True):
            pass
    except OSError as exc:
        raise VggjitError(f"cannot write to {path.parent}: {exc.strerror or exc}") from exc
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", overwrite: bool = True
                 ) -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place only on success.

    A reader never sees a half-written file, and an exception leaves any old file untouched.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp_like_open(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_save(path: str | os.PathLike, save, overwrite: bool = True) -> Path:
    """Call ``save(tmp_path)`` for a writer that wants a path (Pillow, numpy, matplotlib), then
    rename the result over ``path``. The temporary name keeps the suffix so format detection works.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp_like_open(path.parent, f".{path.stem}.", path.suffix)
    os.close(fd)
    try:
        save(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
