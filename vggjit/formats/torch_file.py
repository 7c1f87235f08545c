"""PyTorch checkpoints without torch: the zip format (PyTorch 1.6 and later) and the legacy
format (torchvision's VGG files), read through :mod:`.safe_pickle`.

Zip format: an uncompressed zip with ``<archive>/data.pkl`` (the pickled object; storages are
persistent ids whose key names the member ``<archive>/data/<key>``, the raw little-endian
elements) and optionally ``<archive>/byteorder`` ("little" or "big").

Legacy format: five things one after the other in the file: a pickled magic number
(0x1950a86a20f9469cfc6c), a pickled protocol version (1001), a pickled dict of system
information (``little_endian``, type sizes), the pickled object (storages as persistent ids),
a pickled list of storage keys, then for each key in that order the storage: an int64 element
count followed by the raw elements.

Tar format (PyTorch before 0.1.10): a tar archive with ``storages`` (a pickled count, then per
storage a pickled (key, location, storage class), an int64 element count and the elements; then a
pickled list of storage views), ``tensors`` (a pickled count, then per tensor a pickled (key,
storage key, tensor class), an int32 dimension count and 4 padding bytes, the sizes and strides
as int64, the int64 storage offset) and ``pickle`` (the object, whose persistent ids are those
keys).

All give the object with NumPy arrays in place of tensors (:func:`read_checkpoint`).
"""
from __future__ import annotations

import io
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import WeightFileError
from .safe_pickle import Storage, StorageType, TensorRef, load_pickle, resolve

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
#: How a legacy checkpoint starts: protocol 2, then LONG1 of 10 bytes holding LEGACY_MAGIC.
LEGACY_HEAD = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")

ZIP, LEGACY, TAR = "pytorch-zip", "pytorch-legacy", "pytorch-tar"
#: The members of a tar-format checkpoint.
TAR_MEMBERS = ("storages", "tensors", "pickle")


def is_torch_tar(head: bytes) -> bool:
    """Whether a file's first 512 bytes are a tar header (ustar magic at 257)."""
    return len(head) >= 262 and head[257:262] == b"ustar"


def is_torch_zip(names: list[str]) -> bool:
    """Whether a zip's member names are those of a PyTorch checkpoint."""
    return any(name.endswith("/data.pkl") and name.count("/") == 1 for name in names)


def read_checkpoint(path, kind: str):
    """The unpickled object of a checkpoint (``kind`` ZIP or LEGACY), arrays for tensors."""
    path = Path(path)
    return {ZIP: read_zip, LEGACY: read_legacy, TAR: read_tar}[kind](path)


def read_zip(path: Path):
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise WeightFileError(f"{path}: not a readable zip file; the checkpoint is truncated or "
                              f"corrupt ({exc})") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightFileError(f"{path}: a zip file, but not a PyTorch checkpoint (no single "
                                  f"<archive>/data.pkl member)")
        prefix = pickles[0][:-len("data.pkl")]
        order = "little"
        if f"{prefix}byteorder" in names:
            order = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
        storages: dict[str, Storage] = {}
        try:
            with archive.open(pickles[0]) as handle:
                obj = load_pickle(handle, path, storages)
            for storage in storages.values():
                member = f"{prefix}data/{storage.key}"
                if member not in names:
                    raise WeightFileError(f"{path}: storage {storage.key} has no member {member}; "
                                          f"the checkpoint is incomplete")
                raw = archive.read(member)
                storage.array = _elements(path, raw, storage, order)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise WeightFileError(f"{path}: cannot read the checkpoint's members; it is truncated "
                                  f"or corrupt ({type(exc).__name__}: {exc})") from None
    return resolve(obj, path)


