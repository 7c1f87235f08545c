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
from ..fileio import atomic_save, shown
from .checkpoint_check import CheckpointFields, check_fields
from .npz_reader import read_npz
from .settings import StyleSettings

CHECKPOINT_FORMAT = 1
#: ``out.png``'s checkpoint is ``out.ckpt.npz``.
CHECKPOINT_SUFFIX = ".ckpt.npz"
#: The key of the current scale's index (the name predates "scale"; the file format keeps it).
SCALE_KEY = "stage"


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
    """The arrays of a checkpoint file, checked to be one this vggjit reads: an archive of
    plain arrays (headers read before anything is allocated, no pickles; see
    :mod:`vggjit.style.npz_reader`) of this format. The fields are checked by
    :func:`read_checkpoint`."""
    arrays = read_npz(path, "checkpoint")
    if "format" not in arrays:
        raise InputError(f"{shown(path)}: not a vggjit style checkpoint (no field 'format')")
    fmt = arrays["format"]
    if fmt.shape != () or fmt.dtype.kind not in "iu" or int(fmt) != CHECKPOINT_FORMAT:
        raise InputError(f"{shown(path)}: field 'format' is {fmt!r}, this vggjit reads "
                         f"checkpoint format {CHECKPOINT_FORMAT}")
    return arrays


def read_checkpoint(checkpoint) -> Checkpoint:
    """The :class:`Checkpoint` in file ``checkpoint``, every field checked first
    (:mod:`vggjit.style.checkpoint_check`); its settings are the run's as saved (a resume may
    change some)."""
    arrays = load_checkpoint(checkpoint)
    fields = check_fields(checkpoint, arrays)
    return Checkpoint(fields["settings"], np.array(fields["x"], np.float64), fields["step"],
                      fields["history"], fields["scale_images"], fields["scale_index"],
                      {k[4:]: v for k, v in arrays.items() if k.startswith("opt_")},
                      fields["facts"].get("content", "<checkpoint>"),
                      fields["facts"].get("styles"), checkpoint_output(checkpoint, arrays))


def checkpoint_output(checkpoint, arrays: dict | None = None) -> Path:
    """The result path a checkpoint belongs to: ``out.ckpt.npz`` -> ``out.png`` (the run's
    image suffix), in the checkpoint's directory."""
    path = Path(checkpoint)
    name = path.name
    stem = name[:-len(CHECKPOINT_SUFFIX)] if name.endswith(CHECKPOINT_SUFFIX) else path.stem
    arrays = load_checkpoint(path) if arrays is None else arrays
    facts = CheckpointFields(path, arrays).facts(sum(k.startswith("style_") for k in arrays))
    return path.with_name(stem + facts.get("suffix", ".png"))
