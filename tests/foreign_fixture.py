"""Writers of small VGG weight files in other frameworks' formats, without those frameworks.

The parameters come in vggjit's layout (as :mod:`matconvnet_fixture` makes them, canonical
preprocessing); each writer converts them to the source's own convention first
(:func:`to_source_convention`: conv1_1 unscaled / reordered, the inverse of vggjit's fold), so
that loading the file must give back the same network.

PyTorch files are written from their documented byte layout: the pickle is emitted opcode by
opcode (:class:`PickleWriter`), because the real one names ``torch._utils._rebuild_tensor_v2``
and ``torch.FloatStorage``, which cannot be pickled without torch.
"""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from vggjit.formats.preprocess import CONVENTIONS

Params = dict[str, tuple[np.ndarray, np.ndarray]]


def to_source_convention(params: Params, convention: str) -> Params:
    """Undo vggjit's fold: conv1_1 as a network trained on ``convention`` would have it."""
    c = CONVENTIONS[convention]
    w, b = params["conv1_1"]
    source = np.empty_like(w, dtype=np.float64)
    for k in range(3):
        source[:, k] = np.asarray(w[:, c.order[k]], np.float64) / c.scale[k]
    out = dict(params)
    out["conv1_1"] = (source.astype(np.float32), b)
    return out


def conv_names(params: Params) -> list[str]:
    return [name for name in params if name.startswith("conv")]


def torchvision_state_dict(params: Params, convention: str = "torchvision",
                           classifier: bool = True) -> dict[str, np.ndarray]:
    """{torchvision name: array}; features indexed as nn.Sequential counts its modules."""
    params = to_source_convention(params, convention)
    state, index, block = {}, 0, "1"
    for name in conv_names(params):
        if name.split("_")[0][4:] != block:  # a new block: the max-pool module in between
            block = name.split("_")[0][4:]
            index += 1
        w, b = params[name]
        state[f"features.{index}.weight"], state[f"features.{index}.bias"] = w, b
        index += 2
    if classifier:
        for name, index in (("fc6", 0), ("fc7", 3), ("fc8", 6)):
            w, b = params[name]
            state[f"classifier.{index}.weight"], state[f"classifier.{index}.bias"] = w, b
    return state


def timm_state_dict(params: Params) -> dict[str, np.ndarray]:
    """timm's names: pre_logits.fc1 is fc6 as a 7x7 convolution, fc2 a 1x1, head.fc fc8."""
    state = {k: v for k, v in torchvision_state_dict(params, classifier=False).items()}
    w6, b6 = params["fc6"]
    w7, b7 = params["fc7"]
    w8, b8 = params["fc8"]
    state["pre_logits.fc1.weight"] = w6.reshape(w6.shape[0], -1, 7, 7)
    state["pre_logits.fc1.bias"] = b6
    state["pre_logits.fc2.weight"] = w7.reshape(w7.shape[0], w7.shape[1], 1, 1)
    state["pre_logits.fc2.bias"] = b7
    state["head.fc.weight"], state["head.fc.bias"] = w8, b8
    return state


# -- PyTorch's pickle, opcode by opcode --------------------------------------------------------

