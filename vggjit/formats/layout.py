"""From the layers a reader found to vggjit's layer table and parameter layout.

A reader hands over a :class:`ParsedVGG`: the conv layers block by block (OIHW), the fully
connected layers ([out, in], fc6 in the flatten order of its framework) or none, the
preprocessing its file implies, and notes. :func:`assemble` checks every shape against the VGG
layer table, converts fc6 to vggjit's C, H, W flatten order, folds the preprocessing into
conv1_1 and the mean pixel (:mod:`.preprocess`), and returns an :class:`Assembled`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import WeightFileError
from ..architecture import CLASSIFIER, Layer, param_shapes, vgg_layers
from .preprocess import CHOICES, CONVENTIONS, fold_first_conv, mean_pixel

#: fc6's input flatten orders: PyTorch flattens pool5 as C, H, W (vggjit's order); MatConvNet's
#: 7x7 convolution and Keras's Flatten of an NHWC map read it as H, W, C.
CHW, HWC = "chw", "hwc"
POOL5_SIZE = 7


@dataclass
class Tensor:
    """One parameter as the file names it: ``name`` (for messages) and the array."""

    name: str
    array: np.ndarray


@dataclass
class ParsedVGG:
    """What a reader found, before any check.

    blocks: per VGG block, its conv layers as (weight OIHW [Cout, Cin, 3, 3], bias [Cout]).
    classifier: the fc layers as (weight [out, in], bias [out]); empty for a convolution stack.
    fc6_order: :data:`CHW` or :data:`HWC`, how fc6's input features are ordered.
    convention: the preprocessing the file implies (a key of CONVENTIONS), or None when the file
        cannot say (ONNX): then the user must state it.
    version: the file format (a ``vggjit.weights`` version name); notes: what the reader
        assumed, ignored or left out.
    """

    blocks: list[list[tuple[Tensor, Tensor]]]
    classifier: list[tuple[Tensor, Tensor]]
    fc6_order: str
    convention: str | None
    version: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Assembled:
    """layers: the layer table; params: {name: (w, b)} float32 in vggjit's layout;
    mean_pixel: RGB [3]; preprocess: the convention folded in; notes."""

    layers: tuple[Layer, ...]
    params: dict[str, tuple[np.ndarray, np.ndarray]]
    mean_pixel: np.ndarray
    preprocess: str
    notes: list[str]


def is_vgg_classifier(widths) -> bool:
    """Whether fully connected layers of these output widths have VGG's classifier shape: three,
    the first two equally wide (4096 in VGG16/19; the class count is free, and the tests' small
    networks are narrower). A fine-tuned model's own head rarely is."""
    widths = tuple(widths)
    return len(widths) == len(CLASSIFIER) and widths[0] == widths[1]


def layer_table(blocks, classifier) -> tuple[Layer, ...]:
    """The VGG layer table; without a classifier, the convolution stack ending at pool5."""
    if classifier:
        return vgg_layers(tuple(map(tuple, blocks)), tuple(classifier))
    return tuple(layer for layer in vgg_layers(tuple(map(tuple, blocks)), ())
                 if layer.kind in ("conv", "relu", "pool"))


def assemble(path, parsed: ParsedVGG, preprocess: str | None) -> Assembled:
    """Check ``parsed`` against the VGG layer table and convert it (see the module docstring).

    preprocess: the convention to fold (overrides the file's own); None: the file's.
    Raises WeightFileError naming the file, the layer and the tensor for anything that does not
    fit.
    """
    convention = preprocess or parsed.convention
    if convention is None:
        raise WeightFileError(
            f"{path}: this {parsed.version} file does not record how its input was "
            f"preprocessed; "
            f"state it with --preprocess {{{','.join(CHOICES)}}} (for example `vggjit weights "
            f"convert {path} --preprocess caffe`; Keras exports use caffe, PyTorch exports "
            f"torchvision)")
    if convention not in CONVENTIONS:
        raise WeightFileError(f"{path}: unknown preprocessing {convention!r}; choose one of "
                              f"{', '.join(CHOICES)}")
    if not parsed.blocks or not all(parsed.blocks):
        raise WeightFileError(f"{path}: no VGG convolution blocks found")
    blocks = [(convs[0][1].array.size, len(convs)) for convs in parsed.blocks]
    classifier = [b.array.size for _, b in parsed.classifier]
    if classifier and len(classifier) != len(CLASSIFIER):
        names = ", ".join(w.name for w, _ in parsed.classifier)
        raise WeightFileError(f"{path}: {len(classifier)} fully connected layers ({names}); a VGG "
                              f"classifier has {len(CLASSIFIER)} (fc6, fc7, fc8)")
    layers = layer_table(blocks, classifier)
    shapes = param_shapes(layers)
    found = [t for convs in parsed.blocks for t in convs] + list(parsed.classifier)
    params = {}
    names = [layer.name for layer in layers if layer.has_params]
    for name, (w, b) in zip(names, found):
        wshape, bshape = shapes[name]
        weight = w.array
        if name == "fc6" and parsed.fc6_order == HWC:
            weight = _hwc_to_chw(path, name, w, wshape)
        if weight.shape != wshape:
            raise WeightFileError(
                f"{path}: layer {name} (tensor {w.name!r}): weight of shape "
                f"{_shape(weight.shape)}, expected {_shape(wshape)} in vggjit's layout "
                f"({_expected(name, wshape)})")
        if b.array.shape != bshape:
            raise WeightFileError(f"{path}: layer {name} (tensor {b.name!r}): bias of shape "
                                  f"{_shape(b.array.shape)}, expected {_shape(bshape)}")
        for what, t in (("weight", w), ("bias", b)):
            if not np.issubdtype(t.array.dtype, np.floating):
                raise WeightFileError(f"{path}: layer {name} (tensor {t.name!r}): {what} has "
                                      f"type {t.array.dtype}, expected floating point")
        params[name] = (np.ascontiguousarray(weight, np.float32),
                        np.ascontiguousarray(b.array.reshape(-1), np.float32))
    w1, b1 = params["conv1_1"]
    params["conv1_1"] = (fold_first_conv(w1, convention), b1)
    notes = list(parsed.notes)
    if convention != "matconvnet":
        notes.append(f"preprocessing {convention} ({CONVENTIONS[convention].description}) "
                     f"folded into conv1_1 and the mean pixel")
    return Assembled(layers, params, mean_pixel(convention), convention, notes)


def _hwc_to_chw(path, name: str, w: Tensor, wshape) -> np.ndarray:
    """fc6 [out, H*W*C] reading pool5 as H, W, C -> [out, C*H*W] reading it as C, H, W."""
    out, features = wshape
    channels = features // (POOL5_SIZE * POOL5_SIZE)
    arr = w.array
    if arr.shape != (out, features):
        raise WeightFileError(
            f"{path}: layer {name} (tensor {w.name!r}): weight of shape {_shape(arr.shape)}, "
            f"expected {_shape((out, features))} (pool5: {channels} x {POOL5_SIZE} x "
            f"{POOL5_SIZE} features)")
    return (arr.reshape(out, POOL5_SIZE, POOL5_SIZE, channels).transpose(0, 3, 1, 2)
            .reshape(out, features))


def _expected(name: str, wshape) -> str:
    if len(wshape) == 4:
        return f"[Cout, Cin, 3, 3]; the layer before it has {wshape[1]} outputs"
    if name == "fc6":
        return f"[out, in]; fc6 reads pool5 as {wshape[1] // 49} x 7 x 7 features"
    return "[out, in]"


def _shape(shape) -> str:
    return "[" + " ".join(str(d) for d in shape) + "]"
