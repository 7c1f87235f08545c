"""Finding drivers: entry points -> pluggy -> driver records -> a chosen driver.

Discovery happens once per process (``reload()`` starts it again). A plugin that fails to import,
or whose hook raises, is reported with a :class:`PluginWarning` and skipped; vggjit keeps working
with the rest.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import threading
import traceback
import warnings
from typing import Iterable

import pluggy

from .contract import ENTRY_POINT_GROUP, PROJECT, Driver, DriverRecord, DriverSpec
from .errors import DriverNotFoundError, DriverUnavailableError, DuplicateDriverError

ENV_DRIVER = "VGGJIT_DRIVER"


class PluginWarning(UserWarning):
    """A driver plugin could not be loaded or answered its hook with an error."""


_lock = threading.Lock()
_records: list[DriverRecord] | None = None
_instances: dict[str, Driver] = {}


def _summary(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith("<frozen")][-3:]
    where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(frames))
    return f"{type(exc).__name__}: {exc}" + (f" (at {where})" if where else "")


def _warn(plugin: str, origin: str, exc: BaseException) -> None:
    warnings.warn(f"vggjit: skipped driver plugin {plugin!r} from {origin}: {_summary(exc)}",
                  PluginWarning, stacklevel=4)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    seen, unique = set(), []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        # The same distribution can be visible twice (an editable install plus the source tree).
        if (ep.name, ep.value) not in seen:
            seen.add((ep.name, ep.value))
            unique.append(ep)
    return unique


def _origin(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
    return f"{ep.value} ({where})"


def _as_records(result) -> Iterable[DriverRecord]:
    for record in result or ():
        if not isinstance(record, DriverRecord):
            raise TypeError(f"hook returned {type(record).__name__}, expected DriverRecord")
        yield record


def _discover() -> list[DriverRecord]:
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(DriverSpec)
    origins: dict[str, str] = {}
    for ep in _entry_points():
        origin = _origin(ep)
        try:
            module = ep.load()
            if not manager.is_registered(module):
                origins[manager.register(module, name=ep.value)] = origin
        except Exception as exc:  # a broken plugin is reported, not fatal
            _warn(ep.name, origin, exc)
    records: list[DriverRecord] = []
    # Each implementation is called on its own, so one failing hook cannot hide the others.
    for impl in manager.hook.vggjit_drivers.get_hookimpls():
        origin = origins.get(impl.plugin_name, impl.plugin_name)
        try:
            records.extend(dataclasses.replace(r, origin=origin)
                           for r in _as_records(impl.function()))
        except Exception as exc:
            _warn(impl.plugin_name, origin, exc)
    by_name: dict[str, list[DriverRecord]] = {}
    for record in records:
        by_name.setdefault(record.name, []).append(record)
    result = []
    for name, same in by_name.items():
        if len(same) > 1:
            origins = " and ".join(r.origin for r in same)
            same = [dataclasses.replace(r, unavailable_reason=f"duplicate driver name {name!r}: "
                                        f"registered by {origins}") for r in same]
        result.extend(same)
    result.sort(key=lambda r: (-r.priority, r.name))
    return result


def list_drivers() -> list[DriverRecord]:
    """Every driver found, available or not, highest priority first."""
    global _records
    with _lock:
        if _records is None:
            _records = _discover()
        return list(_records)


def reload() -> None:
    """Forget what discovery found (after installing a plugin, or in tests)."""
    global _records
    with _lock:
        _records = None
        _instances.clear()


def get_driver(name: str | None = None, *, require: Iterable[str] = (), **options) -> Driver:
    """The named driver, else ``$VGGJIT_DRIVER``, else the available one of highest priority.

    require: capabilities the caller needs (e.g. ``{"backward"}``); when no name is given the
        default is the best available driver that has them all.
    options: passed to the driver's factory (e.g. ``quant="params.npz"`` for cnml-dlp); a driver
        built without options is reused between calls.
    """
    records = list_drivers()
    require = frozenset(require)
    # where the name came from, for the error messages: the user may not remember setting it
    origin = "" if name else f" (from ${ENV_DRIVER})"
    name = name or os.environ.get(ENV_DRIVER) or None
    if name is None:
        candidates = [r for r in records if r.available and require <= r.capabilities]
        if not candidates:
            raise DriverUnavailableError(
                "no available driver" + (f" with {', '.join(sorted(require))}" if require else "")
                + "; installed: " + _describe(records))
        record = candidates[0]
    else:
        matches = [r for r in records if r.name == name]
        if not matches:
            raise DriverNotFoundError(f"unknown driver {name!r}{origin}; valid names: "
                                      f"{', '.join(r.name for r in records) or 'none installed'}")
        if len(matches) > 1:
            raise DuplicateDriverError(matches[0].unavailable_reason)
        record = matches[0]
        if not record.available:
            raise DriverUnavailableError(f"driver {name!r}{origin} is not available here: "
                                         f"{record.unavailable_reason}")
        missing = require - record.capabilities
        if missing:
            having = [r.name for r in records if r.available and require <= r.capabilities]
            raise DriverUnavailableError(
                f"driver {name!r} lacks the {', '.join(sorted(missing))} capability; drivers "
                f"that have it: {', '.join(having) or 'none'}")
    if options:
        return record.factory(**options)
    with _lock:
        if record.name not in _instances:
            _instances[record.name] = record.factory()
        return _instances[record.name]


def _describe(records: list[DriverRecord]) -> str:
    return ", ".join(f"{r.name} ({'available' if r.available else r.unavailable_reason})"
                     for r in records) or "none"