class PickleWriter:
    """Emits a protocol-2 pickle of nested dicts of tensors as torch.save writes them."""

    def __init__(self, tar: bool = False):
        self.tar = tar  # the tar format: a tensor is just a persistent id (its key)
        self.out = io.BytesIO()
        self.out.write(b"\x80\x02")
        self.storages: list[tuple[str, np.ndarray]] = []

    def global_(self, module: str, name: str) -> None:
        self.out.write(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def text(self, value: str) -> None:
        data = value.encode("utf-8")
        self.out.write(b"X" + struct.pack("<I", len(data)) + data)

    def int_(self, value: int) -> None:
        self.out.write(b"J" + struct.pack("<i", value))

    def ints(self, values) -> None:
        self.out.write(b"(")
        for v in values:
            self.int_(int(v))
        self.out.write(b"t")

    def ordered_dict(self, items) -> None:
        self.global_("collections", "OrderedDict")
        self.out.write(b")R")
        if items:
            self.out.write(b"(")
            for key, value in items:
                self.text(key)
                self.value(value)
            self.out.write(b"u")

    def value(self, value) -> None:
        if isinstance(value, dict):
            self.ordered_dict(list(value.items()))
        elif isinstance(value, np.ndarray):
            self.tensor(value)
        elif isinstance(value, int):
            self.int_(value)
        elif isinstance(value, str):
            self.text(value)
        else:
            raise TypeError(type(value))

    def tensor(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, np.float32)
        key = str(len(self.storages))
        self.storages.append((key, arr))
        if self.tar:
            self.text(f"t{key}")
            self.out.write(b"Q")
            return
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.out.write(b"(")
        # persistent id: ('storage', torch.FloatStorage, key, location, numel)
        self.out.write(b"(")
        self.text("storage")
        self.global_("torch", "FloatStorage")
        self.text(key)
        self.text("cpu")
        self.int_(arr.size)
        self.out.write(b"tQ")
        self.int_(0)                                    # storage offset
        self.ints(arr.shape)
        strides = [s // arr.itemsize for s in arr.strides] if arr.size else [1] * arr.ndim
        self.ints(strides)
        self.out.write(b"\x89")                         # requires_grad False
        self.ordered_dict([])                           # backward hooks
        self.out.write(b"tR")

    def finish(self) -> bytes:
        self.out.write(b".")
        return self.out.getvalue()


def pickle_state(state: dict, tar: bool = False) -> tuple[bytes, list[tuple[str, np.ndarray]]]:
    writer = PickleWriter(tar)
    writer.value(state)
    return writer.finish(), writer.storages


def write_torch_zip(path, state: dict, archive: str = "archive") -> Path:
    """torch.save's zip format: <archive>/data.pkl, <archive>/data/<key>, byteorder, version."""
    data, storages = pickle_state(state)
    path = Path(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", data)
        zf.writestr(f"{archive}/byteorder", "little")
        for key, arr in storages:
            zf.writestr(f"{archive}/data/{key}", arr.astype("<f4").tobytes())
        zf.writestr(f"{archive}/version", "3\n")
    return path


def write_torch_legacy(path, state: dict) -> Path:
    """The legacy format: magic, protocol, sys info, the object, the storage keys, storages."""
    data, storages = pickle_state(state)
    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    parts = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
             pickle.dumps(sys_info, protocol=2), data,
             pickle.dumps([key for key, _ in storages], protocol=2)]
    for _, arr in storages:
        parts.append(struct.pack("<q", arr.size) + arr.astype("<f4").tobytes())
    path = Path(path)
    path.write_bytes(b"".join(parts))
    return path


def write_torch_tar(path, state: dict) -> Path:
    """The tar format of PyTorch before 0.1.10: members storages, tensors, pickle."""
    import tarfile

    data, storages = pickle_state(state, tar=True)

    def record(obj) -> bytes:
        writer = PickleWriter()
        writer.out.write(b"(")
        for item in obj:
            if isinstance(item, tuple):  # (module, name): a global
                writer.global_(*item)
            else:
                writer.value(item)
        writer.out.write(b"t")
        return writer.finish()

    stored = [pickle.dumps(len(storages), protocol=2)]
    for key, arr in storages:
        stored.append(record([key, "cpu", ("torch", "FloatStorage")]))
        stored.append(struct.pack("<q", arr.size) + arr.astype("<f4").tobytes())
    stored.append(pickle.dumps([], protocol=2))  # no storage views
    tensors = [pickle.dumps(len(storages), protocol=2)]
    for key, arr in storages:
        tensors.append(record([f"t{key}", key, ("torch", "FloatTensor")]))
        strides = [s // arr.itemsize for s in arr.strides]
        tensors.append(struct.pack("<ii", arr.ndim, 0) + struct.pack(f"<{arr.ndim}q", *arr.shape)
                       + struct.pack(f"<{arr.ndim}q", *strides) + struct.pack("<q", 0))
    path = Path(path)
    with tarfile.open(path, "w:", format=tarfile.PAX_FORMAT) as tar:
        for name, content in (("storages", b"".join(stored)), ("tensors", b"".join(tensors)),
                              ("pickle", data)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def malicious_pickle(command_file: Path) -> bytes:
    """A pickle whose loading would call os.system (creating ``command_file``)."""
    command = f"touch {command_file}".encode()
    return (b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(command)) + command + b"\x85R.")


# -- Keras HDF5 and ONNX -----------------------------------------------------------------------

def write_keras_h5(path, params: Params, *, top: bool = True, head=None) -> Path:
    """Keras's official layout: root layer_names, each group's weight_names; HWIO kernels, dense
    [in, out]; fc1 reads pool5 flattened H, W, C. ``head``: [(name, kernel, bias)] instead."""
    import h5py

    params = to_source_convention(params, "caffe")
    with h5py.File(path, "w") as f:
        names = ["input_1"]
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        block = "1"
        for name in conv_names(params):
            b, i = name[4:].split("_")
            if b != block:
                names.append(f"block{block}_pool")
                f.create_group(names[-1]).attrs["weight_names"] = np.array([], dtype="S1")
                block = b
            layer = f"block{b}_conv{i}"
            w, bias = params[name]
            _keras_layer(f, layer, w.transpose(2, 3, 1, 0), bias)
            names.append(layer)
        names.append(f"block{block}_pool")
        f.create_group(names[-1]).attrs["weight_names"] = np.array([], dtype="S1")
        if top or head:
            names.append("flatten")
            f.create_group("flatten").attrs["weight_names"] = np.array([], dtype="S1")
        if head:
            for name, kernel, bias in head:
                _keras_layer(f, name, kernel, bias)
                names.append(name)
        elif top:
            w6, b6 = params["fc6"]
            channels = w6.shape[1] // 49
            hwc = w6.reshape(-1, channels, 7, 7).transpose(0, 2, 3, 1).reshape(w6.shape[0], -1)
            for name, (w, b) in (("fc1", (hwc, b6)), ("fc2", params["fc7"]),
                                 ("predictions", params["fc8"])):
                _keras_layer(f, name, w.T, b)
                names.append(name)
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
    return Path(path)


def _keras_layer(f, name: str, kernel: np.ndarray, bias: np.ndarray) -> None:
    group = f.create_group(name)
    weight_names = [f"{name}/kernel:0", f"{name}/bias:0"]
    group.create_dataset(weight_names[0], data=np.asarray(kernel, np.float32))
    group.create_dataset(weight_names[1], data=np.asarray(bias, np.float32))
    group.attrs["weight_names"] = np.array([n.encode() for n in weight_names])


def write_onnx(path, params: Params, *, style: str = "torch", head: str = "vgg",
               stack_op: str | None = None, convention: str | None = None) -> Path:
    """A VGG ONNX graph built node by node with onnx.helper.

    style "torch": NCHW input, Flatten, Gemm (transB=1), as torch.onnx.export writes it;
    "keras": NHWC input and a leading Transpose, Transpose back to NHWC before a Reshape whose
    target comes from a Shape side branch, MatMul + Add, as tf2onnx writes a Keras VGG.
    head "vgg": fc6-fc8 and Softmax; "custom": a fine-tuned model's own small dense head;
    "none": the graph ends at pool5. stack_op: put a node of this op after conv1_1 (to test
    the error). convention: unfold conv1_1 to it (default: torchvision for "torch", caffe for
    "keras").
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    convention = convention or ("torchvision" if style == "torch" else "caffe")
    params = to_source_convention(params, convention)
    nodes, inits = [], []
    counter = iter(range(10_000))

    def const(name: str, arr) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op, inputs, **attrs) -> str:
        out = f"{op.lower()}_{next(counter)}"
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    shape = [1, 224, 224, 3] if style == "keras" else [1, 3, 224, 224]
    x = "input"
    if style == "keras":
        x = node("Transpose", [x], perm=[0, 3, 1, 2])
    block = "1"
    for name in conv_names(params):
        b = name[4:].split("_")[0]
        if b != block:
            x = node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
            block = b
        w, bias = params[name]
        x = node("Conv", [x, const(f"{name}.w", w), const(f"{name}.b", bias)],
                 kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
        if stack_op and name == "conv1_1":
            x = node(stack_op, [x])
        x = node("Relu", [x])
    x = node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    if head != "none":
        w6, b6 = params["fc6"]
        if style == "keras":
            pool5 = x
            channels = w6.shape[1] // 49
            w6 = w6.reshape(-1, channels, 7, 7).transpose(0, 2, 3, 1).reshape(w6.shape[0], -1)
            x = node("Transpose", [x], perm=[0, 2, 3, 1])
            dims = node("Shape", [pool5])
            batch = node("Slice", [dims, const("s0", np.array([0])), const("s1", np.array([1]))])
            target = node("Concat", [batch, const("minus1", np.array([-1]))], axis=0)
            x = node("Reshape", [x, target])
        else:
            x = node("Flatten", [x], axis=1)
        layers = ([(w6, b6), params["fc7"], params["fc8"]] if head == "vgg" else
                  [(np.full((5, w6.shape[1]), 0.01, np.float32), np.zeros(5, np.float32)),
                   (np.full((2, 5), 0.1, np.float32), np.zeros(2, np.float32))])
        for i, (w, bias) in enumerate(layers):
            if style == "keras":
                x = node("MatMul", [x, const(f"fc{i}.w", w.T)])
                x = node("Add", [x, const(f"fc{i}.b", bias)])
            else:
                x = node("Gemm", [x, const(f"fc{i}.w", w), const(f"fc{i}.b", bias)], transB=1)
            if i < len(layers) - 1:
                x = node("Relu", [x])
                if style == "torch":
                    x = node("Dropout", [x])
        x = node("Softmax", [x], axis=1) if head == "vgg" else node("Sigmoid", [x])
    nodes.append(helper.make_node("Identity", [x], ["output"], name="output"))
    graph = helper.make_graph(
        nodes, "vgg", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, producer_name="vggjit-tests",
                              opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return Path(path)
