"""Image files <-> network input arrays.

``load_image`` reads any Pillow-readable file (L, LA, P, RGBA, CMYK, I;16, ...) as 8-bit RGB with
its EXIF orientation applied. ``preprocess`` makes the network input [1, 3, H, W] float32: RGB in
0..255 minus the mean pixel. ``deprocess`` inverts it to a PIL image; ``save_image`` writes one
atomically.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .fileio import atomic_save
from .architecture import MEAN_PIXEL

#: Standard evaluation transform: shorter side to 256, then a centre crop of 224.
EVAL_RESIZE, EVAL_CROP = 256, 224


def load_image(source) -> Image.Image:
    """Open a path (or take a PIL image) and return it as RGB, EXIF orientation applied."""
    if isinstance(source, Image.Image):
        image, name = source, "image"
    else:
        name = os.fspath(source)
        try:
            with Image.open(name) as opened:
                opened.load()
                image = (ImageOps.exif_transpose(opened) if _has_orientation(opened)
                         else opened.copy())
        except FileNotFoundError:
            raise InputError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{name}: is a directory, not an image") from None
        except UnidentifiedImageError:
            raise InputError(f"{name}: not an image file Pillow can read") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{name}: cannot read image ({exc})") from None
    return _to_rgb(image, name)


def _has_orientation(image: Image.Image) -> bool:
    try:
        return image.getexif().get(0x0112, 1) != 1
    except Exception:  # a broken EXIF block must not make the image unreadable
        return False


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit integer) grey: scale the full range down to 8 bits.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode == "F":
        grey = np.clip(np.round(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Composite on white, as a viewer would show it, rather than keep hidden colours.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise InputError(f"{name}: cannot convert mode {image.mode} to RGB ({exc})") from None


def resize_image(image: Image.Image, resize: str | None = "crop", size=EVAL_CROP) -> Image.Image:
    """Resize for the network.

    resize: "crop" (shorter side to 256/224 of ``size``, then centre crop ``size``), "stretch"
        (plain resize to ``size`` x ``size``, the lab's way), "longer" (longer side to ``size``,
        aspect kept) or None (unchanged). ``size`` may be an int or (height, width) for
        "stretch".
    """
    if resize is None:
        return image
    if resize == "stretch":
        h, w = (size, size) if isinstance(size, int) else size
        return image.resize((w, h), Image.Resampling.BILINEAR)
    if resize == "longer":
        scale = size / max(image.size)
        w, h = (max(1, round(d * scale)) for d in image.size)
        return image.resize((w, h), Image.Resampling.LANCZOS)
    if resize == "crop":
        shorter = round(size * EVAL_RESIZE / EVAL_CROP)
        scale = shorter / min(image.size)
        w, h = (max(shorter, round(d * scale)) for d in image.size)
        image = image.resize((w, h), Image.Resampling.BILINEAR)
        left, top = (w - size) // 2, (h - size) // 2
        return image.crop((left, top, left + size, top + size))
    raise InputError(f"resize must be 'crop', 'stretch', 'longer' or None, got {resize!r}")


def to_array(image: Image.Image, mean_pixel=MEAN_PIXEL) -> np.ndarray:
    """RGB PIL image -> [1, 3, H, W] float32, mean pixel subtracted."""
    rgb = np.asarray(image, dtype=np.float32)
    x = (rgb - np.asarray(mean_pixel, np.float32)).transpose(2, 0, 1)
    return np.ascontiguousarray(x[None])


def preprocess(source, resize: str | None = "crop", size=EVAL_CROP,
               mean_pixel=MEAN_PIXEL) -> np.ndarray:
    """A path or PIL image -> network input [1, 3, H, W] float32 (see :func:`resize_image`)."""
    return to_array(resize_image(load_image(source), resize, size), mean_pixel)


def deprocess(x, mean_pixel=MEAN_PIXEL) -> Image.Image:
    """Network input [1, 3, H, W] or [3, H, W] -> 8-bit RGB PIL image (mean added, clipped)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise InputError(f"deprocess takes one image, got a batch of shape {x.shape}")
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise InputError(f"deprocess expects [1, 3, H, W] or [3, H, W], got shape {x.shape}")
    rgb = x.transpose(1, 2, 0) + np.asarray(mean_pixel, np.float32)
    return Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8), "RGB")


def save_image(image, path, overwrite: bool = True) -> Path:
    """Write a PIL image (or a network array, deprocessed) atomically; format from the suffix."""
    if not isinstance(image, Image.Image):
        image = deprocess(image)
    path = Path(path)
    if path.suffix.lower() not in Image.registered_extensions():
        raise InputError(f"{path}: unknown image file extension {path.suffix!r} "
                         f"(use .png or .jpg)")
    return atomic_save(path, lambda tmp: image.save(tmp), overwrite=overwrite)
