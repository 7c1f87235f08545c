"""Sizes of a style-transfer run: the output's, the style images', each scale's, upsampling."""
from __future__ import annotations

import numpy as np

from vggjit.style import make_settings
from vggjit.style.geometry import output_hw, scale_size, style_size, upsample


def test_output_hw_rules():
    s = make_settings(size=100)
    assert output_hw((400, 200), s) == (50, 100)
    assert output_hw((400, 200), make_settings(height=30)) == (30, 60)
    assert output_hw((400, 200), make_settings(height=30, width=31)) == (30, 31)
    # Style images: longer side times the style scale, or the exact size when both are given.
    assert style_size((50, 100), (50, 100), make_settings(style_scale=0.5)) == (50, 25)
    assert style_size((50, 100), (30, 31), make_settings(height=30, width=31)) == (30, 31)


def test_scale_sizes_halve_per_scale_and_never_drop_below_one():
    assert [scale_size((100, 36), 3, k) for k in range(3)] == [(25, 9), (50, 18), (100, 36)]
    assert scale_size((3, 5), 4, 0) == (1, 1)
    assert scale_size((30, 40), 1, 0) == (30, 40)


def test_upsample_is_bicubic_per_channel_height_then_width():
    yy, xx = np.mgrid[0:6, 0:10].astype(np.float64)
    x = np.stack([2.0 * xx, -3.0 * yy, np.full((6, 10), 7.5)])[None]
    up = upsample(x, (12, 20))
    assert up.shape == (1, 3, 12, 20) and up.dtype == np.float64
    np.testing.assert_allclose(up[0, 2], 7.5, rtol=1e-6)
    # Away from the borders bicubic interpolation keeps a ramp a ramp, at half the slope.
    np.testing.assert_allclose(np.diff(up[0, 0, :, 4:16], axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.diff(up[0, 1, 4:8, :], axis=0), -1.5, atol=1e-4)
