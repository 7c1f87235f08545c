"""The VGG architecture as data: block tables, the classifier, the layer table, parameter shapes.

A leaf module (it imports nothing of vggjit), so the network, the weight loaders and the image
preprocessing all build on it without importing one another.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

#: The mean RGB pixel of ImageNet that the MatConvNet VGG models subtract.
MEAN_PIXEL = np.array([123.68, 116.779, 103.939], np.float32)

#: Channels and conv count of each VGG block.
VGG19_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
CLASSIFIER = (4096, 4096, 1000)


@dataclass(frozen=True)
class Layer:
    """One row of the layer table.

    kind: "conv" (3x3, stride 1, pad 1), "relu", "pool" (2x2, stride 2), "fc" or "softmax".
    cin, cout: channels (conv) or features (fc); 0 for the other kinds.
    """

    name: str
    kind: str
    cin: int = 0
    cout: int = 0

    @property
    def has_params(self) -> bool:
        return self.kind in ("conv", "fc")


def vgg_layers(blocks: Sequence[tuple[int, int]] = VGG19_BLOCKS,
               classifier: Sequence[int] = CLASSIFIER, in_channels: int = 3) -> tuple[Layer, ...]:
    """The layer table of a VGG network: conv blocks, pools, then fc6..fc8 and prob.

    ``blocks`` gives (channels, convs) per block; smaller values make test-sized networks
    with the same names. fc6 takes pool5 flattened: channels x 7 x 7 features.
    """
    layers, cin = [], in_channels
    for b, (channels, convs) in enumerate(blocks, start=1):
        for i in range(1, convs + 1):
            layers.append(Layer(f"conv{b}_{i}", "conv", cin, channels))
            layers.append(Layer(f"relu{b}_{i}", "relu"))
            cin = channels
        layers.append(Layer(f"pool{b}", "pool"))
    features = cin * 7 * 7
    for i, out in enumerate(classifier, start=6):
        layers.append(Layer(f"fc{i}", "fc", features, out))
        if i < 5 + len(classifier):
            layers.append(Layer(f"relu{i}", "relu"))
        features = out
    layers.append(Layer("prob", "softmax"))
    return tuple(layers)


def param_shapes(layers: Iterable[Layer]) -> dict[str, tuple[tuple[int, ...], tuple[int]]]:
    """{layer name: (weight shape, bias shape)} for every conv and fc layer."""
    shapes = {}
    for layer in layers:
        if layer.kind == "conv":
            shapes[layer.name] = ((layer.cout, layer.cin, 3, 3), (layer.cout,))
        elif layer.kind == "fc":
            shapes[layer.name] = ((layer.cout, layer.cin), (layer.cout,))
    return shapes
