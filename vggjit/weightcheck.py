"""Integrity of vggjit's native weight files: a damaged or modified file is detected, not used.

The native file is a zip archive, and the zip format records the CRC-32 of every member when
it is written. :func:`verify` recomputes them all (about half a second for VGG19's 548 MB).
Loading would lose its point if it did that every time, so :func:`verify_once` does it only
when the file's inode, size, modification or *change* time differ from those of its last good
check, remembered in ``home_dir()/verified/``. A process that edits the file moves its change
time (``touch`` cannot set that one back), so any edit since the last check is caught at the
next load. The writer records the check of the file it has just written (:func:`remember`).
``vggjit weights verify`` runs the full check on demand. See docs/formats.md.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import struct
import zipfile
import zlib
from pathlib import Path

from .errors import WeightFileError
from .fileio import atomic_write, home_dir

#: The zip local file header: signature, then fixed fields up to the name and extra lengths.
_LOCAL_HEADER = 30


def verify(path) -> int:
    """Check every member of the native file ``path`` against its recorded CRC-32; return the
    number of bytes checked. Raises WeightFileError naming the first member that differs."""
    path = Path(path)
    checked = 0
    try:
        with open(path, "rb") as handle, \
                mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            archive = zipfile.ZipFile(handle)
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED:
                    with archive.open(info) as member:   # zipfile checks the CRC at the end
                        while member.read(1 << 24):
                            pass
                    checked += info.file_size
                    continue
                local = mapped[info.header_offset:info.header_offset + _LOCAL_HEADER]
                if len(local) < _LOCAL_HEADER or local[:4] != b"PK\x03\x04":
                    raise WeightFileError(f"{path}: member {info.filename}: bad zip header; "
                                          f"the file is damaged")
                n_name, n_extra = struct.unpack("<HH", local[26:30])
                start = info.header_offset + _LOCAL_HEADER + n_name + n_extra
                if start + info.file_size > len(mapped):
                    raise WeightFileError(f"{path}: member {info.filename} runs past the end "
                                          f"of the file; the file is truncated")
                view = memoryview(mapped)[start:start + info.file_size]
                try:
                    crc = zlib.crc32(view)
                finally:
                    view.release()
                if crc != info.CRC:
                    raise WeightFileError(
                        f"{path}: member {info.filename} fails its checksum (CRC-32 {crc:08x}, "
                        f"recorded {info.CRC:08x}): the file was damaged or modified after "
                        f"vggjit wrote it. Delete it and convert the .mat again")
                checked += info.file_size
    except WeightFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, struct.error) as exc:
        raise WeightFileError(f"{path}: cannot be verified, it is damaged "
                              f"({type(exc).__name__}: {exc}); delete it and convert the .mat "
                              f"again") from None
    return checked


def _stamp_path(path: Path) -> Path:
    key = hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:16]
    return home_dir() / "verified" / f"{path.stem}-{key}.json"


def _identity(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def remember(path) -> None:
    """Record that ``path`` is good as it is now (best effort: an unwritable home only means
    the next load checks it in full)."""
    path = Path(path)
    try:
        with atomic_write(_stamp_path(path), "w") as out:
            json.dump(_identity(path), out)
    except OSError:
        pass


def verify_once(path) -> None:
    """:func:`verify` ``path`` unless it is unchanged since its last good check."""
    path = Path(path)
    stamp = _stamp_path(path)
    try:
        if json.loads(stamp.read_text()) == _identity(path):
            return
    except (OSError, ValueError):
        pass
    verify(path)
    remember(path)


__all__ = ["remember", "verify", "verify_once"]
