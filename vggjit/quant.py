"""int8 quantisation for the Cambricon DLP: (position, scale) maths, parameter files, calibration.

A tensor is quantised per tensor with an integer ``position`` and a float ``scale``::

    q = clamp(round_half_away_from_zero(x * scale / 2**position), -128, 127)
    x ~ q * 2**position / scale

Cambricon's calibration derives both from ``absmax = max |x|`` over a calibration set::

    position = ceil(log2(absmax / 127))      clamped to [-32, 32]
    scale    = 127 * 2**position / absmax    in [1, 2) unless the position was clamped

so ``absmax`` maps to exactly 127. ``absmax == 0`` gives position 0, scale 1. When the position
is clamped (absmax above 127 * 2**32 or below 127 * 2**-33) the scale is computed from the
clamped position by the same formula, so ``absmax`` still maps to 127 (scale then leaves
[1, 2)). The scale is a C ``float`` on the device: vggjit rounds it to float32 wherever it is
used, so files written in float32 or float64 behave identically.

Quantisation is computed in float64, which is exact for float32 and float16 operands (a
24-bit by 24-bit product fits in 53 bits and 2**position is a power of two), so exact .5 ties
are seen as ties and rounded away from zero; values beyond the range saturate to -128 / 127.

Parameter files use the lab's ``.npz`` format (``vgg19_quant_param_new.npz``): keys ``input``
and ``filter``, each a flat array ``[pos0, scale0, pos1, scale1, ...]`` with one pair per conv /
fc layer in network order (19 for VGG19: 16 conv + 3 fc; 16 for VGG16). vggjit also writes a
``layers`` key (the layer names) that readers of the lab format ignore; when present it is
checked.
"""
from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import InputError, WeightFileError
from .fileio import input_file

POSITION_MIN, POSITION_MAX = -32, 32
QMIN, QMAX = -128, 127
KEYS = ("input", "filter")


class QuantFileError(WeightFileError):
    """A quantisation parameter file that is missing, unreadable or malformed."""


@dataclass(frozen=True)
class QuantParam:
    """One per-tensor quantisation: ``x ~ q * 2**position / scale``.

    position: integer in [-32, 32]; scale: positive, stored as the float32 the device uses.
    """

    position: int
    scale: float

    def __post_init__(self):
        if int(self.position) != self.position:
            raise ValueError(f"position must be an integer, got {self.position!r}")
        object.__setattr__(self, "position", int(self.position))
        object.__setattr__(self, "scale", float(np.float32(self.scale)))

    @property
    def factor(self) -> float:
        """x -> q multiplier before rounding: scale / 2**position (exact in float64)."""
        return math.ldexp(self.scale, -self.position)

    @property
    def step(self) -> float:
        """The value of one integer step: 2**position / scale."""
        return math.ldexp(1.0, self.position) / self.scale


def round_half_away(v) -> np.ndarray:
    """Round to the nearest integer, exact .5 ties away from zero (float64 in, float64 out)."""
    v = np.asarray(v, np.float64)
    t = np.trunc(v)
    frac = v - t  # exact in binary floating point
    return t + np.where(np.abs(frac) >= 0.5, np.sign(v), 0.0)


def calibrate(absmax: float) -> QuantParam:
    """Cambricon's (position, scale) for a tensor whose largest magnitude is ``absmax``."""
    absmax = float(absmax)
    if not math.isfinite(absmax) or absmax < 0:
        raise ValueError(f"absmax must be finite and >= 0, got {absmax!r}")
    if absmax == 0.0:
        return QuantParam(0, 1.0)
    # ceil(log2(absmax / 127)) without trusting log2 near powers of two: the smallest p with
    # 127 * 2**p >= absmax (127 * 2**p is exact in float64).
    p = math.ceil(math.log2(absmax / 127.0))
    while math.ldexp(127.0, p - 1) >= absmax:
        p -= 1
    while math.ldexp(127.0, p) < absmax:
        p += 1
    p = min(max(p, POSITION_MIN), POSITION_MAX)
    return QuantParam(p, math.ldexp(127.0, p) / absmax)


def quantize(x, param: QuantParam) -> np.ndarray:
    """int8 codes of ``x`` (saturating to [-128, 127], ties away from zero)."""
    return quantize_float(x, param).astype(np.int8)


