"""VGG weight files: MatConvNet ``.mat`` (both versions) in, vggjit's native cache out.

``load_weights(path)`` reads

* the older MatConvNet file (the lab's ``beta16`` ``imagenet-vgg-verydeep-19.mat``: top-level
  ``layers``, ``classes``, ``normalization``),
* the newer one (``layers``, ``meta``), or
* vggjit's native file (an uncompressed ``.npz``, see :func:`write_native`),

checks every layer against the VGG layer table and returns a :class:`WeightSet` with conv
weights OIHW ``[Cout, Cin, 3, 3]`` and fc weights ``[out, in]`` (fc6 on pool5 flattened in
C, H, W order), all float32. The layer table is read from the file: VGG19 and VGG16 both load,
and so do the small VGG-shaped networks the tests write.

Parsing the 510 MB ``.mat`` takes seconds, so the first load of a ``.mat`` writes a native copy
to ``home_dir()/converted/`` (atomically), recording the source's size, modification time and
MD5. Later loads memory-map that copy: a fraction of a second, and pages nobody reads (fc6 during
style transfer) are never read from disk. The copy is used while the source's size and
modification time match (or, if only the time changed, its MD5); otherwise it is rebuilt
(docs/design-notes.md, note 11).

The file format is described in docs/formats.md.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import mmap
import os
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from . import weightcheck
from .errors import WeightFileError
from .fileio import atomic_save, home_dir, input_file
from .weights_urls import MD5S, URLS
from .network import (CLASSIFIER, MEAN_PIXEL, VGG16_BLOCKS, VGG19_BLOCKS, Layer, param_shapes,
                      vgg_layers)

ENV_WEIGHTS = "VGGJIT_WEIGHTS"
#: The file name of the official download; ``vggjit weights fetch`` puts it in home_dir().
DEFAULT_NAME = "imagenet-vgg-verydeep-19.mat"


#: WeightSet.version values.
OLD, NEW = "matconvnet-old", "matconvnet-new"
VERSION_NAMES = {
    OLD: "MatConvNet older format (the lab's beta16 file: variables layers, classes, "
         "normalization)",
    NEW: "MatConvNet newer format (variables layers, meta)",
}

NATIVE_FORMAT = "vggjit-weights"
NATIVE_VERSION = 1
_ALIGN = 64            # array data in the native file starts on a 64-byte boundary
_PAD_EXTRA_ID = 0xD935  # zip "extra field" id used for the alignment padding (as zipalign)


@dataclass
class WeightSet:
    """The parameters of a VGG network and what came with them.

    layers: the layer table (see :func:`vggjit.network.vgg_layers`).
    params: {layer name: (w, b)}: conv w [Cout, Cin, 3, 3], fc w [out, in], b [out]; float32.
    mean_pixel: RGB float32 [3]; wnids, descriptions: one per class (empty if unknown).
    source: the file the weights came from (the ``.mat`` even when read from its cache).
    version: :data:`OLD` or :data:`NEW` (the MatConvNet format of the original file).
    md5: MD5 of the source file ("" if unknown). cache: the native file read or written, if any.
    notes: what was assumed because the file lacked it (shown by ``vggjit weights info``).
    """

    layers: tuple[Layer, ...]
    params: dict[str, tuple[np.ndarray, np.ndarray]]
    mean_pixel: np.ndarray
    wnids: list[str]
    descriptions: list[str]
    source: str
    version: str
    md5: str = ""
    cache: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """"VGG19", "VGG16" or "VGG-like (...)" for other channel counts."""
        if self.classifier == CLASSIFIER:
            for name, blocks in (("VGG19", VGG19_BLOCKS), ("VGG16", VGG16_BLOCKS)):
                if self.blocks == blocks:
                    return name
        convs = sum(c for _, c in self.blocks)
        return f"VGG-like ({convs} conv layers, {self.classifier[-1]} classes)"

    @property
    def blocks(self) -> tuple[tuple[int, int], ...]:
        return _blocks_of(self.layers)

    @property
    def classifier(self) -> tuple[int, ...]:
        return tuple(layer.cout for layer in self.layers if layer.kind == "fc")


# -- the packaged class list -----------------------------------------------------------------

@functools.cache
def imagenet_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The 1000 ILSVRC2012 classes in the standard order: (wnids, descriptions)."""
    text = resources.files("vggjit").joinpath("data", "imagenet_classes.tsv").read_text("utf-8")
    wnids, descriptions = [], []
    for line in text.splitlines():
        if line.strip():
            wnid, description = line.split("\t", 1)
            wnids.append(wnid)
            descriptions.append(description)
    return tuple(wnids), tuple(descriptions)


