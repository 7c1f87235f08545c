"""ONNX graphs and Keras HDF5 files: the same network as from a .mat, heads that are not VGG's
left out, unsupported operations named, the stated preprocessing remembered, bad files."""
from __future__ import annotations

import numpy as np
import pytest

from vggjit.cli import main
from vggjit.errors import WeightFileError
from vggjit.network import Network
from vggjit.weights import load_weights

from float64_driver import Float64Driver
from foreign_fixture import write_keras_h5, write_onnx
from matconvnet_fixture import random_params, write_matconvnet

pytest.importorskip("onnx")
pytest.importorskip("h5py")

CAFFE_MEAN = (123.68, 116.779, 103.939)
TORCHVISION_MEAN = (123.675, 116.28, 103.53)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGJIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VGGJIT_WEIGHTS", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def params():
    return random_params(seed=33)


def reference(tmp_path, params, mean):
    return load_weights(write_matconvnet(tmp_path / "ref.mat", params, mean_pixel=mean),
                        cache=False)


def assert_same_weights(got, expected, names=None):
    names = names or list(expected.params)
    assert list(got.params) == names
    for name in names:
        (gw, gb), (w, b) = got.params[name], expected.params[name]
        assert gw.shape == w.shape and gw.dtype == np.float32, name
        np.testing.assert_allclose(gw, w, rtol=1e-6, atol=1e-7, err_msg=name)
        np.testing.assert_array_equal(gb, b, err_msg=name)


# -- ONNX -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("style, preprocess, mean", [("torch", "torchvision", TORCHVISION_MEAN),
                                                     ("keras", "caffe", CAFFE_MEAN)])
def test_onnx_graph_loads_as_the_same_network_as_the_mat(tmp_path, params, style, preprocess,
                                                         mean):
    """torch.onnx-style (NCHW, Flatten, Gemm) and tf2onnx-style (NHWC input, Transpose,
    Reshape from a Shape branch, MatMul + Add: fc6 reads H, W, C) graphs."""
    path = write_onnx(tmp_path / f"{style}.onnx", params, style=style)
    ws = load_weights(path, cache=False, preprocess=preprocess)
    assert ws.version == "onnx" and ws.preprocess == preprocess and ws.has_classifier
    expected = reference(tmp_path, params, mean)
    assert_same_weights(ws, expected)
    np.testing.assert_allclose(ws.mean_pixel, mean, rtol=1e-6)
    driver = Float64Driver()
    rgb = np.random.default_rng(1).uniform(0, 255, (1, 224, 224, 3))

    def prob(net):
        return net.forward((rgb - net.mean_pixel).transpose(0, 3, 1, 2).astype(np.float32))["prob"]

    np.testing.assert_allclose(prob(Network.from_weights(ws, driver)), prob(Network.from_weights(expected, driver)),
                               atol=1e-5)


def test_onnx_needs_its_preprocessing_stated_once(tmp_path, params):
    """Stated once, the convention is recorded in the native cache and used from then on."""
    path = write_onnx(tmp_path / "net.onnx", params)
    with pytest.raises(WeightFileError, match=r"--preprocess \{torchvision,caffe"):
        load_weights(path)
    stated = load_weights(path, preprocess="torchvision")
    assert stated.cache is not None
    remembered = load_weights(path)  # from the cache, which recorded the convention
    assert remembered.preprocess == "torchvision" and remembered.cache == stated.cache
    restated = load_weights(path, preprocess="none")  # another convention: converted again
    assert restated.preprocess == "none" and not restated.mean_pixel.any()
    np.testing.assert_array_equal(restated.params["conv1_1"][0],
                                  write_onnx_source_conv1(params, "torchvision"))


def write_onnx_source_conv1(params, convention):
    from foreign_fixture import to_source_convention
    return to_source_convention(params, convention)["conv1_1"][0]


