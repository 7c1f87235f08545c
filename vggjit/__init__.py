"""vggjit: VGG19 classification and Gatys style transfer on hand-written, JIT-compiled kernels.

The core (this package) holds the driver contract and registry, the network, losses,
optimisers, image and weight I/O and the CLI; the kernels live in driver plugins found through
the ``vggjit.drivers`` entry-point group.
"""
from __future__ import annotations

from importlib import import_module

from .contract import BACKWARD, FORWARD, GRAPH, Driver, DriverRecord, hookimpl
from .errors import InputError, VggjitError
from .registry import get_driver, list_drivers

__version__ = "0.1.0"

# Heavier parts load on first use, so `import vggjit` and `vggjit --help` stay fast.
_LAZY = {
    "VGG19": "vggjit.network",
    "VGG16": "vggjit.network",
    "Network": "vggjit.network",
    "preprocess": "vggjit.images",
    "deprocess": "vggjit.images",
    "load_image": "vggjit.images",
    "stylize": "vggjit.style",
    "StyleTransfer": "vggjit.style",
}

__all__ = ["BACKWARD", "FORWARD", "GRAPH", "Driver", "DriverRecord", "InputError", "VggjitError",
           "get_driver", "hookimpl", "list_drivers", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vggjit' has no attribute {name!r}")
