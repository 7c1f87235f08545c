"""The ``numba-cpu`` driver: img2col + sgemm convolutions and parallel Numba kernels.

The fast default (priority 100). Registered through the ``vggjit.drivers`` entry point like any
third-party driver. Discovery (this module) only looks up package metadata; Numba itself is
imported when the driver is built, so ``import vggjit`` stays fast and a missing or broken
Numba makes the driver unavailable with a reason instead of breaking anything.
"""
from __future__ import annotations

import importlib.metadata

from vggjit.contract import BACKWARD, FORWARD, DriverRecord, hookimpl
from vggjit.errors import DriverUnavailableError

NAME = "numba-cpu"
MIN_NUMBA = (0, 59)

#: Option sets that must give the default's results (vggjit.contract.DriverRecord.variants):
#: the first seven force one convolution path wherever its geometry allows, so the conformance
#: suite checks every path on its small shapes (the default dispatch reaches Winograd, the Cout
#: split and dw by rows only on large ones); scipy-blas runs every GEMM on SciPy's BLAS, the
#: fallback when NumPy's cannot be called directly (blas.py).
VARIANTS = {
    "img2col": {"conv_path": "img2col", "dw_path": "channels"},
    "shifted": {"conv_path": "shifted", "dw_path": "rows"},
    "cout-split": {"conv_path": "cout-split", "dw_path": "rows"},
    "winograd": {"conv_path": "winograd", "dw_path": "channels"},
    "winograd-split": {"conv_path": "winograd-split", "dw_path": "rows"},
    "winograd4": {"conv_path": "winograd4", "dw_path": "rows"},
    "winograd4-split": {"conv_path": "winograd4-split", "dw_path": "channels"},
    "scipy-blas": {"blas": "scipy"},
}


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def unavailable_reason() -> str | None:
    """Why this driver cannot run here (cheap: package metadata only), or None."""
    for package in ("numba", "scipy"):
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return f"{package} is not installed (pip install {package})"
        if package == "numba" and _version_tuple(version) < MIN_NUMBA:
            return (f"numba {version} is too old; numba-cpu needs "
                    f"{'.'.join(map(str, MIN_NUMBA))} or newer")
    return None


def create(**options):
    """Factory: build the driver, turning an import failure of Numba into a clear error."""
    try:
        from .driver import NumbaCpuDriver
    except ImportError as exc:
        raise DriverUnavailableError(
            f"driver {NAME!r} cannot load Numba/SciPy here: {exc}") from exc
    return NumbaCpuDriver(**options)


@hookimpl
def vggjit_drivers():
    return [DriverRecord(
        name=NAME,
        description="img2col + sgemm convolutions and parallel Numba kernels (the fast default)",
        priority=100,
        factory=create,
        capabilities=frozenset({FORWARD, BACKWARD}),
        unavailable_reason=unavailable_reason(),
        variants=VARIANTS,
    )]