# -- finding the weight file -----------------------------------------------------------------

def default_weights_path() -> Path:
    """Where ``vggjit weights fetch`` puts the file and where vggjit looks last."""
    return home_dir() / DEFAULT_NAME


def how_to_get_weights() -> str:
    """The message that tells a user exactly how to get the weight file."""
    target = default_weights_path()
    return (f"no VGG19 weights found: no --weights option, ${ENV_WEIGHTS} is not set, and "
            f"{target} does not exist.\n"
            f"  Get them once (about 510 MB, checked by MD5) with:\n"
            f"      vggjit weights fetch\n"
            f"  or download {URLS['beta16']}\n"
            f"  (or the newer-format {URLS['new']}) yourself and put it at {target},\n"
            f"  or pass --weights PATH, or set {ENV_WEIGHTS}=PATH.")


def find_weights(explicit=None) -> Path:
    """The weight file to use: ``explicit`` (--weights) > $VGGJIT_WEIGHTS > home_dir().

    Raises WeightFileError: naming the missing file when one was given, else with
    :func:`how_to_get_weights`.
    """
    for value, where in ((explicit, "given with --weights"),
                         (os.environ.get(ENV_WEIGHTS), f"from ${ENV_WEIGHTS}")):
        if value:
            return input_file(Path(value).expanduser(), f"weight file ({DEFAULT_NAME} or a "
                              f"converted .npz)", WeightFileError, where, _fetch_hint())
    path = default_weights_path()
    if path.is_file():
        return path
    raise WeightFileError(how_to_get_weights())


def _fetch_hint() -> str:
    return f"`vggjit weights fetch` downloads the official file to {default_weights_path()}."


# -- loading ---------------------------------------------------------------------------------

def load_weights(path, *, cache: bool = True) -> WeightSet:
    """Load a MatConvNet ``.mat`` (either version) or a vggjit native file.

    cache: for a ``.mat``, use (and write, on first load) the native copy in
    ``home_dir()/converted``. A cache that cannot be written only costs a warning.
    Raises WeightFileError naming the file (and the layer) for anything unusable.
    """
    path = Path(path).expanduser()
    kind = _sniff(path)
    if kind == "native":
        return read_native(path)
    if kind == "hdf5":
        raise WeightFileError(
            f"{path}: a MATLAB v7.3 (HDF5) file; vggjit reads the v5/v7 .mat files MatConvNet "
            f"publishes. {_fetch_hint()}")
    if kind != "mat":
        raise WeightFileError(
            f"{path}: not a MATLAB .mat file or a vggjit .npz (it starts with "
            f"{_head(path)!r}); expected MatConvNet's {DEFAULT_NAME}. {_fetch_hint()}")
    if not cache:
        return read_matconvnet(path)
    target = cache_path_for(path)
    stat = path.stat()
    hit = _cache_hit(target, path, stat)
    if hit is not None:
        return hit
    ws = read_matconvnet(path)
    try:
        write_native(target, ws, source_stat=stat)
        ws.cache = target
    except OSError as exc:
        warnings.warn(f"vggjit: could not write the weight cache {target} "
                      f"({exc.strerror or exc}); the next load parses {path.name} again",
                      stacklevel=2)
    return ws


def cache_path_for(source) -> Path:
    """The native copy of ``source`` in ``home_dir()/converted`` (keyed by its absolute path)."""
    source = Path(source).expanduser().resolve()
    key = hashlib.sha1(str(source).encode("utf-8")).hexdigest()[:12]
    return home_dir() / "converted" / f"{source.stem}-{key}.npz"


