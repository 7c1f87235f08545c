"""Gatys neural style transfer: settings and presets, the run loop, checkpoints, logs.

``stylize(content, style, **options)`` is the one-call API; :class:`StyleTransfer` keeps one
network and one set of style images for many content images, and :meth:`StyleTransfer.start`
returns a :class:`Session` that can be advanced a few steps at a time, checkpointed and
resumed. Every option is a field of :class:`StyleSettings` (see docs/style-transfer.md).

Output files, for ``output="out.png"``: ``out.png`` (the result), ``out_0100.png`` (every
``save_every`` steps), ``out.log.json`` (settings and per-step losses), ``out.loss.png`` (the loss
curve) and, while a run is unfinished (interrupted, failed), ``out.ckpt.npz`` (the checkpoint
that :func:`resume` continues).

Coarse-to-fine (``scales`` = S > 1): the run has S scales; scale k (1..S) works at the output
size divided by 2^(S-k) and runs ``iterations`` steps; scale k > 1 starts from scale k-1's result
upsampled (bicubic). Intermediate images are ``out_s<k>_0100.png``; only the last scale writes
``out.png``. History entries then carry ``scale``, ``height`` and ``width``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .errors import InputError, OutputExistsError, VggjitError
from .fileio import atomic_save, atomic_write, check_writable
from .images import load_image, resize_image, to_array
from .losses import (StyleObjective, check_layers, content_targets, feature_geometry,
                     layer_weights, min_size, style_targets)
from .optimizers import Adam, Converged, make_optimizer

CHECKPOINT_FORMAT = 1
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYERS = ("relu4_2",)
INITS = ("content", "noise", "random")
#: A loss this many times the run's first loss counts as exploding (Adam; L-BFGS only descends).
EXPLODE_FACTOR = 1e4


@dataclass
class StyleSettings:
    """Every option of a style-transfer run (all JSON-serialisable).

    Layers: ``content_layers`` / ``style_layers`` with optional per-layer weights (default:
    equal weights summing to 1, the lab's mean). Loss: ``alpha`` (content), ``beta`` (style),
    ``tv_weight`` (total variation), ``normalize`` (divide each layer's weight by the mean
    square of its target). Optimiser: ``optimizer`` ("lbfgs" or "adam"), ``lr`` (Adam),
    ``iterations``. Start: ``init`` ("content", "noise" = content*(1-noise) +
    uniform(-20, 20)*noise, "random" = uniform(-20, 20) around the mean pixel, or an image path),
    ``noise``, ``seed``. Size: ``size`` (longer side) or ``height`` / ``width`` (both: exact;
    one: aspect kept); ``scales`` (coarse-to-fine: S scales, scale k at the output size / 2^(S-k),
    each running ``iterations`` steps, each from the previous one's result upsampled);
    ``style_scale`` (style image size relative to the output);
    ``style_blend`` (weights of several style images). ``preserve_colors``: luminance-only
    transfer, the content's colours kept. Network: ``pooling`` ("max" or "avg"), ``weights``
    (a weight file, None to look for the default one, or "random" for He-normal random weights
    seeded by ``seed``), ``driver``. Reporting: ``save_every``, ``print_every`` (0: never).
    """

    content_layers: tuple = CONTENT_LAYERS
    content_layer_weights: tuple | None = None
    style_layers: tuple = STYLE_LAYERS
    style_layer_weights: tuple | None = None
    alpha: float = 1.0
    beta: float = 500.0
    tv_weight: float = 0.0
    normalize: bool = False
    optimizer: str = "lbfgs"
    lr: float = 10.0
    iterations: int = 500
    init: str = "content"
    noise: float = 0.5
    seed: int = 0
    size: int = 512
    height: int | None = None
    width: int | None = None
    scales: int = 1
    style_scale: float = 1.0
    style_blend: tuple | None = None
    preserve_colors: bool = False
    pooling: str = "max"
    weights: str | None = None
    driver: str | None = None
    save_every: int = 0
    print_every: int = 0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "StyleSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InputError(f"unknown style-transfer option(s): {', '.join(sorted(unknown))}; "
                             f"valid: {', '.join(sorted(names))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    def check(self) -> None:
        """Reject impossible values (before any work starts)."""
        if self.optimizer not in ("adam", "lbfgs"):
            raise InputError(f"unknown optimiser {self.optimizer!r}; choose 'adam' or 'lbfgs'")
        if self.pooling not in ("max", "avg"):
            raise InputError(f"pooling must be 'max' or 'avg', got {self.pooling!r}")
        _positive("iterations", self.iterations, integer=True)
        _positive("scales", self.scales, integer=True)
        _positive("learning rate", self.lr)
        _positive("style scale", self.style_scale)
        for name in ("alpha", "beta", "tv_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"{name} must be finite and non-negative, got {value}")
        if not 0.0 <= self.noise <= 1.0:
            raise InputError(f"noise ratio must lie in [0, 1], got {self.noise}")
        for name in ("save_every", "print_every"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name} must be 0 (never) or positive")
        if self.height is None and self.width is None:
            _positive("size", self.size, integer=True)
        for name in ("height", "width"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name), integer=True)
        if not self.content_layers and not self.style_layers:
            raise InputError("no content and no style layers: nothing to optimise")
        layer_weights(self.content_layers, self.content_layer_weights, "content")
        layer_weights(self.style_layers, self.style_layer_weights, "style")


def _positive(name: str, value, integer: bool = False) -> None:
    bad = value is None or not math.isfinite(value) or value <= 0
    if integer and not bad:
        bad = int(value) != value
    if bad:
        kind = "a positive integer" if integer else "positive"
        raise InputError(f"{name} must be {kind}, got {value!r}")


#: Named option sets; explicit options override them.
PRESETS: dict[str, dict] = {
    # The course lab (SPEC section 5): Adam lr 1 for 100 steps at 192x320 from content + noise,
    # relu4_2 for content, relu1_1..relu5_1 (equal) for style, alpha 1, beta 500, max pooling
    # (floor), one image per step.
    "lab": dict(content_layers=CONTENT_LAYERS, content_layer_weights=None,
                style_layers=STYLE_LAYERS, style_layer_weights=None, alpha=1.0, beta=500.0,
                tv_weight=0.0, normalize=False, optimizer="adam", lr=1.0, iterations=100,
                init="noise", noise=0.5, height=192, width=320, style_scale=1.0,
                pooling="max", save_every=1),
}


def make_settings(preset: str | None = None, **options) -> StyleSettings:
    """Defaults, then the preset, then ``options`` (None values mean "not given")."""
    values: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    values.update({k: v for k, v in options.items() if v is not None})
    settings = StyleSettings.from_dict(values)
    settings.check()
    return settings


# -- errors and results ---------------------------------------------------------------------------
class LossDivergedError(VggjitError):
    """The loss became NaN/Inf or exploded; ``result`` holds the last good image."""

    def __init__(self, message: str, result: "StyleResult | None" = None):
        super().__init__(message)
        self.result = result


@dataclass
class StyleResult:
    """image: the result (PIL, 8-bit RGB, at the output size); history: one dict per step
    (step, loss, terms, evaluations, seconds; with several scales also scale, height, width);
    settings: the options (plus the run's facts); array: the optimised network input
    [1, 3, H, W] (at the current scale's size: a coarse one's after an interrupt there); steps:
    steps completed (at the last scale reached); stopped: None (finished), "interrupted",
    "converged" or "diverged"; files: what was written {role: path}."""

    image: Image.Image
    history: list
    settings: dict
    array: np.ndarray
    steps: int
    stopped: str | None = None
    message: str = ""
    files: dict = field(default_factory=dict)

    @property
    def loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None


# -- images ---------------------------------------------------------------------------------------
# YIQ (NTSC): Y carries the luminance, I and Q the chroma.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.595716, -0.274453, -0.321263],
                        [0.211456, -0.522591, 0.311135]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def rgb_to_yiq(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] RGB -> [..., 3] YIQ (float64)."""
    return np.asarray(rgb, np.float64) @ _RGB_TO_YIQ.T


def yiq_to_rgb(yiq: np.ndarray) -> np.ndarray:
    return np.asarray(yiq, np.float64) @ _YIQ_TO_RGB.T


def luminance_image(rgb: np.ndarray, match: np.ndarray | None = None) -> np.ndarray:
    """Grey RGB [H, W, 3] float64 holding the luminance of ``rgb``; with ``match`` (another
    image's RGB), the luminance's mean and standard deviation are matched to that image's
    (Gatys et al. 2016, "Preserving color in neural artistic style transfer")."""
    y = rgb_to_yiq(rgb)[..., 0]
    if match is not None:
        target = rgb_to_yiq(match)[..., 0]
        spread = y.std()
        y = (y - y.mean()) * (target.std() / spread if spread > 0 else 1.0) + target.mean()
    return np.repeat(y[..., None], 3, axis=2)


def recolor(result_rgb: np.ndarray, content_rgb: np.ndarray) -> np.ndarray:
    """The result's luminance with the content's chroma (I, Q), RGB float64 [H, W, 3]."""
    yiq = rgb_to_yiq(content_rgb)
    yiq[..., 0] = rgb_to_yiq(result_rgb)[..., 0]
    return yiq_to_rgb(yiq)


def output_size(image_size: tuple[int, int], settings: StyleSettings) -> tuple[int, int]:
    """(height, width) of the output for a content image of PIL size (width, height)."""
    w, h = image_size
    if settings.height is not None and settings.width is not None:
        return int(settings.height), int(settings.width)
    if settings.height is not None:
        return int(settings.height), max(1, round(w * settings.height / h))
    if settings.width is not None:
        return max(1, round(h * settings.width / w)), int(settings.width)
    scale = settings.size / max(w, h)
    return max(1, round(h * scale)), max(1, round(w * scale))


def style_size(image_size: tuple[int, int], out: tuple[int, int],
               settings: StyleSettings) -> tuple[int, int]:
    """(height, width) of a style image: stretched to the output's exact size times the style
    scale when height and width are both given (the lab), else its longer side = the output's
    longer side times the style scale, aspect kept."""
    if settings.height is not None and settings.width is not None:
        return (max(1, round(out[0] * settings.style_scale)),
                max(1, round(out[1] * settings.style_scale)))
    w, h = image_size
    scale = max(out) * settings.style_scale / max(w, h)
    return max(1, round(h * scale)), max(1, round(w * scale))


def scale_size(out_hw: tuple[int, int], scales: int, k: int) -> tuple[int, int]:
    """(height, width) of scale ``k`` (0-based, 0 = the coarsest) of a ``scales``-scale run: the
    output's (height, width) divided by 2^(scales-1-k), each side rounded, at least 1."""
    e = int(scales) - 1 - int(k)
    return tuple(max(1, round(math.ldexp(d, -e))) for d in out_hw)


def _fraction(e: int) -> str:
    return f"1/{2 ** e}" if e <= 30 else f"1/2^{e}"


def upsample(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """[1, 3, h, w] network input -> [1, 3, H, W] float64, bicubic per channel (PIL's float
    images, so nothing is rounded to 8 bits between scales)."""
    h, w = hw
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(c, np.float32))
                           .resize((w, h), Image.Resampling.BICUBIC), np.float64)
                for c in np.asarray(x)[0]]
    return np.ascontiguousarray(np.stack(channels)[None])


def _resize(image: Image.Image, hw: tuple[int, int]) -> np.ndarray:
    if image.size == (hw[1], hw[0]):
        return np.asarray(image, np.uint8).copy()
    return np.asarray(resize_image(image, "stretch", hw), np.uint8).copy()


def _source_name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"<{type(source).__name__}>"


def _as_image(source) -> Image.Image:
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3:
            raise InputError(f"an image array must be [H, W, 3] RGB, got shape {source.shape}")
        return Image.fromarray(np.clip(source, 0, 255).astype(np.uint8), "RGB")
    return load_image(source)


# -- the network ----------------------------------------------------------------------------------
def build_network(settings: StyleSettings, driver=None):
    """The VGG19 of ``settings.weights`` (None: the default weight file; "random": He-normal)."""
    from .contract import BACKWARD
    from .network import VGG19, Network
    from .registry import get_driver

    driver = driver if driver is not None else settings.driver
    if driver is None or isinstance(driver, str):  # the best driver that can go backward
        driver = get_driver(driver, require={BACKWARD})
    if settings.weights == "random":
        return VGG19.random(settings.seed, driver, pooling=settings.pooling)
    from .weights import find_weights

    path = find_weights(settings.weights)
    return Network.from_file(path, driver, pooling=settings.pooling)   # VGG19 or VGG16


def layer_table():
    """The VGG19 layer table (for checking names without loading weights)."""
    from .network import Network, vgg_layers

    return Network(vgg_layers(), {})


def check_geometry(net, settings: StyleSettings, out_hw, style_hws, where: str = "",
                   hint: str = "use a larger size or shallower layers") -> None:
    """Layer names exist and every image is large enough for the deepest loss layer.
    ``where`` prefixes the error (which scale), ``hint`` says what to change."""
    check_layers(net, settings.content_layers, "content")
    check_layers(net, settings.style_layers, "style")
    layers = [*settings.content_layers, *settings.style_layers]
    need = min_size(net, layers)
    for what, (h, w) in [("output", out_hw)] + [(f"style image {i + 1}", hw)
                                                   for i, hw in enumerate(style_hws)]:
        if min(h, w) < need:
            deepest = max(layers, key=net._position)
            raise InputError(f"{where}the {what} would be {h}x{w} pixels, too small for layer "
                             f"{deepest!r}: it needs at least {need} pixels on each side "
                             f"({hint})")
        for name in layers:
            feature_geometry(net, name, h, w)


# -- one run --------------------------------------------------------------------------------------
class StyleTransfer:
    """A network and style images, reusable for many content images and many steps.

    style: one image (path, PIL image or [H, W, 3] uint8 array) or a list of them; net: a
    :class:`vggjit.network.Network` (default: built from ``settings.weights``);
    other keyword arguments: :class:`StyleSettings` fields, or ``preset``.
    Style Grams are computed once per output size and reused.
    """

    def __init__(self, style, *, net=None, preset: str | None = None,
                 settings: StyleSettings | None = None, **options):
        self.settings = settings if settings is not None else make_settings(preset, **options)
        styles = list(style) if isinstance(style, (list, tuple)) else [style]
        if not styles:
            raise InputError("at least one style image is needed")
        self.style_names = [_source_name(s) for s in styles]
        self.styles = [_as_image(s) for s in styles]
        blend = self.settings.style_blend
        if blend is None:
            blend = [1.0] * len(styles)
        if len(blend) != len(styles):
            raise InputError(f"{len(styles)} style images but {len(blend)} blend weights")
        if any(not math.isfinite(b) or b < 0 for b in blend) or sum(blend) <= 0:
            raise InputError(f"style blend weights must be non-negative with a positive sum, "
                             f"got {list(blend)}")
        self.blend = [float(b) / float(sum(blend)) for b in blend]
        self._net = net
        self._style_cache: dict = {}

    @property
    def net(self):
        if self._net is None:
            self._net = build_network(self.settings)
        return self._net

    def plan(self, content) -> dict:
        """Load the content, work out every size and check it against the layers (no network
        weights needed): the cheap checks that must pass before any work starts."""
        image = _as_image(content)
        out_hw = output_size(image.size, self.settings)
        style_hws = [style_size(s.size, out_hw, self.settings) for s in self.styles]
        net = self._net if self._net is not None else layer_table()
        check_geometry(net, self.settings, out_hw, style_hws)
        scales = int(self.settings.scales)
        if scales > 1:
            self._check_scales(net, out_hw)
        # Every scale's images are resized from the originals, exactly as a one-scale run at
        # that scale's size would resize them.
        scale_hws = [scale_size(out_hw, scales, k) for k in range(scales)]
        scale_style_hws = [[style_size(s.size, hw, self.settings) for s in self.styles]
                           for hw in scale_hws]
        init = self.settings.init
        if init not in INITS:
            init_image = _as_image(init)  # an image path: must be readable now
        else:
            init_image = None
        return {"content": image, "out_hw": out_hw, "style_hws": style_hws,
                "scale_hws": scale_hws, "scale_style_hws": scale_style_hws,
                "init_image": init_image, "content_name": _source_name(content)}

    def _check_scales(self, net, out_hw) -> None:
        """Every coarse scale is large enough for the layers (the coarsest first: it is the
        smallest); the error names the number of scales and how many would fit."""
        s, scales = self.settings, int(self.settings.scales)

        def check(n: int, k: int, where: str = "", hint: str = "") -> None:
            hw = scale_size(out_hw, n, k)
            check_geometry(net, s, hw, [style_size(img.size, hw, s) for img in self.styles],
                           where, hint)

        def fits(n: int, k: int = 0) -> bool:
            try:
                check(n, k)
            except InputError:
                return False
            return True

        for k in range(scales - 1):
            if fits(scales, k):
                continue
            fit = 1
            while fit + 1 < scales and fits(fit + 1):
                fit += 1
            e = scales - 1 - k
            where = (f"with {scales} scales, scale {k + 1}/{scales} works at {_fraction(e)} of "
                     f"the output size: ")
            hint = (f"use at most {fit} scales here" if fit > 1 else
                    "use 1 scale (no coarse-to-fine) here") + ", a larger size or shallower layers"
            check(scales, k, where, hint)

    def start(self, content, *, output=None, overwrite: bool = False,
              progress: bool = False, log: Callable[[str], None] | None = None) -> "Session":
        """Prepare a run on ``content`` (checks first, then targets): returns a Session."""
        plan = self.plan(content)
        s = self.settings
        h, w = plan["out_hw"]
        content_rgb = _resize(plan["content"], (h, w))
        style_rgbs = [_resize(img, hw) for img, hw in zip(self.styles, plan["style_hws"])]
        coarse = [(_resize(plan["content"], hw), [_resize(img, shw) for img, shw
                                                  in zip(self.styles, style_hws)])
                  for hw, style_hws in zip(plan["scale_hws"][:-1], plan["scale_style_hws"][:-1])]
        session = Session(self, content_rgb, style_rgbs, output=output, overwrite=overwrite,
                          progress=progress, log=log, names=(plan["content_name"],
                                                             self.style_names), coarse=coarse)
        session.check_outputs(0)
        session.prepare()
        # The start image is made at the first (coarsest) scale's size.
        h, w = session.content_rgb.shape[:2]
        rng = np.random.default_rng(s.seed)
        base = session.content_input.astype(np.float64)
        if s.init == "content":
            x = base
        elif s.init == "noise":
            x = base * (1 - s.noise) + rng.uniform(-20, 20, base.shape) * s.noise
        elif s.init == "random":
            x = rng.uniform(-20, 20, base.shape)
        else:
            init_rgb = _resize(plan["init_image"], (h, w)).astype(np.float64)
            if s.preserve_colors:
                init_rgb = luminance_image(init_rgb)
            x = session.to_input(init_rgb).astype(np.float64)
        session.x = np.ascontiguousarray(x)
        return session

    def run(self, content, *, iterations: int | None = None, output=None,
            overwrite: bool = False, progress: bool = False,
            log: Callable[[str], None] | None = None) -> StyleResult:
        """Stylise ``content``: start a session, run it to the end, return the result."""
        session = self.start(content, output=output, overwrite=overwrite, progress=progress,
                             log=log)
        return session.run(iterations)

    def style_grams(self, style_rgbs: list[np.ndarray], out_hw, mean_pixel, content_rgb):
        key = (tuple(out_hw), tuple(a.shape for a in style_rgbs),
               self.settings.preserve_colors and content_rgb.tobytes())
        if key not in self._style_cache:
            arrays = []
            for rgb in style_rgbs:
                rgb = rgb.astype(np.float64)
                if self.settings.preserve_colors:
                    rgb = luminance_image(rgb, match=content_rgb.astype(np.float64))
                arrays.append(to_array(rgb, mean_pixel))
            self._style_cache[key] = style_targets(self.net, arrays, self.blend,
                                                   self.settings.style_layers, *out_hw)
        return self._style_cache[key]


class _Diverged(Exception):
    def __init__(self, loss: float, why: str):
        super().__init__(why)
        self.loss, self.why = loss, why


class Session:
    """One style-transfer run in progress: the image, the optimiser, the step, the history.

    content_rgb, style_rgbs: the content and style images ([H, W, 3] uint8) at the output size;
    coarse: (content_rgb, style_rgbs) of every coarser scale of a coarse-to-fine run, the
    coarsest first. The session starts at the first scale; ``step`` counts the steps of the
    current scale (``stage``, 0-based; users see scale ``stage + 1``).
    """

    def __init__(self, transfer: StyleTransfer, content_rgb: np.ndarray,
                 style_rgbs: list[np.ndarray], *, output=None, overwrite: bool = False,
                 progress: bool = False, log: Callable[[str], None] | None = None,
                 names=("", ()), coarse=()):
        self.transfer = transfer
        self.settings = transfer.settings
        self.stages = [*((c, list(st)) for c, st in coarse), (content_rgb, list(style_rgbs))]
        self.stage = 0
        self.content_rgb, self.style_rgbs = self.stages[0]
        self.output = Path(output) if output is not None else None
        self.overwrite = overwrite
        self.progress, self.log = progress, log
        self.content_name, self.style_names = names[0], list(names[1])
        self.step = 0
        self.history: list[dict] = []
        self.x: np.ndarray | None = None
        self.optimizer = make_optimizer(self.settings.optimizer, self.settings.lr)
        self.objective: StyleObjective | None = None
        self.files: dict[str, str] = {}
        self.resumed_from: str | None = None
        self._own: set[Path] = set()  # files of this run that it may replace
        self.final_loss: float | None = None
        self._nonfinite = 0  # L-BFGS trial points whose loss was not finite

    @property
    def scales(self) -> int:
        return len(self.stages)

    @property
    def output_hw(self) -> tuple[int, int]:
        """(height, width) of the result: the last scale's."""
        return tuple(int(d) for d in self.stages[-1][0].shape[:2])

    def select_stage(self, stage: int) -> None:
        """Make scale ``stage`` (0-based) current (its images; no targets computed)."""
        self.stage = int(stage)
        self.content_rgb, self.style_rgbs = self.stages[self.stage]

    def _scale_name(self) -> str:
        return f"scale {self.stage + 1}/{self.scales}"

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    # -- paths ------------------------------------------------------------------------------
    def paths(self) -> dict[str, Path]:
        out = self.output
        if out is None:
            return {}
        stem = out.with_suffix("")
        return {"image": out, "log": Path(f"{stem}.log.json"), "curve": Path(f"{stem}.loss.png"),
                "checkpoint": Path(f"{stem}.ckpt.npz")}

    def step_path(self, step: int, stage: int | None = None) -> Path:
        """OUT_0100.png; in a coarse-to-fine run OUT_s<scale>_0100.png (scale from 1), so the
        scales' intermediate images never collide."""
        out = self.output
        if self.scales == 1:
            return out.with_name(f"{out.stem}_{step:04d}{out.suffix}")
        k = self.stage if stage is None else stage
        return out.with_name(f"{out.stem}_s{k + 1}_{step:04d}{out.suffix}")

    def check_outputs(self, from_step: int) -> None:
        """Before the first step: every file this run will write (the current scale's from
        ``from_step`` on, and every later scale's) is writable and (unless overwrite, or it is
        this run's own from before a resume) does not exist yet."""
        if self.output is None:
            return
        if self.output.suffix.lower() not in Image.registered_extensions():
            raise InputError(f"{self.output}: unknown image file extension "
                             f"{self.output.suffix!r} (use .png or .jpg)")
        check_writable(self.output, overwrite=True)
        planned = list(self.paths().values())
        every = self.settings.save_every
        if every:
            for k in range(self.stage, self.scales):
                first = from_step + 1 if k == self.stage else 1
                planned += [self.step_path(n, k) for n in range(first, self.settings.iterations + 1)
                            if n % every == 0]
        if self.overwrite:
            return
        clash = [p for p in planned if p.exists() and p.resolve() not in self._own]
        if clash:
            names = ", ".join(str(p) for p in clash[:3]) + (" ..." if len(clash) > 3 else "")
            hint = (" (a checkpoint of an unfinished run: continue it with --resume)"
                    if clash[0] == self.paths()["checkpoint"] else "")
            raise OutputExistsError(f"{names} already exist{'s' if len(clash) == 1 else ''}"
                                    f"{hint}; pass --overwrite to replace")

    # -- preparation ------------------------------------------------------------------------
    def to_input(self, rgb: np.ndarray) -> np.ndarray:
        return to_array(rgb, self.transfer.net.mean_pixel)

    def prepare(self) -> None:
        """Content features and style Grams of the current scale: computed once per scale."""
        self.content_input, self.objective = self._objective(self.content_rgb, self.style_rgbs)

    def _objective(self, content_rgb: np.ndarray, style_rgbs: list[np.ndarray]):
        """(content input [1, 3, H, W], StyleObjective) for content and style images."""
        s, net = self.settings, self.transfer.net
        content = content_rgb.astype(np.float64)
        if s.preserve_colors:
            content = luminance_image(content)
        content_input = self.to_input(content)
        h, w = content_rgb.shape[:2]
        grams = self.transfer.style_grams(style_rgbs, (h, w), net.mean_pixel, content_rgb)
        objective = StyleObjective(
            net, content_input,
            layer_weights(s.content_layers, s.content_layer_weights, "content"),
            layer_weights(s.style_layers, s.style_layer_weights, "style"), grams,
            alpha=s.alpha, beta=s.beta, tv_weight=s.tv_weight, normalize=s.normalize,
            content_features=content_targets(net, content_input, s.content_layers))
        return content_input, objective

    def _next_scale(self) -> None:
        """Go to the next scale: its targets, the current image upsampled (bicubic) to its
        size as the start, a fresh optimiser (Adam's moments and L-BFGS's curvature pairs
        belong to the other size). Everything is computed before anything is replaced, so an
        interrupt meanwhile leaves the finished scale as it was (resuming moves on from it)."""
        k = self.stage + 1
        content_rgb, style_rgbs = self.stages[k]
        content_input, objective = self._objective(content_rgb, style_rgbs)
        x = upsample(self.x, content_rgb.shape[:2])
        optimizer = make_optimizer(self.settings.optimizer, self.settings.lr)
        self.select_stage(k)
        self.content_input, self.objective, self.optimizer = content_input, objective, optimizer
        self.x, self.step, self._nonfinite = x, 0, 0
        self.final_loss = None  # the coarse scale's: not the result's

    # -- images -----------------------------------------------------------------------------
    def rgb(self, x: np.ndarray | None = None, content_rgb: np.ndarray | None = None
            ) -> np.ndarray:
        """The image x (default: the current one) as RGB float64 [H, W, 3], recoloured when the
        content's colours are preserved (with ``content_rgb``, default the current scale's)."""
        x = self.x if x is None else x
        rgb = np.asarray(x, np.float64)[0].transpose(1, 2, 0) + self.transfer.net.mean_pixel
        if self.settings.preserve_colors:
            content = self.content_rgb if content_rgb is None else content_rgb
            rgb = recolor(rgb, content.astype(np.float64))
        return rgb

    def image(self, x: np.ndarray | None = None,
              content_rgb: np.ndarray | None = None) -> Image.Image:
        rgb = np.clip(np.round(self.rgb(x, content_rgb)), 0, 255).astype(np.uint8)
        return Image.fromarray(rgb, "RGB")

    def full_image(self) -> Image.Image:
        """The current image at the output size: a coarse scale's is upsampled (bicubic), so
        OUT always has the result's size, even after an interrupt at a coarse scale."""
        if self.stage == self.scales - 1:
            return self.image()
        full = self.stages[-1][0]
        return self.image(upsample(self.x, full.shape[:2]), full)

    # -- running ----------------------------------------------------------------------------
    def _fun(self, strict: bool, reference: list):
        objective = self.objective

        def fun(x):
            ev = objective(np.asarray(x, np.float32))
            loss = ev.loss
            if not math.isfinite(loss):
                if strict:
                    raise _Diverged(loss, f"the loss became {loss}")
                self._nonfinite += 1  # the line search backs off from an infinite loss
                return math.inf, np.full(x.shape, np.nan), ev.terms
            if strict and reference and reference[0] > 0 and loss > EXPLODE_FACTOR * reference[0]:
                raise _Diverged(loss, f"the loss exploded to {loss:.4g} (more than "
                                      f"{EXPLODE_FACTOR:g} times the first loss, "
                                      f"{reference[0]:.4g})")
            if not reference:
                reference.append(loss)
            return loss, ev.grad.astype(np.float64), ev.terms
        return fun

    def scale_history(self) -> list[dict]:
        """The history entries of the current scale (all of them in a one-scale run)."""
        if self.scales == 1:
            return self.history
        return [e for e in self.history if e.get("scale") == self.stage + 1]

    def run(self, iterations: int | None = None) -> StyleResult:
        """Advance to step ``iterations`` (default: the settings' total) and finish the run:
        write the result, log and curve when there is an output path. A coarse-to-fine run
        runs every remaining scale to that step (the steps count per scale). Ctrl-C (or SIGTERM
        made into KeyboardInterrupt) stops after the last complete step and saves a checkpoint."""
        total = self.settings.iterations if iterations is None else int(iterations)
        if total != self.settings.iterations:
            self.settings = dataclasses.replace(self.settings, iterations=total)
        started = time.perf_counter()
        while True:
            stopped, message = self._run_scale(total)
            if stopped in ("interrupted", "diverged") or self.stage == self.scales - 1:
                break
            if stopped == "converged":  # a coarse scale that cannot improve: refine the next
                self._say(f"{self._scale_name()}: {message}; going on to the next scale")
            try:
                self._next_scale()
            except KeyboardInterrupt:
                stopped, message = "interrupted", self._interrupted_message()
                break
        return self._finish(stopped, message, time.perf_counter() - started)

    def _interrupted_message(self) -> str:
        where = f" at {self._scale_name()}" if self.scales > 1 else ""
        return f"interrupted{where} after step {self.step}"

    def _run_scale(self, total: int) -> tuple[str | None, str]:
        """Steps of the current scale up to ``total``: (stopped, message)."""
        strict = isinstance(self.optimizer, Adam)
        done = self.scale_history()
        reference = [done[0]["loss"]] if done else []
        fun = self._fun(strict, reference)
        last_good, last_good_step = self.x.copy(), self.step
        h, w = self.content_rgb.shape[:2]
        multi = self.scales > 1
        where = f"{self._scale_name()}: " if multi else ""
        if multi and self.step < total:
            self._say(f"{self._scale_name()} at {w}x{h} px: {total} steps"
                      + (f", from step {self.step}" if self.step else ""))
        bar = self._bar(total)
        stopped, message = None, ""
        try:
            while self.step < total:
                t0 = time.perf_counter()
                try:
                    result = self.optimizer.step(self.x, fun)
                except _Diverged as exc:
                    stopped = "diverged"
                    message = (f"{where}{exc.why} at step {self.step + 1}; stopped and kept the "
                               f"last good image (step {last_good_step})")
                    self.x, self.step = last_good, last_good_step
                    break
                except Converged as exc:
                    if self._nonfinite:
                        stopped = "diverged"
                        message = (f"{where}the loss became non-finite at step {self.step + 1} "
                                   f"(at every point the line search tried); stopped and kept "
                                   f"the last good image (step {self.step})")
                    else:
                        stopped, message = "converged", f"{exc} at step {self.step + 1}"
                    break
                self.x, self.step = result.x, self.step + 1
                last_good, last_good_step = result.checked, self.step - (1 if strict else 0)
                entry = {"step": self.step}
                if multi:
                    entry.update(scale=self.stage + 1, height=int(h), width=int(w))
                entry.update(loss=result.loss,
                             terms={k: float(v) for k, v in result.terms.items()},
                             evaluations=result.evaluations,
                             seconds=round(time.perf_counter() - t0, 4))
                self.history.append(entry)
                self._report(entry, bar, total)
            if stopped is None and strict:
                # Adam's last update was never evaluated: check (and report) the final image once.
                final = self.objective(self.x.astype(np.float32), need_grad=False)
                if not math.isfinite(final.loss):
                    stopped = "diverged"
                    message = (f"{where}the loss became {final.loss} at the final image (step "
                               f"{self.step}); kept the last good image (step {last_good_step})")
                    self.x, self.step = last_good, last_good_step
                else:
                    self.final_loss = final.loss
        except KeyboardInterrupt:
            stopped, message = "interrupted", self._interrupted_message()
        finally:
            if bar is not None:
                bar.close()
        return stopped, message

    def _bar(self, total: int):
        if not self.progress:
            return None
        from tqdm import tqdm

        # disable=None: no bar when stderr is not a terminal (logs get --print-every lines).
        desc = self._scale_name() if self.scales > 1 else "stylize"
        return tqdm(total=total, initial=self.step, unit="step", dynamic_ncols=True,
                    desc=desc, leave=True, disable=None, mininterval=0.5)

    def _report(self, entry: dict, bar, total: int) -> None:
        s = self.settings
        if bar is not None:
            bar.set_postfix_str(f"loss {entry['loss']:.4g}", refresh=False)
            bar.update(1)
        if s.print_every and (entry["step"] % s.print_every == 0 or entry["step"] == total):
            line = format_losses(entry, self.scales)
            if bar is not None:
                bar.write(line)
            elif self.log is not None:
                self.log(line)
        if self.output is not None and s.save_every and entry["step"] % s.save_every == 0:
            path = self.step_path(entry["step"])
            self._save_image(self.image(), path)  # at the current scale's size
            self.files.setdefault("steps", []).append(str(path))
            self.save_checkpoint()

    def _save_image(self, image: Image.Image, path: Path) -> None:
        from .images import save_image

        save_image(image, path, overwrite=True)
        self._own.add(path.resolve())

    # -- results ----------------------------------------------------------------------------
    def facts(self) -> dict:
        net = self.transfer.net
        h, w = self.output_hw
        facts = {"content": self.content_name, "styles": self.style_names,
                 "blend": self.transfer.blend, "network": net.source,
                 "random_weights": bool(net.random), "driver": net.driver.name,
                 "height": h, "width": w,
                 "optimizer_params": self.optimizer.params(),
                 "resumed_from": self.resumed_from}
        if self.scales > 1:
            facts["scale"] = self.stage + 1  # the scale reached (the last, when finished)
            facts["scale_sizes"] = [[int(d) for d in c.shape[:2]] for c, _ in self.stages]
        return facts

    def result(self, stopped=None, message: str = "") -> StyleResult:
        """The result: its image at the output size (a coarse scale's upsampled), its array
        the optimised input at the current scale's size."""
        settings = self.settings.to_dict()
        settings.update(self.facts())
        return StyleResult(self.full_image(), list(self.history), settings,
                           self.x.astype(np.float32), self.step, stopped, message,
                           dict(self.files))

    def _finish(self, stopped, message: str, seconds: float) -> StyleResult:
        result = self.result(stopped, message)
        if self.output is not None:
            paths = self.paths()
            self._save_image(result.image, paths["image"])
            self.files["image"] = str(paths["image"])
            if stopped == "interrupted":
                self.save_checkpoint()
            elif paths["checkpoint"].resolve() in self._own:
                paths["checkpoint"].unlink(missing_ok=True)  # finished: the checkpoint is done
                self.files.pop("checkpoint", None)
            write_log(paths["log"], result, seconds, self.final_loss)
            self._own.add(paths["log"].resolve())
            self.files["log"] = str(paths["log"])
            if self.history:
                plot_losses(self.history, paths["curve"])
                self._own.add(paths["curve"].resolve())
                self.files["curve"] = str(paths["curve"])
            result.files = dict(self.files)
        if stopped == "diverged":
            where = f"; the last good image is in {self.files['image']}" if self.output else ""
            raise LossDivergedError(message + where, result)
        return result

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, path=None) -> Path | None:
        """Write image, optimiser state, step, history and settings to an .npz (no pickles).
        The content and style images are the output size's (``content``, ``style_<i>``); a
        coarse-to-fine run adds the current scale (``stage``, 0-based) and every coarser
        scale's images (``scale<k>_content``, ``scale<k>_style_<i>``), so resuming needs no
        original file and resizes nothing."""
        path = Path(path) if path is not None else self.paths().get("checkpoint")
        if path is None:
            return None
        content_rgb, style_rgbs = self.stages[-1]
        arrays = {"format": np.array(CHECKPOINT_FORMAT), "x": self.x,
                  "step": np.array(self.step, np.int64), "content": content_rgb,
                  "settings": np.array(json.dumps(self.settings.to_dict())),
                  "facts": np.array(json.dumps({"content": self.content_name,
                                                "styles": self.style_names,
                                                "suffix": self.output.suffix if self.output
                                                else ".png"})),
                  "history": np.array(json.dumps(self.history))}
        for i, rgb in enumerate(style_rgbs):
            arrays[f"style_{i}"] = rgb
        if self.scales > 1:
            arrays["stage"] = np.array(self.stage, np.int64)
            for k, (coarse_content, coarse_styles) in enumerate(self.stages[:-1]):
                arrays[f"scale{k}_content"] = coarse_content
                for i, rgb in enumerate(coarse_styles):
                    arrays[f"scale{k}_style_{i}"] = rgb
        for key, value in self.optimizer.state_dict().items():
            arrays[f"opt_{key}"] = np.asarray(value)
        atomic_save(path, lambda tmp: np.savez(tmp, **arrays))
        self._own.add(path.resolve())
        self.files["checkpoint"] = str(path)
        return path


