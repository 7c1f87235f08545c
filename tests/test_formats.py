"""PyTorch checkpoints (zip and legacy) and safetensors: the same network as from a .mat, the
preprocessing folded exactly, the restricted unpickler, bad files, finding and fetching them."""
from __future__ import annotations

import hashlib
import zipfile

import numpy as np
import pytest

import vggjit.formats.optional as optional_mod
import vggjit.sources as sources_mod
from vggjit.cli import main
from vggjit.errors import OutputExistsError, WeightFileError
from vggjit.formats.layout import layer_table
from vggjit.formats.preprocess import CONVENTIONS
from vggjit.network import CLASSIFIER, VGG16_BLOCKS, VGG19_BLOCKS, Network
from vggjit.weights import find_weights, load_weights, network_name

from float64_driver import Float64Driver
from foreign_fixture import (malicious_pickle, timm_state_dict, torchvision_state_dict,
                             write_torch_legacy, write_torch_tar, write_torch_zip)
from matconvnet_fixture import (FIXTURE16_BLOCKS, colour_params, random_params, uniform_image,
                                write_matconvnet)

safetensors_numpy = pytest.importorskip("safetensors.numpy")

TORCHVISION_MEAN = CONVENTIONS["torchvision"].mean_pixel


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("VGGJIT_HOME", str(path))
    monkeypatch.delenv("VGGJIT_WEIGHTS", raising=False)
    for variable in ("TORCH_HOME", "HF_HOME", "HF_HUB_CACHE", "KERAS_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(variable, str(tmp_path / variable.lower()))
    return path


@pytest.fixture(scope="module")
def params():
    return random_params(seed=21)


def write_safetensors(path, state):
    safetensors_numpy.save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    return path


WRITERS = {
    "torch-zip": lambda path, p: write_torch_zip(path.with_suffix(".pth"),
                                                 torchvision_state_dict(p)),
    "torch-legacy": lambda path, p: write_torch_legacy(path.with_suffix(".pth"),
                                                       torchvision_state_dict(p)),
    "torch-tar": lambda path, p: write_torch_tar(path.with_suffix(".pth"),
                                                 torchvision_state_dict(p)),
    "safetensors-timm": lambda path, p: write_safetensors(path.with_suffix(".safetensors"),
                                                          timm_state_dict(p)),
    "safetensors-torchvision": lambda path, p: write_safetensors(
        path.with_suffix(".safetensors"), torchvision_state_dict(p)),
}
VERSIONS = {"torch-zip": "pytorch-zip", "torch-legacy": "pytorch-legacy",
            "torch-tar": "pytorch-tar",
            "safetensors-timm": "safetensors", "safetensors-torchvision": "safetensors"}


def assert_same_weights(got, expected, exact_except_conv1_1=True):
    assert list(got.params) == list(expected.params)
    for name, (w, b) in expected.params.items():
        gw, gb = got.params[name]
        assert gw.dtype == np.float32 and gw.shape == w.shape, name
        if name == "conv1_1":  # unscaled by the writer, scaled back by the fold: rounding only
            np.testing.assert_allclose(gw, w, rtol=1e-6, atol=1e-7, err_msg=name)
        else:
            np.testing.assert_array_equal(gw, w, err_msg=name)
        np.testing.assert_array_equal(gb, b, err_msg=name)


# -- every format equals the .mat -----------------------------------------------------------------

@pytest.mark.parametrize("kind", WRITERS)
def test_file_loads_as_the_same_network_as_the_mat(tmp_path, params, kind):
    reference = load_weights(write_matconvnet(tmp_path / "ref.mat", params,
                                              mean_pixel=TORCHVISION_MEAN), cache=False)
    ws = load_weights(WRITERS[kind](tmp_path / "net", params), cache=False)
    assert ws.version == VERSIONS[kind]
    assert ws.preprocess == "torchvision"
    assert [layer.name for layer in ws.layers] == [layer.name for layer in reference.layers]
    assert_same_weights(ws, reference)
    np.testing.assert_allclose(ws.mean_pixel, 255 * np.array([0.485, 0.456, 0.406]), rtol=1e-6)
    assert any("timm" in n if "timm" in kind else "torchvision (" in n for n in ws.notes)


def test_vgg19_shaped_network_classifies_exactly_as_from_the_mat(tmp_path, params):
    """The same probabilities to 1e-5 from every PyTorch format and safetensors: the layout,
    fc6's flatten order and the folded preprocessing (borders included) all agree."""
    driver = Float64Driver()
    mat = write_matconvnet(tmp_path / "ref.mat", params, mean_pixel=TORCHVISION_MEAN)
    reference = Network.from_weights(load_weights(mat, cache=False), driver)
    rng = np.random.default_rng(5)
    rgb = rng.uniform(0, 255, (2, 224, 224, 3))
    x = (rgb - reference.mean_pixel).transpose(0, 3, 1, 2).astype(np.float32)
    expected = reference.forward(x)["prob"]
    assert expected.max() - expected.min() > 1e-3  # not a flat answer that anything matches
    for kind, writer in WRITERS.items():
        net = Network.from_weights(load_weights(writer(tmp_path / kind, params), cache=False), driver)
        np.testing.assert_array_equal(net.mean_pixel, reference.mean_pixel)
        got = net.forward(((rgb - net.mean_pixel).transpose(0, 3, 1, 2)).astype(np.float32))
        np.testing.assert_allclose(got["prob"], expected, atol=1e-5, err_msg=kind)


def test_fold_is_exact_against_the_source_convention_at_the_borders():
    """conv1_1 folded, on the canonical input, equals conv1_1 as trained, on the source's own
    input, at every pixel: zero padding means the mean colour in both conventions."""
    driver = Float64Driver()
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    rgb = rng.uniform(0, 255, (1, 3, 12, 12))
    from vggjit.formats.preprocess import fold_first_conv, mean_pixel
    for name in ("torchvision", "caffe"):
        if name == "torchvision":
            source_input = (rgb / 255 - np.array([0.485, 0.456, 0.406])[:, None, None]) \
                / np.array([0.229, 0.224, 0.225])[:, None, None]
        else:
            source_input = rgb[:, ::-1] - np.array([103.939, 116.779, 123.68])[:, None, None]
        canonical = rgb - mean_pixel(name).astype(np.float64)[:, None, None]
        trained = driver.conv2d(source_input, w, b, 1, 1)
        folded = driver.conv2d(canonical, fold_first_conv(w, name), b, 1, 1)
        np.testing.assert_allclose(folded, trained, rtol=1e-5, atol=1e-4, err_msg=name)


def test_caffe_preprocess_given_for_a_pth_reorders_channels(tmp_path, params):
    """A Caffe-converted VGG saved as .pth (as many style-transfer repositories ship)."""
    path = write_torch_zip(tmp_path / "caffe.pth", torchvision_state_dict(params, "caffe"))
    ws = load_weights(path, cache=False, preprocess="caffe")
    np.testing.assert_array_equal(ws.params["conv1_1"][0], params["conv1_1"][0])
    np.testing.assert_allclose(ws.mean_pixel, [123.68, 116.779, 103.939], rtol=1e-6)


def test_feature_stack_alone_is_a_convolution_stack(tmp_path, params):
    state = torchvision_state_dict(params, classifier=False)
    ws = load_weights(write_safetensors(tmp_path / "features.safetensors", state), cache=False)
    assert not ws.has_classifier and ws.layers[-1].name == "pool5"
    assert "convolution stack" in ws.name
    with pytest.raises(WeightFileError, match="classify needs VGG's ImageNet classifier"):
        ws.require_classifier("classify")


def test_native_cache_records_the_preprocessing(tmp_path, params):
    path = write_torch_legacy(tmp_path / "tv.pth", torchvision_state_dict(params))
    first = load_weights(path)
    assert first.cache is not None
    again = load_weights(path)
    assert again.cache == first.cache and again.preprocess == "torchvision"
    assert again.source == str(path) and again.version == "pytorch-legacy"
    assert_same_weights(again, first)
    with pytest.raises(WeightFileError, match="already folded"):
        load_weights(first.cache, preprocess="caffe")


def test_network_names():
    assert network_name(layer_table(VGG19_BLOCKS, CLASSIFIER)) == "VGG19"
    assert network_name(layer_table(VGG16_BLOCKS, CLASSIFIER)) == "VGG16"
    assert network_name(layer_table(VGG16_BLOCKS, ())) == "VGG16 convolution stack"
    assert network_name(layer_table(FIXTURE16_BLOCKS, (16, 16, 10))).startswith("VGG-like (13")


# -- the restricted unpickler ---------------------------------------------------------------------

def test_pickle_naming_another_global_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "it-ran"
    legacy = tmp_path / "evil-legacy.pth"
    import pickle
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
                       + malicious_pickle(marker))
    archive = tmp_path / "evil.pth"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("evil/data.pkl", malicious_pickle(marker))
    for path in (legacy, archive):
        with pytest.raises(WeightFileError) as err:
            load_weights(path, cache=False)
        assert "os.system" in str(err.value) and "refused" in str(err.value)
        assert str(path) in str(err.value)
    assert not marker.exists()


