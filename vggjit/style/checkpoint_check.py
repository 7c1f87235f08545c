"""The checks every field of a style checkpoint passes before a resume does any work.

A checkpoint may be truncated by a full disk, damaged, edited or not a checkpoint at all; each
fault is one :class:`InputError` naming the file and the field (``x``, ``step``, ``settings``,
``history``, ``opt_s``...) and what it should be, found before the network is built, so that
nothing fails later deep inside the optimiser. The fields are those
:mod:`vggjit.style.checkpoint` writes; docs/bad-input.md lists what the user sees.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
from PIL import Image

from ..errors import InputError
from ..fileio import shown
from ..optimizers import LBFGS
from .settings import StyleSettings

#: More steps than any run makes (a day at a thousand steps a second is 8.6e7).
MAX_STEPS = 10**9
#: Largest side of an image a checkpoint may hold (the image reader's own limit is lower).
MAX_SIDE = 1 << 20

_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,),
          "tuple": (list,), "None": (type(None),)}


class CheckpointFields:
    """Checks of one checkpoint file's arrays; every error names ``path`` and the field."""

    def __init__(self, path, arrays: dict):
        self.label = shown(path)
        self.arrays = arrays

    def fail(self, field: str, what: str) -> InputError:
        return InputError(f"{self.label}: field {field!r} {what}; the checkpoint is damaged or "
                          f"not one vggjit wrote (start the run again)")

    # -- kinds of field ---------------------------------------------------------------------
    def integer(self, field: str, low: int, high: int) -> int:
        value = self.arrays[field]
        if value.shape != () or value.dtype.kind not in "iu":
            raise self.fail(field, f"must be one integer, got a {value.dtype} array of shape "
                                   f"{value.shape}")
        number = int(value)
        if not low <= number <= high:
            raise self.fail(field, f"is {number}, outside {low}..{high}")
        return number

    def text_json(self, field: str, kind: type):
        value = self.arrays[field]
        if value.shape != () or value.dtype.kind != "U":
            raise self.fail(field, f"must be a JSON text, got a {value.dtype} array of shape "
                                   f"{value.shape}")
        try:
            data = json.loads(str(value))
        except ValueError as exc:
            raise self.fail(field, f"is not valid JSON ({exc})") from None
        if not isinstance(data, kind):
            raise self.fail(field, f"must be a JSON {kind.__name__}, got {type(data).__name__}")
        return data

    def rgb(self, field: str) -> tuple[int, int]:
        value = self.arrays[field]
        if (value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3
                or not 0 < value.shape[0] <= MAX_SIDE or not 0 < value.shape[1] <= MAX_SIDE):
            raise self.fail(field, f"must be an RGB image [H, W, 3] of uint8, got a "
                                   f"{value.dtype} array of shape {value.shape}")
        return value.shape[:2]

    def real(self, field: str, shape: tuple, finite: bool = True) -> np.ndarray:
        value = self.arrays[field]
        if value.dtype.kind != "f" or value.shape != tuple(shape):
            raise self.fail(field, f"must be a float array of shape {tuple(shape)}, got a "
                                   f"{value.dtype} array of shape {value.shape}")
        if finite and not np.all(np.isfinite(value)):
            raise self.fail(field, "holds NaN or infinite values")
        return value

    # -- the fields ---------------------------------------------------------------------------
    def settings(self) -> StyleSettings:
        data = self.text_json("settings", dict)
        fields = {f.name: f for f in dataclasses.fields(StyleSettings)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise self.fail("settings", f"has unknown option(s) {', '.join(unknown)}")
        for name, value in data.items():
            parts = [part.strip() for part in str(fields[name].type).split("|")]
            if any(part not in _TYPES for part in parts):
                continue   # a type this check does not know: StyleSettings.check decides
            allowed = tuple(t for part in parts for t in _TYPES[part])
            ok = isinstance(value, allowed) and not (isinstance(value, bool)
                                                     and bool not in allowed)
            if ok and isinstance(value, list):
                element = str if name.endswith("_layers") else (int, float)
                ok = all(isinstance(v, element) and not isinstance(v, bool) for v in value)
            if ok and isinstance(value, float):
                ok = math.isfinite(value)
            if not ok:
                raise self.fail("settings", f"has {name} = {value!r}, not a valid value")
        settings = StyleSettings.from_dict(data)
        try:
            settings.check()
        except (InputError, TypeError, ValueError) as exc:
            raise self.fail("settings", f"is not a valid run ({exc})") from None
        if settings.iterations > MAX_STEPS:
            raise self.fail("settings", f"asks for {settings.iterations} iterations")
        return settings

    def facts(self, styles: int) -> dict:
        if "facts" not in self.arrays:
            return {}
        facts = self.text_json("facts", dict)
        if not isinstance(facts.get("content", ""), str):
            raise self.fail("facts", "has a content name that is not a text")
        names = facts.get("styles")
        if names is not None and (not isinstance(names, list) or len(names) != styles
                                  or not all(isinstance(n, str) for n in names)):
            raise self.fail("facts", f"must name the {styles} style image(s)")
        suffix = facts.get("suffix", ".png")
        if not isinstance(suffix, str) or suffix.lower() not in Image.registered_extensions():
            raise self.fail("facts", f"has the image suffix {suffix!r}, not an image type")
        return facts

    def history(self, scales: int) -> list:
        history = self.text_json("history", list)
        for n, entry in enumerate(history):
            ok = (isinstance(entry, dict)
                  and isinstance(entry.get("step"), int) and entry["step"] >= 1
                  and isinstance(entry.get("loss"), (int, float))
                  and isinstance(entry.get("terms"), dict)
                  and all(isinstance(k, str) and isinstance(v, (int, float))
                          for k, v in entry["terms"].items())
                  and (scales == 1 or isinstance(entry.get("scale"), int)))
            if not ok:
                raise self.fail("history", f"entry {n} is not a step record "
                                           f"(step, loss, terms{', scale' if scales > 1 else ''})")
        return history

    def optimizer(self, optimizer: str, x_shape: tuple) -> None:
        keys = {k[4:] for k in self.arrays if k.startswith("opt_")}
        expected = {"adam": {"t", "m", "v"}, "lbfgs": {"f", "g", "s", "y"}}[optimizer]
        unknown = sorted(keys - expected)
        if unknown:
            raise self.fail(f"opt_{unknown[0]}", f"is no part of {optimizer}'s state")
        size = int(np.prod(x_shape))
        if optimizer == "adam":
            if "t" in keys:
                self.integer("opt_t", 0, MAX_STEPS)
            if ("m" in keys) != ("v" in keys):
                raise self.fail("opt_m" if "m" not in keys else "opt_v",
                                "is missing (Adam keeps both moments)")
            if "m" in keys:
                self.real("opt_m", x_shape)
                if np.any(self.real("opt_v", x_shape) < 0):
                    raise self.fail("opt_v", "holds negative values (a mean of squares)")
            return
        if ("f" in keys) != ("g" in keys):
            raise self.fail("opt_f" if "f" not in keys else "opt_g",
                            "is missing (L-BFGS keeps the loss and gradient together)")
        if "f" in keys:
            self.real("opt_f", ())
            self.real("opt_g", x_shape)
        if ("s" in keys) != ("y" in keys):
            raise self.fail("opt_s" if "s" not in keys else "opt_y",
                            "is missing (L-BFGS keeps (s, y) pairs)")
        if "s" in keys:
            pairs = self.arrays["opt_s"].shape[0] if self.arrays["opt_s"].ndim == 2 else 0
            if not 1 <= pairs <= LBFGS().history:
                raise self.fail("opt_s", f"must hold 1..{LBFGS().history} image-sized rows "
                                         f"[pairs, {size}], got shape {self.arrays['opt_s'].shape}")
            self.real("opt_s", (pairs, size))
            self.real("opt_y", (pairs, size))


def check_fields(path, arrays: dict) -> dict:
    """Check every field of the checkpoint ``arrays`` read from ``path``; return the parsed
    values: settings, facts, history, step, scale_index, the scale images and x."""
    fields = CheckpointFields(path, arrays)
    for required in ("format", "x", "step", "content", "settings", "history"):
        if required not in arrays:
            raise InputError(f"{fields.label}: not a vggjit style checkpoint (no field "
                             f"{required!r})")
    settings = fields.settings()
    scales = int(settings.scales)
    style_count = sum(k.startswith("style_") for k in arrays)
    styles = [f"style_{i}" for i in range(style_count)]
    if not styles or any(k not in arrays for k in styles):
        raise InputError(f"{fields.label}: field 'style_0'... the style images are missing or "
                         f"misnumbered")
    if settings.style_blend is not None and len(settings.style_blend) != style_count:
        raise fields.fail("settings", f"blends {len(settings.style_blend)} styles, the "
                                      f"checkpoint holds {style_count}")
    facts = fields.facts(style_count)
    history = fields.history(scales)
    scale_index = fields.integer("stage", 0, scales - 1) if "stage" in arrays else 0
    step = fields.integer("step", 0, settings.iterations)
    scale_images = []
    for k in range(scales):
        prefix = f"scale{k}_" if k < scales - 1 else ""
        keys = [f"{prefix}content"] + [f"{prefix}{s}" for s in styles]
        missing = [key for key in keys if key not in arrays]
        if missing:
            raise InputError(f"{fields.label}: a {scales}-scale run's checkpoint without the "
                             f"images of scale {k + 1} (missing {', '.join(missing)})")
        for key in keys:
            fields.rgb(key)
        scale_images.append((arrays[keys[0]], [arrays[key] for key in keys[1:]]))
    h, w = scale_images[scale_index][0].shape[:2]
    x = fields.real("x", (1, 3, h, w))
    fields.optimizer(settings.optimizer, x.shape)
    return {"settings": settings, "facts": facts, "history": history, "step": step,
            "scale_index": scale_index, "scale_images": scale_images, "x": x}
