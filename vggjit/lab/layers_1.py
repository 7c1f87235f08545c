"""``stu_upload.layers_1``: fully connected, ReLU and softmax-with-loss layers (the course's).

Shapes: fully connected x [N, num_input] -> [N, num_output] with weight [num_input,
num_output] and bias [1, num_output] (the course's layout; the driver gets [out, in]); ReLU
any 2-D or 4-D array; softmax [N, classes]. Arrays in and out are float64; the ops run in
float32 on the fast driver (vggjit.lab.engine).
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import InputError, VggjitError
from .base import ParamLayer, Timed
from .engine import as64, fast_driver


class FullyConnectedLayer(ParamLayer):
    """y = x @ weight + bias; weight [num_input, num_output], bias [1, num_output]."""

    def __init__(self, num_input: int, num_output: int):
        super().__init__()
        self.num_input, self.num_output = int(num_input), int(num_output)
        self.weight_shape = (self.num_input, self.num_output)
        self.bias_shape = (1, self.num_output)
        self.driver = fast_driver()
        self.input = None

    def _device_weight(self):
        w = np.ascontiguousarray(np.asarray(self.weight, np.float32).T)
        return w, np.asarray(self.bias, np.float32).reshape(-1)

    def forward(self, input):
        """input [N, num_input] -> [N, num_output]."""
        started = time.perf_counter()
        w, b = self._params()
        self.input = np.asarray(input)
        y = as64(self.driver.linear(self.input, w, b))
        self._timed("forward", started)
        return y

    def backward(self, top_diff, *, param_grads: bool = True):
        """top_diff [N, num_output] -> the gradient at the input [N, num_input]; keeps
        d_weight [num_input, num_output] and d_bias [1, num_output] (unless param_grads is
        false)."""
        started = time.perf_counter()
        self._need_forward("backward", self.input)
        w, _ = self._params()
        dx, dw, db = self.driver.linear_backward(top_diff, self.input, w, need_dx=True,
                                                 need_dw=param_grads)
        if param_grads:
            self.d_weight = as64(dw).T
            self.d_bias = as64(db).reshape(self.bias_shape)
        self._timed("backward", started)
        return as64(dx)


class ReLULayer(Timed):
    """y = max(x, 0); the gradient passes where the input was positive."""

    def __init__(self):
        self.driver = fast_driver()
        self.input = None

    def forward(self, input):
        started = time.perf_counter()
        self.input = np.asarray(input)
        y = as64(self.driver.relu(self.input))
        self._timed("forward", started)
        return y

    def backward(self, top_diff):
        started = time.perf_counter()
        self._need_forward("backward", self.input)
        dx = as64(self.driver.relu_backward(top_diff, self.input))
        self._timed("backward", started)
        return dx


class SoftmaxLossLayer(Timed):
    """Softmax over classes and the cross-entropy loss of integer labels.

    forward(x [N, classes]) -> probabilities; get_loss(label [N]) -> mean -log p(label);
    backward() -> (prob - one_hot(label)) / N, the gradient at the input.
    """

    def __init__(self):
        self.driver = fast_driver()
        self.prob = None
        self.label_onehot = None

    def forward(self, input):
        started = time.perf_counter()
        self.prob = as64(self.driver.softmax(input))
        self._timed("forward", started)
        return self.prob

    def get_loss(self, label) -> float:
        self._need_forward("get_loss", self.prob)
        label = np.asarray(label).reshape(-1)
        n, classes = self.prob.shape
        if label.shape != (n,) or not np.issubdtype(label.dtype, np.integer) \
                or label.min() < 0 or label.max() >= classes:
            raise InputError(f"SoftmaxLossLayer.get_loss: labels must be {n} integers in "
                             f"[0, {classes}), got {label!r}")
        self.label_onehot = np.zeros_like(self.prob)
        self.label_onehot[np.arange(n), label] = 1.0
        tiny = np.finfo(np.float64).tiny  # a probability that rounded to 0 in float32
        return float(-np.sum(np.log(np.maximum(self.prob, tiny)) * self.label_onehot) / n)

    def backward(self):
        started = time.perf_counter()
        self._need_forward("backward", self.prob)
        if self.label_onehot is None:
            raise VggjitError("SoftmaxLossLayer.backward: call get_loss(label) first; the "
                              "gradient needs the labels")
        dx = (self.prob - self.label_onehot) / self.prob.shape[0]
        self._timed("backward", started)
        return dx


__all__ = ["FullyConnectedLayer", "ReLULayer", "SoftmaxLossLayer"]
