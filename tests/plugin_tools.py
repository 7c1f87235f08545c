"""Make a driver plugin importable and discoverable the way pip would: a package plus a
``.dist-info`` with ``entry_points.txt``, in a directory put on ``sys.path``."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from vggjit import registry

EXAMPLE_PLUGIN = Path(__file__).resolve().parents[1] / "docs" / "examples" / "example_driver"


def write_distribution(root: Path, dist: str, entry_points: dict[str, str],
                       modules: dict[str, str] | None = None, package: Path | None = None) -> Path:
    """Create ``root/<dist>-0.1.dist-info`` registering ``entry_points`` (name -> module)
    in the ``vggjit.drivers`` group; ``modules`` are written as ``<name>.py`` files and
    ``package`` (a directory) is copied in. Returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[vggjit.drivers]\n{lines}")
    for name, source in (modules or {}).items():
        (root / f"{name}.py").write_text(source)
    if package is not None:
        shutil.copytree(package, root / package.name, dirs_exist_ok=True)
    return root


def activate(root: Path) -> None:
    """Put ``root`` on sys.path and make the registry look again."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    registry.reload()


def deactivate(root: Path, *modules: str) -> None:
    while str(root) in sys.path:
        sys.path.remove(str(root))
    for name in modules:
        sys.modules.pop(name, None)
    registry.reload()


def install_example_plugin(root: Path) -> Path:
    """Install docs/examples/example_driver as distribution ``vggjit-example-driver``."""
    write_distribution(root, "vggjit_example_driver",
                       {"example-numpy": "vggjit_example_driver"},
                       package=EXAMPLE_PLUGIN / "vggjit_example_driver")
    activate(root)
    return root


#: A well-behaved third-party plugin: one available driver and one missing its library.
GOOD_PLUGIN = '''
from vggjit import DriverRecord, hookimpl, FORWARD
from vggjit_naive.driver import NaiveDriver

class EchoDriver(NaiveDriver):
    name = "thirdparty-echo"
    capabilities = frozenset({FORWARD})

@hookimpl
def vggjit_drivers():
    yield DriverRecord(name="thirdparty-echo", description="test plugin", priority=-5,
                       factory=EchoDriver, capabilities=frozenset({FORWARD}))
    yield DriverRecord(name="thirdparty-missing", description="needs a library", priority=500,
                       factory=EchoDriver, unavailable_reason="libfoo is not installed")
'''