def quantize_float(x, param: QuantParam, out: np.ndarray | None = None) -> np.ndarray:
    """Like :func:`quantize` but returns the integer codes as float32 (ready for sgemm).

    The product ``x * scale / 2**position`` is exact in float64 for float16 / float32 ``x``
    (float64 ``x`` rounds once there); NaN gives an undefined code. ``out``: optional float32
    array of x's shape to write into.
    """
    x = np.asarray(x)
    v = np.multiply(x.reshape(-1), param.factor, dtype=np.float64)
    # Round half away from zero without floor(|v| + 0.5), whose sum can itself round up:
    # t = floor(|v|), then add 1 where the (exactly computed) fraction is >= 0.5.
    a = np.abs(v)
    t = np.floor(a)
    with np.errstate(invalid="ignore"):  # inf - inf: inf stays inf and saturates below
        a -= t
    t += a >= 0.5
    np.copysign(t, v, out=t)
    np.clip(t, QMIN, QMAX, out=t)
    if out is None:
        return t.astype(np.float32).reshape(x.shape)
    out[...] = t.reshape(x.shape)
    return out


def dequantize(q, param: QuantParam) -> np.ndarray:
    """Values represented by int8 codes ``q``: q * 2**position / scale, float64."""
    return np.asarray(q, np.float64) * math.ldexp(1.0, param.position) / param.scale


def absmax(x) -> float:
    """max |x| as a Python float (0 for an empty array); NaN is an error."""
    x = np.asarray(x)
    if x.size == 0:
        return 0.0
    m = float(max(np.max(x), -np.min(x)))
    if math.isnan(m):
        raise InputError("cannot calibrate int8 parameters for a tensor that contains NaN "
                         "(int8 has no NaN to hold it)")
    return m


# -- parameter files --------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantTable:
    """Per conv/fc layer, in network order: the input and the filter quantisation."""

    input: tuple[QuantParam, ...]
    filter: tuple[QuantParam, ...]
    layers: tuple[str, ...] | None = None  # names, when the file records them
    source: str = ""

    def __len__(self) -> int:
        return len(self.input)

    def check_for(self, layer_names: Sequence[str]) -> None:
        """Raise QuantFileError unless this table fits a network with these conv/fc layers."""
        where = self.source or "quantisation parameters"
        if len(self.input) != len(layer_names):
            raise QuantFileError(
                f"{where}: has {len(self.input)} (position, scale) pairs but the network has "
                f"{len(layer_names)} conv/fc layers ({', '.join(layer_names)}); VGG19 has 19 "
                f"(16 conv + 3 fc), VGG16 16 (13 conv + 3 fc)")
        if self.layers is not None and tuple(self.layers) != tuple(layer_names):
            raise QuantFileError(f"{where}: made for layers {', '.join(self.layers)}, not for "
                                 f"this network's {', '.join(layer_names)}")


def pack(params: Sequence[QuantParam]) -> np.ndarray:
    """[pos0, scale0, pos1, scale1, ...] as float32 (the lab's layout)."""
    flat = np.empty(2 * len(params), np.float32)
    flat[0::2] = [p.position for p in params]
    flat[1::2] = [p.scale for p in params]
    return flat


