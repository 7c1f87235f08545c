"""Which driver runs the lab's layers, and which ``pycnml`` the DLP experiment gets.

The course's layers take ``type=1`` for the fast implementation and ``type=0`` for the plain
loops: here ``type=1`` runs on the fast driver (:func:`use_fast_driver`; by default
``$VGGJIT_DRIVER``, else the best available driver that has backward passes) and ``type=0`` on
``naive``. Layers without a ``type`` (ReLU, fully connected, softmax, the losses) run on the
fast driver. The fast driver is warmed up (its JIT kernels loaded) when the first layer that
uses it is made, so the course's timings measure the kernels, not their loading.

Arrays: the course's scripts make float64 NCHW arrays; the drivers take float32. The layers
convert on the way in (exact for values that came out of a driver) and hand back float64.
"""
from __future__ import annotations

import importlib
import os
import sys

import numpy as np

from ..contract import BACKWARD
from ..errors import InputError
from ..registry import ENV_DRIVER, get_driver

FAST, PLAIN = 1, 0

_fast_name: str | None = None
_announced = False
_warm: set[int] = set()  # drivers whose kernels are loaded in this process


def use_fast_driver(name: str | None) -> str | None:
    """Run ``type=1`` layers (and the untyped ones) on driver ``name`` (None: the default);
    returns the name used until now. Checked now, so a wrong name fails before any work."""
    global _fast_name
    if name is not None:
        get_driver(name)
    previous, _fast_name = _fast_name, name
    return previous


def driver_for(type_: int):
    """The driver of a layer made with ``type=type_`` (1: fast, 0: the plain loops)."""
    if type_ == PLAIN:
        return get_driver("naive")
    if type_ == FAST:
        name = _fast_name or os.environ.get(ENV_DRIVER) or None
        driver = get_driver(name, require=() if name else (BACKWARD,))
        if id(driver) not in _warm:
            # Load (or compile) its kernels now, when the layer is made: a JIT driver's first
            # call would otherwise put a one-off cost into the first timed forward.
            driver.warmup()
            _warm.add(id(driver))
        return driver
    raise InputError(f"type must be 0 (plain loops, the naive driver) or 1 (the fast driver), "
                     f"got {type_!r}")


def fast_driver():
    return driver_for(FAST)


def as64(a) -> np.ndarray:
    """A driver's float32 result as the float64 array the course's scripts work with."""
    return np.asarray(a, dtype=np.float64)


def pycnml_module():
    """``pycnml``: whatever ``import pycnml`` gives (the real library, or the emulator that
    ``vggjit lab run`` serves under that name), else the cnml-dlp driver's emulator, announced
    on stderr once."""
    global _announced
    try:
        return importlib.import_module("pycnml")
    except ModuleNotFoundError as exc:
        if exc.name != "pycnml":
            raise  # pycnml is there but something it needs is not: that is the error to see
    module = emulated_pycnml()
    if not _announced:
        print(f"vggjit lab: pycnml: {describe_pycnml(module)}", file=sys.stderr)
        _announced = True
    return module


def emulated_pycnml():
    """The cnml-dlp driver's emulator of pycnml (whether or not the real library is here)."""
    return get_driver("cnml-dlp", backend="emulator").pycnml_module()


def describe_pycnml(module) -> str:
    """One line saying which pycnml ``module`` is."""
    if getattr(module, "EMULATOR", False):
        return ("vggjit's emulator (no Cambricon pycnml here): the DLP's int8/fp16 numerics "
                "in software, the numbers of `vggjit classify --driver cnml-dlp`")
    return f"Cambricon's library ({getattr(module, '__file__', None) or 'built in'})"
