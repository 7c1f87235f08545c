"""safetensors files (timm's ``model.safetensors``, or a torchvision state dict saved as one),
read with the ``safetensors`` package's NumPy API; names as in :mod:`.state_dict`.

The format: an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}}, then the raw tensors.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import WeightFileError
from .layout import ParsedVGG
from .optional import require
from .state_dict import parse_state_dict

VERSION = "safetensors"


def read_safetensors(path) -> ParsedVGG:
    path = Path(path)
    st_numpy = require("safetensors.numpy", path, "a safetensors file")
    try:
        tensors = st_numpy.load_file(str(path))
    except Exception as exc:  # SafetensorError and friends: truncated, corrupt, bfloat16
        detail = f"{type(exc).__name__}: {exc}"
        if "bf16" in str(exc).lower() or "bfloat16" in str(exc).lower():
            raise WeightFileError(f"{path}: bfloat16 tensors, which NumPy cannot hold; save the "
                                  f"weights as float32 ({detail})") from None
        raise WeightFileError(f"{path}: cannot read this safetensors file; it is truncated or "
                              f"corrupt ({detail})") from None
    tensors = {name: np.asarray(arr) for name, arr in tensors.items()}
    if not tensors:
        raise WeightFileError(f"{path}: the safetensors file holds no tensors")
    return parse_state_dict(path, tensors, VERSION)
