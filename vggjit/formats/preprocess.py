"""Input conventions, and their exact fold into vggjit's canonical input.

vggjit feeds every network RGB in 0..255 minus the weight set's mean pixel (MatConvNet's
convention). A network trained on another convention sees, per input channel k,

    x_source[k] = scale[k] * x_canonical[order[k]]      (no offset)

once the mean pixel is chosen as the source's mean expressed in RGB 0..255: torchvision's
(x / 255 - mean) / std is (x - 255 mean) / (255 std), and Caffe's BGR minus the mean is a channel
reversal. conv1_1 then takes the canonical input if its input channels are scaled and reordered:
``w_canonical[:, order[k]] = w_source[:, k] * scale[k]``. There is no offset to fold into the
bias, so the fold is exact at the zero-padded borders too: a zero still means the mean colour in
both conventions. See docs/formats.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..architecture import MEAN_PIXEL
from . import PREPROCESS_CHOICES


@dataclass(frozen=True)
class Convention:
    """name; description; mean_pixel: RGB 0..255 [3]; scale, order: see the module docstring."""

    name: str
    description: str
    mean_pixel: tuple[float, float, float]
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    order: tuple[int, int, int] = (0, 1, 2)


_TV_MEAN, _TV_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

CONVENTIONS = {
    "matconvnet": Convention(
        "matconvnet", "RGB 0..255 minus the mean pixel (MatConvNet; vggjit's own)",
        tuple(float(v) for v in MEAN_PIXEL)),
    "torchvision": Convention(
        "torchvision", "RGB / 255 minus mean (0.485, 0.456, 0.406), divided by std "
                       "(0.229, 0.224, 0.225) (torchvision, timm)",
        tuple(255.0 * m for m in _TV_MEAN), tuple(1.0 / (255.0 * s) for s in _TV_STD)),
    "caffe": Convention(
        "caffe", "BGR 0..255 minus (103.939, 116.779, 123.68) (Caffe, Keras)",
        (123.68, 116.779, 103.939), order=(2, 1, 0)),
    "none": Convention(
        "none", "none: the network takes exactly the graph's own input (RGB 0..255)",
        (0.0, 0.0, 0.0)),
}

#: The choices of --preprocess.
CHOICES = PREPROCESS_CHOICES
assert set(CHOICES) == set(CONVENTIONS)


def fold_first_conv(w: np.ndarray, convention: str) -> np.ndarray:
    """conv1_1's weights [Cout, 3, 3, 3] for the source convention -> for the canonical input.

    Computed in float64, returned as float32.
    """
    c = CONVENTIONS[convention]
    source = np.asarray(w, np.float64)
    folded = np.empty_like(source)
    for k in range(3):
        folded[:, c.order[k]] = source[:, k] * c.scale[k]
    return folded.astype(np.float32)


def mean_pixel(convention: str) -> np.ndarray:
    """The mean pixel (RGB 0..255, float32 [3]) that goes with a folded network."""
    return np.array(CONVENTIONS[convention].mean_pixel, np.float32)
