"""The driver contract: the pluggy hook a plugin implements and the ops a driver provides.

The hook and its record live in :mod:`vggjit.hookspec` (what the registry needs) and are
re-exported here, so a plugin imports everything from this module. Each record's ``factory``
builds a :class:`Driver`.

:class:`Driver` is a template: its public methods check and normalise their arguments with
:mod:`vggjit.checks` (so every driver rejects bad input with the same ``ValueError``) and then
call the underscore method that a concrete driver overrides. Arrays reaching a kernel are
float32 and C-contiguous; activations are NCHW, conv weights OIHW, fc weights ``[out, in]``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import checks
from .errors import DriverUnavailableError, InputError
from .hookspec import (BACKWARD, CAPABILITIES, ENTRY_POINT_GROUP, FORWARD, GRAPH, PROJECT,
                       DriverRecord, DriverSpec, hookimpl, hookspec)
from .registry import list_drivers

__all__ = ["BACKWARD", "CAPABILITIES", "ENTRY_POINT_GROUP", "FORWARD", "GRAPH", "PROJECT", "Driver",
           "DriverRecord", "DriverSpec", "hookimpl", "hookspec"]


class Driver:
    """Base class of every driver. Subclasses override the ``_op`` methods they support.

    Shapes (all float32, C-contiguous):
      x [N, Cin, H, W], w [Cout, Cin, K, K], b [Cout] -> conv2d y [N, Cout, Hout, Wout]
      Hout = floor((H + 2 pad - K) / stride) + 1, likewise Wout
      max/avg pooling: floor output size; max-pool ties go to the first maximum in row-major
      window order; ``switches`` are the driver's own record of the arg-max positions.
      linear: x [N, in], w [out, in], b [out] -> y [N, out]
      softmax: x [N, classes], rows;  gram: x [N, C, H, W] -> [N, C, C], unnormalised.
    """

    name: str = "driver"
    capabilities: frozenset[str] = frozenset({FORWARD, BACKWARD})
    #: Rough sustained speed on VGG convolutions, for a driver slow enough that users should
    #: be warned before long work (vggjit/workload.py); None: fast enough not to say.
    flops_per_second: float | None = None

    # -- convolution ------------------------------------------------------------------------
    def conv2d(self, x, w, b, stride: int = 1, pad: int = 0, *, relu: bool = False
               ) -> np.ndarray:
        """y = conv(x, w) + b; with ``relu=True``, max(y, 0): the ReLU that follows every VGG
        convolution, which a driver may apply while it writes y instead of in a pass of its own
        (``_conv2d_relu``)."""
        x = checks.as_float32("conv2d x", x, 4)
        w = checks.as_float32("conv2d w", w, 4)
        stride = checks.positive_int("conv2d stride", stride)
        pad = checks.nonnegative_int("conv2d pad", pad)
        checks.conv_shapes(x, w, stride, pad)
        b = checks.conv_bias(b, w.shape[0], w.shape)
        if relu:
            return self._conv2d_relu(x, w, b, stride, pad)
        return self._conv2d(x, w, b, stride, pad)

    def _conv2d_relu(self, x, w, b, stride, pad):
        """relu(conv2d(...)): two ops unless the driver fuses them."""
        return self._relu(self._conv2d(x, w, b, stride, pad))

    def conv2d_backward(self, dy, x, w, stride: int = 1, pad: int = 0, *,
                        need_dx: bool = True, need_dw: bool = True, relu_out=None):
        """Return (dx, dw, db); dx is None unless need_dx, dw and db are None unless need_dw.

        relu_out: the output of the ReLU fused into this convolution (``conv2d(relu=True)``);
        dy is then the gradient with respect to that output, and the ReLU's backward is part
        of this op (``_conv2d_relu_backward``: a driver may mask dy as it reads it)."""
        self.require(BACKWARD, "conv2d_backward")
        x = checks.as_float32("conv2d_backward x", x, 4)
        w = checks.as_float32("conv2d_backward w", w, 4)
        dy = checks.as_float32("conv2d_backward dy", dy, 4)
        stride = checks.positive_int("conv2d stride", stride)
        pad = checks.nonnegative_int("conv2d pad", pad)
        hout, wout = checks.conv_shapes(x, w, stride, pad)
        checks.expect_shape("conv2d_backward dy", dy, (x.shape[0], w.shape[0], hout, wout),
                            f"x {x.shape}, w {w.shape}, stride {stride}, pad {pad}")
        if relu_out is not None:
            relu_out = checks.as_float32("conv2d_backward relu_out", relu_out, 4)
            checks.expect_shape("conv2d_backward relu_out", relu_out, dy.shape, "must match dy")
            return self._conv2d_relu_backward(dy, relu_out, x, w, stride, pad, need_dx,
                                              need_dw)
        return self._conv2d_backward(dy, x, w, stride, pad, need_dx, need_dw)

    def _conv2d_relu_backward(self, dy, relu_out, x, w, stride, pad, need_dx, need_dw):
        """The backward of relu(conv2d(...)): two ops unless the driver fuses them."""
        return self._conv2d_backward(self._relu_backward(dy, relu_out), x, w, stride, pad,
                                     need_dx, need_dw)

    # -- ReLU --------------------------------------------------------------------------------
    def relu(self, x) -> np.ndarray:
        return self._relu(checks.as_float32("relu x", x, (2, 4)))

    def relu_backward(self, dy, x) -> np.ndarray:
        """dx = dy where x > 0, else 0. ``x`` may be the ReLU's input or its output."""
        self.require(BACKWARD, "relu_backward")
        x = checks.as_float32("relu_backward x", x, (2, 4))
        dy = checks.as_float32("relu_backward dy", dy, (2, 4))
        checks.expect_shape("relu_backward dy", dy, x.shape, "must match x")
        return self._relu_backward(dy, x)

    # -- pooling -----------------------------------------------------------------------------
    def max_pool2d(self, x, size: int = 2, stride: int = 2, switches: bool = True):
        """Return (y, switches); with switches=False, (y, None): for inference, where no
        backward follows, a driver may then skip recording where each maximum came from."""
        x = checks.as_float32("max_pool2d x", x, 4)
        size = checks.positive_int("pool size", size)
        stride = checks.positive_int("pool stride", stride)
        checks.pool_shapes(x, size, stride)
        if not switches:
            return self._max_pool2d_values(x, size, stride), None
        return self._max_pool2d(x, size, stride)

    def max_pool2d_backward(self, dy, switches, x_shape) -> np.ndarray:
        self.require(BACKWARD, "max_pool2d_backward")
        dy = checks.as_float32("max_pool2d_backward dy", dy, 4)
        x_shape = checks.shape_tuple("max_pool2d_backward x_shape", x_shape, 4)
        checks.fits_in_memory("max_pool2d_backward", x_shape)
        if x_shape[:2] != dy.shape[:2] or x_shape[2] < dy.shape[2] or x_shape[3] < dy.shape[3]:
            raise InputError(f"max_pool2d_backward: dy shape {dy.shape} does not fit the input "
                             f"shape {x_shape}")
        return self._max_pool2d_backward(dy, switches, x_shape)

    def avg_pool2d(self, x, size: int = 2, stride: int = 2) -> np.ndarray:
        x = checks.as_float32("avg_pool2d x", x, 4)
        size = checks.positive_int("pool size", size)
        stride = checks.positive_int("pool stride", stride)
        checks.pool_shapes(x, size, stride)
        return self._avg_pool2d(x, size, stride)

    def avg_pool2d_backward(self, dy, x_shape, size: int = 2, stride: int = 2) -> np.ndarray:
        self.require(BACKWARD, "avg_pool2d_backward")
        dy = checks.as_float32("avg_pool2d_backward dy", dy, 4)
        x_shape = checks.shape_tuple("avg_pool2d_backward x_shape", x_shape, 4)
        size = checks.positive_int("pool size", size)
        stride = checks.positive_int("pool stride", stride)
        checks.fits_in_memory("avg_pool2d_backward", x_shape)
        probe = np.empty((1, 1) + x_shape[2:], np.float32)
        hout, wout = checks.pool_shapes(probe, size, stride)
        checks.expect_shape("avg_pool2d_backward dy", dy, x_shape[:2] + (hout, wout),
                            f"input {x_shape}, window {size}, stride {stride}")
        return self._avg_pool2d_backward(dy, x_shape, size, stride)

    # -- fully connected ---------------------------------------------------------------------
    def linear(self, x, w, b) -> np.ndarray:
        x = checks.as_float32("linear x", x, 2)
        w = checks.as_float32("linear w", w, 2)
        checks.linear_shapes(x, w)
        b = checks.as_float32("linear bias", b, 1)
        checks.expect_shape("linear bias", b, (w.shape[0],), f"w shape {w.shape}")
        return self._linear(x, w, b)

    def linear_backward(self, dy, x, w, *, need_dx: bool = True, need_dw: bool = True):
        """Return (dx, dw, db); dx is None unless need_dx, dw and db are None unless need_dw."""
        self.require(BACKWARD, "linear_backward")
        x = checks.as_float32("linear_backward x", x, 2)
        w = checks.as_float32("linear_backward w", w, 2)
        dy = checks.as_float32("linear_backward dy", dy, 2)
        checks.linear_shapes(x, w)
        checks.expect_shape("linear_backward dy", dy, (x.shape[0], w.shape[0]),
                            f"x {x.shape}, w {w.shape}")
        return self._linear_backward(dy, x, w, need_dx, need_dw)

    # -- softmax and Gram --------------------------------------------------------------------
    def softmax(self, x) -> np.ndarray:
        return self._softmax(checks.as_float32("softmax x", x, 2))

    def gram(self, x) -> np.ndarray:
        """G[n, i, j] = sum_{h,w} x[n,i,h,w] x[n,j,h,w], shape [N, C, C]."""
        return self._gram(checks.as_float32("gram x", x, 4))

    def gram_backward(self, dg, x, accumulate=None) -> np.ndarray:
        """dL/dx [N, C, H, W] of G = gram(x), given dg = dL/dG [N, C, C]: (dg + dg^T) @ X per
        image, X = x as [N, C, H*W].

        accumulate: None, or a writable C-contiguous float32 array shaped like x (not x
        itself): the gradient is added to it in place and it is returned. A style loss adds
        its term to the gradient arriving from deeper layers that way, with no second array
        as large as x."""
        self.require(BACKWARD, "gram_backward")
        x = checks.as_float32("gram_backward x", x, 4)
        dg = checks.as_float32("gram_backward dg", dg, 3)
        n, c = x.shape[:2]
        checks.expect_shape("gram_backward dg", dg, (n, c, c), f"x {x.shape}")
        if accumulate is not None:
            if not (isinstance(accumulate, np.ndarray) and accumulate.dtype == np.float32
                    and accumulate.flags.c_contiguous and accumulate.flags.writeable
                    and accumulate.shape == x.shape):
                raise InputError(
                    f"gram_backward accumulate must be a writable C-contiguous float32 array "
                    f"of shape {x.shape}, got {type(accumulate).__name__} "
                    f"{getattr(accumulate, 'dtype', '')} {getattr(accumulate, 'shape', '')}")
            if np.may_share_memory(accumulate, x):
                raise InputError("gram_backward accumulate must not share memory with x")
        return self._gram_backward(dg, x, accumulate)

    # -- whole network -----------------------------------------------------------------------
    def build_graph(self, net) -> Callable[[np.ndarray], np.ndarray] | None:
        """Optionally compile ``net`` into one callable ``x [N,3,224,224] -> prob [N,1000]``.

        Drivers that build the whole network at once (the DLP) override this and declare the
        ``graph`` capability; the default ``None`` makes the network run op by op.
        """
        return None

    def warmup(self) -> None:
        """Run every op once on tiny shapes, so a JIT driver compiles (or loads its cache) now."""
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
        w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
        b = np.zeros(3, np.float32)
        y = self.conv2d(x, w, b, 1, 1)
        r = self.relu(y)
        p, switches = self.max_pool2d(r, 2, 2)
        self.max_pool2d(r, 2, 2, switches=False)
        a = self.avg_pool2d(r, 2, 2)
        g = self.gram(r)
        fx = p.reshape(1, -1)
        fw = rng.standard_normal((4, fx.shape[1])).astype(np.float32)
        logits = self.linear(fx, fw, np.zeros(4, np.float32))
        self.softmax(logits)
        if BACKWARD in self.capabilities:
            self.linear_backward(logits, fx, fw)
            self.max_pool2d_backward(p, switches, r.shape)
            self.avg_pool2d_backward(a, r.shape, 2, 2)
            self.relu_backward(r, y)
            self.conv2d_backward(y, x, w, 1, 1)
            self.conv2d_backward(y, x, w, 1, 1, need_dw=False)
            self.gram_backward(g, r)

    def require(self, capability: str, what: str) -> None:
        """Raise DriverUnavailableError if this driver lacks ``capability``."""
        if capability in self.capabilities:
            return
        having = [r.name for r in list_drivers() if capability in r.capabilities and r.available]
        raise DriverUnavailableError(
            f"driver {self.name!r} cannot do {what}: it lacks the {capability!r} capability; "
            f"drivers that have it: {', '.join(having) or 'none installed'}")

    # -- what a concrete driver implements ---------------------------------------------------
    def _conv2d(self, x, w, b, stride, pad):
        raise NotImplementedError
    def _conv2d_backward(self, dy, x, w, stride, pad, need_dx, need_dw):
        raise NotImplementedError
    def _relu(self, x):
        raise NotImplementedError
    def _relu_backward(self, dy, x):
        raise NotImplementedError
    def _max_pool2d(self, x, size, stride):
        raise NotImplementedError
    def _max_pool2d_backward(self, dy, switches, x_shape):
        raise NotImplementedError
    def _max_pool2d_values(self, x, size, stride):
        return self._max_pool2d(x, size, stride)[0]     # a driver may skip the switches
    def _avg_pool2d(self, x, size, stride):
        raise NotImplementedError
    def _avg_pool2d_backward(self, dy, x_shape, size, stride):
        raise NotImplementedError
    def _linear(self, x, w, b):
        raise NotImplementedError
    def _linear_backward(self, dy, x, w, need_dx, need_dw):
        raise NotImplementedError
    def _softmax(self, x):
        raise NotImplementedError
    def _gram(self, x):
        raise NotImplementedError
    def _gram_backward(self, dg, x, accumulate):
        """NumPy's matmul: any driver has it; a driver may run it on its own kernels."""
        n, c = x.shape[:2]
        grad = np.matmul(dg + dg.transpose(0, 2, 1), x.reshape(n, c, -1)).reshape(x.shape)
        if accumulate is None:
            return grad
        accumulate += grad
        return accumulate

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