def _cache_hit(target: Path, source: Path, stat: os.stat_result) -> WeightSet | None:
    if not target.is_file():
        return None
    try:
        meta = read_native_meta(target)
        if (meta.get("source_size") != stat.st_size
                or meta.get("format_version") != NATIVE_VERSION):
            return None
        if meta.get("source_mtime_ns") != stat.st_mtime_ns:
            # Same size, new time: a copy or a touch. Only the content can tell.
            if meta.get("source_md5") != file_md5(source):
                return None
        ws = read_native(target)
    except WeightFileError:
        return None  # a damaged cache is rebuilt from the source
    ws.source = str(source)
    return ws


def _sniff(path: Path) -> str:
    # missing, a directory, a name too long, or a FIFO whose read would block forever
    input_file(path, "weight file", WeightFileError, missing_hint=_fetch_hint())
    head = _head(path, 128)
    if not head:
        raise WeightFileError(f"{path}: the file is empty (an interrupted download?). "
                              f"{_fetch_hint()}")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "native"
    if head.startswith(b"MATLAB 7.3"):
        return "hdf5"
    if head.startswith(b"MATLAB 5.0"):
        return "mat"
    return "other"


def _head(path: Path, n: int = 16) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(n)
    except OSError as exc:
        raise WeightFileError(f"{path}: cannot read ({exc.strerror or exc})") from None


