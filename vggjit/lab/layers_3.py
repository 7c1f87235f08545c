"""``stu_upload.layers_3``: the content and style losses of Gatys style transfer.

For features X of the image being optimised and a target Y (content) or S (style), all
[N, C, H, W] float64 (docs/style-transfer.md):

    content  L = 1/(2NCHW) sum (X - Y)^2                  dL/dX = (X - Y) / (NCHW)
    style    G = X X^T, A = S S^T per image (Gram, [N, C, C])
             L = 1/(4NC^2H^2W^2) sum (G - A)^2            dL/dX = (G - A)^T X / (NC^2H^2W^2)

computed by vggjit.losses, the Grams on the fast driver. ``forward`` returns the loss,
``backward`` the gradient; a backward with the very arrays of the last forward reuses its work.
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import InputError
from ..losses import content_loss, style_loss
from .base import Timed
from .engine import fast_driver


class _LossLayer(Timed):
    def __init__(self):
        self._last = None  # (input, target, loss, gradient) of the last evaluation

    def _evaluate(self, input_layer, target_layer):
        last = self._last
        if last is not None and last[0] is input_layer and last[1] is target_layer:
            return last[2], last[3]
        x = np.asarray(input_layer, np.float64)
        t = np.asarray(target_layer, np.float64)
        if x.ndim != 4 or x.shape != t.shape:
            raise InputError(f"{type(self).__name__}: input and target must be [N, C, H, W] "
                             f"arrays of one shape, got {x.shape} and {t.shape}")
        loss, grad = self._loss(x, t)
        self._last = (input_layer, target_layer, loss, grad)
        return loss, grad

    def forward(self, input_layer, target_layer) -> float:
        started = time.perf_counter()
        loss, _ = self._evaluate(input_layer, target_layer)
        self._timed("forward", started)
        return loss

    def backward(self, input_layer, target_layer) -> np.ndarray:
        started = time.perf_counter()
        _, grad = self._evaluate(input_layer, target_layer)
        self._timed("backward", started)
        return grad.copy()  # the caller may scale it in place


class ContentLossLayer(_LossLayer):
    """forward(features, content features) -> L_content; backward(...) -> dL/dfeatures."""

    def _loss(self, x, y):
        return content_loss(x, y)


class StyleLossLayer(_LossLayer):
    """forward(features, style features) -> L_style; backward(...) -> dL/dfeatures."""

    def __init__(self):
        super().__init__()
        self.driver = fast_driver()

    def _loss(self, x, s):
        return style_loss(x, self.driver.gram(x), self.driver.gram(s))


__all__ = ["ContentLossLayer", "StyleLossLayer"]
