"""What every lab layer shares: timing of the last pass, and parameters in the course's layout.

A layer with parameters keeps them as the course does (``weight``, ``bias``, float64 or
whatever ``load_param`` was given) and hands the driver a float32 copy in vggjit's layout,
made by ``load_param`` (else on first use) and remade whenever ``weight`` or ``bias`` is
assigned (``load_param``,
``init_param``, ``update_param``, ``layer.weight = ...``, ``layer.weight -= ...``). Writing into
the array in place (``layer.weight[...] = ...``) is not seen: assign instead.
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import InputError, VggjitError


class ShapeError(InputError, AssertionError):
    """Parameters of the wrong shape (the course's ``load_param`` asserts them)."""


class Timed:
    """``get_forward_time()`` / ``get_backward_time()``: seconds of the last pass."""

    forward_time = 0.0
    backward_time = 0.0

    def get_forward_time(self) -> float:
        return self.forward_time

    def get_backward_time(self) -> float:
        return self.backward_time

    def _timed(self, which: str, started: float) -> None:
        setattr(self, f"{which}_time", time.perf_counter() - started)

    def input_gradient(self, top_diff):
        """The gradient at the input only (style transfer needs no parameter gradients)."""
        return self.backward(top_diff)

    def _need_forward(self, what: str, kept) -> None:
        if kept is None:
            raise VggjitError(f"{type(self).__name__}.{what}: call forward first (a layer's "
                              f"backward uses what its own last forward kept)")


class ParamLayer(Timed):
    """A layer with ``weight`` and ``bias`` in the course's layouts (set by subclasses:
    :attr:`weight_shape`, :attr:`bias_shape`, :meth:`_device_weight`)."""

    weight_shape: tuple[int, ...] = ()
    bias_shape: tuple[int, ...] = ()

    def __init__(self):
        self._weight = None
        self._bias = None
        self._device = None  # (w, b) float32 in vggjit's layout, made on first use
        self.d_weight = None
        self.d_bias = None

    # -- parameters --------------------------------------------------------------------------
    @property
    def weight(self):
        return self._weight

    @weight.setter
    def weight(self, value):
        self._weight = value
        self._device = None

    @property
    def bias(self):
        return self._bias

    @bias.setter
    def bias(self, value):
        self._bias = value
        self._device = None

    def init_param(self, std: float = 0.01) -> None:
        """Normal(0, std) weights and zero biases (numpy's global generator, as the course)."""
        self.weight = np.random.normal(loc=0.0, scale=std, size=self.weight_shape)
        self.bias = np.zeros(self.bias_shape)

    def load_param(self, weight, bias) -> None:
        """Take ``weight`` and ``bias`` as given (their shapes are checked)."""
        for what, value, shape in (("weight", weight, self.weight_shape),
                                   ("bias", bias, self.bias_shape)):
            got = tuple(np.shape(value))
            if got != tuple(shape):
                raise ShapeError(f"{type(self).__name__}.load_param: {what} has shape {got}, "
                                 f"expected {tuple(shape)}")
        self.weight, self.bias = weight, bias
        self._params()  # the driver's copy now, not inside the first (timed) forward

    def get_gradient(self):
        """(d_weight, d_bias) of the last backward, in the parameters' layouts."""
        self._need_backward("get_gradient")
        return self.d_weight, self.d_bias

    def update_param(self, lr: float) -> None:
        """Plain gradient descent: weight -= lr d_weight, bias -= lr d_bias."""
        self._need_backward("update_param")
        self.weight = self.weight - lr * self.d_weight
        self.bias = self.bias - lr * self.d_bias

    def _need_backward(self, what: str) -> None:
        if self.d_weight is None:
            raise VggjitError(f"{type(self).__name__}.{what}: no parameter gradients yet; call "
                              f"backward(top_diff) first")

    def _params(self):
        if self._weight is None:
            raise VggjitError(f"{type(self).__name__}: no parameters; call init_param() or "
                              f"load_param(weight, bias) first")
        if self._device is None:
            self._device = self._device_weight()
        return self._device

    def _device_weight(self):
        raise NotImplementedError

    def input_gradient(self, top_diff):
        return self.backward(top_diff, param_grads=False)
