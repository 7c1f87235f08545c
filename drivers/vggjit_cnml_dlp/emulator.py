"""Software emulation of the DLP's numerics, fast enough to run VGG19.

The numerics are docs/equations.md, section 6; why they are emulated this way is
docs/design-notes.md, note 10.

Conventions. Activations are kept in float32 arrays whose values are exactly representable in
fp16 (:func:`fp16` rounds to nearest even, overflow to inf, fp16 subnormals kept), which is
cheaper to compute on than numpy's float16 type and bit-for-bit the same numbers. The hot loops
(quantise + img2col, rescale + bias + ReLU) are fused Numba kernels (:mod:`.kernels`); the
GEMMs are BLAS sgemm.

* conv / fc: the fp16 input and the float32 filter are quantised per tensor to int8 with their
  (position, scale) (:mod:`vggjit.quant`), the integer products are accumulated exactly, and the
  sum is scaled by ``step_in * step_filter`` in float64 and rounded once to fp16. The bias is
  then added in fp16 (``fp16(fp16(acc * step) + fp16(b))``).
* Exact accumulation with BLAS: the int8 codes are stored as float32 and multiplied with sgemm.
  Every partial sum is an integer; it is exact in float32 while its magnitude stays within 2**24.
  Each weight matrix is cut along K into chunks whose worst case (sum of |w| over the chunk,
  times 128, the largest |input code|) is at most 2**24; chunks are added in float64. VGG19's
  conv layers need one chunk, fc6 a few.
* ReLU and max-pooling are exact on fp16 values; average pooling sums the window in float32 and
  rounds the mean to fp16; softmax subtracts the row maximum and computes exp in fp16 steps
  (difference, exponential and quotient each rounded to fp16; the row sum accumulated in float32).
"""
from __future__ import annotations

import numpy as np

from vggjit.checks import conv_output_length
from vggjit.layer_ops import flatten_for
from vggjit.quant import QuantParam, absmax, calibrate, param_layers, quantize_float

from . import kernels

EXACT = float(2 ** 24)   # float32 integers are exact up to here
BLOCK = 1024             # 1024 * 128 * 128 = 2**24: one block of K is always exact
MAX_CODE = 128.0         # the largest |int8 code|


def fp16(a, out: np.ndarray | None = None) -> np.ndarray:
    """Round to fp16 (nearest even), returned as float32 (a new array unless ``out``)."""
    h = np.asarray(a).astype(np.float16)
    if out is None:
        return h.astype(np.float32)
    out[...] = h
    return out


# -- exact integer GEMM -----------------------------------------------------------------------
def plan_chunks(wq: np.ndarray) -> list[tuple[int, int]]:
    """Cut the K axis of int8-valued ``wq`` [M, K] so every partial sum stays exact in float32.

    A chunk [s, e) is safe when max over rows of sum_{k in [s,e)} |wq[m, k]| * 128 <= 2**24.
    Chunks are built greedily from blocks of 1024 columns (each block alone is always safe).
    """
    m, k = wq.shape
    starts = np.arange(0, k, BLOCK)
    sums = np.add.reduceat(np.abs(wq), starts, axis=1) if k else np.zeros((m, 0))
    limit = EXACT / MAX_CODE
    if sums.size == 0 or float(sums.sum(axis=1).max()) <= limit:
        return [(0, k)]
    chunks, begin = [], 0
    running = np.zeros(m, np.float64)
    for j in range(len(starts)):
        if float((running + sums[:, j]).max()) > limit:
            chunks.append((int(starts[begin]), int(starts[j])))
            begin, running = j, np.zeros(m, np.float64)
        running += sums[:, j]
    chunks.append((int(starts[begin]), k))
    return chunks


def int_gemm(wq: np.ndarray, xq: np.ndarray, chunks: list[tuple[int, int]]) -> np.ndarray:
    """Exact wq [M, K] @ xq [K, P] for int8-valued float32 operands (float32 or float64 result)."""
    if len(chunks) == 1:
        return wq @ xq
    acc = np.zeros((wq.shape[0], xq.shape[1]), np.float64)
    for s, e in chunks:
        acc += wq[:, s:e] @ xq[s:e]
    return acc


# -- img2col ----------------------------------------------------------------------------------
def img2col(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """x [N, C, H, W] -> columns [C*k*k, N*Hout*Wout] (rows ordered c, kh, kw like OIHW)."""
    n, c, h, w = x.shape
    hout, wout = conv_output_length(h, k, stride, pad), conv_output_length(w, k, stride, pad)
    if pad:
        xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), x.dtype)
        xp[:, :, pad:pad + h, pad:pad + w] = x
    else:
        xp = np.ascontiguousarray(x)
    s = xp.strides
    view = np.lib.stride_tricks.as_strided(
        xp, (c, k, k, n, hout, wout), (s[1], s[2], s[3], s[0], s[2] * stride, s[3] * stride),
        writeable=False)
    return view.reshape(c * k * k, n * hout * wout)


