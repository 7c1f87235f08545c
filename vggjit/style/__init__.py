"""Gatys neural style transfer: settings and presets, the run loop, checkpoints, logs.

``stylize(content, style, **options)`` is the one-call API; :class:`StyleTransfer` keeps one
network and one set of style images for many content images, and :meth:`StyleTransfer.start`
returns a :class:`Session` that can be advanced a few steps at a time, checkpointed and
resumed. Every option is a field of :class:`StyleSettings` (see docs/style-transfer.md).

One concern a module: ``settings`` (options, presets), ``results`` (what a run returns),
``colour`` (YIQ, luminance-only transfer), ``geometry`` (sizes and their checks), ``budget``
(the run's peak memory, estimated before any work), ``run_files`` (output names,
never-overwrite, never an input, log, loss curve), ``run_lock`` (one run per output),
``checkpoint`` (the .npz format, written and read), ``npz_reader`` (an .npz read without
trusting it), ``checkpoint_check`` (every field checked before a resume works), ``session``
(the optimisation loop) and ``transfer`` (the front).
"""
from __future__ import annotations

from .checkpoint import CHECKPOINT_FORMAT, Checkpoint, checkpoint_output, load_checkpoint
from .colour import luminance_image, recolor, rgb_to_yiq, yiq_to_rgb
from .geometry import check_geometry, check_scales, output_hw, scale_size, style_size, upsample
from .results import LossDivergedError, ResultNotSavedError, StyleResult
from .run_files import RunFiles, plot_losses, write_log
from .session import EXPLODE_FACTOR, Session, format_losses
from .settings import CONTENT_LAYERS, INITS, PRESETS, STYLE_LAYERS, StyleSettings, make_settings
from .transfer import StyleTransfer, build_network, resume, stylize, weightless_network

__all__ = ["CHECKPOINT_FORMAT", "CONTENT_LAYERS", "Checkpoint", "EXPLODE_FACTOR", "INITS",
           "LossDivergedError", "PRESETS", "ResultNotSavedError", "RunFiles", "STYLE_LAYERS",
           "Session", "StyleResult", "StyleSettings", "StyleTransfer", "build_network",
           "check_geometry", "check_scales", "checkpoint_output", "format_losses",
           "load_checkpoint", "luminance_image", "make_settings", "output_hw", "plot_losses",
           "recolor", "resume", "rgb_to_yiq", "scale_size", "style_size", "stylize", "upsample",
           "weightless_network", "write_log", "yiq_to_rgb"]
