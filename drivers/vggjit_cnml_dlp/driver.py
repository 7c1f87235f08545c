"""The cnml-dlp driver class: forward ops with the DLP's numerics, whole-network graphs.

Op-by-op calls (``conv2d``, ``linear``, ...: used by the conformance suite and by
``Network.forward`` when it asks for layers other than ``prob``) always run on the emulator,
because pycnml's documented API builds whole networks. They take float32, round it to fp16 as
the device holds its tensors, and return float32 arrays holding fp16 values. An op has no
layer identity, so its int8 parameters come from its own operands: the input's and the
filter's absmax (dynamic calibration). ``build_graph`` (``Network.forward`` for ``prob``)
uses the quantisation file when one was given.
"""
from __future__ import annotations

import importlib
import os

from vggjit.contract import FORWARD, GRAPH, Driver
from vggjit.errors import DriverUnavailableError, InputError
from vggjit.quant import QuantTable, load_quant

from . import emulator as emu
from . import pycnml_emulator
from .device import NAME, default_backend, pycnml_present

BACKENDS = ("auto", "pycnml", "emulator")


class CnmlDlpDriver(Driver):
    """Cambricon DLP driver.

    quant: a lab-format ``.npz`` path (or a :class:`vggjit.quant.QuantTable`) with per-layer
        input and filter parameters; checked against the network when a graph is built.
        Without it the emulator calibrates dynamically; the pycnml backend requires it.
    backend: "auto" (pycnml when present, else the emulator), "pycnml" or "emulator".
    cores: the core count given to ``pycnml.CnmlNet`` (the lab uses 16).
    """

    name = NAME
    capabilities = frozenset({FORWARD, GRAPH})
    #: Tells the conformance suite to use its int8 tolerance table.
    tolerance_class = "int8"

    def __init__(self, quant=None, backend: str = "auto", cores: int = 16):
        if backend not in BACKENDS:
            raise InputError(f"cnml-dlp backend must be one of {', '.join(BACKENDS)}, "
                             f"got {backend!r}")
        if backend == "auto":
            backend = default_backend()
        elif backend == "pycnml" and not pycnml_present():
            raise DriverUnavailableError("cnml-dlp: backend 'pycnml' asked for, but the pycnml "
                                         "module is not installed here (use the emulator)")
        self.backend = backend
        self.cores = int(cores)
        if quant is None or isinstance(quant, QuantTable):
            self.quant = quant
        elif isinstance(quant, (str, os.PathLike)):
            self.quant = load_quant(quant)
        else:
            raise InputError(f"cnml-dlp quant must be a .npz path or a QuantTable, got "
                             f"{type(quant).__name__}")

    def __repr__(self) -> str:
        q = f", quant={self.quant.source!r}" if self.quant is not None else ""
        return f"<CnmlDlpDriver {self.name!r} backend={self.backend}{q}>"

    # -- whole network --------------------------------------------------------------------
    def build_graph(self, net):
        if self.backend == "pycnml":
            from .pycnml_backend import PycnmlGraph

            return PycnmlGraph(net, self.quant, cores=self.cores)
        return emu.EmulatedNet(net, self.quant)

    def emulate(self, net) -> emu.EmulatedNet:
        """The emulator's graph for ``net`` whatever the backend (it can return any layer)."""
        return emu.EmulatedNet(net, self.quant)

    def pycnml_module(self):
        """The ``pycnml`` module for code written against Cambricon's API (the lab's
        ``vgg19_demo.py``): the real library with the pycnml backend, else the emulator
        (:mod:`.pycnml_emulator`, the same numbers as :meth:`build_graph`'s)."""
        if self.backend == "pycnml":
            return importlib.import_module("pycnml")
        return pycnml_emulator

    # -- ops (emulator, dynamic calibration) ----------------------------------------------
    def _conv2d(self, x, w, b, stride, pad):
        return emu.conv(emu.fp16(x), emu.QuantWeights(w), emu.fp16(b), stride, pad)

    def _relu(self, x):
        return emu.relu(emu.fp16(x))

    def _max_pool2d(self, x, size, stride):
        return emu.max_pool(emu.fp16(x), size, stride, switches=True)

    def _avg_pool2d(self, x, size, stride):
        return emu.avg_pool(emu.fp16(x), size, stride)

    def _linear(self, x, w, b):
        return emu.linear(emu.fp16(x), emu.QuantWeights(w), emu.fp16(b))

    def _softmax(self, x):
        return emu.softmax(emu.fp16(x))

    def _gram(self, x):
        return emu.gram(emu.fp16(x))


__all__ = ["CnmlDlpDriver"]
