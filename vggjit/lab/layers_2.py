"""``stu_upload.layers_2``: convolution, max pooling and flatten layers (the course's).

Shapes: convolution x [N, channel_in, H, W] -> [N, channel_out, Hout, Wout],
Hout = (H + 2 padding - kernel_size) // stride + 1, with weight [channel_in, k, k,
channel_out] and bias [channel_out] (the course's layout; the driver gets OIHW); max pooling
[N, C, H, W] -> [N, C, (H - k) // s + 1, (W - k) // s + 1]; flatten [N, C, H, W] ->
[N, *output_shape] in MatConvNet's H, W, C order. ``type=1`` runs on the fast driver,
``type=0`` on ``naive`` (vggjit.lab.engine). Arrays in and out are float64.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..errors import InputError
from .base import ParamLayer, Timed
from .engine import as64, driver_for


class ConvolutionalLayer(ParamLayer):
    """A convolution with weight [channel_in, k, k, channel_out] and bias [channel_out]."""

    def __init__(self, kernel_size: int, channel_in: int, channel_out: int, padding: int,
                 stride: int, type: int = 0):  # noqa: A002 - the course's keyword
        super().__init__()
        self.kernel_size, self.channel_in = int(kernel_size), int(channel_in)
        self.channel_out, self.padding, self.stride = int(channel_out), int(padding), int(stride)
        self.forward_type = type
        self.driver = driver_for(type)
        self.weight_shape = (self.channel_in, self.kernel_size, self.kernel_size,
                             self.channel_out)
        self.bias_shape = (self.channel_out,)
        self.input = None

    def _device_weight(self):
        w = np.ascontiguousarray(np.asarray(self.weight, np.float32).transpose(3, 0, 1, 2))
        return w, np.asarray(self.bias, np.float32).reshape(-1)

    def forward(self, input):
        """input [N, channel_in, H, W] -> [N, channel_out, Hout, Wout]."""
        started = time.perf_counter()
        w, b = self._params()
        self.input = np.ascontiguousarray(input, np.float32)  # kept for backward, as float32
        y = as64(self.driver.conv2d(self.input, w, b, self.stride, self.padding))
        self._timed("forward", started)
        return y

    def backward(self, top_diff, *, param_grads: bool = True):
        """top_diff [N, channel_out, Hout, Wout] -> the gradient at the input; keeps d_weight
        [channel_in, k, k, channel_out] and d_bias [channel_out] (unless param_grads is
        false)."""
        started = time.perf_counter()
        self._need_forward("backward", self.input)
        w, _ = self._params()
        dx, dw, db = self.driver.conv2d_backward(top_diff, self.input, w, self.stride,
                                                 self.padding, need_dx=True,
                                                 need_dw=param_grads)
        if param_grads:
            self.d_weight = as64(dw).transpose(1, 2, 3, 0)
            self.d_bias = as64(db)
        self._timed("backward", started)
        return as64(dx)


class MaxPoolingLayer(Timed):
    """Max over each kernel_size x kernel_size window (floor); the gradient goes to the
    window's first maximum."""

    def __init__(self, kernel_size: int, stride: int, type: int = 0):  # noqa: A002
        self.kernel_size, self.stride = int(kernel_size), int(stride)
        self.forward_type = type
        self.driver = driver_for(type)
        self.input_shape = None
        self._switches = None

    def forward(self, input):
        started = time.perf_counter()
        x = np.asarray(input)
        y, self._switches = self.driver.max_pool2d(x, self.kernel_size, self.stride)
        self.input_shape = x.shape
        self._timed("forward", started)
        return as64(y)

    def backward(self, top_diff):
        started = time.perf_counter()
        self._need_forward("backward", self._switches)
        dx = as64(self.driver.max_pool2d_backward(top_diff, self._switches, self.input_shape))
        self._timed("backward", started)
        return dx


class FlattenLayer(Timed):
    """[N, C, H, W] -> [N, *output_shape] with the values in H, W, C order (MatConvNet's, which
    fc6's weights follow). input_shape: [C, H, W]."""

    def __init__(self, input_shape, output_shape):
        self.input_shape = tuple(int(d) for d in input_shape)
        self.output_shape = tuple(int(d) for d in output_shape)
        if len(self.input_shape) != 3:
            raise InputError(f"FlattenLayer: input_shape is [C, H, W] (such as [512, 7, 7]), "
                             f"got {list(self.input_shape)}")
        if math.prod(self.input_shape) != math.prod(self.output_shape):
            raise InputError(f"FlattenLayer: input shape {list(self.input_shape)} and output "
                             f"shape {list(self.output_shape)} hold different numbers of values")

    def forward(self, input):
        started = time.perf_counter()
        x = np.asarray(input)
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise InputError(f"FlattenLayer: expected input [N, {', '.join(map(str, self.input_shape))}]"
                             f", got shape {x.shape}")
        y = x.transpose(0, 2, 3, 1).reshape((x.shape[0],) + self.output_shape)
        self._timed("forward", started)
        return y

    def backward(self, top_diff):
        started = time.perf_counter()
        c, h, w = self.input_shape
        dy = np.asarray(top_diff)
        dx = dy.reshape(dy.shape[0], h, w, c).transpose(0, 3, 1, 2)
        self._timed("backward", started)
        return dx


__all__ = ["ConvolutionalLayer", "MaxPoolingLayer", "FlattenLayer"]