# -- bad files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", WRITERS)
def test_truncated_files_say_so(tmp_path, params, kind):
    path = WRITERS[kind](tmp_path / "full", params)
    data = path.read_bytes()
    # a tar archive ends in zero padding up to a 10 KB record: cut into the data itself
    for fraction in (0.5, 0.8 if kind == "torch-tar" else 0.97):
        cut = tmp_path / f"cut-{fraction}{path.suffix}"
        cut.write_bytes(data[:int(len(data) * fraction)])
        with pytest.raises(WeightFileError) as err:
            load_weights(cut, cache=False)
        message = str(err.value)
        assert str(cut) in message and ("truncated" in message or "corrupt" in message), message


def test_wrong_shapes_name_the_layer_and_tensor(tmp_path, params):
    state = torchvision_state_dict(params)
    state["features.7.weight"] = state["features.7.weight"][:, :3]  # conv2_2 reading 3 channels
    path = write_torch_zip(tmp_path / "bad.pth", state)
    with pytest.raises(WeightFileError, match=r"conv2_2 \(tensor 'features.7.weight'\).*"
                                              r"\[4 3 3 3\].*expected \[4 4 3 3\]"):
        load_weights(path, cache=False)
    state = torchvision_state_dict(params)
    state["classifier.0.weight"] = state["classifier.0.weight"][:, :100]
    path = write_safetensors(tmp_path / "bad.safetensors", state)
    with pytest.raises(WeightFileError, match=r"fc6 \(tensor 'classifier.0.weight'\).*8 x 7 x 7"):
        load_weights(path, cache=False)