def read_legacy(path: Path):
    storages: dict[str, Storage] = {}
    with open(path, "rb") as handle:
        magic = load_pickle(handle, path, storages)
        if magic != LEGACY_MAGIC:
            raise WeightFileError(f"{path}: a pickle, but not a PyTorch checkpoint (no magic "
                                  f"number)")
        protocol = load_pickle(handle, path, storages)
        if protocol != LEGACY_PROTOCOL:
            raise WeightFileError(f"{path}: PyTorch legacy protocol {protocol!r}, vggjit reads "
                                  f"{LEGACY_PROTOCOL}")
        info = load_pickle(handle, path, storages)
        order = "little" if not isinstance(info, dict) or info.get("little_endian", True) \
            else "big"
        obj = load_pickle(handle, path, storages)
        keys = load_pickle(handle, path, storages)
        if not isinstance(keys, list):
            raise WeightFileError(f"{path}: no storage list after the pickled object; the file "
                                  f"is damaged")
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise WeightFileError(f"{path}: storage {key} is listed but never used")
            head = handle.read(8)
            if len(head) < 8:
                raise WeightFileError(f"{path}: the file ends before storage {key}; it is "
                                      f"truncated")
            (count,) = struct.unpack("<q" if order == "little" else ">q", head)
            if count != storage.numel:
                raise WeightFileError(f"{path}: storage {key} holds {count} elements, its "
                                      f"record says {storage.numel}; the file is damaged")
            nbytes = count * storage.storage_type.dtype.itemsize
            raw = handle.read(nbytes)
            if len(raw) < nbytes:
                raise WeightFileError(f"{path}: storage {key} needs {nbytes} bytes but the file "
                                      f"has only {len(raw)} left; it is truncated")
            storage.array = _elements(path, raw, storage, order)
    return resolve(obj, path)


def read_tar(path: Path):
    try:
        with tarfile.open(path, "r:") as tar:
            names = tar.getnames()
            missing = [m for m in TAR_MEMBERS if m not in names]
            if missing:
                raise WeightFileError(f"{path}: a tar archive without {', '.join(missing)}; not a "
                                      f"PyTorch checkpoint")
            members = {m: tar.extractfile(m).read() for m in TAR_MEMBERS}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise WeightFileError(f"{path}: cannot read the tar archive; the checkpoint is truncated "
                              f"or corrupt ({type(exc).__name__}: {exc})") from None
    storages: dict[str, Storage] = {}
    objects: dict[str, object] = {}
    handle = io.BytesIO(members["storages"])
    for _ in range(_count(path, load_pickle(handle, path, storages), "storages")):
        record = load_pickle(handle, path, storages)
        if not (isinstance(record, tuple) and len(record) == 3
                and isinstance(record[2], StorageType)):
            raise WeightFileError(f"{path}: malformed storage record {record!r:.80}")
        key, _, storage_type = record
        count = _read_struct(path, handle, "<q", f"storage {key}")[0]
        storage = Storage(str(key), storage_type, count)
        nbytes = count * storage_type.dtype.itemsize
        raw = handle.read(nbytes)
        if len(raw) < nbytes:
            raise WeightFileError(f"{path}: storage {key} is cut short; the file is truncated")
        storage.array = _elements(path, raw, storage, "little")
        objects[str(key)] = storage
    if load_pickle(handle, path, storages):
        raise WeightFileError(f"{path}: storage views (very old PyTorch) are not supported")
    handle = io.BytesIO(members["tensors"])
    for _ in range(_count(path, load_pickle(handle, path, storages), "tensors")):
        record = load_pickle(handle, path, storages)
        if not (isinstance(record, tuple) and len(record) == 3 and str(record[1]) in objects):
            raise WeightFileError(f"{path}: malformed tensor record {record!r:.80}")
        key, storage_key, _ = record
        (ndim,) = _read_struct(path, handle, "<i", f"tensor {key}")
        _read_struct(path, handle, "<i", f"tensor {key}")  # the padding of a once-8-byte ndim
        size = _read_struct(path, handle, f"<{ndim}q", f"tensor {key}")
        stride = _read_struct(path, handle, f"<{ndim}q", f"tensor {key}")
        (offset,) = _read_struct(path, handle, "<q", f"tensor {key}")
        objects[str(key)] = TensorRef(objects[str(storage_key)], offset, size, stride)
    obj = load_pickle(io.BytesIO(members["pickle"]), path, storages, objects)
    return resolve(obj, path)


def _count(path, value, what: str) -> int:
    if not isinstance(value, int) or value < 0:
        raise WeightFileError(f"{path}: malformed count of {what} ({value!r:.40})")
    return value


def _read_struct(path, handle, fmt: str, what: str) -> tuple:
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) < size:
        raise WeightFileError(f"{path}: {what} is cut short; the file is truncated")
    return struct.unpack(fmt, data)


def _elements(path, raw: bytes, storage: Storage, order: str) -> np.ndarray:
    dtype = storage.storage_type.dtype
    if order == "big":
        dtype = dtype.newbyteorder(">")
    if len(raw) != storage.numel * dtype.itemsize:
        raise WeightFileError(f"{path}: storage {storage.key} has {len(raw)} bytes, expected "
                              f"{storage.numel} x {dtype.itemsize}; the file is damaged")
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)
