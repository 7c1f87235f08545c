"""Checkpoints of an unfinished style-transfer run: the .npz format, its writer and its reader.

A checkpoint holds everything a run needs to continue exactly (no pickles, no original file):

- ``format`` (``CHECKPOINT_FORMAT``), ``x`` (the image, float64 [1, 3, h, w] at the current
  scale), ``step`` (steps done at the current scale), ``history`` (JSON, every step so far),
  ``settings`` (JSON, :class:`StyleSettings`), ``facts`` (JSON: content and style names, the
  result's image suffix);
- ``content``, ``style_<i>``: the images ([H, W, 3] uint8) at the output size;
- a coarse-to-fine run: ``stage`` (the current scale, 0-based) and every coarser scale's
  images, ``scale<k>_content`` and ``scale<k>_style_<i>``;
- ``opt_<key>``: the optimiser's state dict.

:class:`vggjit.style.session.Session` makes a :class:`Checkpoint` of itself and is restored
from one (``Session.from_checkpoint``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_save
from .settings import StyleSettings

CHECKPOINT_FORMAT = 1
#: ``out.png``'s checkpoint is ``out.ckpt.npz``.
CHECKPOINT_SUFFIX = ".ckpt.npz"
#: The key of the current scale's index (the name predates "scale"; the file format keeps it).
SCALE_KEY = "stage"
_REQUIRED = {"format", "x", "step", "content", "settings", "history"}


@dataclass
class Checkpoint:
    """A run's state. scale_images: every scale's (content_rgb, style_rgbs), the coarsest first
    (one entry in a one-scale run), the last at the output size; scale_index: the current scale
    (0-based); x, step: its image and steps done; output: the result image the run writes
    (None: a run without files)."""

    settings: StyleSettings
    x: np.ndarray
    step: int
    history: list
    scale_images: list
    scale_index: int
    optimizer_state: dict
    content_name: str = "<checkpoint>"
    style_names: list | None = None
    output: Path | None = None


def write_checkpoint(path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (an .npz of plain arrays)."""
    path = Path(path)
    content_rgb, style_rgbs = checkpoint.scale_images[-1]
    output = checkpoint.output
    arrays = {"format": np.array(CHECKPOINT_FORMAT), "x": checkpoint.x,
              "step": np.array(checkpoint.step, np.int64), "content": content_rgb,
              "settings": np.array(json.dumps(checkpoint.settings.to_dict())),
              "facts": np.array(json.dumps({"content": checkpoint.content_name,
                                            "styles": checkpoint.style_names,
                                            "suffix": output.suffix if output else ".png"})),
              "history": np.array(json.dumps(checkpoint.history))}
    for i, rgb in enumerate(style_rgbs):
        arrays[f"style_{i}"] = rgb
    if len(checkpoint.scale_images) > 1:
        arrays[SCALE_KEY] = np.array(checkpoint.scale_index, np.int64)
        for k, (coarse_content, coarse_styles) in enumerate(checkpoint.scale_images[:-1]):
            arrays[f"scale{k}_content"] = coarse_content
            for i, rgb in enumerate(coarse_styles):
                arrays[f"scale{k}_style_{i}"] = rgb
    for key, value in checkpoint.optimizer_state.items():
        arrays[f"opt_{key}"] = np.asarray(value)
    atomic_save(path, lambda tmp: np.savez(tmp, **arrays))
    return path


def load_checkpoint(path) -> dict:
    """The arrays of a checkpoint file, checked to be one this vggjit reads (no pickles)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InputError(f"{path}: no such checkpoint file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable vggjit checkpoint ({exc})") from None
    missing = _REQUIRED - set(arrays)
    if missing:
        raise InputError(f"{path}: not a vggjit style checkpoint (missing {', '.join(sorted(missing))})")
    if int(arrays["format"]) != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: checkpoint format {int(arrays['format'])}, this vggjit reads "
                         f"format {CHECKPOINT_FORMAT}")
    return arrays


def read_checkpoint(checkpoint) -> Checkpoint:
    """The :class:`Checkpoint` in file ``checkpoint``; its settings are the run's as saved
    (unchecked: a resume may change some first)."""
    arrays = load_checkpoint(checkpoint)
    settings = StyleSettings.from_dict(json.loads(str(arrays["settings"])))
    facts = _facts(arrays)
    styles = [arrays[f"style_{i}"] for i in range(sum(k.startswith("style_") for k in arrays))]
    scales = int(settings.scales)
    scale_index = int(arrays[SCALE_KEY]) if SCALE_KEY in arrays else 0
    scale_images = []
    for k in range(scales - 1):
        keys = [f"scale{k}_content"] + [f"scale{k}_style_{i}" for i in range(len(styles))]
        missing = [key for key in keys if key not in arrays]
        if missing:
            raise InputError(f"{checkpoint}: a {scales}-scale run's checkpoint without the images "
                             f"of scale {k + 1} (missing {', '.join(missing)})")
        scale_images.append((arrays[keys[0]], [arrays[key] for key in keys[1:]]))
    scale_images.append((arrays["content"], styles))
    if not 0 <= scale_index < scales:
        raise InputError(f"{checkpoint}: the checkpoint is at scale {scale_index + 1}, but the run "
                         f"has {scales} scale(s)")
    return Checkpoint(settings, np.array(arrays["x"], np.float64), int(arrays["step"]),
                      json.loads(str(arrays["history"])), scale_images, scale_index,
                      {k[4:]: v for k, v in arrays.items() if k.startswith("opt_")},
                      facts.get("content", "<checkpoint>"), facts.get("styles"),
                      checkpoint_output(checkpoint, arrays))


def checkpoint_output(checkpoint, arrays: dict | None = None) -> Path:
    """The result path a checkpoint belongs to: ``out.ckpt.npz`` -> ``out.png`` (the run's
    image suffix), in the checkpoint's directory."""
    path = Path(checkpoint)
    name = path.name
    stem = name[:-len(CHECKPOINT_SUFFIX)] if name.endswith(CHECKPOINT_SUFFIX) else path.stem
    arrays = load_checkpoint(path) if arrays is None else arrays
    return path.with_name(stem + _facts(arrays).get("suffix", ".png"))


def _facts(arrays: dict) -> dict:
    return json.loads(str(arrays["facts"])) if "facts" in arrays else {}