def test_state_dict_of_another_network_and_batch_norm(tmp_path):
    other = write_safetensors(tmp_path / "resnet.safetensors",
                              {"conv1.weight": np.zeros((4, 3, 7, 7), np.float32)})
    with pytest.raises(WeightFileError, match="no VGG convolution tensors.*conv1.weight"):
        load_weights(other, cache=False)
    bn = write_torch_zip(tmp_path / "bn.pth", {
        "features.0.weight": np.zeros((4, 3, 3, 3), np.float32),
        "features.1.running_mean": np.zeros(4, np.float32)})
    with pytest.raises(WeightFileError, match="batch-normalised"):
        load_weights(bn, cache=False)


def test_missing_optional_package_is_one_line_naming_the_extra(tmp_path, params, monkeypatch):
    path = write_safetensors(tmp_path / "x.safetensors", timm_state_dict(params))

    def no_module(name):
        raise ImportError(name)

    monkeypatch.setattr(optional_mod, "import_module", no_module)
    with pytest.raises(WeightFileError) as err:
        load_weights(path, cache=False)
    message = str(err.value)
    assert "\n" not in message and 'pip install "vggjit[formats]"' in message
    assert "'safetensors'" in message


# -- finding and fetching -------------------------------------------------------------------------

def test_find_weights_looks_in_the_torch_hub_hf_and_keras_caches(tmp_path, params, monkeypatch):
    with pytest.raises(WeightFileError) as err:
        find_weights()
    message = str(err.value)
    for fragment in ("torch_home/hub/checkpoints/vgg19-dcbb9e9d.pth",
                     "models--timm--vgg19.tv_in1k", "keras_home/models/vgg19_weights_tf",
                     "--source torchvision"):
        assert fragment in message, message
    keras = tmp_path / "keras_home" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    keras.parent.mkdir(parents=True)
    keras.write_bytes(b"x")
    assert find_weights() == keras
    snapshot = (tmp_path / "hf_hub_cache" / "models--timm--vgg16.tv_in1k" / "snapshots" / "abc"
                / "model.safetensors")
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(b"x")
    assert find_weights() == snapshot  # timm's before Keras's
    hub = tmp_path / "torch_home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"x")
    assert find_weights() == hub  # VGG19 before VGG16
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub.unlink()
    moved = tmp_path / "hf" / "hub" / snapshot.relative_to(tmp_path / "hf_hub_cache")
    moved.parent.mkdir(parents=True)
    moved.write_bytes(b"x")
    assert find_weights() == moved


def fake_download(source_file):
    calls = []

    def download(url, target, md5=None, **options):
        calls.append((url, target))
        target.parent.mkdir(parents=True, exist_ok=True)  # as the real one does
        target.write_bytes(source_file.read_bytes())
        return target

    return download, calls


