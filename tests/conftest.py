"""Suite-wide set-up: the documented example plugin is installed as a third-party driver for
the whole session, so the conformance suite runs it like any bundled driver; the numba-cpu
kernels are compiled (or loaded from their cache) once, before the first test; the ``plugin``
fixture installs more plugins for one test."""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import pytest

# Keep the user's real cache untouched and make runs independent of their environment.
_HOME = Path(tempfile.mkdtemp(prefix="vggjit-test-home-"))
os.environ["VGGJIT_HOME"] = str(_HOME)
os.environ.pop("VGGJIT_DRIVER", None)
os.environ.pop("VGGJIT_WEIGHTS", None)
# find_weights also looks in the torch hub, Hugging Face and Keras caches: make them empty.
for _variable in ("TORCH_HOME", "HF_HOME", "HF_HUB_CACHE", "KERAS_HOME"):
    os.environ[_variable] = str(_HOME / "other-caches" / _variable.lower())
os.environ.setdefault("MPLBACKEND", "Agg")

from plugin_tools import (activate, deactivate, install_example_plugin,  # noqa: E402
                          write_distribution)

from vggjit import get_driver  # noqa: E402
from vggjit.registry import PluginWarning, list_drivers  # noqa: E402

install_example_plugin(_HOME / "site")


def available_drivers() -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        return [r.name for r in list_drivers() if r.available]


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels():
    """Every numba-cpu kernel compiled before the first test, so that `pytest --durations`
    shows what each test costs, not which test happened to compile a kernel first (a cold
    cache costs this fixture about half a minute; a warm one about a second)."""
    get_driver("numba-cpu").warmup()


@pytest.fixture
def vggjit_home() -> Path:
    return _HOME


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """The test's own empty VGGJIT_HOME, and no $VGGJIT_WEIGHTS or $VGGJIT_DRIVER."""
    monkeypatch.setenv("VGGJIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VGGJIT_WEIGHTS", raising=False)
    monkeypatch.delenv("VGGJIT_DRIVER", raising=False)


@pytest.fixture
def plugin(tmp_path):
    """Install plugin modules as distributions on sys.path for one test."""
    made = []

    def install(dist, source, driver_name=None):
        root = write_distribution(tmp_path / dist, dist, {driver_name or dist: dist},
                                  modules={dist: source})
        made.append((root, dist))
        activate(root)

    yield install
    for root, dist in made:
        deactivate(root, dist)
