"""The driver's name and which backend this machine gets: pycnml when present, else the emulator.

Shared by the plugin module (for its record) and the driver class; checking never imports
pycnml.
"""
from __future__ import annotations

import importlib.util
import sys

NAME = "cnml-dlp"


def pycnml_present() -> bool:
    """Whether ``import pycnml`` can work here (checked without importing it)."""
    if "pycnml" in sys.modules:
        return sys.modules["pycnml"] is not None
    try:
        return importlib.util.find_spec("pycnml") is not None
    except (ImportError, ValueError):
        return False


def default_backend() -> str:
    return "pycnml" if pycnml_present() else "emulator"
