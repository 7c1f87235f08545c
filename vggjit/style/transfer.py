"""The style-transfer front: :class:`StyleTransfer` (one network and style images for many
content images), the one-call :func:`stylize` and :func:`resume` (continue a checkpoint).

Inputs (content, style and init images) may be paths, PIL images or [H, W, 3] uint8 arrays;
every size is worked out and checked before any network work starts.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable

import numpy as np
from PIL import Image

from ..contract import BACKWARD
from ..errors import InputError
from ..images import load_image, resize_image, to_array
from ..losses import style_targets
from ..network import VGG19, Network, vgg_layers
from ..registry import get_driver
from ..weights import find_weights
from .budget import RunShape, check_run_fits, estimate, largest_fitting
from .checkpoint import read_checkpoint
from .colour import luminance_image
from .geometry import (check_aspect, check_geometry, check_scales, output_hw, scale_size,
                       style_size)
from .results import StyleResult
from .session import Session
from .settings import INITS, StyleSettings, make_settings


# -- inputs --------------------------------------------------------------------------------------
def _resize(image: Image.Image, hw: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 of ``image`` stretched to ``hw`` (height, width)."""
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
    driver = driver if driver is not None else settings.driver
    if driver is None or isinstance(driver, str):  # the best driver that can go backward
        driver = get_driver(driver, require={BACKWARD})
    if settings.weights == "random":
        return VGG19.random(settings.seed, driver, pooling=settings.pooling)
    path = find_weights(settings.weights)
    return Network.from_file(path, driver, pooling=settings.pooling)   # VGG19 or VGG16


def weightless_network() -> Network:
    """A VGG19 with its layer table and no weights (for checking names and sizes)."""
    return Network(vgg_layers(), {})


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
        self.style_sources = styles
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
        name = _source_name(content)
        check_aspect(image.size, f"the content image {name}", self.settings)
        for i, (style, style_name) in enumerate(zip(self.styles, self.style_names)):
            check_aspect(style.size, f"style image {i + 1} ({style_name})", self.settings)
        out_hw = output_hw(image.size, self.settings)
        style_hws = [style_size(s.size, out_hw, self.settings) for s in self.styles]
        net = self._net if self._net is not None else weightless_network()
        check_geometry(net, self.settings, out_hw, style_hws)
        scales = int(self.settings.scales)
        if scales > 1:
            check_scales(net, self.settings, out_hw, [s.size for s in self.styles])
        self.check_memory(net, out_hw, [s.size for s in self.styles])
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
                "init_image": init_image, "content_name": name}

    def check_memory(self, net, out_hw: tuple[int, int], style_sizes: list,
                     resumed: str | None = None) -> None:
        """Refuse (InputError, before any work) a run whose estimated peak memory exceeds the
        budget (:mod:`vggjit.style.budget`), naming the largest --size (or --style-scale, when
        the style images are what does not fit) that would fit; ``resumed``: the checkpoint
        of a resumed run, whose sizes cannot change. style_sizes: PIL (w, h)."""
        settings = self.settings

        def shape(hw, style_scale) -> RunShape:
            run = dataclasses.replace(settings, style_scale=style_scale)
            hws = [scale_size(hw, run.scales, k) for k in range(run.scales)]
            return RunShape(net.layers, (*run.content_layers, *run.style_layers), run.optimizer,
                            tuple(hws), tuple(tuple(style_size(size, h, run) for size in
                                                    style_sizes) for h in hws))

        def resized(longer: float) -> tuple[int, int]:
            ratio = longer / max(out_hw)
            return tuple(max(1, round(d * ratio)) for d in out_hw)

        def hint(budget: int) -> str:
            if resumed is not None:
                return (f"the sizes of {resumed} are fixed; free some memory or resume on a "
                        f"machine with more")
            def fits(run: RunShape) -> bool:
                return estimate(run) <= budget

            if settings.style_scale > 1 and fits(shape(out_hw, 1.0)):
                best = largest_fitting(lambda v: fits(shape(out_hw, v)), 1.0,
                                       settings.style_scale)
                return f"the largest --style-scale that fits is about {best:.3g}"
            best = largest_fitting(lambda v: fits(shape(resized(v), settings.style_scale)),
                                   1.0, max(out_hw))
            if best is None:
                return "not even the smallest image fits; free some memory"
            h, w = resized(best)
            if settings.height is not None and settings.width is not None:
                return f"the largest output that fits is about {h}x{w} (--height {h} --width {w})"
            return f"the largest --size that fits is about {max(h, w)}"

        h, w = out_hw
        scales = f" in {settings.scales} scales" if settings.scales > 1 else ""
        check_run_fits(shape(out_hw, settings.style_scale),
                       f"a {w}x{h} style transfer{scales} ({settings.optimizer})", hint)

    def start(self, content, *, output=None, overwrite: bool = False,
              progress: bool = False, log: Callable[[str], None] | None = None) -> "Session":
        """Prepare a run on ``content`` (checks first, then targets): returns a Session."""
        plan = self.plan(content)
        content_rgb = _resize(plan["content"], plan["out_hw"])
        style_rgbs = [_resize(img, hw) for img, hw in zip(self.styles, plan["style_hws"])]
        coarse = [(_resize(plan["content"], hw), [_resize(img, shw) for img, shw
                                                  in zip(self.styles, style_hws)])
                  for hw, style_hws in zip(plan["scale_hws"][:-1], plan["scale_style_hws"][:-1])]
        session = Session(self, content_rgb, style_rgbs, output=output, overwrite=overwrite,
                          progress=progress, log=log, names=(plan["content_name"],
                                                             self.style_names), coarse=coarse,
                          inputs=[content, *self.style_sources,
                                  *([self.settings.init] if plan["init_image"] else [])])
        # The start image is made at the first (coarsest) scale's size.
        init_rgb = (_resize(plan["init_image"], plan["scale_hws"][0])
                    if plan["init_image"] is not None else None)
        session.begin(init_rgb)
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


