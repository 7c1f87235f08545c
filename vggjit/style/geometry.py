"""Sizes of a style-transfer run and the checks that they suit the network.

The output's (height, width) from the content image and the settings, each style image's,
each scale's of a coarse-to-fine run (scale k of S at the output size / 2^(S-k)), the bicubic
upsampling from one scale to the next, and the check that every image is large enough for the
deepest loss layer (before any work starts).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import MAX_ASPECT
from ..losses import check_layers, feature_geometry, min_size
from .settings import StyleSettings


def output_hw(image_size: tuple[int, int], settings: StyleSettings) -> tuple[int, int]:
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


def check_aspect(image_size: tuple[int, int], what: str, settings: StyleSettings) -> None:
    """Refuse an image more than MAX_ASPECT times as wide as tall (or the reverse) where its
    aspect ratio is kept: the resize would make the other side enormous (a 40000x1 strip at
    --height 256 is 10,240,000 pixels wide) or vanish. A content image with both --height and
    --width, and a style image then, are stretched instead and need no cap."""
    if settings.height is not None and settings.width is not None:
        return
    w, h = image_size
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise InputError(f"{what} is {w}x{h} pixels, more than {MAX_ASPECT} times as "
                         f"{'wide' if w > h else 'tall'} as it is {'tall' if w > h else 'wide'}; "
                         f"resized with its aspect ratio kept, one side would be enormous or "
                         f"vanish (crop it first, or give both --height and --width to stretch "
                         f"it)")


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



def check_scales(net, settings: StyleSettings, out_hw: tuple[int, int],
                 style_sizes: list[tuple[int, int]]) -> None:
    """Every coarse scale of a coarse-to-fine run is large enough for the layers (the coarsest
    first: it is the smallest); the error names the number of scales and how many would fit.
    style_sizes: the style images' PIL sizes (width, height)."""
    scales = int(settings.scales)

    def check(n: int, k: int, where: str = "", hint: str = "") -> None:
        hw = scale_size(out_hw, n, k)
        check_geometry(net, settings, hw, [style_size(size, hw, settings) for size in style_sizes],
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
