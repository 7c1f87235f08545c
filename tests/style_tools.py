"""Helpers for the style-transfer tests: tiny networks, a float64 driver, small images.

``Float64Driver`` (tests/float64_driver.py) makes a network a float64 function, so finite
differences of the total loss are accurate to ~1e-9 instead of float32's ~1e-4.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image
from float64_driver import Float64Driver  # noqa: F401  (re-exported for the style tests)

from vggjit.losses import StyleObjective
from vggjit.network import Network
from vggjit.registry import PluginWarning, list_drivers
from vggjit.style import transfer as transfer_mod

TINY_BLOCKS = ((2, 1), (3, 1), (4, 1), (4, 2), (4, 1))
TINY_CLASSIFIER = (8, 8, 4)
# The lab's layers all exist in the tiny network (block 4 has two convs for relu4_2).
TINY_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
TINY_CONTENT = ("relu4_1",)


def fast_driver_name() -> str:
    """numba-cpu when it is installed and available, else the naive reference driver."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        available = {r.name for r in list_drivers() if r.available}
    return "numba-cpu" if "numba-cpu" in available else "naive"


def tiny_net(driver=None, pooling: str = "max", seed: int = 0) -> Network:
    return Network.random(seed, driver if driver is not None else fast_driver_name(),
                          pooling=pooling, blocks=TINY_BLOCKS, classifier=TINY_CLASSIFIER)


def picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, colourful uint8 RGB test image [H, W, 3] (gradients plus a disc)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    phase = rng.uniform(0, 2 * np.pi, 3)
    rgb = np.stack([127 + 100 * np.sin(6 * xx + 3 * yy + p) for p in phase], axis=-1)
    disc = (xx - 0.5) ** 2 + (yy - 0.4) ** 2 < 0.05
    rgb[disc] = rng.uniform(0, 255, 3)
    return np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def tiny(monkeypatch):
    """Every network the CLI builds is a tiny random one (records how often it was built)."""
    built = []

    def build(settings, driver=None):
        built.append(settings)
        return tiny_net(pooling=settings.pooling)
    monkeypatch.setattr(transfer_mod, "build_network", build)
    return built


@pytest.fixture
def files(tmp_path):
    """A small content and style image written to tmp_path: (content.png, style.jpg)."""
    content, style = tmp_path / "content.png", tmp_path / "style.jpg"
    Image.fromarray(picture(36, 40, seed=1)).save(content)
    Image.fromarray(picture(30, 30, seed=2)).save(style)
    return content, style


class Interrupt:
    """Wrap StyleObjective.__call__ to raise KeyboardInterrupt at the n-th evaluation."""

    def __init__(self, monkeypatch, at: int):
        self.calls, self.at = 0, at
        original = StyleObjective.__call__

        def call(obj, x, need_grad=True):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
            return original(obj, x, need_grad)
        monkeypatch.setattr(StyleObjective, "__call__", call)