@pytest.mark.parametrize("head", ["custom", "none"])
def test_onnx_other_head_imports_the_convolution_stack(tmp_path, params, head, capsys):
    path = write_onnx(tmp_path / f"{head}.onnx", params, style="keras", head=head)
    ws = load_weights(path, preprocess="caffe")
    conv_names = [name for name in params if name.startswith("conv")]
    assert not ws.has_classifier and ws.layers[-1].name == "pool5"
    assert_same_weights(ws, reference(tmp_path, params, CAFFE_MEAN), conv_names)
    note = " ".join(ws.notes)
    if head == "custom":
        assert "left out the head after pool5" in note and "Sigmoid" in note
        assert "MatMul 392x5" in note
    else:
        assert "ends at pool5" in note
    # style transfer takes it (features at every conv layer), classify refuses it clearly
    x = np.zeros((1, 3, 64, 64), np.float32)
    assert Network.from_weights(ws, Float64Driver()).forward(x, ("relu5_1",))["relu5_1"].shape == (1, 8, 4, 4)
    image = tmp_path / "grey.png"
    from PIL import Image
    Image.new("RGB", (224, 224), (128, 128, 128)).save(image)
    assert main(["classify", str(image), "--weights", str(path), "--driver", "example-numpy"]) == 2
    err = capsys.readouterr().err
    assert "needs VGG's ImageNet classifier" in err and "Traceback" not in err
    assert ("left out the head" if head == "custom" else "ends at pool5") in err


def test_onnx_unsupported_operation_is_named(tmp_path, params):
    path = write_onnx(tmp_path / "leaky.onnx", params, stack_op="LeakyRelu")
    with pytest.raises(WeightFileError) as err:
        load_weights(path, cache=False, preprocess="torchvision")
    message = str(err.value)
    assert "LeakyRelu" in message and "does not support" in message and str(path) in message


def test_truncated_onnx(tmp_path, params):
    data = write_onnx(tmp_path / "full.onnx", params).read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightFileError, match="truncated or corrupt"):
        load_weights(cut, cache=False, preprocess="torchvision")


def test_weights_info_shows_the_stated_preprocessing(tmp_path, params, capsys):
    path = write_onnx(tmp_path / "keras.onnx", params, style="keras", head="custom")
    assert main(["weights", "info", str(path), "--preprocess", "caffe"]) == 0
    out = capsys.readouterr().out
    assert "format:     ONNX graph" in out and "preprocess: caffe: BGR 0..255" in out
    assert "no classifier: style transfer only" in out


# -- Keras HDF5 -----------------------------------------------------------------------------------

def test_keras_file_loads_as_the_same_network_as_the_mat(tmp_path, params):
    ws = load_weights(write_keras_h5(tmp_path / "vgg.h5", params), cache=False)
    assert ws.version == "keras-hdf5" and ws.preprocess == "caffe" and ws.has_classifier
    expected = reference(tmp_path, params, CAFFE_MEAN)
    assert_same_weights(ws, expected)  # fc6 converted from H, W, C to C, H, W
    np.testing.assert_allclose(ws.mean_pixel, CAFFE_MEAN, rtol=1e-6)


def test_keras_notop_and_own_head(tmp_path, params):
    notop = load_weights(write_keras_h5(tmp_path / "notop.h5", params, top=False), cache=False)
    assert not notop.has_classifier and "no classifier" in " ".join(notop.notes)
    head = [("dense_1", np.zeros((392, 5), np.float32), np.zeros(5, np.float32)),
            ("dense_2", np.zeros((5, 2), np.float32), np.zeros(2, np.float32))]
    own = load_weights(write_keras_h5(tmp_path / "tuned.h5", params, head=head), cache=False)
    assert not own.has_classifier
    assert "left out the model's own head after pool5 (dense_1 392x5, dense_2 5x2)" in \
        " ".join(own.notes)


def test_keras_bad_files(tmp_path, params):
    import h5py

    data = write_keras_h5(tmp_path / "full.h5", params).read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightFileError, match="truncated or corrupt"):
        load_weights(cut, cache=False)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.ones(3))
    with pytest.raises(WeightFileError, match="layer_names"):
        load_weights(other, cache=False)
    wrong = tmp_path / "wrong.h5"
    bad = dict(params)
    w, b = bad["conv3_2"]
    bad["conv3_2"] = (w[:, :5], b)
    write_keras_h5(wrong, bad)
    with pytest.raises(WeightFileError, match=r"conv3_2 \(tensor 'block3_conv2/block3_conv2/"
                                              r"kernel:0'\)"):
        load_weights(wrong, cache=False)
