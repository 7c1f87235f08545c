"""A restricted unpickler for PyTorch state dicts: tensors become NumPy arrays, no torch needed.

A pickle may name any Python callable and have it called while loading; a checkpoint from the
internet could run code that way. :class:`StateDictUnpickler` resolves only the handful of
globals a state dict needs (:data:`ALLOWED`), each to a harmless stand-in defined here, and
refuses every other global with a :class:`~vggjit.errors.WeightFileError` naming it, before
anything is called.

Storages arrive through ``persistent_load`` as ('storage', storage class, key, location, numel
[, view metadata]); the caller supplies ``load_storage(key, dtype, numel) -> 1-D array`` (from a
zip member or, for the legacy format, after the pickle). Tensors are rebuilt as
:class:`TensorRef` (storage, offset, size, stride) and turned into arrays by :func:`resolve`
once every storage is read.
"""
from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
import numpy as np

from ..errors import WeightFileError

#: torch storage class name -> NumPy dtype (little-endian; bfloat16 is read as its 16 bits).
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "BFloat16Storage": "<u2", "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
    "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


@dataclass(frozen=True)
class StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: only its dtype is used."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass
class Storage:
    """A storage named in the pickle; ``array`` is filled by the loader (1-D, its dtype)."""

    key: str
    storage_type: StorageType
    numel: int
    array: np.ndarray | None = None


@dataclass
class TensorRef:
    """A tensor as ``torch._utils._rebuild_tensor*`` describes it (sizes and strides in
    elements)."""

    storage: Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


def _codecs_encode(text, encoding="latin1"):
    return text.encode(encoding)  # how protocol 2 pickles bytes objects


ALLOWED: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("_codecs", "encode"): _codecs_encode,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
    # the tar format (PyTorch before 0.1.10) names each tensor's type: torch.FloatTensor, ...
    **{("torch", name.replace("Storage", "Tensor")): StorageType(name) for name in STORAGE_DTYPES},
}


class StateDictUnpickler(pickle.Unpickler):
    """Unpickle a state dict with only :data:`ALLOWED` globals (see the module docstring)."""

    def __init__(self, handle, path, storages: dict[str, Storage], objects=None):
        super().__init__(handle)
        self._path = path
        self.storages = storages
        self.objects = objects  # the tar format's tensors and storages, by key

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise WeightFileError(
                f"{self._path}: the checkpoint refers to the Python global {module}.{name}, "
                f"which a weights-only file does not need; refused without running it (vggjit "
                f"reads plain state dicts of tensors)") from None

    def persistent_load(self, pid):
        if self.objects is not None and isinstance(pid, (str, int)):
            try:
                return self.objects[str(pid)]
            except KeyError:
                raise WeightFileError(f"{self._path}: the pickle names object {pid!r:.40}, which "
                                      f"the file does not hold; it is damaged") from None
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise WeightFileError(f"{self._path}: unexpected persistent object {pid!r:.80}; not "
                                  f"a PyTorch tensor storage")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, StorageType) or not isinstance(numel, int):
            raise WeightFileError(f"{self._path}: malformed storage record {pid!r:.80}")
        if len(pid) > 5 and pid[5] is not None:
            raise WeightFileError(f"{self._path}: storage views (PyTorch before 0.4) are not "
                                  f"supported")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = Storage(key, storage_type, numel)
        return storage


def load_pickle(handle, path, storages: dict[str, Storage], objects=None):
    """Unpickle one object from ``handle``; damage becomes a WeightFileError.
    objects: {key: object} the persistent ids of the tar format refer to."""
    try:
        return StateDictUnpickler(handle, path, storages, objects).load()
    except WeightFileError:
        raise
    except EOFError:
        raise WeightFileError(f"{path}: the file ends inside its pickle; it is truncated") from None
    except Exception as exc:  # pickle reports damage with many exception types
        raise WeightFileError(f"{path}: cannot unpickle the checkpoint; it is truncated or "
                              f"corrupt ({type(exc).__name__}: {exc})") from None


def resolve(obj, path):
    """Replace every TensorRef in nested dicts / lists / tuples by a NumPy array."""
    if isinstance(obj, TensorRef):
        return _tensor_array(obj, path)
    if isinstance(obj, dict):
        return {key: resolve(value, path) for key, value in obj.items()}  # order kept
    if isinstance(obj, (list, tuple)):
        return type(obj)(resolve(v, path) for v in obj)
    return obj


def _tensor_array(ref: TensorRef, path) -> np.ndarray:
    data = ref.storage.array
    if data is None:
        raise WeightFileError(f"{path}: storage {ref.storage.key} was never written; the file is "
                              f"incomplete")
    if len(ref.size) != len(ref.stride) or any(d < 0 for d in ref.size) or ref.offset < 0 \
            or any(s < 0 for s in ref.stride):
        raise WeightFileError(f"{path}: a tensor with size {ref.size} and stride {ref.stride}")
    last = ref.offset + sum((d - 1) * s for d, s in zip(ref.size, ref.stride)) \
        if all(ref.size) else ref.offset - 1
    if last >= data.size:
        raise WeightFileError(f"{path}: a tensor of size {list(ref.size)} reaches element "
                              f"{last} of storage {ref.storage.key}, which has {data.size}; the "
                              f"file is damaged")
    item = data.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[ref.offset:], shape=ref.size, strides=[s * item for s in ref.stride],
        writeable=False)
    arr = np.array(view)  # a copy: contiguous, independent of the file buffer
    if ref.storage.storage_type.name == "BFloat16Storage":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr
