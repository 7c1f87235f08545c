"""VGG networks built from a layer table, run op by op on any driver.

The table (:func:`vggjit.architecture.vgg_layers`) lists every layer by its MatConvNet name. A
:class:`Network` pairs it with weights (conv OIHW ``[Cout, Cin, 3, 3]``, fc ``[out, in]``), the
mean pixel, the class names and a driver. ``forward`` computes the named activations and stops at the deepest
one; ``backward`` walks back from the deepest seeded layer to the image. Each layer runs
through the op of its kind (:mod:`vggjit.layer_ops`: forward and backward side by side).

fc6 is a fully connected layer on pool5 flattened in C, H, W order, so classification needs
224x224 inputs (pool5 is then 7x7); the convolutional part accepts any size of at least 32x32.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Iterable, Iterator, Sequence

import numpy as np

from .architecture import (CLASSIFIER, MEAN_PIXEL, VGG16_BLOCKS, VGG19_BLOCKS, Layer,
                           param_shapes, vgg_layers)
from .contract import GRAPH
from .errors import InputError, VggjitError
from .images import preprocess
from .layer_ops import layer_op
from .registry import get_driver
from .weights import load_weights

# The architecture tables (MEAN_PIXEL, VGG19_BLOCKS, VGG16_BLOCKS, CLASSIFIER, Layer, vgg_layers,
# param_shapes) live in vggjit.architecture and stay importable from here.
__all__ = ["CLASSIFIER", "MEAN_PIXEL", "VGG16_BLOCKS", "VGG19_BLOCKS", "Layer", "Network",
           "RandomWeights", "VGG16", "VGG19", "param_shapes", "vgg_layers"]


def _own_array(a: np.ndarray, others) -> bool:
    """May ``a`` (a gradient an op's backward returned) be updated in place? Yes unless it is
    read-only or shares memory with one of ``others`` (the caller's seed arrays)."""
    return a.flags.writeable and not any(np.may_share_memory(a, o) for o in others)


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
    pooling: "max" (the trained networks) or "avg" (offered by style transfer);
    source: where the weights came from, for messages; random_weights: the weights are random
    (:meth:`random`), so ``classify`` refuses to run.
    """

    #: convs per block that from_file insists on (None: any); set by VGG19 and VGG16
    convs_per_block: tuple[int, ...] | None = None

    def __init__(self, layers: Sequence[Layer], weights: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 *, mean_pixel=MEAN_PIXEL, wnids: Sequence[str] = (),
                 descriptions: Sequence[str] = (), driver=None, pooling: str = "max",
                 source: str = "", random_weights: bool = False):
        if pooling not in ("max", "avg"):
            raise InputError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        self.layers = tuple(layers)
        self.index = {layer.name: i for i, layer in enumerate(self.layers)}
        self.weights = weights
        self.mean_pixel = np.asarray(mean_pixel, np.float32)
        self.wnids, self.descriptions = list(wnids), list(descriptions)
        self.pooling = pooling
        self.source = source
        self.random_weights = random_weights
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
                   source=f"random He-normal weights (seed {seed})",
                   random_weights=True)

    @classmethod
    def from_file(cls, path, driver=None, *, pooling: str = "max") -> "Network":
        """Load a MatConvNet ``imagenet-vgg-verydeep-19.mat`` (either version) or a native cache.

        ``VGG19.from_file`` and ``VGG16.from_file`` insist on their depth (a clear error names
        the class to use); ``Network.from_file`` takes any VGG-shaped file."""
        ws = load_weights(path)
        depth = tuple(convs for _, convs in ws.blocks)
        if cls.convs_per_block is not None and depth != cls.convs_per_block:
            other = {c.convs_per_block: c.__name__ for c in (VGG16, VGG19)}.get(depth)
            use = f"vggjit.{other}.from_file or " if other else ""
            raise InputError(f"{ws.source or path}: the file holds {ws.name} ({sum(depth)} conv "
                             f"layers), not {cls.__name__}; load it with {use}"
                             f"vggjit.Network.from_file")
        return cls.from_weights(ws, driver, pooling=pooling)

    @classmethod
    def from_weights(cls, ws, driver=None, *, pooling: str = "max") -> "Network":
        """A network on ``driver`` from a :class:`vggjit.weights.WeightSet` (any reader's)."""
        return cls(ws.layers, ws.params, mean_pixel=ws.mean_pixel, wnids=ws.wnids,
                   descriptions=ws.descriptions, driver=driver, pooling=pooling,
                   source=ws.source)

    # -- properties ---------------------------------------------------------------------------
    @property
    def driver(self):
        if self._driver is None:
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
        ops = self._layer_ops()
        relu_applied = False   # the conv before already applied this ReLU (fused)
        for i in range(last + 1):
            op = ops[i]
            if relu_applied:
                x, memo = op.forward(d, x, applied=True)
                relu_applied = False
            elif self._relu_follows(i, last) and i not in wanted:
                # fused unless the raw conv output is asked for
                x, memo = op.forward(d, x, relu=True)
                relu_applied = True
            elif self.layers[i].kind == "pool":
                x, memo = op.forward(d, x, keep=keep)
            else:
                x, memo = op.forward(d, x)
            if keep:
                saved[i] = memo
            if i in wanted:
                result[self.layers[i].name] = x
        self._saved = saved
        self._saved_last = last
        return result

    def _layer_ops(self) -> list:
        """One op per layer (vggjit.layer_ops), on the current weights and pooling."""
        return [layer_op(layer, self.weights, self.pooling) for layer in self.layers]

    def _relu_follows(self, i: int, last: int) -> bool:
        """Whether layer i is a conv whose ReLU (layer i + 1, up to ``last``) can be fused."""
        return (self.layers[i].kind == "conv" and i < last
                and self.layers[i + 1].kind == "relu")

    def _graph_ok(self, outputs: tuple[str, ...]) -> bool:
        if outputs != ("prob",) or GRAPH not in self.driver.capabilities:
            return False
        if self._graph is None:
            self._graph = self.driver.build_graph(self)
        return self._graph is not None

    # -- backward -----------------------------------------------------------------------------
    def backward(self, grads: Mapping[str, object], weight_grads: bool = False, *,
                 release: bool = False):
        """Gradient with respect to the input image of the last ``forward(..., keep=True)``.

        grads: {layer name: dL/d(that layer's output)}; each is added as the walk from the
        deepest seeded layer back to the image passes its layer. A value is an array, or a
        callable ``seed(dy) -> dy'`` called when the walk reaches its layer, with the gradient
        arriving from deeper layers (None at the deepest seeded layer; an array the callable
        may update in place) and returning it with the layer's own term added: a loss then
        makes its full-size gradient only when it is needed, not for the whole walk.
        weight_grads: also return {name: (dw, db)} for every conv and fc layer passed.
        release: free what the walk has passed as it goes: each layer's saved activations and
        each seed (``grads`` is emptied, so it must be a mutable mapping). A style step's
        backward then holds the activations of the layers still ahead of it and no more
        (docs/design-notes.md, note 22); another backward needs a new forward first.
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
        callers_arrays = [g for g in seeds.values() if not callable(g)]
        if release:
            if not callable(getattr(grads, "clear", None)):
                raise InputError("backward(release=True) empties the seed mapping as it goes: "
                                 f"pass a dict, not a {type(grads).__name__}")
            self._saved = None
            grads.clear()
        dparams: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        dy = None
        ops = self._layer_ops()
        relu_out = None   # a ReLU whose backward is left to the conv before it (fused)
        for i in range(max(seeds), -1, -1):
            op = ops[i]
            if i in seeds:
                dy = self._seed(seeds.pop(i) if release else seeds[i], dy, callers_arrays)
            if i > 0 and self._relu_follows(i - 1, i) and i - 1 not in seeds:
                # fused unless a loss is seeded at the conv output
                relu_out = saved.pop(i) if release else saved[i]
                continue
            memo = saved.pop(i) if release else saved[i]
            if relu_out is not None:
                dy, param_grads = op.backward(d, dy, memo, weight_grads, relu_out=relu_out)
                relu_out = None
            else:
                dy, param_grads = op.backward(d, dy, memo, weight_grads)
            del memo
            if param_grads is not None:
                dparams[self.layers[i].name] = param_grads
        return (dy, dparams) if weight_grads else dy

    @staticmethod
    def _seed(seed, dy, callers_arrays):
        """dy with one seeded gradient added (an array, or a callable: see backward). The
        caller's arrays are never written: dy is updated in place only when it is none of them
        (saves allocating, and page-faulting, a new full-size gradient); a callable gets it
        C-contiguous."""
        if dy is not None and not (_own_array(dy, callers_arrays) and dy.flags.c_contiguous):
            dy = np.array(dy, order="C")
        if callable(seed):
            return seed(dy)
        g = np.asarray(seed, np.float32)
        if dy is None:
            return g
        dy += g
        return dy

    # -- classification -----------------------------------------------------------------------
    def classify(self, images, top_k: int = 5) -> list[list[tuple]]:
        """Per image, the top_k (rank, class index, WordNet id, description, probability).

        images: [N, 3, 224, 224] preprocessed, or a list of paths / PIL images (preprocessed
        here with this network's mean pixel).
        """
        if self.random_weights:
            raise VggjitError("this network has random weights; its classes mean nothing. "
                              "Load ImageNet weights with VGG19.from_file (see "
                              "`vggjit weights fetch`)")
        x = images
        if not isinstance(images, np.ndarray):
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
