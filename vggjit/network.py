"""VGG networks built from a layer table, run op by op on any driver.

The table (:func:`vgg_layers`) lists every layer by its MatConvNet name. A :class:`Network`
pairs it with weights (conv OIHW ``[Cout, Cin, 3, 3]``, fc ``[out, in]``), the mean pixel, the
class names and a driver. ``forward`` computes the named activations and stops at the deepest
one; ``backward`` walks back from the deepest seeded layer to the image.

fc6 is a fully connected layer on pool5 flattened in C, H, W order, so classification needs
224x224 inputs (pool5 is then 7x7); the convolutional part accepts any size of at least 32x32.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from .errors import InputError, VggjitError

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


class RandomWeights(Mapping):
    """He-normal weights (std sqrt(2 / fan_in)), zero biases, made on first use of each layer.

    Each layer draws from its own seeded stream, so a layer's weights do not depend on which
    other layers were used: a style-transfer run never pays for the 400 MB of fc6.
    """

    def __init__(self, layers: Iterable[Layer], seed: int):
        self._shapes = param_shapes(layers)
        self._seed = seed
        self._made: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __getitem__(self, name: str):
        if name not in self._made:
            wshape, bshape = self._shapes[name]
            index = list(self._shapes).index(name)
            rng = np.random.default_rng([self._seed, index])
            fan_in = int(np.prod(wshape[1:]))
            w = rng.standard_normal(wshape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
            self._made[name] = (w, np.zeros(bshape, np.float32))
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)


class Network:
    """A VGG network on a driver.

    layers: the layer table; weights: {name: (w, b)} for every conv and fc layer;
    mean_pixel: RGB float32 [3]; wnids / descriptions: the class names (may be empty);
    pooling: "max" (the trained networks) or "avg" (offered by style transfer).
    """

    #: convs per block that from_file insists on (None: any); set by VGG19 and VGG16
    convs_per_block: tuple[int, ...] | None = None

    def __init__(self, layers: Sequence[Layer], weights: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 *, mean_pixel=MEAN_PIXEL, wnids: Sequence[str] = (),
                 descriptions: Sequence[str] = (), driver=None, pooling: str = "max",
                 source: str = "", random: bool = False):
        if pooling not in ("max", "avg"):
            raise InputError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        self.layers = tuple(layers)
        self.index = {layer.name: i for i, layer in enumerate(self.layers)}
        self.weights = weights
        self.mean_pixel = np.asarray(mean_pixel, np.float32)
        self.wnids, self.descriptions = list(wnids), list(descriptions)
        self.pooling = pooling
        self.source = source
        self.random = random
        self._driver_arg = driver
        self._driver = None
        self._graph = None
        self._saved: dict[int, object] | None = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def random(cls, seed: int = 0, driver=None, *, pooling: str = "max",
               blocks: Sequence[tuple[int, int]] = VGG19_BLOCKS,
               classifier: Sequence[int] = CLASSIFIER) -> "Network":
        """He-normal random weights: for benchmarks and texture-only style transfer.

        Never for classification: its predictions are meaningless.
        """
        layers = vgg_layers(blocks, classifier)
        return cls(layers, RandomWeights(layers, seed), driver=driver, pooling=pooling,
                   source=f"random He-normal weights (seed {seed})", random=True)

    @classmethod
    def from_file(cls, path, driver=None, *, pooling: str = "max") -> "Network":
        """Load a MatConvNet ``imagenet-vgg-verydeep-19.mat`` (either version) or a native cache.

        ``VGG19.from_file`` and ``VGG16.from_file`` insist on their depth (a clear error names
        the class to use); ``Network.from_file`` takes any VGG-shaped file."""
        from .weights import load_weights

        ws = load_weights(path)
        depth = tuple(convs for _, convs in ws.blocks)
        if cls.convs_per_block is not None and depth != cls.convs_per_block:
            other = {c.convs_per_block: c.__name__ for c in (VGG16, VGG19)}.get(depth)
            use = f"vggjit.{other}.from_file or " if other else ""
            raise InputError(f"{ws.source or path}: the file holds {ws.name} ({sum(depth)} conv "
                             f"layers), not {cls.__name__}; load it with {use}"
                             f"vggjit.Network.from_file")
        return cls(ws.layers, ws.params, mean_pixel=ws.mean_pixel, wnids=ws.wnids,
                   descriptions=ws.descriptions, driver=driver, pooling=pooling,
                   source=ws.source)

    # -- properties ---------------------------------------------------------------------------
    @property
    def driver(self):
        if self._driver is None:
            from .registry import get_driver

            d = self._driver_arg
            self._driver = d if d is not None and not isinstance(d, str) else get_driver(d)
        return self._driver

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def _position(self, name: str) -> int:
        try:
            return self.index[name]
        except KeyError:
            raise InputError(f"unknown layer {name!r}; valid names: "
                             f"{', '.join(self.layer_names)}") from None

    # -- forward ------------------------------------------------------------------------------
    def forward(self, x, outputs: Iterable[str] = ("prob",), keep: bool = False
                ) -> dict[str, np.ndarray]:
        """Run the layers up to the deepest of ``outputs``; return those activations.

        x: [N, 3, H, W] float32, preprocessed (RGB minus the mean pixel).
        keep: remember what ``backward`` needs (conv and fc inputs, ReLU outputs, pooling
        switches) and nothing more.
        """
        outputs = tuple(outputs)
        if not outputs:
            raise InputError("forward needs at least one output layer name")
        wanted = {self._position(name) for name in outputs}
        last = max(wanted)
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != self.layers[0].cin:
            raise InputError(f"network input must be [N, {self.layers[0].cin}, H, W], "
                             f"got shape {x.shape}")
        if not keep and self._graph_ok(outputs):
            return {"prob": self._graph(np.ascontiguousarray(x, np.float32))}
        d = self.driver
        self._saved = None  # drop the last pass's activations before making new ones
        saved: dict[int, object] = {} if keep else None
        result: dict[str, np.ndarray] = {}
        fused = False   # the last conv already applied this ReLU (conv2d relu=True)
        for i in range(last + 1):
            layer = self.layers[i]
            if layer.kind == "conv":
                if keep:
                    saved[i] = x
                w, b = self.weights[layer.name]
                # the ReLU after a conv is fused into it unless the raw conv output is asked for
                fused = (i < last and self.layers[i + 1].kind == "relu" and i not in wanted)
                x = d.conv2d(x, w, b, 1, 1, relu=fused)
            elif layer.kind == "relu":
                if not fused:
                    x = d.relu(x)
                fused = False
                if keep:
                    saved[i] = x  # the output: x > 0 exactly where the input was > 0
            elif layer.kind == "pool":
                if x.shape[2] < 2 or x.shape[3] < 2:
                    raise InputError(f"{layer.name}: the input is too small ({x.shape[2]}x"
                                     f"{x.shape[3]} before this pooling); use a larger image")
                shape = x.shape
                if self.pooling == "max":
                    x, switches = d.max_pool2d(x, 2, 2)
                    if keep:
                        saved[i] = (switches, shape)
                else:
                    x = d.avg_pool2d(x, 2, 2)
                    if keep:
                        saved[i] = (None, shape)
            elif layer.kind == "fc":
                shape = x.shape
                x = self._flatten_for(layer, x)
                if keep:
                    saved[i] = (x, shape)
                w, b = self.weights[layer.name]
                x = d.linear(x, w, b)
            elif layer.kind == "softmax":
                x = d.softmax(x)
                if keep:
                    saved[i] = x
            if i in wanted:
                result[layer.name] = x
        self._saved = saved
        self._saved_last = last
        return result

    def _graph_ok(self, outputs: tuple[str, ...]) -> bool:
        from .contract import GRAPH

        if outputs != ("prob",) or GRAPH not in self.driver.capabilities:
            return False
        if self._graph is None:
            self._graph = self.driver.build_graph(self)
        return self._graph is not None

    def _flatten_for(self, layer: Layer, x: np.ndarray) -> np.ndarray:
        if x.ndim == 4:
            if x.shape[1] * x.shape[2] * x.shape[3] != layer.cin:
                raise InputError(
                    f"{layer.name} expects {layer.cin} features (pool5 of a 224x224 image: "
                    f"{layer.cin // 49}x7x7) but got {x.shape[1]}x{x.shape[2]}x{x.shape[3]}; "
                    f"classification needs 224x224 input")
            x = x.reshape(x.shape[0], -1)
        return x

    # -- backward -----------------------------------------------------------------------------
    def backward(self, grads: Mapping[str, np.ndarray], weight_grads: bool = False):
        """Gradient with respect to the input image of the last ``forward(..., keep=True)``.

        grads: {layer name: dL/d(that layer's output)}; each is added as the walk from the
        deepest seeded layer back to the image passes its layer.
        weight_grads: also return {name: (dw, db)} for every conv and fc layer passed.
        Returns dx [N, 3, H, W], or (dx, weight gradients) when weight_grads is true.
        """
        if self._saved is None:
            raise VggjitError("backward needs a forward(..., keep=True) first")
        if not grads:
            raise InputError("backward needs at least one seeded layer gradient")
        seeds = {self._position(name): g for name, g in grads.items()}
        if max(seeds) > self._saved_last:
            deepest = self.layers[max(seeds)].name
            raise InputError(f"gradient given for {deepest!r}, deeper than the last forward "
                             f"pass reached ({self.layers[self._saved_last].name!r})")
        d, saved = self.driver, self._saved
        dparams: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        dy = None
        relu_out = None   # a ReLU whose backward is left to the conv before it (fused)
        for i in range(max(seeds), -1, -1):
            layer = self.layers[i]
            if i in seeds:
                g = np.asarray(seeds[i], np.float32)
                dy = g if dy is None else dy + g
            if layer.kind == "conv":
                w, _ = self.weights[layer.name]
                dx, dw, db = d.conv2d_backward(dy, saved[i], w, 1, 1, need_dx=True,
                                               need_dw=weight_grads, relu_out=relu_out)
                relu_out = None
                if weight_grads:
                    dparams[layer.name] = (dw, db)
                dy = dx
            elif layer.kind == "relu":
                if i > 0 and self.layers[i - 1].kind == "conv" and i - 1 not in seeds:
                    relu_out = saved[i]
                else:
                    dy = d.relu_backward(dy, saved[i])
            elif layer.kind == "pool":
                switches, shape = saved[i]
                if self.pooling == "max":
                    dy = d.max_pool2d_backward(dy, switches, shape)
                else:
                    dy = d.avg_pool2d_backward(dy, shape, 2, 2)
            elif layer.kind == "fc":
                w, _ = self.weights[layer.name]
                x_in, shape = saved[i]
                dx, dw, db = d.linear_backward(dy, x_in, w, need_dx=True, need_dw=weight_grads)
                if weight_grads:
                    dparams[layer.name] = (dw, db)
                dy = dx.reshape(shape)  # un-flatten pool5 for fc6
            elif layer.kind == "softmax":
                y = saved[i]
                dy = y * (dy - np.sum(dy * y, axis=1, keepdims=True))
        return (dy, dparams) if weight_grads else dy

    # -- classification -----------------------------------------------------------------------
    def classify(self, images, top_k: int = 5) -> list[list[tuple]]:
        """Per image, the top_k (rank, class index, WordNet id, description, probability).

        images: [N, 3, 224, 224] preprocessed, or a list of paths / PIL images (preprocessed
        here with this network's mean pixel).
        """
        if self.random:
            raise VggjitError("this network has random weights; its classes mean nothing. "
                              "Load ImageNet weights with VGG19.from_file (see "
                              "`vggjit weights fetch`)")
        x = images
        if not isinstance(images, np.ndarray):
            from .images import preprocess

            x = np.concatenate([preprocess(img, mean_pixel=self.mean_pixel) for img in images])
        prob = self.forward(x, ("prob",))["prob"]
        results = []
        for row in prob:
            order = np.argsort(-row, kind="stable")[:top_k]
            results.append([(rank, int(c), self._wnid(c), self._description(c), float(row[c]))
                            for rank, c in enumerate(order, start=1)])
        return results

    def _wnid(self, c: int) -> str:
        return self.wnids[c] if c < len(self.wnids) else f"class{c}"

    def _description(self, c: int) -> str:
        return self.descriptions[c] if c < len(self.descriptions) else f"class {c}"

    def __repr__(self) -> str:
        convs = sum(layer.kind == "conv" for layer in self.layers)
        return f"<Network VGG{convs + 3} {self.source!r} pooling={self.pooling}>"


class VGG19(Network):
    """VGG19: 16 conv layers, 5 max-pools, fc6..fc8, softmax (see :func:`vgg_layers`)."""

    convs_per_block = tuple(convs for _, convs in VGG19_BLOCKS)

    @classmethod
    def random(cls, seed: int = 0, driver=None, *, pooling: str = "max") -> "VGG19":
        return super().random(seed, driver, pooling=pooling, blocks=VGG19_BLOCKS)


class VGG16(Network):
    """VGG16, from the same table with 2, 2, 3, 3, 3 convs per block."""

    convs_per_block = tuple(convs for _, convs in VGG16_BLOCKS)

    @classmethod
    def random(cls, seed: int = 0, driver=None, *, pooling: str = "max") -> "VGG16":
        return super().random(seed, driver, pooling=pooling, blocks=VGG16_BLOCKS)
