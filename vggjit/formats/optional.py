"""The optional packages some readers need, with a one-line error naming the extra."""
from __future__ import annotations

from importlib import import_module
from types import ModuleType

from ..errors import WeightFileError

#: The extra that installs every optional reader package.
EXTRA_HINT = 'pip install "vggjit[formats]"'


def require(module: str, path, what: str) -> ModuleType:
    """Import ``module`` (e.g. "onnx") or say, in one line, how to get it.

    path: the file being read; what: its kind, for the message ("an ONNX file").
    """
    try:
        return import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise WeightFileError(f"{path}: reading {what} needs the {package!r} package: "
                              f"{EXTRA_HINT}") from None
