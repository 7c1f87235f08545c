"""Reading an .npz of plain arrays without trusting it (a checkpoint someone may have damaged).

Every member's .npy header is read first, and nothing is allocated until every header has
passed: an object array (a pickle) is refused, as is a header that declares more bytes than its
member holds (a truncated or tampered file: numpy would allocate the declared size before
noticing, 745 GiB for a forged shape) or more than the memory budget (:mod:`vggjit.memory`).
Random bytes, a truncated archive and a bad CRC are each one :class:`InputError` naming the
file, never numpy's advice to load with ``allow_pickle``. See docs/bad-input.md.
"""
from __future__ import annotations

import zipfile
import numpy as np

from ..errors import InputError
from ..fileio import input_file, shown
from ..memory import check_fits

#: More members than a checkpoint of any run has (a zip bomb of empty members is refused).
MAX_MEMBERS = 4096


def _header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str
            ) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of the data) of one member, from its .npy header alone."""
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"unknown .npy format version {version}")
            header_bytes = member.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{label}: field {info.filename[:-4]!r} is not a readable array "
                         f"({exc})") from None
    if dtype.hasobject:
        raise InputError(f"{label}: field {info.filename[:-4]!r} holds Python objects "
                         f"(a pickle), which vggjit never loads")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise InputError(f"{label}: field {info.filename[:-4]!r} declares the shape {shape}")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes > info.file_size - header_bytes:
        raise InputError(f"{label}: field {info.filename[:-4]!r} declares a {dtype} array of "
                         f"shape {shape} ({nbytes:,} bytes) but the file holds "
                         f"{max(0, info.file_size - header_bytes):,}: truncated or damaged")
    return shape, dtype, nbytes


def read_npz(path, what: str = "file") -> dict[str, np.ndarray]:
    """{name: array} of the .npz at ``path``; InputError naming the file (and the field) for
    anything that is not an archive of plain arrays, before any array is allocated."""
    path = input_file(path, what, where=f"the {what}")
    label = shown(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise InputError(f"{label}: not a vggjit {what} (not an .npz archive: truncated, or "
                         f"not made by vggjit)") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise InputError(f"{label}: {len(members)} fields, more than a vggjit {what} has")
        bad = [m.filename for m in members if not m.filename.endswith(".npy")]
        if bad:
            raise InputError(f"{label}: not a vggjit {what} (holds {bad[0]!r}, not an array)")
        headers = {m.filename[:-4]: (m, *_header(archive, m, label)) for m in members}
        check_fits(sum(h[3] for h in headers.values()), f"reading {label}")
        arrays = {}
        for name, (info, _shape, _dtype, _nbytes) in headers.items():
            try:
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
                    member.read()   # to the end, where zipfile checks the member's CRC-32
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise InputError(f"{label}: field {name!r} cannot be read ({exc}): truncated "
                                 f"or damaged") from None
    return arrays
