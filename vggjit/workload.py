"""Estimates of a planned pass through the network, made from the layer table before any work:
its peak memory (checked against :mod:`vggjit.memory`) and its arithmetic (for a warning when a
slow driver will take long). Shapes follow the VGG layer table: 3x3 pad-1 convolutions, 2x2
stride-2 pooling, fully connected layers; see docs/bad-input.md.
"""
from __future__ import annotations

from typing import Iterable

#: Warn when a driver's declared speed makes the planned work longer than this.
SLOW_SECONDS = 60.0


def _walk(layers: Iterable, height: int, width: int):
    """Yield (layer, channels in, height, width) with the input size each layer sees."""
    channels = 3
    for layer in layers:
        yield layer, channels, height, width
        if layer.kind == "conv":
            channels = layer.cout
        elif layer.kind == "pool":
            height, width = height // 2, width // 2
        elif layer.kind == "fc":
            channels, height, width = layer.cout, 1, 1


def forward_bytes_per_image(layers: Iterable, height: int = 224, width: int | None = None
                            ) -> int:
    """Peak bytes one image adds to a forward pass: the largest layer's input, padded input
    and output (float32) side by side, plus the preprocessed input itself."""
    width = height if width is None else width
    peak = 0
    for layer, channels, h, w in _walk(layers, height, width):
        if layer.kind == "conv":
            peak = max(peak, channels * ((h + 2) * (w + 2) + h * w) + layer.cout * h * w)
        elif layer.kind == "fc":
            peak = max(peak, channels * h * w + layer.cout)
    return 4 * (peak + 3 * height * width)


def forward_flops(layers: Iterable, height: int = 224, width: int | None = None) -> int:
    """Multiply-adds x 2 of one image's forward pass (convolutions and fully connected layers;
    the rest is negligible). A backward pass costs about twice as much again."""
    width = height if width is None else width
    flops = 0
    for layer, channels, h, w in _walk(layers, height, width):
        if layer.kind == "conv":
            flops += 2 * channels * layer.cout * 9 * h * w
        elif layer.kind == "fc":
            flops += 2 * channels * h * w * layer.cout
    return flops


def slow_work_note(driver, flops: float, what: str) -> str | None:
    """A one-line warning when ``driver`` declares a speed (``flops_per_second``) at which
    ``flops`` of work take longer than :data:`SLOW_SECONDS`; None otherwise."""
    rate = getattr(driver, "flops_per_second", None)
    if not rate or flops / rate <= SLOW_SECONDS:
        return None
    seconds = flops / rate
    took = f"{seconds / 3600:.1f} hours" if seconds >= 5400 else f"{seconds / 60:.0f} minutes"
    return (f"{what} is about {flops / 1e9:.1f} GFLOP: on the {driver.name} driver (about "
            f"{rate / 1e6:.0f} MFLOP/s) that is roughly {took}; a faster driver is listed by "
            f"`vggjit drivers`")
