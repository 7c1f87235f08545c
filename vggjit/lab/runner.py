"""Run a course script as ``python SCRIPT`` would, with ``stu_upload`` served by vggjit.lab.

The script runs in this process as ``__main__`` (runpy): ``sys.argv`` is the script's file name
and its arguments, the working directory and ``sys.path[0]`` are the script's directory (so its
relative paths such as ``../imagenet-vgg-verydeep-19.mat`` mean what they mean in the lab).
A meta-path finder placed first serves

* ``stu_upload`` and ``stu_upload.<module>`` for the course's modules (vggjit.lab.MODULES):
  vggjit's, unless the student's own are asked for (all of them, or some of them: those come
  from ``<script dir>/stu_upload/<module>.py`` and import vggjit's for the rest). A student's
  package beside the script that is not used is named on stderr (one line);
* ``pycnml``, when no other finder can find the real library: the cnml-dlp driver's emulator
  (one line on stderr says which pycnml is used, when the script or its modules import it).

A served module is a module of its own whose namespace holds the public names of the module
it stands for (``from vggjit.lab.layers_1 import *``), which is also what ``vggjit lab init``
writes. Everything is put back when the script ends, so runs in one process are independent.

The script's output, exceptions and exit status are its own: an exception prints its
traceback (from the script's frame on) and gives status 1; ``sys.exit(code)`` gives ``code``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import runpy
import sys
import traceback
from pathlib import Path

from ..errors import InputError
from ..registry import list_drivers
from . import MODULES, engine

PACKAGE = "stu_upload"
#: ``loader_state`` of the spec that serves the emulator as ``pycnml``.
EMULATOR_STATE = "vggjit pycnml emulator"


class _ReExport(importlib.abc.Loader):
    """Loads a module whose namespace is the public names of ``source()``."""

    def __init__(self, source, announce=None):
        self.source = source
        self.announce = announce

    def create_module(self, spec):
        return None  # the default: a fresh module

    def exec_module(self, module):
        target = self.source()
        names = getattr(target, "__all__", None)
        if names is None:
            names = [n for n in vars(target) if not n.startswith("_")]
        module.__dict__.update({n: getattr(target, n) for n in names})
        module.__all__ = list(names)
        module.__doc__ = target.__doc__
        if self.announce is not None:
            self.announce(target)


class LabFinder(importlib.abc.MetaPathFinder):
    """Serves ``stu_upload`` (see the module docstring) and, where it is missing, ``pycnml``.

    own: True (the student's whole package: nothing of stu_upload is served), or a set of
        module names taken from ``student_dir/stu_upload``.
    """

    def __init__(self, student_dir: Path, own=frozenset(), stderr=None):
        self.student_dir = Path(student_dir)
        self.own = own
        self.stderr = stderr
        self.used_pycnml = None  # the module served or found, once imported
        self._busy = False

    def find_spec(self, fullname, path=None, target=None):
        if self._busy:
            return None
        if fullname == "pycnml":
            return self._pycnml_spec(fullname, path, target)
        if self.own is True or not (fullname == PACKAGE or fullname.startswith(PACKAGE + ".")):
            return None
        if fullname == PACKAGE:
            return importlib.machinery.ModuleSpec(
                fullname, _ReExport(lambda: importlib.import_module("vggjit.lab")),
                is_package=True)
        module = fullname[len(PACKAGE) + 1:]
        if module in self.own:
            location = self.student_dir / PACKAGE / f"{module}.py"
            return importlib.util.spec_from_file_location(fullname, location)
        if module in MODULES:
            return importlib.machinery.ModuleSpec(
                fullname, _ReExport(lambda: importlib.import_module(f"vggjit.lab.{module}")))
        return None

    def _pycnml_spec(self, fullname, path, target):
        self._busy = True
        try:
            real = importlib.util.find_spec(fullname)
        finally:
            self._busy = False
        if real is not None:
            if self.used_pycnml is None:
                self.used_pycnml = real
                self._say(f"Cambricon's library ({real.origin or 'built in'})")
            return None
        # Marked, so that the cnml-dlp driver's probe for the real library is not fooled;
        # the emulator itself is fetched only when the module is executed (an import, never
        # a probe: a probe may come from inside driver discovery, under the registry's lock).
        return importlib.machinery.ModuleSpec(
            fullname, _ReExport(engine.emulated_pycnml, announce=self._announce_emulator),
            loader_state=EMULATOR_STATE)

    def _announce_emulator(self, module):
        self.used_pycnml = module
        self._say(engine.describe_pycnml(module))

    def _say(self, what: str) -> None:
        print(f"vggjit lab: pycnml: {what}", file=self.stderr or sys.stderr, flush=True)


def _served_names() -> list[str]:
    return [n for n in sys.modules
            if n == "pycnml" or n == PACKAGE or n.startswith(PACKAGE + ".")]


def run_script(script, args=(), *, own=False, own_modules=(), driver: str | None = None) -> int:
    """Run ``script`` with ``args`` as described in the module docstring; return its status.

    own: use the student's whole ``stu_upload`` (beside the script);
    own_modules: use only these of the student's modules, vggjit's for the rest;
    driver: the fast driver for ``type=1`` layers (None: the default).
    Raises InputError (before anything runs) for a missing script or student module.
    """
    path = Path(script).expanduser()
    if not path.is_file():
        raise InputError(f"{script}: no such script" if not path.exists()
                         else f"{script} is not a file")
    path = path.resolve()
    directory = path.parent
    own_modules = tuple(own_modules)
    for module in own_modules:
        if module not in MODULES:
            raise InputError(f"--own-module {module}: not a course module; the course's "
                             f"modules are {', '.join(MODULES)}")
        if not (directory / PACKAGE / f"{module}.py").is_file():
            raise InputError(f"--own-module {module}: {directory / PACKAGE / module}.py does "
                             f"not exist")
    if own and not (directory / PACKAGE).is_dir():
        raise InputError(f"--own: there is no {PACKAGE}/ beside {path.name} ({directory})")
    if not own and not own_modules and (directory / PACKAGE).is_dir():
        print(f"vggjit lab: stu_upload: vggjit's (not {directory / PACKAGE}; --own runs that)",
              file=sys.stderr, flush=True)
    previous_driver = engine.use_fast_driver(driver)
    list_drivers()  # discovery sees the machine as it is, before pycnml may be served
    finder = LabFinder(directory, True if own else frozenset(own_modules))

    saved_argv, saved_path0, saved_cwd = sys.argv, sys.path[0] if sys.path else None, os.getcwd()
    saved_modules = {n: sys.modules.pop(n) for n in _served_names()}
    sys.argv = [path.name, *args]
    if sys.path:
        sys.path[0] = str(directory)
    else:
        sys.path.append(str(directory))
    sys.meta_path.insert(0, finder)
    os.chdir(directory)
    try:
        # by its name, from its directory: sys.argv[0] is then what `python SCRIPT` gives
        runpy.run_path(path.name, run_name="__main__")
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except KeyboardInterrupt as exc:
        _print_exception(exc, path)
        status = 130
    except BaseException as exc:  # the script's own error: shown as python shows it
        _print_exception(exc, path)
        status = 1
    finally:
        sys.stdout.flush()
        os.chdir(saved_cwd)
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        for name in _served_names():
            del sys.modules[name]
        sys.modules.update(saved_modules)
        sys.argv = saved_argv
        if saved_path0 is not None:
            sys.path[0] = saved_path0
        engine.use_fast_driver(previous_driver)
    return status


def _exit_status(code) -> int:
    """What the interpreter makes of ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _print_exception(exc: BaseException, script: Path) -> None:
    """The traceback from the script's first frame on (the runner's frames are not the
    script's business)."""
    sys.stdout.flush()
    tb = exc.__traceback__
    start = tb
    while start is not None and Path(start.tb_frame.f_code.co_filename).resolve() != script:
        start = start.tb_next
    traceback.print_exception(type(exc), exc, start if start is not None else None,
                              file=sys.stderr)
    sys.stderr.flush()
