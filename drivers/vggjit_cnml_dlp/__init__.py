"""The ``cnml-dlp`` driver: VGG inference on the Cambricon DLP (MLU), int8 conv/fc and fp16.

Two backends, chosen when the driver is built and shown by ``vggjit drivers``:

* ``pycnml``: Cambricon's binding, when ``import pycnml`` would work; whole networks are built
  on the device with the documented call sequence (see :mod:`.pycnml_backend`).
* ``emulator``: the same numerics in software (see :mod:`.emulator`), everywhere else.

Registered through the ``vggjit.drivers`` entry point like any third-party driver. Importing
this module never imports pycnml: only its presence is checked.
"""
from __future__ import annotations

from vggjit.contract import FORWARD, GRAPH, DriverRecord, hookimpl

from .device import EMULATOR_STATE, NAME, default_backend, pycnml_present

__all__ = ["EMULATOR_STATE", "NAME", "PRIORITY", "default_backend", "pycnml_present",
           "vggjit_drivers"]

PRIORITY = 10  # below numba-cpu (100), above naive (0): never the default where numba-cpu runs


def _factory(**options):
    from .driver import CnmlDlpDriver  # noqa: PLC0415 - only built when selected

    return CnmlDlpDriver(**options)


@hookimpl
def vggjit_drivers():
    if default_backend() == "pycnml":
        how = "backend: pycnml (Cambricon MLU found)"
    else:
        how = "backend: emulator (pycnml not found; the DLP's int8/fp16 numerics in software)"
    return [DriverRecord(
        name=NAME,
        description=f"Cambricon DLP: int8 conv/fc, fp16 activations, inference only; {how}; "
                    f"options: quant=PARAMS.npz (`--quant`)",
        priority=PRIORITY,
        factory=_factory,
        capabilities=frozenset({FORWARD, GRAPH}),
    )]
