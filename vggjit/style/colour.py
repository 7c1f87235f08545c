"""YIQ colour (NTSC) for luminance-only style transfer: the luminance image a run optimises and
the content's chroma put back on the result (``preserve_colors``)."""
from __future__ import annotations

import numpy as np

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