# -- layers -----------------------------------------------------------------------------------
class QuantWeights:
    """A conv or fc filter quantised once: int8 codes as float32 [M, K], its param and chunks."""

    def __init__(self, w: np.ndarray, param: QuantParam | None = None):
        w = np.asarray(w, np.float32)
        self.shape = w.shape
        self.param = param if param is not None else calibrate(absmax(w))
        flat = w.reshape(w.shape[0], -1)
        self.q = np.empty(flat.shape, np.float32)
        rows = max(1, (1 << 21) // max(1, flat.shape[1]))  # bounded float64 temporaries
        for s in range(0, flat.shape[0], rows):
            quantize_float(flat[s:s + rows], self.param, out=self.q[s:s + rows])
        self.chunks = plan_chunks(self.q)


def conv(x16: np.ndarray, qw: QuantWeights, bias16: np.ndarray, stride: int, pad: int,
         in_param: QuantParam | None = None, relu: bool = False) -> np.ndarray:
    """Quantised convolution of fp16 activations x16 [N, C, H, W]; returns fp16 [N, Cout, ., .].

    in_param None: calibrate the input from its own absmax (dynamic calibration). ``relu``:
    apply the following ReLU in the same pass (exact on fp16 values, so no different).
    One image at a time: quantise into a padded buffer, img2col, exact GEMM, rescale.
    """
    n, c, h, w = x16.shape
    cout, _, k, _ = qw.shape
    hout, wout = conv_output_length(h, k, stride, pad), conv_output_length(w, k, stride, pad)
    param = in_param if in_param is not None else calibrate(absmax(x16))
    step = param.step * qw.param.step
    bias16 = np.ascontiguousarray(bias16, np.float32)
    y = np.empty((n, cout, hout, wout), np.float32)
    xp = np.empty((c, h + 2 * pad, w + 2 * pad), np.float32)
    cols = np.empty((c * k * k, hout * wout), np.float32)
    for i in range(n):
        kernels.quantize_pad(np.ascontiguousarray(x16[i], np.float32), param.factor, pad, xp)
        kernels.img2col_padded(xp, k, stride, hout, wout, cols)
        acc = int_gemm(qw.q, cols, qw.chunks)  # [Cout, Hout*Wout], exact integers
        kernels.rescale(acc, step, bias16, relu, y[i].reshape(cout, hout * wout))
    return y


def linear(x16: np.ndarray, qw: QuantWeights, bias16: np.ndarray,
           in_param: QuantParam | None = None) -> np.ndarray:
    """Quantised fully connected layer: x16 [N, in] -> fp16 [N, out]."""
    param = in_param if in_param is not None else calibrate(absmax(x16))
    xq = quantize_float(x16, param)
    acc = np.ascontiguousarray(int_gemm(qw.q, xq.T, qw.chunks))  # [out, N]
    out = np.empty(acc.shape, np.float32)
    kernels.rescale(acc, param.step * qw.param.step, np.ascontiguousarray(bias16, np.float32),
                    False, out)
    return np.ascontiguousarray(out.T)


def relu(x16: np.ndarray) -> np.ndarray:
    return np.maximum(x16, np.float32(0.0))


def max_pool(x16: np.ndarray, size: int, stride: int, switches: bool = False):
    """Floor-mode max pooling (exact on fp16). With ``switches``, also the flat index
    (row * W + col) in each input plane of the window's first maximum."""
    n, c, h, w = x16.shape
    hout, wout = conv_output_length(h, size, stride, 0), conv_output_length(w, size, stride, 0)
    if size == stride == 2 and not switches:
        v = x16[:, :, :2 * hout, :2 * wout].reshape(n, c, hout, 2, wout, 2)
        return np.maximum(np.maximum(v[:, :, :, 0, :, 0], v[:, :, :, 0, :, 1]),
                          np.maximum(v[:, :, :, 1, :, 0], v[:, :, :, 1, :, 1]))
    windows = _windows(x16, size, stride, hout, wout)  # [N, C, Hout, Wout, size*size]
    y = np.ascontiguousarray(windows.max(axis=-1))
    if not switches:
        return y
    arg = windows.argmax(axis=-1)  # first maximum in row-major window order
    rows = np.arange(hout)[:, None] * stride + arg // size
    cols = np.arange(wout)[None, :] * stride + arg % size
    return y, (rows * w + cols).astype(np.int64)


def avg_pool(x16: np.ndarray, size: int, stride: int) -> np.ndarray:
    n, c, h, w = x16.shape
    hout, wout = conv_output_length(h, size, stride, 0), conv_output_length(w, size, stride, 0)
    total = _windows(x16, size, stride, hout, wout).sum(axis=-1, dtype=np.float32)
    return fp16(total / np.float32(size * size))


def _windows(x, size, stride, hout, wout):
    s = x.strides
    view = np.lib.stride_tricks.as_strided(
        x, (x.shape[0], x.shape[1], hout, wout, size, size),
        (s[0], s[1], s[2] * stride, s[3] * stride, s[2], s[3]), writeable=False)
    return view.reshape(x.shape[0], x.shape[1], hout, wout, size * size)


def softmax(x16: np.ndarray) -> np.ndarray:
    """Row softmax in fp16 steps (see the module docstring)."""
    d = fp16(x16 - x16.max(axis=1, keepdims=True))
    e = fp16(np.exp(d))
    total = fp16(e.sum(axis=1, keepdims=True, dtype=np.float32))
    return fp16(e / total)


def gram(x16: np.ndarray) -> np.ndarray:
    """G[n] = X X^T with X [C, H*W] quantised per tensor, exact accumulation, fp16 result."""
    n, c = x16.shape[:2]
    param = calibrate(absmax(x16))
    xq = quantize_float(x16.reshape(n, c, -1), param)
    out = np.empty((n, c, c), np.float32)
    for i in range(n):
        chunks = plan_chunks(xq[i])
        out[i] = fp16(np.multiply(int_gemm(xq[i], xq[i].T, chunks), param.step ** 2,
                                  dtype=np.float64))
    return out


# -- whole network ----------------------------------------------------------------------------
class EmulatedNet:
    """A :class:`vggjit.network.Network` compiled for the emulator.

    table: a :class:`vggjit.quant.QuantTable` (input and filter parameters per conv/fc layer,
    in order); None: filters calibrated from their weights' absmax and each layer input from its
    own absmax at run time, per image (dynamic calibration; the real device needs fixed
    parameters, so use a table to reproduce it).
    Weights are quantised once here; a call runs one image at a time.
    """

    def __init__(self, net, table=None):
        names = [layer.name for layer in param_layers(net)]
        if table is not None:
            table.check_for(names)
        self.net, self.table = net, table
        self.layers = net.layers
        self.pooling = net.pooling
        self.in_params: dict[str, QuantParam | None] = {}
        self.weights: dict[str, QuantWeights] = {}
        self.bias: dict[str, np.ndarray] = {}
        for k, name in enumerate(names):
            w, b = net.weights[name]
            self.weights[name] = QuantWeights(w, table.filter[k] if table else None)
            self.bias[name] = fp16(np.asarray(b, np.float32))
            self.in_params[name] = table.input[k] if table else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x, ("prob",))["prob"]

    def run(self, x: np.ndarray, outputs=("prob",)) -> dict[str, np.ndarray]:
        """Named layer outputs (float32 holding fp16 values) for x [N, 3, H, W] float32."""
        outputs = tuple(outputs)
        index = {layer.name: i for i, layer in enumerate(self.layers)}
        last = max(index[name] for name in outputs)
        per_image = [self._one(np.asarray(x[i:i + 1], np.float32), outputs, last)
                     for i in range(x.shape[0])]
        return {name: np.concatenate([r[name] for r in per_image]) for name in outputs}

    def _one(self, x, outputs, last):
        wanted, result = set(outputs), {}
        a = fp16(x)  # the device casts its fp32 input to fp16
        fused = False
        for i, layer in enumerate(self.layers[:last + 1]):
            if layer.kind == "conv":
                # a ReLU right after a conv is applied in the conv's output pass, unless the
                # conv's own output was asked for
                fused = (layer.name not in wanted and i < last
                         and self.layers[i + 1].kind == "relu")
                a = conv(a, self.weights[layer.name], self.bias[layer.name], 1, 1,
                         self.in_params[layer.name], relu=fused)
            elif layer.kind == "relu":
                if not fused:
                    a = relu(a)
                fused = False
            elif layer.kind == "pool":
                a = (max_pool(a, 2, 2) if self.pooling == "max" else avg_pool(a, 2, 2))
            elif layer.kind == "fc":
                a = flatten_for(layer, a)  # clear error unless pool5 fits fc6
                a = linear(a, self.weights[layer.name], self.bias[layer.name],
                           self.in_params[layer.name])
            elif layer.kind == "softmax":
                a = softmax(a)
            if layer.name in wanted:
                result[layer.name] = a
        return result
