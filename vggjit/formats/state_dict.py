"""torchvision's and timm's VGG parameter names -> the VGG layers (:class:`.layout.ParsedVGG`).

torchvision: ``features.<i>.weight`` / ``.bias`` for the convolutions, where ``i`` counts the
modules of the feature stack (conv, ReLU, conv, ReLU, max-pool, ...): consecutive convolutions
two apart share a block, three apart have a pooling between them. ``classifier.0`` (fc6, on
pool5 flattened C, H, W), ``classifier.3`` (fc7), ``classifier.6`` (fc8).

timm (``vgg19.tv_in1k`` etc.): the same ``features``; ``pre_logits.fc1`` is fc6 as a 7x7
convolution ``[4096, 512, 7, 7]`` (flattens to C, H, W), ``pre_logits.fc2`` fc7 as a 1x1
convolution, ``head.fc`` fc8.

A bare feature stack (``<i>.weight``, as ``vgg.features.state_dict()`` saves it) loads as a
convolution stack; ``module.`` prefixes (DataParallel) are dropped; a checkpoint dict holding
the state dict under ``state_dict`` or ``model`` is opened.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import WeightFileError
from .layout import CHW, ParsedVGG, Tensor

_FEATURE = re.compile(r"^(?:features\.)?(\d+)\.(weight|bias)$")
_TORCHVISION_FC = re.compile(r"^classifier\.(\d+)\.(weight|bias)$")
_TIMM_FC = ("pre_logits.fc1", "pre_logits.fc2", "head.fc")
_WRAPPERS = ("state_dict", "model", "model_state_dict")


def tensors_of(obj, path) -> dict[str, np.ndarray]:
    """The {name: array} state dict inside an unpickled checkpoint."""
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise WeightFileError(f"{path}: the checkpoint holds a {type(obj).__name__}, not a state "
                              f"dict of tensors (save the model's state_dict())")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not tensors:
        raise WeightFileError(f"{path}: the checkpoint holds no tensors (keys: "
                              f"{_some(list(obj))})")
    if all(name.startswith("module.") for name in tensors):
        tensors = {name[len("module."):]: arr for name, arr in tensors.items()}
    return tensors


def parse_state_dict(path, tensors: dict[str, np.ndarray], version: str) -> ParsedVGG:
    """The VGG layers of a torchvision- or timm-named state dict (see the module docstring)."""
    if any(name.endswith("running_mean") for name in tensors):
        raise WeightFileError(f"{path}: a batch-normalised VGG (vgg16_bn / vgg19_bn); vggjit runs "
                              f"the plain VGG16 and VGG19")
    features: dict[int, dict[str, Tensor]] = {}
    used = set()
    for name, arr in tensors.items():
        if m := _FEATURE.match(name):
            features.setdefault(int(m.group(1)), {})[m.group(2)] = Tensor(name, arr)
            used.add(name)
    if not features:
        raise WeightFileError(
            f"{path}: no VGG convolution tensors (features.<i>.weight, as torchvision and timm "
            f"name them) among {len(tensors)} tensors: {_some(list(tensors))}")
    blocks: list[list[tuple[Tensor, Tensor]]] = []
    previous = None
    for index in sorted(features):
        pair = features[index]
        if "weight" not in pair or "bias" not in pair:
            missing = "bias" if "weight" in pair else "weight"
            raise WeightFileError(f"{path}: features.{index} has no {missing}")
        if pair["weight"].array.ndim != 4:
            raise WeightFileError(f"{path}: {pair['weight'].name} has shape "
                                  f"{list(pair['weight'].array.shape)}, expected a convolution "
                                  f"[Cout, Cin, 3, 3]")
        gap = None if previous is None else index - previous
        if gap not in (None, 2, 3):
            raise WeightFileError(f"{path}: features.{previous} and features.{index} are {gap} "
                                  f"modules apart; a VGG feature stack has convolutions 2 apart "
                                  f"in a block and 3 apart across a pooling")
        if gap in (None, 3):
            blocks.append([])
        blocks[-1].append((pair["weight"], pair["bias"]))
        previous = index
    classifier, naming = _classifier(path, tensors, used)
    notes = [f"parameter names: {naming}"]
    ignored = [name for name in tensors if name not in used]
    if ignored:
        notes.append(f"ignored {len(ignored)} other tensor(s): {_some(ignored)}")
    if not classifier:
        notes.append("no classifier in the file: the convolution stack only (style transfer "
                     "works, classification does not)")
    return ParsedVGG(blocks, classifier, CHW, "torchvision", version, notes)


def _classifier(path, tensors, used) -> tuple[list[tuple[Tensor, Tensor]], str]:
    if all(f"{name}.weight" in tensors for name in _TIMM_FC):
        layers = []
        for name in _TIMM_FC:
            w, b = tensors[f"{name}.weight"], tensors.get(f"{name}.bias")
            if b is None:
                raise WeightFileError(f"{path}: {name} has no bias")
            used.update({f"{name}.weight", f"{name}.bias"})
            # fc6 as a 7x7 and fc7 as a 1x1 convolution: [out, C, kh, kw] flattens to C, H, W
            layers.append((Tensor(f"{name}.weight", w.reshape(w.shape[0], -1)),
                           Tensor(f"{name}.bias", b)))
        return layers, "timm (features, pre_logits.fc1/fc2, head.fc)"
    found: dict[int, dict[str, Tensor]] = {}
    for name, arr in tensors.items():
        if m := _TORCHVISION_FC.match(name):
            found.setdefault(int(m.group(1)), {})[m.group(2)] = Tensor(name, arr)
            used.add(name)
    layers = []
    for index in sorted(found):
        pair = found[index]
        if "weight" not in pair or "bias" not in pair:
            raise WeightFileError(f"{path}: classifier.{index} needs a weight and a bias")
        layers.append((pair["weight"], pair["bias"]))
    return layers, "torchvision (features, classifier)"


def _some(names: list[str], count: int = 6) -> str:
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")
