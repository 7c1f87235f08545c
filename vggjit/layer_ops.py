"""Each kind of layer in the table, its forward and its backward side by side.

``forward(driver, x)`` returns ``(y, memo)``: the output and what ``backward`` needs from this
pass (kept by ``Network.forward(..., keep=True)``, dropped otherwise). ``backward(driver, dy,
memo, need_dw)`` returns ``(dx, param_grads)``: the gradient with respect to the layer's input
and, for a layer with parameters when ``need_dw`` is true, ``(dw, db)`` (else ``None``).

Fused conv + ReLU (see docs/architecture.md): :class:`ConvOp` can apply the ReLU that follows
it in the same driver call, and read ``dy`` through that ReLU's output on the way back; the
network decides when (:class:`ReluOp`'s forward is then told the ReLU was already applied,
and its backward is left to the conv).
Activations are NCHW float32; N is the batch.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .architecture import Layer
from .errors import InputError


class ConvOp:
    """conv 3x3, stride 1, pad 1: x [N, Cin, H, W], w [Cout, Cin, 3, 3], b [Cout] ->
    [N, Cout, H, W].

    memo: the input x (shared with the ReLU before it, which keeps it as its output).
    """

    def __init__(self, layer: Layer, weights: Mapping):
        self.layer, self.weights = layer, weights

    def forward(self, driver, x, relu: bool = False):
        """relu: also apply the ReLU that follows (the output is then max(conv, 0))."""
        w, b = self.weights[self.layer.name]
        return driver.conv2d(x, w, b, 1, 1, relu=relu), x

    def backward(self, driver, dy, memo, need_dw: bool, relu_out=None):
        """dy [N, Cout, H, W] -> dx [N, Cin, H, W], (dw [Cout, Cin, 3, 3], db [Cout]) or None.

        relu_out: the fused ReLU's output [N, Cout, H, W]; dy is then the gradient of that output.
        """
        w, _ = self.weights[self.layer.name]
        dx, dw, db = driver.conv2d_backward(dy, memo, w, 1, 1, need_dx=True, need_dw=need_dw,
                                            relu_out=relu_out)
        return dx, ((dw, db) if need_dw else None)


class ReluOp:
    """max(x, 0), any shape. memo: the output (positive exactly where the input was)."""

    def __init__(self, layer: Layer):
        self.layer = layer

    def forward(self, driver, x, applied: bool = False):
        """applied: the conv before already applied this ReLU (fused), so x is its output."""
        y = x if applied else driver.relu(x)
        return y, y

    def backward(self, driver, dy, memo, need_dw: bool):
        return driver.relu_backward(dy, memo), None


class _PoolOp:
    """2x2, stride 2: x [N, C, H, W] -> [N, C, H // 2, W // 2].

    memo: (the switches of max pooling, None for average pooling; the input's shape).
    """

    def __init__(self, layer: Layer):
        self.layer = layer

    def _check(self, x) -> None:
        if x.shape[2] < 2 or x.shape[3] < 2:
            raise InputError(f"{self.layer.name}: the input is too small ({x.shape[2]}x"
                             f"{x.shape[3]} before this pooling); use a larger image")


class MaxPoolOp(_PoolOp):
    """Max pooling; its switches (where each maximum came from) route the gradient back."""

    def forward(self, driver, x, keep: bool = True):
        """keep=False: no backward will follow, so the switches are not recorded."""
        self._check(x)
        y, switches = driver.max_pool2d(x, 2, 2, switches=keep)
        return y, (switches, x.shape)

    def backward(self, driver, dy, memo, need_dw: bool):
        switches, shape = memo
        return driver.max_pool2d_backward(dy, switches, shape), None


class AvgPoolOp(_PoolOp):
    """Average pooling (offered by style transfer); backward spreads dy evenly over each window."""

    def forward(self, driver, x, keep: bool = True):
        self._check(x)
        return driver.avg_pool2d(x, 2, 2), (None, x.shape)

    def backward(self, driver, dy, memo, need_dw: bool):
        _, shape = memo
        return driver.avg_pool2d_backward(dy, shape, 2, 2), None


def flatten_for(layer: Layer, x: np.ndarray) -> np.ndarray:
    """x [N, C, H, W] (pool5) -> [N, C*H*W] in C, H, W order for fc ``layer``; [N, in] unchanged.

    A clear error when the features do not fit: classification needs 224x224 input.
    """
    if x.ndim == 4:
        if x.shape[1] * x.shape[2] * x.shape[3] != layer.cin:
            raise InputError(
                f"{layer.name} expects {layer.cin} features (pool5 of a 224x224 image: "
                f"{layer.cin // 49}x7x7) but got {x.shape[1]}x{x.shape[2]}x{x.shape[3]}; "
                f"classification needs 224x224 input")
        x = x.reshape(x.shape[0], -1)
    return x


class FcOp:
    """Fully connected: x [N, in] (or pool5 [N, C, 7, 7], flattened), w [out, in], b [out] ->
    [N, out].

    memo: (the flattened input [N, in], the input's shape before flattening).
    """

    def __init__(self, layer: Layer, weights: Mapping):
        self.layer, self.weights = layer, weights

    def forward(self, driver, x):
        shape = x.shape
        flat = flatten_for(self.layer, x)
        w, b = self.weights[self.layer.name]
        return driver.linear(flat, w, b), (flat, shape)

    def backward(self, driver, dy, memo, need_dw: bool):
        """dy [N, out] -> dx in the input's shape (un-flattened for fc6), (dw, db) or None."""
        flat, shape = memo
        w, _ = self.weights[self.layer.name]
        dx, dw, db = driver.linear_backward(dy, flat, w, need_dx=True, need_dw=need_dw)
        return dx.reshape(shape), ((dw, db) if need_dw else None)


class SoftmaxOp:
    """Softmax over each row of x [N, classes]. memo: the output y [N, classes]."""

    def __init__(self, layer: Layer):
        self.layer = layer

    def forward(self, driver, x):
        y = driver.softmax(x)
        return y, y

    def backward(self, driver, dy, memo, need_dw: bool):
        """The softmax Jacobian applied to dy: y * (dy - sum(dy * y)) per row."""
        y = memo
        return y * (dy - np.sum(dy * y, axis=1, keepdims=True)), None


_POOL_OPS = {"max": MaxPoolOp, "avg": AvgPoolOp}


def layer_op(layer: Layer, weights: Mapping, pooling: str):
    """The op that runs ``layer``; pooling ("max" or "avg") picks the pool op."""
    if layer.kind == "conv":
        return ConvOp(layer, weights)
    if layer.kind == "fc":
        return FcOp(layer, weights)
    if layer.kind == "pool":
        return _POOL_OPS[pooling](layer)
    return {"relu": ReluOp, "softmax": SoftmaxOp}[layer.kind](layer)
