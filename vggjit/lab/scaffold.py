"""``vggjit lab init DIR``: a ``stu_upload/`` package whose modules are vggjit.lab's.

Each written module is one import line, ``from vggjit.lab.<module> import *``, so
``python main_exp_3_1.py`` in DIR runs on vggjit exactly as ``vggjit lab run`` would (the
fast driver is then ``$VGGJIT_DRIVER`` or the best available; ``pycnml`` is the real library
or, without one, the cnml-dlp driver's emulator). A student's file is never replaced without
``overwrite``; every file is written atomically.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError, OutputExistsError
from ..fileio import atomic_write
from . import MODULES
from .runner import PACKAGE

INIT_TEXT = '''"""The lab's student package, served by vggjit (written by `vggjit lab init`).

Each module re-exports vggjit.lab's module of the same name: the course's interface on
vggjit's drivers. Replace a module with your own to run yours; `vggjit lab --help` and
docs/lab.md tell how to compare the two layer by layer.
"""
'''

MODULE_TEXT = '''"""stu_upload.{module}: vggjit's (written by `vggjit lab init`; replace it with your own)."""
from vggjit.lab.{module} import *  # noqa: F401,F403
'''


def package_files() -> dict[str, str]:
    """{file name: text} of the package."""
    files = {"__init__.py": INIT_TEXT}
    files.update({f"{m}.py": MODULE_TEXT.format(module=m) for m in MODULES})
    return files


def write_package(directory, overwrite: bool = False) -> list[Path]:
    """Write ``directory/stu_upload/`` (see the module docstring); return the files written.

    Raises InputError if ``directory`` is not a directory, OutputExistsError naming every
    file that exists (before writing anything) unless ``overwrite``.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise InputError(f"{directory}: no such directory (give the experiment's directory, "
                         f"the one with main_exp_3_*.py)")
    target = directory / PACKAGE
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} exists and is not a directory")
    files = package_files()
    existing = [name for name in files if (target / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{target} already has {', '.join(existing)}: a student's own files are never "
            f"replaced; pass --overwrite to replace them with vggjit's, or run them as they are "
            f"with `vggjit lab run --own SCRIPT`")
    written = []
    for name, text in files.items():
        with atomic_write(target / name, "w", overwrite=True) as handle:
            handle.write(text)
        written.append(target / name)
    return written
