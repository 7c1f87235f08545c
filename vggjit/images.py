"""Image files <-> network input arrays.

``load_image`` reads any Pillow-readable file (L, LA, P, RGBA, CMYK, I;16, ...) as 8-bit RGB with
its EXIF orientation applied. ``preprocess`` makes the network input [1, 3, H, W] float32: RGB in
0..255 minus the mean pixel. ``deprocess`` inverts it to a PIL image; ``save_image`` writes one
atomically.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .architecture import MEAN_PIXEL
from .fileio import atomic_save, input_file, shown

#: Standard evaluation transform: shorter side to 256, then a centre crop of 224.
EVAL_RESIZE, EVAL_CROP = 256, 224

#: Largest image read (8 bytes a pixel while decoding and converting: 1 GiB). Pillow's own
#: limit is similar, but it raises an error type of its own, or only warns below twice its limit.
MAX_PIXELS = 2**27

#: Largest ratio of the longer to the shorter side that the aspect-keeping resizes accept: the
#: centre crop of a 40000x1 strip would first scale it to 10,240,000x256 pixels.
MAX_ASPECT = 32


def load_image(source) -> Image.Image:
    """Open a path (or take a PIL image) and return it as RGB, EXIF orientation applied.

    A path must be a regular file (a FIFO or device would block or never end) of at most
    :data:`MAX_PIXELS` pixels, checked from the header before any pixel is decoded: a
    decompression bomb (a tiny file declaring 30000x30000) is a bad image like any other.
    """
    if isinstance(source, Image.Image):
        image, name = source, "image"
    else:
        name = os.fspath(source)
        input_file(name, "image file")
        try:
            with warnings.catch_warnings():
                # our own limit below decides; Pillow's warning would only repeat it
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(name) as opened:
                    _check_pixels(name, opened.size)
                    opened.load()
                    image = (ImageOps.exif_transpose(opened) if _has_orientation(opened)
                             else opened.copy())
        except InputError:
            raise
        except Image.DecompressionBombError as exc:
            # Pillow refuses before vggjit sees the size; its message carries the pixel count
            declared = re.search(r"\((\d+) pixels\)", str(exc))
            count = f" {int(declared.group(1)):,} pixels," if declared else ""
            raise InputError(f"{shown(name)}: the header declares{count} more than vggjit "
                             f"reads ({MAX_PIXELS:,}); a decompression bomb or a damaged file"
                             ) from None
        except FileNotFoundError:
            raise InputError(f"{shown(name)}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{shown(name)}: is a directory, not an image") from None
        except UnidentifiedImageError:
            raise InputError(f"{shown(name)}: not an image file Pillow can read") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{shown(name)}: cannot read image ({exc})") from None
    return _to_rgb(image, name)


def _check_pixels(name: str, size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise InputError(f"{shown(name)}: the header declares {width}x{height} = "
                         f"{width * height:,} pixels, more than vggjit reads ({MAX_PIXELS:,}); "
                         f"a decompression bomb or a damaged file")


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
    if resize in ("longer", "crop"):
        _check_aspect(image.size, resize)
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


def _check_aspect(size: tuple[int, int], resize: str) -> None:
    longer, shorter = max(size), min(size)
    if longer > MAX_ASPECT * shorter:
        raise InputError(f"a {size[0]}x{size[1]} image is more than {MAX_ASPECT} times as "
                         f"{'wide' if size[0] > size[1] else 'tall'} as it is "
                         f"{'tall' if size[0] > size[1] else 'wide'}; --resize {resize} keeps "
                         f"the aspect ratio and cannot use it (crop it first, or use "
                         f"--resize stretch where offered)")


def to_array(image: Image.Image, mean_pixel=MEAN_PIXEL) -> np.ndarray:
    """RGB PIL image -> [1, 3, H, W] float32, mean pixel subtracted."""
    rgb = np.asarray(image, dtype=np.float32)
    x = (rgb - np.asarray(mean_pixel, np.float32)).transpose(2, 0, 1)
    return np.ascontiguousarray(x[None])


def preprocess(source, resize: str | None = "crop", size=EVAL_CROP,
               mean_pixel=MEAN_PIXEL) -> np.ndarray:
    """A path or PIL image -> network input [1, 3, H, W] float32 (see :func:`resize_image`)."""
    image = load_image(source)
    try:
        image = resize_image(image, resize, size)
    except InputError as exc:
        if isinstance(source, Image.Image):
            raise
        raise InputError(f"{shown(source)}: {exc}") from None
    return to_array(image, mean_pixel)


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
