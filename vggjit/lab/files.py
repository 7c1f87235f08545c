"""The lab's files: the MatConvNet weight file the scripts name, and their images.

Weights are read with vggjit's reader (vggjit.weights: either MatConvNet version or a
converted .npz, cached after the first load) and handed out in the course's layouts. A
missing file is a :class:`MissingWeightFile` that says how to get it. Images follow the
course: Pillow's bilinear resize of the whole 8-bit RGB image (no crop), the mean pixel
subtracted, NCHW float64.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import WeightFileError
from ..images import deprocess, load_image, resize_image, save_image, to_array
from ..network import vgg_layers
from ..weights import WeightSet, default_weights_path, find_weights, how_to_get_weights, \
    load_weights


class MissingWeightFile(WeightFileError, FileNotFoundError):
    """The weight file a lab script names does not exist."""


def read_weights(param_path=None) -> WeightSet:
    """The weights at ``param_path`` (relative to the working directory, as the scripts mean
    it); None: vggjit's own (``$VGGJIT_WEIGHTS``, else the cache directory)."""
    if param_path is None:
        return load_weights(find_weights())
    path = Path(param_path).expanduser()
    if not path.exists():
        where = Path(os.getcwd()) / path
        raise MissingWeightFile(
            f"{param_path}: no such weight file ({where.resolve()}); the script expects "
            f"MatConvNet's imagenet-vgg-verydeep-19.mat there.\n{how_to_get_weights()}\n"
            f"  Then put the file where the script looks, e.g.\n"
            f"      ln -s {default_weights_path()} {where.resolve()}")
    return load_weights(path)


def load_model_weights(param_path) -> tuple[WeightSet, np.ndarray]:
    """What the course's ``load_model`` says and reads: the weights at ``param_path`` and their
    mean pixel (float64 RGB [3]), each announced as the course prints it."""
    print(f"Loading parameters from file {param_path}")
    ws = read_weights(param_path)
    mean = np.asarray(ws.mean_pixel, np.float64)
    print(f"Get image mean: {mean}")
    return ws, mean


def layer_table(param_path=None, weights: WeightSet | None = None):
    """The network's layers: the weight file's when it is there (so smaller VGG-shaped files
    work too), else VGG19's (a network to initialise at random)."""
    if weights is not None:
        return weights.layers
    if param_path is not None and Path(param_path).expanduser().exists():
        return read_weights(param_path).layers
    return vgg_layers()


def course_conv_weight(w: np.ndarray) -> np.ndarray:
    """vggjit's conv weight [Cout, Cin, K, K] -> the course's [Cin, K, K, Cout] (a view)."""
    return np.asarray(w).transpose(1, 2, 3, 0)


def fc_columns_hwc(w: np.ndarray, channels: int) -> np.ndarray:
    """fc weight [out, C*H*W] (columns in C, H, W order, vggjit's) -> [out, H*W*C], the order
    of MatConvNet's features and of the DLP's flatten; fc7 and fc8 (H = W = 1) are unchanged."""
    out, features = w.shape
    side = int(round((features // channels) ** 0.5))
    return np.ascontiguousarray(
        np.asarray(w).reshape(out, channels, side, side).transpose(0, 2, 3, 1).reshape(out, -1))


def read_image(path, height: int, width: int, mean_pixel) -> tuple[np.ndarray, tuple]:
    """(image [1, 3, height, width] float64 minus the mean pixel, the file's shape (H, W, 3))."""
    image = load_image(path)
    shape = (image.height, image.width, 3)
    x = to_array(resize_image(image, "stretch", (int(height), int(width))), mean_pixel)
    return x.astype(np.float64), shape


def write_image(x, shape, path, mean_pixel) -> Path:
    """Add the mean back, clip to 0..255, resize to ``shape`` (H, W, ...) and write ``path``
    (atomically; the lab's outputs are replaced on every run)."""
    image = deprocess(np.asarray(x, np.float32), mean_pixel)
    image = resize_image(image, "stretch", (int(shape[0]), int(shape[1])))
    return save_image(image, path, overwrite=True)