def stylize(content, style, *, net=None, output=None, overwrite: bool = False,
            progress: bool = False, preset: str | None = None, **options) -> StyleResult:
    """Stylise ``content`` with ``style`` (one image or a list); options: StyleSettings fields.

    Returns a :class:`StyleResult` (image, history, settings). With ``output`` the result, log,
    loss curve, intermediate images and (when unfinished) a checkpoint are written there.
    """
    transfer = StyleTransfer(style, net=net, preset=preset, **options)
    return transfer.run(content, output=output, overwrite=overwrite, progress=progress)



def resume(checkpoint, *, net=None, iterations: int | None = None, output=None,
           overwrite: bool = False, progress: bool = False, driver: str | None = None,
           weights: str | None = None, log=None, start_only: bool = False):
    """Continue a checkpointed run to its total (or ``iterations``) and return the result.

    The image, optimiser state (Adam's moments and step; L-BFGS's history, loss and gradient),
    step, loss history, settings and the resized content and style images all come from the
    checkpoint, so the continuation equals the uninterrupted run. A coarse-to-fine run continues
    the scale it was at, then runs the later ones (``iterations``: the new steps per scale).
    ``driver``, ``weights``: instead of the run's; ``start_only``: return the Session, unrun.
    """
    saved = read_checkpoint(checkpoint)
    changes = {"driver": driver, "weights": weights,
               "iterations": int(iterations) if iterations is not None else None}
    settings = dataclasses.replace(saved.settings,
                                   **{k: v for k, v in changes.items() if v is not None})
    settings.check()
    transfer = StyleTransfer(saved.scale_images[-1][1], net=net, settings=settings)
    if saved.style_names is not None:
        transfer.style_names = saved.style_names
    # The checkpoint's images against the layers and the memory budget, before any work.
    layers_net = net if net is not None else weightless_network()
    for content_rgb, style_rgbs in saved.scale_images:
        check_geometry(layers_net, settings, content_rgb.shape[:2],
                       [rgb.shape[:2] for rgb in style_rgbs], f"{checkpoint}: ")
    content_rgb, style_rgbs = saved.scale_images[-1]
    transfer.check_memory(layers_net, content_rgb.shape[:2],
                          [(rgb.shape[1], rgb.shape[0]) for rgb in style_rgbs], str(checkpoint))
    session = Session.from_checkpoint(transfer, saved, checkpoint, output=output,
                                      overwrite=overwrite, progress=progress, log=log)
    if start_only:
        return session
    return session.run()
