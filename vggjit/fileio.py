"""Safe file input and output: inputs that are regular files, outputs that are written
atomically, never over a user's file without ``--overwrite`` and never over an input; cache
paths. docs/bad-input.md lists what the user sees for each refusal."""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

from .errors import InputError, OutputExistsError, VggjitError

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


def shown(path: str | os.PathLike, limit: int = 80) -> str:
    """``path`` for a message: a 5,000-character name is cut in the middle, not printed whole."""
    text = os.fspath(path)
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]}...{text[-(limit // 2):]} ({len(text)} characters)"


def _stat(path: str | os.PathLike, error: type[VggjitError]) -> os.stat_result | None:
    """os.stat, None for a missing file; a name the system refuses becomes ``error``."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise error(f"{shown(path)}: the path is too long for this system "
                        f"({exc.strerror})") from None
        raise error(f"{shown(path)}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:          # an embedded NUL byte
        raise error(f"{shown(path)}: not a valid path ({exc})") from None


def input_file(path: str | os.PathLike, what: str = "file",
               error: type[VggjitError] = InputError, where: str = "",
               missing_hint: str = "") -> Path:
    """``path`` as a Path, after checking it names an existing regular file.

    Refuses, with one line of ``error``: a missing file, a directory, a name too long for the
    system, and anything that is not a regular file (a FIFO, a device, a socket), whose read
    could block forever or never end. ``what`` names the file's role, ``where`` where the path
    came from ("given with --weights"); ``missing_hint`` says how to get a missing file.
    """
    label = f"{shown(path)} ({where})" if where else shown(path)
    info = _stat(path, error)
    if info is None:
        raise error(f"{label}: no such file{'. ' + missing_hint if missing_hint else ''}")
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{label}: is a directory, not {_a(what)}")
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else
                "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else
                "a socket" if stat.S_ISSOCK(info.st_mode) else "not a regular file")
        raise error(f"{label}: is {kind}, not {_a(what)}; vggjit reads only regular files "
                    f"(a pipe or device could block or never end)")
    return Path(path)


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file: through hard links and symlinks when both exist,
    through their resolved paths when ``a`` does not exist yet (a dangling link to an input
    counts)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        pass
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except (OSError, ValueError):
        return False


def refuse_input_as_output(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                           option: str = "the output") -> None:
    """Raise InputError when ``output`` is one of ``inputs`` (the same file, however reached:
    the same name, a symlink, a hard link, ``dir/../name``), whatever ``--overwrite`` says:
    writing there would destroy the input the result is made from. ``None`` inputs are skipped.
    """
    out = Path(output)
    for source in inputs:
        if source is None or isinstance(source, bool):
            continue
        source = Path(source)
        if _same_file(out, source):
            raise InputError(f"{option} {shown(out)} is the input {shown(source)}; writing it "
                             f"would destroy that input (--overwrite does not allow this); "
                             f"choose another output name")


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail now, before hours of work, if ``path`` cannot be written.

    Creates missing parent directories. Raises OutputExistsError if the file exists and
    ``overwrite`` is false, VggjitError if the directory is not writable or the name is one
    the system cannot take.
    """
    path = Path(path)
    _stat(path, VggjitError)   # a name too long for the system: one line, not a traceback
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
