"""Writers of small MatConvNet-format VGG files, both versions, for tests.

The files have exactly the structure of the official ``imagenet-vgg-verydeep-19.mat``
(docs/equations.md, section 4): a 1 x L cell of 1 x 1 structs with the field order of each
version, conv weights as a 1 x 2 cell {W [H, W, Cin, Cout] float32, b}, fc layers stored as
convolutions (fc6 7x7), the mean image, the classes - only the channel counts are small, so a
file is a few hundred KB and a 224 x 224 forward pass is cheap.

    params = random_params()                       # {name: (w OIHW / [out, in], b)}
    write_matconvnet(path, params, version="old")  # or "new"

:func:`colour_params` builds weights whose answer is known: a uniform red image is class 3, green
class 7, blue class 5 (:data:`COLOUR_CLASSES`). Other test modules (style transfer) may import
this module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.io

from vggjit.network import param_shapes, vgg_layers

#: A VGG19-shaped network with few channels: 2, 2, 4, 4, 4 convs per block.
FIXTURE_BLOCKS = ((4, 2), (4, 2), (8, 4), (8, 4), (8, 4))
#: fc6 takes pool5 (8 x 7 x 7 = 392 features) to 16, fc7 16 -> 16, fc8 16 -> 10 classes.
FIXTURE_CLASSIFIER = (16, 16, 10)
#: VGG16-shaped: 2, 2, 3, 3, 3 convs per block.
FIXTURE16_BLOCKS = ((4, 2), (4, 2), (8, 3), (8, 3), (8, 3))
#: With colour_params: the class a uniform image of each pure colour (R, G, B) gets.
COLOUR_CLASSES = {0: 3, 1: 7, 2: 5}
#: A mean pixel unlike the ImageNet one, so tests see it was read from the file.
FIXTURE_MEAN = np.array([120.5, 110.25, 100.0], np.float32)

Params = dict[str, tuple[np.ndarray, np.ndarray]]


def class_names(count: int) -> tuple[list[str], list[str]]:
    """Made-up WordNet ids and descriptions: n0000000 'class zero', ..."""
    return ([f"n{index:08d}" for index in range(count)],
            [f"fixture class {index}, test" for index in range(count)])


def random_params(blocks=FIXTURE_BLOCKS, classifier=FIXTURE_CLASSIFIER, seed: int = 0) -> Params:
    """He-normal weights and small random biases for every conv and fc layer (float32)."""
    rng = np.random.default_rng(seed)
    params: Params = {}
    for name, (wshape, bshape) in param_shapes(vgg_layers(blocks, classifier)).items():
        fan_in = int(np.prod(wshape[1:]))
        w = rng.standard_normal(wshape).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        b = (rng.standard_normal(bshape) * 0.1).astype(np.float32)
        params[name] = (w, b)
    return params


def colour_params(blocks=FIXTURE_BLOCKS, classifier=FIXTURE_CLASSIFIER, seed: int = 0) -> Params:
    """Weights that classify a uniform image by its dominant colour (see :data:`COLOUR_CLASSES`).

    Channels 0-2 carry the mean-subtracted R, G, B values through every conv (a centre tap of
    1; conv1_1 adds 200 so ReLU keeps them), fc6 unit k averages channel k over the 7 x 7
    positions of pool5 *in C, H, W order*, fc7 subtracts the 200 again and fc8 sends unit k to
    its class. Every other channel is random and fc6 ignores it, so the answer depends on the
    conv weights' layout, the fc6 flatten order and the mean pixel, not on luck.
    """
    params = random_params(blocks, classifier, seed)
    n_classes = classifier[-1]
    assert max(COLOUR_CLASSES.values()) < n_classes and all(c >= 3 for c, _ in blocks)
    first = True
    for name, (w, b) in params.items():
        w, b = w.copy(), b.copy()
        if name.startswith("conv"):
            w[:3] = 0.0
            for k in range(3):
                w[k, k, 1, 1] = 1.0
            b[:3] = 200.0 if first else 0.0
            first = False
        elif name == "fc6":
            channels = w.shape[1] // 49
            w[:3] = 0.0
            for k in range(3):
                w[k, k * 49:(k + 1) * 49] = 1.0 / 49.0
            b[:3] = 0.0
            assert channels >= 3
        elif name == "fc7":
            w[:3] = 0.0
            for k in range(3):
                w[k, k] = 1.0
            b[:3] = -200.0
        elif name == "fc8":
            w[:] = 0.0
            b[:] = 0.0
            for k, cls in COLOUR_CLASSES.items():
                w[cls, k] = 0.05
        params[name] = (w, b)
    return params


def uniform_image(rgb, size: int = 224):
    """A PIL image of one colour."""
    from PIL import Image

    return Image.new("RGB", (size, size), tuple(int(v) for v in rgb))


# -- the .mat writer -------------------------------------------------------------------------

def _struct(fields: Mapping[str, object]) -> np.ndarray:
    """A 1 x 1 MATLAB struct with exactly this field order."""
    s = np.empty((1, 1), dtype=[(name, object) for name in fields])
    s[0, 0] = tuple(fields.values())
    return s


def _cell(items: Sequence[object]) -> np.ndarray:
    """A 1 x n MATLAB cell."""
    c = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        c[0, i] = item
    return c


def _row(*values) -> np.ndarray:
    return np.array([values], dtype=np.float64)


def stored_weight(w: np.ndarray, fc6: bool = False) -> np.ndarray:
    """OIHW (or fc [out, in]) -> MatConvNet [H, W, Cin, Cout]; fc6 becomes 7 x 7 x C x out."""
    if w.ndim == 2:
        k = 7 if fc6 else 1
        w = w.reshape(w.shape[0], w.shape[1] // (k * k), k, k)
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def layer_fields(layer, params: Params, version: str, bias_layout: str = "row",
                 first_fc: str = "fc6") -> dict[str, object]:
    """The struct fields of one layer, in the order of the given file version."""
    if layer.kind in ("conv", "fc"):
        w, b = params[layer.name]
        stored = stored_weight(w, fc6=layer.name == first_fc)
        bias = b.reshape(1, -1) if bias_layout == "row" else b.reshape(-1, 1)
        weights = _cell([stored.astype(np.float32), bias.astype(np.float32)])
        pad = _row(1, 1, 1, 1) if layer.kind == "conv" else _row(0, 0, 0, 0)
        if version == "old":
            return {"weights": weights, "pad": pad, "type": "conv", "name": layer.name,
                    "stride": _row(1, 1)}
        return {"name": layer.name, "type": "conv", "weights": weights,
                "size": _row(*stored.shape), "pad": pad, "stride": _row(1, 1),
                "precious": np.array([[False]]), "dilate": _row(1, 1),
                "opts": np.empty((1, 0), dtype=object)}
    if layer.kind == "relu":
        if version == "old":
            return {"type": "relu", "name": layer.name}
        return {"name": layer.name, "type": "relu", "leak": 0.0,
                "precious": np.array([[False]])}
    if layer.kind == "pool":
        if version == "old":
            return {"name": layer.name, "stride": _row(2, 2), "pad": _row(0, 0, 0, 0),
                    "type": "pool", "method": "max", "pool": _row(2, 2)}
        return {"name": layer.name, "type": "pool", "method": "max", "pool": _row(2, 2),
                "stride": _row(2, 2), "pad": _row(0, 1, 0, 1), "precious": np.array([[False]]),
                "opts": np.empty((1, 0), dtype=object)}
    if layer.kind == "softmax":
        if version == "old":
            return {"type": "softmax", "name": layer.name}
        return {"name": layer.name, "type": "softmax", "precious": np.array([[False]])}
    raise AssertionError(layer.kind)


def write_matconvnet(path, params: Params | None = None, *, version: str = "old",
                     blocks=FIXTURE_BLOCKS, classifier=FIXTURE_CLASSIFIER,
                     mean_pixel=FIXTURE_MEAN, classes: bool | tuple = True,
                     bias_layout: str = "row", average_image: str = "full",
                     edit: Callable[[str, dict], dict | None] | None = None,
                     extra: Mapping[str, object] | None = None, drop: Sequence[str] = ()) -> Path:
    """Write a MatConvNet VGG file of the older ("old", beta16) or newer ("new") version.

    params: {name: (w, b)} in vggjit's layout (default: :func:`random_params`).
    classes: True (made-up names, :func:`class_names`), False (no classes in the file) or
        (wnids, descriptions).
    bias_layout: "row" (1 x C) or "col" (C x 1).
    average_image: "full" (224 x 224 x 3 image of the mean pixel), "pixel" (1 x 1 x 3) or
        "vector" (3 values).
    edit: called as edit(layer name, fields) for every layer; may change the fields dict in
        place or return a new one (to write broken files).
    extra: more top-level variables; drop: top-level variables to leave out.
    """
    if params is None:
        params = random_params(blocks, classifier)
    layers = vgg_layers(blocks, classifier)
    cells = []
    for layer in layers:
        fields = layer_fields(layer, params, version, bias_layout)
        if edit is not None:
            fields = edit(layer.name, fields) or fields
        cells.append(_struct(fields))
    mean = np.asarray(mean_pixel, np.float32)
    if average_image == "full":
        avg = np.broadcast_to(mean, (224, 224, 3)).astype(np.float32)
    elif average_image == "pixel":
        avg = mean.reshape(1, 1, 3)
    elif average_image == "vector":
        avg = mean.reshape(1, 3)
    else:
        raise ValueError(average_image)
    if classes is True:
        wnids, descriptions = class_names(classifier[-1])
    elif classes:
        wnids, descriptions = classes
    data: dict[str, object] = {"layers": _cell(cells)}
    class_struct = (_struct({"name": _cell(wnids), "description": _cell(descriptions)})
                    if classes else None)
    if version == "old":
        if class_struct is not None:
            data["classes"] = class_struct
        data["normalization"] = _struct({
            "averageImage": avg, "keepAspect": np.array([[True]]), "border": _row(32, 32),
            "imageSize": _row(224, 224, 3), "interpolation": "bilinear"})
    elif version == "new":
        meta = {"inputs": _struct({"name": "input", "size": _row(224, 224, 3, 10)})}
        if class_struct is not None:
            meta["classes"] = class_struct
        meta["normalization"] = _struct({
            "imageSize": _row(224, 224, 3), "averageImage": avg,
            "keepAspect": np.array([[True]]), "border": _row(32, 32), "cropSize": 0.875,
            "interpolation": "bilinear"})
        data["meta"] = _struct(meta)
    else:
        raise ValueError(version)
    data.update(extra or {})
    for key in drop:
        data.pop(key, None)
    path = Path(path)
    scipy.io.savemat(path, data, do_compression=False, oned_as="row")
    return path
