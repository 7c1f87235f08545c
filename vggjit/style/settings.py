"""Every option of a style-transfer run: :class:`StyleSettings`, the named presets and
:func:`make_settings` (defaults, then a preset, then explicit options)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..errors import InputError
from ..losses import layer_weights

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYERS = ("relu4_2",)
INITS = ("content", "noise", "random")


@dataclass
class StyleSettings:
    """Every option of a style-transfer run (all JSON-serialisable).

    Layers: ``content_layers`` / ``style_layers`` with optional per-layer weights (default:
    equal weights summing to 1, the lab's mean). Loss: ``alpha`` (content), ``beta`` (style),
    ``tv_weight`` (total variation), ``normalize`` (divide each layer's weight by the mean
    square of its target, so every term is a relative error: the defaults then hold for any
    VGG's scale, see docs/style-transfer.md). Optimiser: ``optimizer`` ("lbfgs" or "adam"),
    ``lr`` (Adam), ``iterations``. Start: ``init`` ("content", "noise" = content*(1-noise) +
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
    # Calibrated by eye on a real ImageNet VGG16 (docs/style-transfer.md, "Choosing the
    # defaults"): the subject clearly there in the style's textures and colours. With
    # normalize every term is a relative error, so beta needs no retuning per network or
    # weight source; the lab's unnormalised beta 500 loses the subject under L-BFGS.
    alpha: float = 1.0
    beta: float = 50.0
    tv_weight: float = 1e-4
    normalize: bool = True
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
    # The course lab (docs/equations.md, section 5): Adam lr 1 for 100 steps at 192x320 from content + noise,
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