def file_md5(path, chunk: int = 1 << 22) -> str:
    """Hex MD5 of a file (the official downloads publish theirs)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def official_variant(md5: str) -> str | None:
    """"beta16" or "new" if ``md5`` is that of an official download, else None."""
    return next((name for name, value in MD5S.items() if value == md5), None)


# -- MatConvNet ------------------------------------------------------------------------------

_CONV_NAME = re.compile(r"conv(\d+)_(\d+)$")
_FC_NAME = re.compile(r"fc(\d+)$")


def read_matconvnet(path) -> WeightSet:
    """Parse a MatConvNet VGG ``.mat`` of either version (no cache involved; MD5 included)."""
    import scipy.io  # slow to import; only needed here

    path = Path(path)
    try:
        data = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except MemoryError:
        raise WeightFileError(f"{path}: not enough memory to read the file") from None
    except Exception as exc:  # scipy reports damage with many exception types
        size = path.stat().st_size
        raise WeightFileError(
            f"{path}: cannot read this .mat file ({size} bytes); it is truncated or corrupt "
            f"({type(exc).__name__}: {exc}). The official file is about 510 MB. "
            f"{_fetch_hint()}") from None
    keys = {k for k in data if not k.startswith("__")}
    if "layers" not in keys:
        hint = (" It looks like a MatConvNet DagNN file (variables 'vars', 'params'); vggjit "
                "needs the SimpleNN file." if {"vars", "params"} <= keys else "")
        raise WeightFileError(
            f"{path}: no 'layers' variable (found: {', '.join(sorted(keys)) or 'nothing'}); "
            f"expected a MatConvNet VGG network ({DEFAULT_NAME}).{hint} {_fetch_hint()}")
    notes: list[str] = []
    if "meta" in keys:
        version = NEW
        meta = data["meta"]
        normalization = getattr(meta, "normalization", None)
        classes = getattr(meta, "classes", None)
    elif keys & {"classes", "normalization"}:
        version = OLD
        normalization = data.get("normalization")
        classes = data.get("classes")
    else:
        raise WeightFileError(
            f"{path}: has 'layers' but neither 'meta' (newer MatConvNet format) nor "
            f"'classes'/'normalization' (older format); found {', '.join(sorted(keys))}. The "
            f"file is incomplete or not a MatConvNet network. {_fetch_hint()}")
    layers, params = _read_layers(path, data["layers"])
    mean = _mean_pixel(path, normalization, notes)
    n_classes = [layer for layer in layers if layer.kind == "fc"][-1].cout
    wnids, descriptions = _classes(path, classes, n_classes, notes)
    return WeightSet(layers=layers, params=params, mean_pixel=mean, wnids=wnids,
                     descriptions=descriptions, source=str(path), version=version,
                     md5=file_md5(path), notes=notes)


def _field(obj, name: str, default=None):
    return getattr(obj, name, default) if hasattr(obj, "_fieldnames") else default


def _as_list(value) -> list:
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value.ravel())
    return [value]


def _text(value) -> str:
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return ""
        value = value.ravel()[0] if value.dtype == object else "".join(value.ravel().tolist())
    return str(value).strip()


def _read_layers(path: Path, cell) -> tuple[tuple[Layer, ...], dict]:
    entries = _as_list(cell)
    found = []  # (name, type, struct)
    for i, entry in enumerate(entries, start=1):
        name, kind = _text(_field(entry, "name", "")), _text(_field(entry, "type", ""))
        if not name or not kind:
            raise WeightFileError(
                f"{path}: layer {i} has no name/type fields; not a MatConvNet SimpleNN network "
                f"(expected a cell of layer structs as in {DEFAULT_NAME})")
        found.append((name, kind, entry))
    blocks: list[list[int]] = []
    classifier: list[int] = []
    for name, kind, entry in found:
        if kind == "conv" and (m := _CONV_NAME.match(name)):
            block = int(m.group(1))
            if block == len(blocks) + 1:
                blocks.append([0, 0])
            if block == len(blocks):
                if blocks[-1][1] == 0:
                    blocks[-1][0] = _bias_size(path, name, entry)
                blocks[-1][1] += 1
        elif kind == "conv" and _FC_NAME.match(name):
            classifier.append(_bias_size(path, name, entry))
    table = vgg_layers(tuple(map(tuple, blocks)), tuple(classifier)) if blocks and classifier else ()
    expected = [(layer.name, _MAT_TYPES[layer.kind]) for layer in table]
    got = [(name, kind) for name, kind, _ in found]
    if got != expected:
        raise WeightFileError(f"{path}: {_describe_mismatch(got, expected)}")
    shapes = param_shapes(table)
    params = {}
    first_fc = next(layer.name for layer in table if layer.kind == "fc")
    for layer, (name, _, entry) in zip(table, found):
        if layer.kind == "conv":
            _check_geometry(path, name, entry, pad=1)
            params[name] = _conv_params(path, name, entry, shapes[name], kernel=3)
        elif layer.kind == "fc":
            _check_geometry(path, name, entry, pad=0)
            kernel = 7 if name == first_fc else 1
            params[name] = _conv_params(path, name, entry, shapes[name], kernel=kernel)
        elif layer.kind == "pool":
            _check_pool(path, name, entry)
    return table, params


_MAT_TYPES = {"conv": "conv", "fc": "conv", "relu": "relu", "pool": "pool", "softmax": "softmax"}


def _describe_mismatch(got, expected) -> str:
    for i, (g, e) in enumerate(zip(got, expected), start=1):
        if g != e:
            return (f"layer {i} is {g[0]!r} (type {g[1]}), expected {e[0]!r} (type {e[1]}) "
                    f"for a VGG network; this file holds another network "
                    f"({_summary(got)})")
    if not expected:
        return (f"no VGG conv layers (conv1_1 ...) and fc layers (fc6 ...) found; this file "
                f"holds another network ({_summary(got)})")
    if len(got) < len(expected):
        return (f"only {len(got)} layers, expected {len(expected)} ending with "
                f"{expected[len(got)][0]!r}...; the file is incomplete")
    return (f"{len(got)} layers, expected {len(expected)}: unexpected layers after "
            f"{expected[-1][0]!r}: {', '.join(n for n, _ in got[len(expected):][:5])}")


def _summary(got) -> str:
    names = [n for n, _ in got]
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return f"{len(names)} layers: {shown}"


def _weights_cell(path: Path, name: str, entry) -> tuple[np.ndarray, np.ndarray]:
    value = _field(entry, "weights")
    if value is None and _field(entry, "filters") is not None:
        # MatConvNet before beta16 kept W and b in separate fields
        value = np.empty(2, dtype=object)
        value[0], value[1] = _field(entry, "filters"), _field(entry, "biases")
    if value is None:
        raise WeightFileError(f"{path}: layer {name} has no 'weights' field; expected a 1x2 cell "
                              f"{{W [H, W, Cin, Cout], b}}")
    items = _as_list(value)
    if len(items) != 2 or not all(isinstance(v, np.ndarray) for v in items):
        raise WeightFileError(f"{path}: layer {name}: 'weights' should be a 1x2 cell "
                              f"{{W [H, W, Cin, Cout], b}}, found {len(items)} item(s)")
    w, b = items
    for what, arr in (("W", w), ("b", b)):
        if not np.issubdtype(arr.dtype, np.floating):
            raise WeightFileError(f"{path}: layer {name}: {what} has type {arr.dtype}, expected "
                                  f"single-precision floats")
    return w, b


def _bias_size(path: Path, name: str, entry) -> int:
    return int(_weights_cell(path, name, entry)[1].size)


def _conv_params(path: Path, name: str, entry, shapes, kernel: int):
    """MatConvNet [H, W, Cin, Cout] (squeezed by scipy) -> OIHW or [out, in] float32."""
    (wshape, bshape) = shapes
    w, b = _weights_cell(path, name, entry)
    cout = wshape[0]
    cin = wshape[1] // (kernel * kernel) if len(wshape) == 2 else wshape[1]
    stored = (kernel, kernel, cin, cout)
    if w.shape not in (stored, tuple(d for d in stored if d != 1)):
        raise WeightFileError(
            f"{path}: layer {name}: weights of shape {_shape(w.shape)} [H, W, Cin, Cout], "
            f"expected {_shape(stored)} (the layer before it has {cin} outputs"
            f"{' and fc6 reads pool5 as a 7x7 convolution' if kernel == 7 else ''})")
    if b.size != cout or (b.ndim == 2 and 1 not in b.shape) or b.ndim > 2:
        raise WeightFileError(f"{path}: layer {name}: bias of shape {_shape(b.shape)}, expected "
                              f"{cout} values (1x{cout} or {cout}x1)")
    oihw = w.reshape(stored).transpose(3, 2, 0, 1)
    if len(wshape) == 2:
        oihw = oihw.reshape(cout, -1)  # fc: C, H, W order, as pool5 is flattened
    return (np.ascontiguousarray(oihw, dtype=np.float32),
            np.ascontiguousarray(b.reshape(-1), dtype=np.float32))


def _shape(shape) -> str:
    return "[" + " ".join(str(d) for d in shape) + "]"


def _numbers(value) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.dtype == object or arr.size == 0 or not np.issubdtype(arr.dtype, np.number):
        return None
    return arr.astype(np.float64).ravel()


def _check_geometry(path: Path, name: str, entry, pad: int) -> None:
    pads, strides = _numbers(_field(entry, "pad")), _numbers(_field(entry, "stride"))
    if pads is not None and not np.all(pads == pad):
        raise WeightFileError(f"{path}: layer {name}: pad {_shape(pads.astype(int))}, expected "
                              f"{pad} on every side")
    if strides is not None and not np.all(strides == 1):
        raise WeightFileError(f"{path}: layer {name}: stride {_shape(strides.astype(int))}, "
                              f"expected 1")
    dilate = _numbers(_field(entry, "dilate"))
    if dilate is not None and not np.all(dilate == 1):
        raise WeightFileError(f"{path}: layer {name}: dilation {_shape(dilate.astype(int))}, "
                              f"expected 1")


def _check_pool(path: Path, name: str, entry) -> None:
    size, strides = _numbers(_field(entry, "pool")), _numbers(_field(entry, "stride"))
    if size is not None and not np.all(size == 2):
        raise WeightFileError(f"{path}: layer {name}: pooling window {_shape(size.astype(int))}, "
                              f"expected 2x2")
    if strides is not None and not np.all(strides == 2):
        raise WeightFileError(f"{path}: layer {name}: pooling stride "
                              f"{_shape(strides.astype(int))}, expected 2")


def _mean_pixel(path: Path, normalization, notes: list[str]) -> np.ndarray:
    avg = _field(normalization, "averageImage")
    if avg is None or np.size(avg) == 0:
        notes.append("no averageImage in the file: using the standard ImageNet mean pixel")
        return MEAN_PIXEL.copy()
    arr = np.asarray(avg)
    if not np.issubdtype(arr.dtype, np.number):
        raise WeightFileError(f"{path}: normalization.averageImage has type {arr.dtype}, "
                              f"expected numbers")
    arr = arr.astype(np.float64)
    if arr.ndim == 3 and arr.shape[2] == 3:
        mean = arr.mean(axis=(0, 1))
    elif arr.size == 3:
        mean = arr.ravel()
    else:
        raise WeightFileError(f"{path}: normalization.averageImage has shape "
                              f"{_shape(arr.shape)}, expected H x W x 3 or 3 values")
    return mean.astype(np.float32)


def _classes(path: Path, classes, n_classes: int, notes: list[str]):
    names = _field(classes, "name")
    if names is not None:
        wnids = [_text(v) for v in _as_list(names)] if not isinstance(names, str) else [names]
        raw = _field(classes, "description")
        descriptions = ([_text(v) for v in _as_list(raw)] if raw is not None
                        and not isinstance(raw, str) else [raw] if raw else [])
        if len(descriptions) != len(wnids):
            descriptions = list(wnids)
        if len(wnids) == n_classes:
            return wnids, descriptions
        notes.append(f"the file names {len(wnids)} classes but the network has {n_classes}; "
                     f"ignoring its class names")
    if n_classes == 1000:
        notes.append("class names: vggjit's packaged ILSVRC2012 list (the file has none)")
        wnids, descriptions = imagenet_classes()
        return list(wnids), list(descriptions)
    notes.append(f"no class names for the {n_classes} classes")
    return [], []


def _blocks_of(layers) -> tuple[tuple[int, int], ...]:
    blocks: dict[str, list[int]] = {}
    for layer in layers:
        if layer.kind == "conv":
            entry = blocks.setdefault(layer.name.split("_")[0], [layer.cout, 0])
            entry[1] += 1
    return tuple((c, n) for c, n in blocks.values())


# -- the native file ---------------------------------------------------------------------------

def write_native(path, ws: WeightSet, *, source_stat: os.stat_result | None = None,
                 overwrite: bool = True) -> Path:
    """Write ``ws`` as a vggjit native file (atomically).

    The file is a valid uncompressed ``.npz`` (``numpy.load(path, allow_pickle=False)`` reads
    it) whose arrays start on 64-byte boundaries so that :func:`read_native` can map them.
    Members: ``meta`` (a JSON string), ``mean_pixel``, ``wnids``, ``descriptions`` and
    ``<layer>.weight`` / ``<layer>.bias`` for every conv and fc layer.
    """
    meta = {
        "format": NATIVE_FORMAT, "format_version": NATIVE_VERSION, "version": ws.version,
        "source": ws.source, "source_md5": ws.md5,
        "source_size": source_stat.st_size if source_stat else None,
        "source_mtime_ns": source_stat.st_mtime_ns if source_stat else None,
        "blocks": [list(b) for b in ws.blocks], "classifier": list(ws.classifier),
        "notes": list(ws.notes),
    }
    arrays = [("meta", np.array(json.dumps(meta))),
              ("mean_pixel", np.asarray(ws.mean_pixel, np.float32)),
              ("wnids", np.array(list(ws.wnids), dtype=str)),
              ("descriptions", np.array(list(ws.descriptions), dtype=str))]
    for name, (w, b) in ws.params.items():
        arrays.append((f"{name}.weight", np.asarray(w, np.float32)))
        arrays.append((f"{name}.bias", np.asarray(b, np.float32)))
    written = atomic_save(Path(path), lambda tmp: _write_zip(tmp, arrays), overwrite=overwrite)
    weightcheck.remember(written)  # the zip's CRC-32s are its checksum; it is good as written
    return written


def _write_zip(path, arrays) -> None:
    with open(path, "wb") as handle, \
            zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays:
            arr = np.asarray(arr)
            if not arr.flags.c_contiguous:
                arr = arr.copy()
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, np.lib.format.header_data_from_array_1_0(arr))
            header = header.getvalue()
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = len(header) + arr.nbytes
            # Pad the local header's extra field so the member (and, since numpy pads its
            # header to 64 bytes, the array data) starts on a 64-byte boundary.
            start = handle.tell() + 30 + len(info.filename.encode("utf-8")) + 4
            pad = -start % _ALIGN
            info.extra = struct.pack("<HH", _PAD_EXTRA_ID, pad) + b"\0" * pad
            with zf.open(info, "w") as out:
                out.write(header)
                if arr.nbytes:
                    out.write(arr.reshape(-1).view(np.uint8).data)


def read_native_meta(path) -> dict:
    """The ``meta`` record of a native file (cheap: the arrays are not read)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"])) if "meta" in npz.files else None
    except Exception as exc:
        raise WeightFileError(f"{path}: not a readable vggjit weight file; it is truncated or "
                              f"corrupt ({type(exc).__name__}: {exc}). Delete it; loading the "
                              f".mat again rebuilds it.") from None
    if not isinstance(meta, dict) or meta.get("format") != NATIVE_FORMAT:
        raise WeightFileError(f"{path}: a .npz, but not a vggjit weight file (no vggjit meta "
                              f"record); convert a .mat with `vggjit weights convert`")
    if meta.get("format_version") != NATIVE_VERSION:
        raise WeightFileError(f"{path}: vggjit weight file format {meta.get('format_version')}, "
                              f"this vggjit reads format {NATIVE_VERSION}; convert the .mat again")
    return meta


