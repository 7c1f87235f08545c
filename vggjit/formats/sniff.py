"""Which weight format a file is, from its first bytes (the suffix only breaks ties)."""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

from .torch_file import LEGACY_HEAD, is_torch_tar, is_torch_zip

#: Format names load_weights dispatches on.
NATIVE, MAT, MAT73 = "native", "mat", "hdf5-mat"
TORCH_ZIP, TORCH_LEGACY, TORCH_TAR = "torch-zip", "torch-legacy", "torch-tar"
SAFETENSORS, ONNX, KERAS, OTHER = "safetensors", "onnx", "keras", "other"

_HDF5 = b"\x89HDF\r\n\x1a\n"
#: protobuf tags that can follow ModelProto's ir_version (field 1): fields 2-8 and 14, 20.
_ONNX_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2}


def sniff_format(path: Path, head: bytes) -> str:
    """One of the names above; ``head`` is the file's first 512 bytes (or all of a shorter
    file)."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            # damaged: the suffix says what it was meant to be
            return TORCH_ZIP if path.suffix in (".pth", ".pt", ".bin", ".ckpt") else NATIVE
        return TORCH_ZIP if is_torch_zip(names) else NATIVE
    if head.startswith(b"MATLAB 7.3"):
        return MAT73
    if head.startswith(b"MATLAB 5.0"):
        return MAT
    if head.startswith(_HDF5):
        return KERAS
    if head[:len(LEGACY_HEAD)] == LEGACY_HEAD:
        return TORCH_LEGACY
    if is_torch_tar(head):
        return TORCH_TAR
    if len(head) >= 9 and head[8:9] == b"{":
        (size,) = struct.unpack("<Q", head[:8])
        if 2 <= size < (1 << 30):
            return SAFETENSORS
    if len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 0x20 and head[2] in _ONNX_NEXT_TAGS:
        return ONNX
    if path.suffix.lower() == ".onnx" and head[:1] in (b"\x08", b"\x12", b"\x1a", b"\x3a"):
        return ONNX
    return OTHER