def _unpack(path: str, key: str, arr: np.ndarray) -> tuple[QuantParam, ...]:
    arr = np.asarray(arr)
    if arr.ndim == 2 and arr.shape[1] == 2:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise QuantFileError(f"{path}: {key!r} must be a flat array [pos0, scale0, pos1, "
                             f"scale1, ...], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise QuantFileError(f"{path}: {key!r} must hold numbers, got dtype {arr.dtype}")
    if arr.size == 0 or arr.size % 2:
        raise QuantFileError(f"{path}: {key!r} must hold (position, scale) pairs, i.e. an even "
                             f"number of values (38 for VGG19, 32 for VGG16), got {arr.size}")
    if np.issubdtype(arr.dtype, np.integer):
        # the format is float32 pairs: an integer file is converted only where that is exact
        inexact = sorted({int(v) for v in arr.tolist() if int(np.float32(v)) != int(v)})
        if inexact:
            raise QuantFileError(f"{path}: {key!r} holds {arr.dtype} values that float32 "
                                 f"cannot represent exactly ({', '.join(map(str, inexact[:3]))}"
                                 f"); write the (position, scale) pairs as float32")
    arr = arr.astype(np.float64)
    params = []
    for i in range(arr.size // 2):
        pos, scale = arr[2 * i], arr[2 * i + 1]
        what = f"{path}: {key!r} pair {i} (position {pos:g}, scale {scale:g})"
        if not (math.isfinite(pos) and math.isfinite(scale)):
            raise QuantFileError(f"{what}: NaN or infinite value")
        if pos != round(pos) or not POSITION_MIN <= pos <= POSITION_MAX:
            raise QuantFileError(f"{what}: the position must be an integer in "
                                 f"[{POSITION_MIN}, {POSITION_MAX}]")
        if not scale > 0 or not np.float32(scale) > 0 or not np.isfinite(np.float32(scale)):
            raise QuantFileError(f"{what}: the scale must be positive (and a finite float32)")
        params.append(QuantParam(int(pos), scale))
    return tuple(params)


def load_quant(path, expected: int | None = None) -> QuantTable:
    """Read a lab-format ``.npz``; ``expected``: the number of pairs required (19 for VGG19,
    16 for VGG16)."""
    name = os.fspath(path)
    input_file(name, "quantisation parameter file", QuantFileError,
               missing_hint=f"Make one with `vggjit quantize --weights W IMAGES... -o "
                            f"{Path(name).name}`")
    try:
        with np.load(name, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise QuantFileError(f"{name}: not a readable .npz file of quantisation parameters "
                             f"({type(exc).__name__}: {exc})") from None
    if not isinstance(arrays, dict) or any(k not in arrays for k in KEYS):
        found = ", ".join(sorted(arrays)) or "none"
        raise QuantFileError(f"{name}: a quantisation file needs the keys 'input' and 'filter' "
                             f"(flat [pos, scale, ...] arrays); found keys: {found}")
    inp = _unpack(name, "input", arrays["input"])
    filt = _unpack(name, "filter", arrays["filter"])
    if len(inp) != len(filt):
        raise QuantFileError(f"{name}: 'input' has {len(inp)} pairs but 'filter' has "
                             f"{len(filt)}; both need one per conv/fc layer")
    if expected is not None and len(inp) != expected:
        raise QuantFileError(f"{name}: has {len(inp)} (position, scale) pairs per key, expected "
                             f"{expected} (VGG19: 16 conv + 3 fc; VGG16: 13 conv + 3 fc)")
    layers = None
    if "layers" in arrays:
        names = arrays["layers"]
        if names.ndim != 1 or names.dtype.kind not in "US" or len(names) != len(inp):
            raise QuantFileError(f"{name}: 'layers' must list one name per pair "
                                 f"({len(inp)}), got shape {names.shape} dtype {names.dtype}")
        layers = tuple(str(n) for n in names)
    return QuantTable(inp, filt, layers, source=name)


def save_quant(path, table: QuantTable, overwrite: bool = True) -> Path:
    """Write ``table`` in the lab's format (plus the ``layers`` names), atomically."""
    from .fileio import atomic_save

    arrays = {"input": pack(table.input), "filter": pack(table.filter)}
    if table.layers is not None:
        arrays["layers"] = np.array(table.layers, dtype=np.str_)
    path = Path(path)
    if path.suffix != ".npz":
        raise QuantFileError(f"{path}: quantisation files are .npz; use a name ending in .npz")
    return atomic_save(path, lambda tmp: np.savez(tmp, **arrays), overwrite=overwrite)


# -- calibration --------------------------------------------------------------------------------
def param_layers(net) -> list:
    """The conv and fc layers of ``net`` in order: the order of the file's pairs."""
    return [layer for layer in net.layers if layer.has_params]


def input_sources(net) -> dict[str, str | None]:
    """{conv/fc layer: the layer whose output is its input} (None: the image, for conv1_1)."""
    sources = {}
    for i, layer in enumerate(net.layers):
        if layer.has_params:
            sources[layer.name] = net.layers[i - 1].name if i > 0 else None
    return sources


def filter_params(net) -> list[QuantParam]:
    """Per conv/fc layer, the parameters from its weights' absmax (biases stay fp16)."""
    return [calibrate(absmax(net.weights[layer.name][0])) for layer in param_layers(net)]


class Calibrator:
    """Running absmax of every conv/fc input over calibration batches.

    ``update(x)`` runs ``net.forward`` (on the network's float driver) asking for each conv/fc
    layer's input: the image for the first conv, else the preceding relu / pool output.
    """

    def __init__(self, net):
        self.net = net
        self.sources = input_sources(net)
        self.absmax = {name: 0.0 for name in self.sources}
        self.images = 0

    def update(self, x: np.ndarray, also: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Fold a batch into the running absmax; return the activations of the layers asked
        for (the calibration sources plus ``also``), from the same forward pass."""
        x = np.asarray(x, np.float32)
        wanted = sorted({s for s in self.sources.values() if s is not None} | set(also),
                        key=self.net.index.__getitem__)
        acts = self.net.forward(x, wanted) if wanted else {}
        for name, src in self.sources.items():
            value = absmax(x if src is None else acts[src])
            self.absmax[name] = max(self.absmax[name], value)
        self.images += x.shape[0]
        return acts

    def table(self, source: str = "") -> QuantTable:
        if not self.images:
            raise ValueError("calibration needs at least one image")
        names = list(self.sources)
        return QuantTable(tuple(calibrate(self.absmax[n]) for n in names),
                          tuple(filter_params(self.net)), tuple(names), source)


def calibrate_network(net, batches: Iterable[np.ndarray], progress=None) -> QuantTable:
    """A :class:`QuantTable` for ``net`` from preprocessed batches [N, 3, H, W].

    progress: optional callable(batch_images) called after each batch (e.g. tqdm.update).
    """
    cal = Calibrator(net)
    for x in batches:
        cal.update(x)
        if progress is not None:
            progress(np.asarray(x).shape[0])
    return cal.table()


# -- accuracy report ----------------------------------------------------------------------------
def float_driver(name: str | None = None):
    """The driver the int8 results are compared with: ``name``, else the best available
    float32 one (numba-cpu where installed). int8 drivers are not float references."""
    from .contract import FORWARD
    from .errors import InputError
    from .registry import get_driver, list_drivers

    if name:
        driver = get_driver(name)
        if getattr(driver, "tolerance_class", "float32") != "float32":
            raise InputError(f"driver {name!r} is not a float32 driver; calibration and the "
                             f"accuracy report need one (e.g. numba-cpu)")
        return driver
    for record in list_drivers():
        if record.available and FORWARD in record.capabilities:
            driver = get_driver(record.name)
            if getattr(driver, "tolerance_class", "float32") == "float32":
                return driver
    raise InputError("no float32 driver is available for calibration (install numba-cpu)")


def sqnr_db(signal: float, noise: float) -> float:
    """10 log10(signal energy / noise energy); inf when the noise is 0."""
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def accuracy_report(net, int8_driver, batches: Iterable[np.ndarray], progress=None) -> dict:
    """int8 (``int8_driver``, a cnml-dlp driver holding its parameters) against float32 (``net``
    on its own float driver), over preprocessed batches [N, 3, 224, 224].

    Returns images, top1_agreement (same top-1 class), top5_agreement (the float top-1 class is
    in the int8 top 5), top5_overlap (mean share of the two top-5 sets in common),
    max_abs_dprob (largest |probability difference| of any class and image), and sqnr_db:
    per conv/fc layer output, 10 log10(sum ref^2 / sum (int8 - ref)^2) over all images (from
    the emulator, which can return every layer; the probabilities come from the driver's own
    backend).
    """
    emulated = int8_driver.emulate(net)
    graph = int8_driver.build_graph(net) if int8_driver.backend != "emulator" else None
    names = [layer.name for layer in param_layers(net)]
    outputs = names + ["prob"]
    signal = dict.fromkeys(names, 0.0)
    noise = dict.fromkeys(names, 0.0)
    images = top1 = top5 = 0
    overlap, max_dprob = 0.0, 0.0
    for x in batches:
        x = np.asarray(x, np.float32)
        ref = net.forward(x, outputs)
        got = emulated.run(x, outputs)
        prob = graph(x) if graph is not None else got["prob"]
        for name in names:
            r = ref[name].astype(np.float64)
            signal[name] += float(np.sum(r * r))
            noise[name] += float(np.sum((got[name] - r) ** 2))
        for p_ref, p_q in zip(ref["prob"], prob, strict=True):
            best_ref = np.argsort(-p_ref, kind="stable")[:5]
            best_q = np.argsort(-p_q, kind="stable")[:5]
            top1 += int(best_ref[0] == best_q[0])
            top5 += int(best_ref[0] in best_q)
            overlap += len(set(best_ref) & set(best_q)) / 5.0
            max_dprob = max(max_dprob, float(np.abs(p_ref - p_q.astype(np.float64)).max()))
            images += 1
        if progress is not None:
            progress(x.shape[0])
    if not images:
        raise ValueError("the accuracy report needs at least one image")
    return {"images": images, "backend": int8_driver.backend,
            "float_driver": getattr(net.driver, "name", "?"),
            "top1_agreement": top1 / images, "top5_agreement": top5 / images,
            "top5_overlap": overlap / images, "max_abs_dprob": max_dprob,
            "sqnr_db": {n: sqnr_db(signal[n], noise[n]) for n in names}}


def format_report(report: dict) -> str:
    """The report as text: the summary lines, then one line per layer."""
    lines = [f"int8 ({report['backend']}) vs float32 ({report['float_driver']}) on "
             f"{report['images']} image(s):",
             f"  top-1 agreement  {report['top1_agreement']:.1%}",
             f"  top-5 agreement  {report['top5_agreement']:.1%}   (float top-1 within int8 "
             f"top 5; top-5 sets overlap {report['top5_overlap']:.1%})",
             f"  max |delta prob| {report['max_abs_dprob']:.4g}",
             "  per-layer SQNR of the int8 network's outputs (dB):"]
    lines += [f"    {name:<8} {db:6.1f}" for name, db in report["sqnr_db"].items()]
    return "\n".join(lines)
