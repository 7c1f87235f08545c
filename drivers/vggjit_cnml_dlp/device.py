"""The driver's name and which backend this machine gets: pycnml when present, else the emulator.

Shared by the plugin module (for its record) and the driver class; checking never imports
pycnml.
"""
from __future__ import annotations

import importlib.util
import sys

NAME = "cnml-dlp"


#: ``loader_state`` of the module spec under which ``vggjit lab run`` serves the emulator.
EMULATOR_STATE = "vggjit pycnml emulator"


def pycnml_present() -> bool:
    """Whether ``import pycnml`` can work here (checked without importing it) and would give
    Cambricon's library, not the emulator that ``vggjit lab run`` serves under that name."""
    if "pycnml" in sys.modules:
        module = sys.modules["pycnml"]
        return module is not None and not getattr(module, "EMULATOR", False)
    try:
        spec = importlib.util.find_spec("pycnml")
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.loader_state != EMULATOR_STATE


def default_backend() -> str:
    return "pycnml" if pycnml_present() else "emulator"