def read_native(path) -> WeightSet:
    """Load a native file; arrays are copy-on-write memory maps of it (no copy, no parse).

    A file changed since its last good check is checked in full first (vggjit/weightcheck.py):
    a damaged or tampered file raises WeightFileError instead of being used."""
    path = Path(path)
    meta = read_native_meta(path)
    weightcheck.verify_once(path)
    try:
        arrays = _map_members(path)
    except WeightFileError:
        raise
    except Exception as exc:
        raise WeightFileError(f"{path}: damaged vggjit weight file ({type(exc).__name__}: "
                              f"{exc}); delete it and convert the .mat again") from None
    try:
        layers = vgg_layers(tuple(tuple(b) for b in meta["blocks"]), tuple(meta["classifier"]))
    except (KeyError, TypeError, ValueError):
        raise WeightFileError(f"{path}: the meta record has no valid layer table") from None
    params = {}
    for name, (wshape, bshape) in param_shapes(layers).items():
        for key, shape in ((f"{name}.weight", wshape), (f"{name}.bias", bshape)):
            arr = arrays.get(key)
            if arr is None:
                raise WeightFileError(f"{path}: layer {name}: no {key} array; the file is "
                                      f"incomplete")
            if arr.shape != shape or arr.dtype != np.float32:
                raise WeightFileError(f"{path}: layer {name}: {key} is {arr.dtype} "
                                      f"{_shape(arr.shape)}, expected float32 {_shape(shape)}")
        params[name] = (arrays[f"{name}.weight"], arrays[f"{name}.bias"])
    mean = arrays.get("mean_pixel")
    if mean is None or mean.shape != (3,):
        raise WeightFileError(f"{path}: no mean_pixel of 3 values")
    wnids = [str(s) for s in arrays.get("wnids", np.array([], str))]
    descriptions = [str(s) for s in arrays.get("descriptions", np.array([], str))]
    return WeightSet(layers=layers, params=params, mean_pixel=np.array(mean, np.float32),
                     wnids=wnids, descriptions=descriptions, source=meta.get("source") or str(path),
                     version=meta.get("version", ""), md5=meta.get("source_md5") or "",
                     cache=path, notes=list(meta.get("notes", [])))


def _map_members(path: Path) -> dict[str, np.ndarray]:
    """{member name: array}; stored members are views of one private memory map."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        zf = zipfile.ZipFile(handle)
        out = {}
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type != zipfile.ZIP_STORED:
                with zf.open(info) as member:  # someone's compressed .npz: read it normally
                    out[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            local = mapped[info.header_offset:info.header_offset + 30]
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise WeightFileError(f"{path}: member {name}: bad zip header")
            n_name, n_extra = struct.unpack("<HH", local[26:30])
            handle.seek(info.header_offset + 30 + n_name + n_extra)
            major, _ = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if major == 1
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            if dtype.hasobject:
                raise WeightFileError(f"{path}: member {name} holds Python objects; refused")
            offset = handle.tell()
            count = int(np.prod(shape))
            if offset + count * dtype.itemsize > size:
                raise WeightFileError(f"{path}: member {name} runs past the end of the file; "
                                      f"the file is truncated")
            arr = np.frombuffer(mapped, dtype=dtype, count=count, offset=offset)
            arr = arr.reshape(shape, order="F" if fortran else "C")
            if offset % _ALIGN:
                arr = arr.copy()  # not written by vggjit: keep kernels on aligned data
            out[name] = arr
    return out