def test_fetch_source_checks_the_sha256_prefix_before_installing(tmp_path, params, home,
                                                                 monkeypatch):
    good = write_torch_zip(tmp_path / "good.pth", torchvision_state_dict(params))
    prefix = hashlib.sha256(good.read_bytes()).hexdigest()[:8]
    monkeypatch.setitem(sources_mod.SOURCE_FILES, ("torchvision", "vgg19"),
                        ("http://127.0.0.1:9/vgg19-test.pth", "vgg19-test.pth", prefix))
    download, calls = fake_download(good)
    monkeypatch.setattr(sources_mod, "download", download)
    path = sources_mod.fetch_source("torchvision", "vgg19", progress=False)
    assert path == home / "vgg19-test.pth" and path.read_bytes() == good.read_bytes()
    assert not list(home.glob("*.unverified"))
    assert sources_mod.fetch_source("torchvision", "vgg19", progress=False) == path
    assert len(calls) == 1  # a verified file is kept, not downloaded again

    other = tmp_path / "other.pth"
    other.write_bytes(b"not the published file")
    download, _ = fake_download(other)
    monkeypatch.setattr(sources_mod, "download", download)
    target = tmp_path / "elsewhere.pth"
    with pytest.raises(WeightFileError, match="SHA-256 .* not the published"):
        sources_mod.fetch_source("torchvision", "vgg19", output=target, progress=False)
    assert not target.exists() and not list(tmp_path.glob("*.unverified"))
    target.write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="--force"):
        sources_mod.fetch_source("torchvision", "vgg19", output=target, progress=False)
    assert target.read_bytes() == b"mine"


def test_fetch_timm_is_checked_by_reading_it(tmp_path, params, home, monkeypatch):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(write_safetensors(tmp_path / "ok.safetensors",
                                         timm_state_dict(params)).read_bytes()[:-50])
    download, _ = fake_download(broken)
    monkeypatch.setattr(sources_mod, "download", download)
    with pytest.raises(WeightFileError, match="not a readable VGG file"):
        sources_mod.fetch_source("timm", "vgg16", progress=False)
    assert not (home / "vgg16.tv_in1k.safetensors").exists()
    download, _ = fake_download(tmp_path / "ok.safetensors")
    monkeypatch.setattr(sources_mod, "download", download)
    assert main(["weights", "fetch", "--source", "timm", "--network", "vgg16"]) == 0
    assert (home / "vgg16.tv_in1k.safetensors").is_file()
    assert find_weights() == home / "vgg16.tv_in1k.safetensors"


# -- the commands ---------------------------------------------------------------------------------

def test_classify_runs_a_pth_and_names_the_network(tmp_path, capsys):
    path = write_torch_legacy(tmp_path / "colour.pth", torchvision_state_dict(colour_params()))
    image = tmp_path / "red.png"
    uniform_image((255, 0, 0)).save(image)
    code = main(["classify", str(image), "--weights", str(path), "--driver", "example-numpy",
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert '"index": 3' in out.splitlines()[0].split("}")[0]  # red is class 3
    assert "PyTorch, torchvision preprocessing" in err and str(path) in err


def test_classify_refuses_a_convolution_stack_clearly(tmp_path, capsys, params):
    path = write_torch_zip(tmp_path / "features.pth",
                           torchvision_state_dict(params, classifier=False))
    image = tmp_path / "red.png"
    uniform_image((255, 0, 0)).save(image)
    code = main(["classify", str(image), "--weights", str(path), "--driver", "example-numpy"])
    err = capsys.readouterr().err
    assert code == 2
    assert "needs VGG's ImageNet classifier" in err and "Traceback" not in err


def test_weights_info_and_convert_take_every_format(tmp_path, capsys, params):
    path = write_safetensors(tmp_path / "timm.safetensors", timm_state_dict(params))
    assert main(["weights", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "format:     safetensors" in out and "preprocess: torchvision" in out
    assert "pre_logits.fc1" in out
    out_file = tmp_path / "converted.npz"
    assert main(["weights", "convert", str(path), "--output", str(out_file)]) == 0
    capsys.readouterr()
    assert main(["weights", "info", str(out_file), "--json"]) == 0
    import json
    info = json.loads(capsys.readouterr().out)
    assert info["converted_from"] == "safetensors" and info["preprocess"] == "torchvision"
    assert info["classifier"] is True
    assert_same_weights(load_weights(out_file), load_weights(path, cache=False))


def test_python_api_takes_a_vgg16_checkpoint_and_names_it(tmp_path):
    from vggjit.errors import InputError
    from vggjit.network import VGG16, VGG19
    from vggjit.weights import describe_network

    params = random_params(FIXTURE16_BLOCKS, seed=4)
    path = write_torch_legacy(tmp_path / "vgg16-like.pth", torchvision_state_dict(params))
    net = VGG16.from_file(path, driver="example-numpy")
    assert net.layers[-1].name == "prob" and sum(l.kind == "conv" for l in net.layers) == 13
    assert describe_network(net) == (f"VGG-like (13 conv layers, 10 classes) (PyTorch, "
                                     f"torchvision preprocessing: {path})")
    with pytest.raises(InputError, match="VGG16.from_file"):
        VGG19.from_file(path)
    assert describe_network(VGG16.random()) == "VGG16, random He-normal weights (seed 0)"
