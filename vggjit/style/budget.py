"""What a planned style-transfer run will cost, estimated from the layer table and the sizes
before any work: its peak memory, with the refusal when that exceeds the budget
(:mod:`vggjit.memory`) naming the largest size that fits, and its arithmetic (for the warning
that a slow driver will take long, :func:`vggjit.workload.slow_work_note`).

What a run holds at its peak (float32 activations, float64 optimiser vectors; n = 3 H W the
image's values at the scale being worked on):

- the weights of the layers up to the deepest loss layer (the classifier's are never touched:
  random weights are made on first use, a native weight file is memory-mapped) and the
  driver's working space (a tile buffer and transformed copies of those weights:
  :data:`DRIVER_SPACE` plus twice their size);
- one step: the activations the forward pass keeps for backward (every ReLU output up to the
  deepest loss layer, every pooling output and its switches), the loss layers' gradients, the
  two largest layer-sized arrays of the backward pass and the content targets;
- the optimiser: L-BFGS keeps ``history`` (s, y) pairs of image-sized float64 vectors plus about
  a dozen more (x, g, the direction, the line search's trial points and its cache of three);
  Adam about eight;
- the style images' forward passes (nothing kept for backward, but every style loss layer's
  features until the Grams are made), at the style size of each scale, while the previous
  scale's optimiser still exists;
- every scale's content and style images (uint8).

The estimate is meant to be a little high rather than low: refusing a run that would just fit is
cheaper than the kernel killing the process (and others) after minutes. Measured on VGG19
with random weights, L-BFGS, two steps (peak resident memory of the whole process, which also
holds Python, NumPy and the compiled kernels, about 150 MiB, left out of the estimate): 534 MiB
at 256x256 (estimate 556 MiB), 746 MiB at 384x384 (estimate 898 MiB). docs/bad-input.md.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..memory import available_bytes, check_fits
from ..optimizers import LBFGS
from ..workload import forward_bytes_per_image, forward_flops

#: The driver's tile buffer (numba-cpu's default bound is 128 MiB) and other working space.
DRIVER_SPACE = 128 * 2**20
#: Image-sized float64 vectors an optimiser holds besides L-BFGS's pairs.
LBFGS_VECTORS = 12
ADAM_VECTORS = 8


@dataclass(frozen=True)
class RunShape:
    """What the estimate needs: the network's layer table, the loss layers, the optimiser, per
    scale the (height, width) of the image and of each style image, and how many images are
    optimised together (each with its own activations and optimiser vectors)."""

    layers: tuple
    loss_layers: tuple
    optimizer: str
    scale_hws: tuple
    scale_style_hws: tuple
    batch: int = 1


def _upto(layers, names) -> list:
    """The layers up to the deepest of ``names``."""
    positions = {layer.name: i for i, layer in enumerate(layers)}
    return list(layers[:max(positions[n] for n in names) + 1])


def _conv_weights_bytes(layers) -> int:
    return 4 * sum((layer.cin * 9 + 1) * layer.cout for layer in layers if layer.kind == "conv")


def _step_bytes(layers, loss_layers, h: int, w: int) -> int:
    """One loss-and-gradient evaluation at h x w: activations kept for backward, the loss
    layers' features and gradients, and the backward pass's two largest arrays."""
    channels, kept, largest, losses = 3, 3 * h * w, 0, 0
    for layer in layers:
        if layer.kind == "conv":
            channels = layer.cout
            largest = max(largest, channels * h * w)
            kept += channels * h * w              # its ReLU's output (the next conv's input)
        elif layer.kind == "pool":
            h, w = h // 2, w // 2
            kept += 3 * channels * h * w          # the output and its switches (8 bytes)
        if layer.name in loss_layers:
            losses += 3 * channels * h * w + 2 * channels * channels  # target, seed, grad; Grams
    return 4 * (kept + 2 * largest + losses)


def _optimizer_bytes(optimizer: str, h: int, w: int) -> int:
    vectors = (2 * LBFGS().history + LBFGS_VECTORS if optimizer == "lbfgs" else ADAM_VECTORS)
    return 8 * vectors * 3 * h * w


def _style_bytes(layers, loss_layers, hws) -> int:
    """The largest style image's forward pass (nothing kept but the loss layers' features)."""
    peak = 0
    for h, w in hws:
        features, channels, fh, fw = 0, 3, h, w
        for layer in layers:
            if layer.kind == "conv":
                channels = layer.cout
            elif layer.kind == "pool":
                fh, fw = fh // 2, fw // 2
            if layer.name in loss_layers:
                features += 4 * channels * fh * fw
        peak = max(peak, forward_bytes_per_image(layers, h, w) + features + 8 * 3 * h * w)
    return peak


def estimate(shape: RunShape) -> int:
    """Bytes the run needs at its peak (see the module docstring)."""
    upto = _upto(shape.layers, shape.loss_layers)
    conv_weights = _conv_weights_bytes(upto)
    fixed = 3 * conv_weights + DRIVER_SPACE
    images = shape.batch * sum(3 * h * w for h, w in shape.scale_hws) + sum(
        3 * h * w for hws in shape.scale_style_hws for h, w in hws)
    peak, previous = 0, 0
    for (h, w), style_hws in zip(shape.scale_hws, shape.scale_style_hws):
        step = shape.batch * _step_bytes(upto, shape.loss_layers, h, w)
        optimizer = shape.batch * _optimizer_bytes(shape.optimizer, h, w)
        style = _style_bytes(upto, shape.loss_layers, style_hws)
        peak = max(peak, step + optimizer, style + previous + 8 * 3 * h * w)
        previous = optimizer
    return fixed + images + peak


def run_flops(shape: RunShape, iterations: int) -> float:
    """Arithmetic of the whole run: per step and scale one forward pass to the deepest loss
    layer and its backward pass (about twice the forward), L-BFGS's line search adding about a
    fifth more evaluations on average."""
    upto = _upto(shape.layers, shape.loss_layers)
    per_eval = shape.batch * sum(3 * forward_flops(upto, h, w) for h, w in shape.scale_hws)
    return per_eval * iterations * (1.2 if shape.optimizer == "lbfgs" else 1.0)


def largest_fitting(fits, low: float, high: float) -> float | None:
    """The largest value in [low, high] for which the monotone test ``fits`` holds (to about a
    percent), None when not even ``low`` fits."""
    if not fits(low):
        return None
    if fits(high):
        return high
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
        if high - low <= max(1.0, 0.005 * low):
            break
    return low


def check_run_fits(shape: RunShape, what: str, hint) -> None:
    """Refuse the run ``shape`` (InputError) when its estimate exceeds the budget;
    ``hint(budget)`` says what would fit (called only then)."""
    need = estimate(shape)
    budget = available_bytes()
    if budget is not None and need > budget:
        check_fits(need, what, hint(budget))
