"""Helpers for the style-transfer tests: tiny networks, a float64 driver, small images.

``Float64Driver`` computes every op VGG uses (3x3 stride-1 pad-1 convolution, ReLU, 2x2 pooling,
Gram) in float64 with vectorised numpy, skipping the contract's float32 casts, so that finite
differences of the total loss are accurate to ~1e-9 instead of float32's ~1e-4. It is itself
checked against the naive reference driver in tests/test_losses.py.
"""
from __future__ import annotations

import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vggjit.contract import Driver
from vggjit.network import Network
from vggjit.registry import PluginWarning, list_drivers

TINY_BLOCKS = ((2, 1), (3, 1), (4, 1), (4, 2), (4, 1))
TINY_CLASSIFIER = (8, 8, 4)
# The lab's layers all exist in the tiny network (block 4 has two convs for relu4_2).
TINY_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
TINY_CONTENT = ("relu4_1",)


class Float64Driver(Driver):
    name = "float64-test"

    def conv2d(self, x, w, b, stride=1, pad=0):
        assert stride == 1 and pad == 1 and w.shape[2:] == (3, 3)
        xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
        windows = sliding_window_view(xp, (3, 3), axis=(2, 3))  # [N, C, H, W, 3, 3]
        return (np.einsum("nchwkl,ockl->nohw", windows, np.asarray(w, np.float64))
                + np.asarray(b, np.float64)[None, :, None, None])

    def conv2d_backward(self, dy, x, w, stride=1, pad=0, *, need_dx=True, need_dw=True):
        assert stride == 1 and pad == 1 and not need_dw
        dyp = np.pad(np.asarray(dy, np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
        windows = sliding_window_view(dyp, (3, 3), axis=(2, 3))  # [N, O, H, W, 3, 3]
        flipped = np.asarray(w, np.float64)[:, :, ::-1, ::-1]
        return np.einsum("nohwkl,ockl->nchw", windows, flipped), None, None

    def relu(self, x):
        return np.maximum(np.asarray(x, np.float64), 0.0)

    def relu_backward(self, dy, x):
        return np.where(np.asarray(x) > 0, dy, 0.0)

    @staticmethod
    def _windows(x):
        n, c, h, w = x.shape
        ho, wo = h // 2, w // 2
        return x[:, :, :2 * ho, :2 * wo].reshape(n, c, ho, 2, wo, 2).transpose(0, 1, 2, 4, 3, 5) \
            .reshape(n, c, ho, wo, 4)

    def max_pool2d(self, x, size=2, stride=2):
        windows = self._windows(np.asarray(x, np.float64))
        switches = np.argmax(windows, axis=-1)  # first maximum in row-major window order
        return np.take_along_axis(windows, switches[..., None], -1)[..., 0], switches

    def max_pool2d_backward(self, dy, switches, x_shape):
        n, c, h, w = x_shape
        ho, wo = dy.shape[2:]
        windows = np.zeros((n, c, ho, wo, 4))
        np.put_along_axis(windows, switches[..., None], np.asarray(dy, np.float64)[..., None], -1)
        dx = np.zeros(x_shape)
        dx[:, :, :2 * ho, :2 * wo] = windows.reshape(n, c, ho, wo, 2, 2).transpose(
            0, 1, 2, 4, 3, 5).reshape(n, c, 2 * ho, 2 * wo)
        return dx

    def avg_pool2d(self, x, size=2, stride=2):
        return self._windows(np.asarray(x, np.float64)).mean(axis=-1)

    def avg_pool2d_backward(self, dy, x_shape, size=2, stride=2):
        n, c, h, w = x_shape
        ho, wo = dy.shape[2:]
        dx = np.zeros(x_shape)
        dx[:, :, :2 * ho, :2 * wo] = np.repeat(np.repeat(np.asarray(dy, np.float64) / 4, 2, 2), 2, 3)
        return dx

    def gram(self, x):
        x = np.asarray(x, np.float64)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        return flat @ flat.transpose(0, 2, 1)


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
