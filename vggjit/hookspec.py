"""The plugin protocol: the pluggy hook a driver plugin implements and the record it returns.

A driver plugin is a module (registered under the ``vggjit.drivers`` entry-point group) that
implements the :func:`DriverSpec.vggjit_drivers` hook and returns :class:`DriverRecord` objects.
Each record's ``factory`` builds a :class:`vggjit.contract.Driver`. The registry reads only
this module; :mod:`vggjit.contract` re-exports every name here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import pluggy

PROJECT = "vggjit"
ENTRY_POINT_GROUP = "vggjit.drivers"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Capabilities a driver may declare.
FORWARD = "forward"      # every forward op
BACKWARD = "backward"    # every *_backward op
GRAPH = "graph"          # Driver.build_graph: whole-network inference in one call
CAPABILITIES = (FORWARD, BACKWARD, GRAPH)


@dataclass(frozen=True)
class DriverRecord:
    """What a plugin tells vggjit about one driver.

    name: the name users select it by (``--driver NAME``, ``$VGGJIT_DRIVER``).
    description: one line for ``vggjit drivers``.
    priority: the available driver with the highest priority is the default.
    factory: ``factory(**options) -> Driver``; only called when the driver is selected.
    capabilities: a subset of :data:`CAPABILITIES`.
    unavailable_reason: ``None`` when the driver can run here, else why not (a missing library,
        no device). The plugin must compute this without failing: vggjit's import never breaks.
    variants: named option sets, ``{variant: options}``, each a ``factory(**options)`` that must
        give the default's results within the driver's tolerance (e.g. each forced code path
        of a driver that picks its kernels by shape). The conformance suite runs every op under
        the default and under each variant, so a path that the default reaches only on large
        shapes is checked on small ones too.
    origin: filled in by the registry: the entry point and distribution it came from.
    """

    name: str
    description: str
    priority: int
    factory: Callable[..., object]  # builds a vggjit.contract.Driver
    capabilities: frozenset[str] = frozenset({FORWARD, BACKWARD})
    unavailable_reason: str | None = None
    variants: Mapping[str, Mapping[str, object]] = field(default_factory=dict, compare=False)
    origin: str = field(default="", compare=False)

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None


class DriverSpec:
    """Hook specifications; a plugin module implements them with ``@vggjit.hookimpl``."""

    @hookspec
    def vggjit_drivers(self) -> Iterable[DriverRecord]:
        """Return (or yield) the :class:`DriverRecord` of every driver this plugin provides.

        Called once per discovery. Must not raise when a driver's library or device is missing:
        return the record with ``unavailable_reason`` set instead.
        """