def format_losses(entry: dict, scales: int = 1) -> str:
    """One line: (the scale,) step, total loss and each weighted term."""
    terms = "  ".join(f"{k} {v:.4g}" for k, v in entry["terms"].items())
    scale = f"scale {entry['scale']}/{scales}  " if "scale" in entry else ""
    return f"{scale}step {entry['step']:>5}  loss {entry['loss']:.6g}  {terms}"


def write_log(path: Path, result: StyleResult, seconds: float, final_loss=None) -> None:
    data = {"settings": result.settings, "steps": result.steps, "stopped": result.stopped,
            "message": result.message, "seconds": round(seconds, 3),
            "final_loss": final_loss if final_loss is not None else result.loss,
            "history": result.history}
    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=1, default=float)


def plot_losses(history: list[dict], path: Path) -> None:
    """The loss curve (total, content, style, tv against the step; log scale) as a PNG.
    A coarse-to-fine run's scales follow each other, with a dashed line where a scale starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    multi = any("scale" in e for e in history)
    steps = list(range(1, len(history) + 1)) if multi else [e["step"] for e in history]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    if multi:
        for i in range(1, len(history)):
            if history[i].get("scale") != history[i - 1].get("scale"):
                ax.axvline(i + 0.5, color="grey", linestyle="--", linewidth=0.8)
    curves = {"total": [e["loss"] for e in history]}
    for kind in ("content", "style", "tv"):
        values = [sum(v for k, v in e["terms"].items() if k.split(":")[0] == kind)
                  for e in history]
        if any(values):
            curves[kind] = values
    for label, values in curves.items():
        ax.plot(steps, [max(v, 1e-30) for v in values], label=label,
                linewidth=2 if label == "total" else 1)
    ax.set_yscale("log")
    ax.set_xlabel("step (all scales, in order)" if multi else "step")
    ax.set_ylabel("weighted loss")
    ax.set_title("vggjit stylize: loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


# -- the one-call API and resuming ------------------------------------------------------------------
def stylize(content, style, *, net=None, output=None, overwrite: bool = False,
            progress: bool = False, preset: str | None = None, **options) -> StyleResult:
    """Stylise ``content`` with ``style`` (one image or a list); options: StyleSettings fields.

    Returns a :class:`StyleResult` (image, history, settings). With ``output`` the result, log,
    loss curve, intermediate images and (when unfinished) a checkpoint are written there.
    """
    transfer = StyleTransfer(style, net=net, preset=preset, **options)
    return transfer.run(content, output=output, overwrite=overwrite, progress=progress)


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :meth:`Session.save_checkpoint` (no pickles)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InputError(f"{path}: no such checkpoint file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable vggjit checkpoint ({exc})") from None
    missing = {"format", "x", "step", "content", "settings", "history"} - set(arrays)
    if missing:
        raise InputError(f"{path}: not a vggjit style checkpoint (missing {', '.join(sorted(missing))})")
    if int(arrays["format"]) != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: checkpoint format {int(arrays['format'])}, this vggjit reads "
                         f"format {CHECKPOINT_FORMAT}")
    return arrays


def resume(checkpoint, *, net=None, iterations: int | None = None, output=None,
           overwrite: bool = False, progress: bool = False, driver: str | None = None,
           weights: str | None = None, log=None, start_only: bool = False):
    """Continue a checkpointed run to its total (or ``iterations``) and return the result.

    The image, optimiser state (Adam's moments and step; L-BFGS's history, loss and gradient),
    step, loss history, settings and the resized content and style images all come from the
    checkpoint, so the continuation equals the uninterrupted run. A coarse-to-fine run continues
    the scale it was at, then runs the later ones (``iterations``: the new steps per scale).
    """
    arrays = load_checkpoint(checkpoint)
    data = json.loads(str(arrays["settings"]))
    if driver is not None:
        data["driver"] = driver
    if weights is not None:
        data["weights"] = weights
    if iterations is not None:
        data["iterations"] = int(iterations)
    settings = StyleSettings.from_dict(data)
    settings.check()
    facts = json.loads(str(arrays["facts"])) if "facts" in arrays else {}
    styles = [arrays[f"style_{i}"] for i in range(sum(k.startswith("style_") for k in arrays))]
    transfer = StyleTransfer(styles, net=net, settings=settings)
    transfer.style_names = facts.get("styles", transfer.style_names)
    history = json.loads(str(arrays["history"]))
    step = int(arrays["step"])
    scales, stage = int(settings.scales), int(arrays["stage"]) if "stage" in arrays else 0
    coarse = []
    for k in range(scales - 1):
        keys = [f"scale{k}_content"] + [f"scale{k}_style_{i}" for i in range(len(styles))]
        missing = [key for key in keys if key not in arrays]
        if missing:
            raise InputError(f"{checkpoint}: a {scales}-scale run's checkpoint without the images "
                             f"of scale {k + 1} (missing {', '.join(missing)})")
        coarse.append((arrays[keys[0]], [arrays[key] for key in keys[1:]]))
    if not 0 <= stage < scales:
        raise InputError(f"{checkpoint}: the checkpoint is at scale {stage + 1}, but the run has "
                         f"{scales} scale(s)")
    if output is None:
        output = checkpoint_output(checkpoint, arrays)
    session = Session(transfer, arrays["content"], [s for s in styles], output=output,
                      overwrite=overwrite, progress=progress, log=log,
                      names=(facts.get("content", "<checkpoint>"), transfer.style_names),
                      coarse=coarse)
    session.select_stage(stage)
    session._own.update(p.resolve() for p in session.paths().values())
    session._own.update(session.step_path(k).resolve() for k in range(1, step + 1))
    session.check_outputs(step)
    session.prepare()
    session.x = np.array(arrays["x"], np.float64)
    session.step, session.history = step, history
    session.resumed_from = str(checkpoint)
    state = {k[4:]: v for k, v in arrays.items() if k.startswith("opt_")}
    if isinstance(session.optimizer, Adam):
        session.optimizer.load_state_dict(state)
    else:
        done = session.scale_history()  # the current scale's: an earlier one's terms don't apply
        session.optimizer.load_state_dict(state, done[-1]["terms"] if done else None)
    if start_only:
        return session
    return session.run()


def checkpoint_output(checkpoint, arrays: dict | None = None) -> Path:
    """The result path a checkpoint belongs to: ``out.ckpt.npz`` -> ``out.png`` (the run's
    image suffix), in the checkpoint's directory."""
    path = Path(checkpoint)
    name = path.name
    stem = name[:-len(".ckpt.npz")] if name.endswith(".ckpt.npz") else path.stem
    arrays = load_checkpoint(path) if arrays is None else arrays
    facts = json.loads(str(arrays["facts"])) if "facts" in arrays else {}
    suffix = facts.get("suffix", ".png")
    return path.with_name(stem + suffix)
