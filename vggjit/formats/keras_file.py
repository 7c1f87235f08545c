"""Keras HDF5 weight files (``vgg19_weights_tf_dim_ordering_tf_kernels.h5``, the ``_notop``
versions, VGG16's, and whole models saved with ``model.save("x.h5")``), read with ``h5py``.

Layout: the root (or its ``model_weights`` group, for a whole model) lists the layers in order
in its ``layer_names`` attribute; each layer's group lists its arrays in ``weight_names``
(kernel, then bias). Conv kernels are ``[3, 3, Cin, Cout]`` (cross-correlation, as everywhere
else), dense kernels ``[in, out]``; ``Flatten`` reads the NHWC pool5 map, so fc1 (fc6) sees
H, W, C order. The convolutions are named ``block<B>_conv<I>``; the dense layers after them are
VGG's classifier when they have its shape (three, the first two equally wide: ``fc1``,
``fc2``, ``predictions``, 4096, 4096, 1000), otherwise a model's own head, which is left out.
Keras VGG expects Caffe preprocessing.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import WeightFileError
from .layout import HWC, ParsedVGG, Tensor, is_vgg_classifier
from .optional import require

VERSION = "keras-hdf5"
_CONV = re.compile(r"^block(\d+)_conv(\d+)$")


def read_keras(path) -> ParsedVGG:
    path = Path(path)
    h5py = require("h5py", path, "a Keras HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            return _parse(path, f)
    except WeightFileError:
        raise
    except Exception as exc:  # h5py reports damage as OSError, KeyError, ...
        raise WeightFileError(f"{path}: cannot read this HDF5 file; it is truncated or corrupt "
                              f"({type(exc).__name__}: {exc})") from None


def _names(attr) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(attr).ravel()]


def _parse(path: Path, f) -> ParsedVGG:
    root = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in root.attrs:
        hint = (" (a Keras 3 .weights.h5 file: save with model.save('x.h5') or use the official "
                "weight files)" if "layers" in root else "")
        raise WeightFileError(f"{path}: an HDF5 file without Keras's layer_names attribute; not a "
                              f"Keras weight file{hint}")
    layers = []  # (layer name, [arrays with their names])
    for name in _names(root.attrs["layer_names"]):
        group = root[name]
        weights = [Tensor(f"{name}/{w}", np.asarray(group[w]))
                   for w in _names(group.attrs.get("weight_names", []))]
        if weights:
            layers.append((name, weights))
    blocks: dict[int, list[tuple[Tensor, Tensor]]] = {}
    head = []
    for name, weights in layers:
        m = _CONV.match(name)
        if m and not head:
            kernel, bias = _pair(path, name, weights)
            if kernel.array.ndim != 4:
                raise WeightFileError(f"{path}: layer {name}: kernel of shape "
                                      f"{list(kernel.array.shape)}, expected [3, 3, Cin, Cout]")
            oihw = Tensor(kernel.name, kernel.array.transpose(3, 2, 0, 1))
            blocks.setdefault(int(m.group(1)), []).append((oihw, bias))
        else:
            head.append((name, weights))
    if not blocks:
        raise WeightFileError(f"{path}: no VGG convolutions (layers named block<B>_conv<I>) among "
                              f"the layers {', '.join(n for n, _ in layers[:6]) or 'none'}")
    if sorted(blocks) != list(range(1, len(blocks) + 1)):
        raise WeightFileError(f"{path}: convolution blocks {sorted(blocks)}, expected 1 to "
                              f"{len(blocks)}")
    notes = []
    classifier = _classifier(path, head, notes)
    return ParsedVGG([blocks[b] for b in sorted(blocks)], classifier, HWC, "caffe", VERSION,
                     notes)


def _pair(path, name, weights) -> tuple[Tensor, Tensor]:
    if len(weights) != 2:
        raise WeightFileError(f"{path}: layer {name} has {len(weights)} arrays, expected a kernel "
                              f"and a bias")
    return weights[0], weights[1]


def _classifier(path, head, notes: list[str]) -> list[tuple[Tensor, Tensor]]:
    if not head:
        notes.append("no classifier in the file (a _notop file): the convolution stack only")
        return []
    dense = [(name, weights) for name, weights in head
             if len(weights) == 2 and weights[0].array.ndim == 2]
    widths = tuple(weights[0].array.shape[1] for _, weights in dense)
    if len(dense) == len(head) and is_vgg_classifier(widths):
        return [(Tensor(k.name, k.array.T), b) for k, b in (_pair(path, n, w) for n, w in dense)]
    left_out = ", ".join(f"{name} {'x'.join(map(str, weights[0].array.shape))}"
                         for name, weights in head)
    notes.append(f"left out the model's own head after pool5 ({left_out}): not VGG's ImageNet "
                 f"classifier (fc6, fc7, fc8: 4096, 4096, 1000); the convolution stack only")
    return []
