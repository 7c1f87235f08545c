"""Weight files: both MatConvNet versions, the native cache, the class list, bad files."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import vggjit.weights as weights_mod
from vggjit.errors import WeightFileError
from vggjit.network import MEAN_PIXEL, VGG16_BLOCKS, VGG19_BLOCKS, Network, vgg_layers
from vggjit.weights import (find_weights, imagenet_classes, load_weights, read_native,
                            write_native)

from matconvnet_fixture import (FIXTURE16_BLOCKS, FIXTURE_BLOCKS, FIXTURE_CLASSIFIER,
                                FIXTURE_MEAN, class_names, random_params, stored_weight,
                                write_matconvnet)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Every test gets its own empty cache directory and no $VGGJIT_WEIGHTS."""
    path = tmp_path / "home"
    monkeypatch.setenv("VGGJIT_HOME", str(path))
    monkeypatch.delenv("VGGJIT_WEIGHTS", raising=False)
    return path


def assert_params_equal(got, expected):
    assert list(got) == list(expected)
    for name, (w, b) in expected.items():
        gw, gb = got[name]
        assert gw.dtype == np.float32 and gb.dtype == np.float32, name
        np.testing.assert_array_equal(gw, w, err_msg=name)
        np.testing.assert_array_equal(gb, b, err_msg=name)


# -- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("version, bias_layout, average_image", [
    ("old", "row", "full"), ("old", "col", "pixel"), ("new", "col", "pixel"),
    ("new", "row", "vector"), ("new", "row", "full")])
def test_round_trip_both_versions(tmp_path, version, bias_layout, average_image):
    params = random_params(seed=3)
    path = write_matconvnet(tmp_path / f"net-{version}.mat", params, version=version,
                            bias_layout=bias_layout, average_image=average_image)
    ws = load_weights(path)
    assert ws.version == ("matconvnet-old" if version == "old" else "matconvnet-new")
    assert ws.layers == vgg_layers(FIXTURE_BLOCKS, FIXTURE_CLASSIFIER)
    assert ws.blocks == FIXTURE_BLOCKS and ws.classifier == FIXTURE_CLASSIFIER
    assert_params_equal(ws.params, params)
    np.testing.assert_allclose(ws.mean_pixel, FIXTURE_MEAN, rtol=0, atol=1e-4)
    assert (ws.wnids, ws.descriptions) == class_names(10)
    assert ws.source == str(path) and len(ws.md5) == 32 and ws.notes == []


def test_layout_conversion_is_the_spec_transpose(tmp_path):
    """OIHW = W.transpose(3, 2, 0, 1) with H and W not swapped; fc6 flattened C, H, W."""
    params = random_params(seed=1)
    stored = stored_weight(params["conv2_1"][0])
    assert stored.shape == (3, 3, 4, 4)
    # stored[h, w, ci, co] is the tap at row h, column w
    np.testing.assert_array_equal(stored[0, 2, 1, 3], params["conv2_1"][0][3, 1, 0, 2])
    fc6 = stored_weight(params["fc6"][0], fc6=True)
    assert fc6.shape == (7, 7, 8, 16)
    # feature index of (c=5, h=2, w=6) in C, H, W order
    np.testing.assert_array_equal(fc6[2, 6, 5, 11], params["fc6"][0][11, 5 * 49 + 2 * 7 + 6])
    ws = load_weights(write_matconvnet(tmp_path / "n.mat", params))
    assert_params_equal(ws.params, params)


def test_vgg16_shaped_file_loads(tmp_path):
    params = random_params(FIXTURE16_BLOCKS, seed=2)
    ws = load_weights(write_matconvnet(tmp_path / "vgg16.mat", params, blocks=FIXTURE16_BLOCKS))
    assert ws.blocks == FIXTURE16_BLOCKS
    assert sum(layer.kind == "conv" for layer in ws.layers) == 13
    assert_params_equal(ws.params, params)


def test_network_names():
    assert weights_mod.WeightSet(vgg_layers(VGG19_BLOCKS), {}, FIXTURE_MEAN, [], [], "", "").name \
        == "VGG19"
    assert weights_mod.WeightSet(vgg_layers(VGG16_BLOCKS), {}, FIXTURE_MEAN, [], [], "", "").name \
        == "VGG16"


def test_file_without_classes_uses_packaged_list_for_1000_classes(tmp_path):
    classifier = (16, 16, 1000)
    params = random_params(classifier=classifier)
    path = write_matconvnet(tmp_path / "noclasses.mat", params, classifier=classifier,
                            classes=False)
    ws = load_weights(path)
    assert len(ws.wnids) == 1000 and ws.wnids[281] == "n02123045"
    assert ws.descriptions[281] == "tabby, tabby cat"
    assert any("packaged" in note for note in ws.notes)


def test_file_without_classes_or_mean_of_small_network(tmp_path):
    ws = load_weights(write_matconvnet(tmp_path / "bare.mat", classes=False))
    assert ws.wnids == [] and ws.descriptions == []
    assert any("no class names" in note for note in ws.notes)
    ws = load_weights(write_matconvnet(tmp_path / "nomean.mat", drop=("normalization",)))
    np.testing.assert_array_equal(ws.mean_pixel, MEAN_PIXEL)
    assert any("standard ImageNet mean" in note for note in ws.notes)


def test_packaged_class_list():
    wnids, descriptions = imagenet_classes()
    assert len(wnids) == len(descriptions) == 1000
    assert len(set(wnids)) == 1000
    assert list(wnids) == sorted(wnids)  # ILSVRC2012 order is the sorted WordNet ids
    assert all(w.startswith("n") and len(w) == 9 and w[1:].isdigit() for w in wnids)
    assert (wnids[0], descriptions[0]) == ("n01440764", "tench, Tinca tinca")
    assert (wnids[281], descriptions[281]) == ("n02123045", "tabby, tabby cat")
    assert wnids[999] == "n15075141" and descriptions[999].startswith("toilet tissue")
    assert all(d and "\t" not in d for d in descriptions)


# -- the native cache ----------------------------------------------------------------------------

def test_first_load_writes_cache_and_second_load_does_not_parse_the_mat(tmp_path, home,
                                                                        monkeypatch):
    params = random_params(seed=4)
    path = write_matconvnet(tmp_path / "net.mat", params)
    first = load_weights(path)
    assert first.cache is not None and first.cache.parent == home / "converted"
    assert first.cache.is_file()
    import scipy.io

    def boom(*args, **kwargs):
        raise AssertionError("the .mat was parsed again")
    monkeypatch.setattr(scipy.io, "loadmat", boom)
    second = load_weights(path)
    assert second.cache == first.cache and second.source == str(path)
    assert_params_equal(second.params, params)
    assert second.md5 == first.md5 and second.version == first.version
    np.testing.assert_array_equal(second.mean_pixel, first.mean_pixel)
    assert second.wnids == first.wnids and second.descriptions == first.descriptions
    # memory-mapped, writable (copy-on-write), aligned
    w = second.params["fc6"][0]
    assert not w.flags.owndata and w.flags.writeable and w.ctypes.data % 64 == 0
    w[0, 0] = 12345.0  # a private copy of the page: the file does not change
    assert load_weights(path).params["fc6"][0][0, 0] != 12345.0


def test_cache_is_a_plain_npz_without_pickles(tmp_path):
    path = write_matconvnet(tmp_path / "net.mat", random_params(seed=5))
    ws = load_weights(path)
    with np.load(ws.cache, allow_pickle=False) as npz:
        assert "conv1_1.weight" in npz.files and "meta" in npz.files
        np.testing.assert_array_equal(npz["fc6.weight"], ws.params["fc6"][0])
    with zipfile.ZipFile(ws.cache) as zf:
        assert {info.compress_type for info in zf.infolist()} == {zipfile.ZIP_STORED}


def test_cache_rebuilt_when_source_changes(tmp_path):
    path = tmp_path / "net.mat"
    write_matconvnet(path, random_params(seed=6))
    load_weights(path)
    stat = path.stat()
    new_params = random_params(seed=7)  # same shapes: the same file size
    write_matconvnet(path, new_params)
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert_params_equal(load_weights(path).params, new_params)
    # and a different size is noticed even with the old modification time
    other = random_params(classifier=(16, 16, 12), seed=8)
    write_matconvnet(path, other, classifier=(16, 16, 12))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert load_weights(path).classifier == (16, 16, 12)


def test_touched_but_unchanged_source_still_hits_cache(tmp_path, monkeypatch):
    path = write_matconvnet(tmp_path / "net.mat", random_params(seed=9))
    load_weights(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 7_000_000_000))
    calls = []
    real = weights_mod.read_matconvnet
    monkeypatch.setattr(weights_mod, "read_matconvnet", lambda p: calls.append(p) or real(p))
    load_weights(path)
    assert calls == []


def test_damaged_cache_is_rebuilt(tmp_path):
    params = random_params(seed=10)
    path = write_matconvnet(tmp_path / "net.mat", params)
    cache = load_weights(path).cache
    cache.write_bytes(cache.read_bytes()[:5000])
    ws = load_weights(path)
    assert_params_equal(ws.params, params)
    assert cache.stat().st_size > 5000


def test_native_file_loads_directly_and_through_the_network(tmp_path):
    params = random_params(seed=11)
    path = write_matconvnet(tmp_path / "net.mat", params)
    cache = load_weights(path).cache
    ws = load_weights(cache)
    assert_params_equal(ws.params, params)
    assert ws.version == "matconvnet-old" and ws.cache == cache
    net = Network.from_file(cache, driver="naive")
    assert net.layers == vgg_layers(FIXTURE_BLOCKS, FIXTURE_CLASSIFIER)
    np.testing.assert_allclose(net.mean_pixel, FIXTURE_MEAN, atol=1e-4)


def test_unwritable_cache_only_warns(tmp_path, monkeypatch):
    params = random_params(seed=12)
    path = write_matconvnet(tmp_path / "net.mat", params)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("VGGJIT_HOME", str(blocker))  # home_dir()/converted cannot be made
    with pytest.warns(UserWarning, match="could not write the weight cache"):
        ws = load_weights(path)
    assert ws.cache is None
    assert_params_equal(ws.params, params)


def test_write_native_refuses_to_overwrite_unless_asked(tmp_path):
    ws = load_weights(write_matconvnet(tmp_path / "net.mat", random_params(seed=13)))
    out = tmp_path / "mine.npz"
    out.write_text("user data")
    from vggjit.errors import OutputExistsError
    with pytest.raises(OutputExistsError):
        write_native(out, ws, overwrite=False)
    assert out.read_text() == "user data"
    write_native(out, ws, overwrite=True)
    assert_params_equal(read_native(out).params, ws.params)


# -- finding the file ---------------------------------------------------------------------------

def test_find_weights_precedence(tmp_path, home, monkeypatch):
    explicit, env = tmp_path / "a.mat", tmp_path / "b.mat"
    explicit.write_bytes(b"x")
    env.write_bytes(b"x")
    default = home / "imagenet-vgg-verydeep-19.mat"
    default.parent.mkdir(parents=True)
    default.write_bytes(b"x")
    monkeypatch.setenv("VGGJIT_WEIGHTS", str(env))
    assert find_weights(explicit) == explicit
    assert find_weights() == env
    monkeypatch.delenv("VGGJIT_WEIGHTS")
    assert find_weights() == default


def test_missing_weights_message_says_how_to_get_them(home):
    with pytest.raises(WeightFileError) as err:
        find_weights()
    message = str(err.value)
    assert "vggjit weights fetch" in message
    assert "http://www.vlfeat.org/matconvnet/models/beta16/imagenet-vgg-verydeep-19.mat" in message
    assert str(home / "imagenet-vgg-verydeep-19.mat") in message
    assert "VGGJIT_WEIGHTS" in message and "--weights" in message


def test_missing_explicit_and_env_files_are_named(tmp_path, monkeypatch):
    with pytest.raises(WeightFileError, match="nope.mat .*given with --weights.*no such file"):
        find_weights(tmp_path / "nope.mat")
    monkeypatch.setenv("VGGJIT_WEIGHTS", str(tmp_path / "env.mat"))
    with pytest.raises(WeightFileError, match=r"env.mat \(from \$VGGJIT_WEIGHTS\)"):
        find_weights()


# -- bad files ----------------------------------------------------------------------------------

def bad(path, *fragments):
    with pytest.raises(WeightFileError) as err:
        load_weights(path)
    message = str(err.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in message
    return message


def test_missing_file_and_directory(tmp_path):
    bad(tmp_path / "absent.mat", "no such file")
    bad(tmp_path, "directory")


def test_empty_and_not_a_mat(tmp_path):
    empty = tmp_path / "empty.mat"
    empty.write_bytes(b"")
    bad(empty, "empty")
    html = tmp_path / "page.mat"
    html.write_text("<html><body>404 Not Found</body></html>")
    bad(html, "not a MATLAB .mat file", "<html>")


def test_truncated_mat(tmp_path):
    path = write_matconvnet(tmp_path / "full.mat", random_params(seed=14))
    data = path.read_bytes()
    for fraction in (0.3, 0.9):
        cut = tmp_path / f"cut{fraction}.mat"
        cut.write_bytes(data[:int(len(data) * fraction)])
        bad(cut, "truncated")


def test_corrupt_mat(tmp_path):
    path = write_matconvnet(tmp_path / "full.mat", random_params(seed=15))
    data = bytearray(path.read_bytes())
    data[200:260] = b"\xff" * 60  # inside the first layer's struct headers
    path.write_bytes(bytes(data))
    bad(path)


def test_hdf5_mat(tmp_path):
    path = tmp_path / "v73.mat"
    path.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64" + b"\0" * 200)
    bad(path, "v7.3")


def test_mat_of_something_else(tmp_path):
    import scipy.io

    path = tmp_path / "other.mat"
    scipy.io.savemat(path, {"x": np.ones((3, 3))})
    bad(path, "no 'layers' variable", "found: x")
    dag = tmp_path / "dag.mat"
    scipy.io.savemat(dag, {"vars": np.ones(2), "params": np.ones(2), "meta": {"a": 1}})
    bad(dag, "DagNN")


def test_mat_of_another_network(tmp_path):
    def rename(name, fields):
        if name == "conv2_1":
            fields["name"] = "conv2"
    bad(write_matconvnet(tmp_path / "alex.mat", edit=rename), "layer 6", "'conv2'",
        "expected 'conv2_1'", "another network")


def test_layers_without_classes_or_meta(tmp_path):
    path = write_matconvnet(tmp_path / "half.mat", drop=("classes", "normalization"))
    bad(path, "neither 'meta'", "incomplete")


def test_wrong_weight_shape_names_the_layer(tmp_path):
    params = random_params(seed=16)
    w, b = params["conv3_2"]
    params["conv3_2"] = (np.concatenate([w, w[:, :2]], axis=1), b)  # 10 inputs, not 8
    message = bad(write_matconvnet(tmp_path / "shape.mat", params), "conv3_2",
                  "[3 3 10 8]", "expected [3 3 8 8]")
    assert "H, W, Cin, Cout" in message


def test_wrong_fc6_shape(tmp_path):
    def flat_fc6(name, fields):
        if name == "fc6":
            w = fields["weights"][0, 0]
            fields["weights"][0, 0] = w.reshape(49, 8, 16)
    bad(write_matconvnet(tmp_path / "fc6.mat", edit=flat_fc6), "fc6", "expected [7 7 8 16]")


def test_wrong_bias_size(tmp_path):
    params = random_params(seed=17)
    w, b = params["fc7"]
    params["fc7"] = (w, np.zeros(15, np.float32))
    bad(write_matconvnet(tmp_path / "bias.mat", params), "fc7", "bias", "16")


def test_missing_weights_field(tmp_path):
    def drop_weights(name, fields):
        if name == "conv4_3":
            del fields["weights"]
    bad(write_matconvnet(tmp_path / "noweights.mat", edit=drop_weights), "conv4_3",
        "no 'weights' field")


def test_integer_weights_rejected(tmp_path):
    def ints(name, fields):
        if name == "conv1_1":
            fields["weights"][0, 0] = fields["weights"][0, 0].astype(np.int16)
    bad(write_matconvnet(tmp_path / "ints.mat", edit=ints), "conv1_1", "int16")


def test_wrong_padding_and_pooling(tmp_path):
    def pad0(name, fields):
        if name == "conv5_1":
            fields["pad"] = np.zeros((1, 4))
    bad(write_matconvnet(tmp_path / "pad.mat", edit=pad0), "conv5_1", "pad", "expected 1")

    def pool3(name, fields):
        if name == "pool2":
            fields["pool"] = np.array([[3.0, 3.0]])
    bad(write_matconvnet(tmp_path / "pool.mat", edit=pool3), "pool2", "2x2")


def test_missing_trailing_layers(tmp_path):
    import scipy.io

    path = write_matconvnet(tmp_path / "net.mat")
    data = scipy.io.loadmat(path)
    data = {k: v for k, v in data.items() if not k.startswith("__")}
    data["layers"] = data["layers"][:, :-3]  # drop relu7, fc8 and prob
    scipy.io.savemat(path, data)
    bad(path, "incomplete")


def test_damaged_native_file_given_directly(tmp_path):
    ws = load_weights(write_matconvnet(tmp_path / "net.mat", random_params(seed=18)))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(ws.cache.read_bytes()[:-20000])
    bad(broken, "truncated or corrupt")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.ones(3))
    bad(foreign, "not a vggjit weight file")


def test_pre_beta16_filters_and_biases_fields(tmp_path):
    params = random_params(seed=19)

    def split(name, fields):
        if "weights" in fields:
            w, b = fields["weights"][0, 0], fields["weights"][0, 1]
            fields = {"filters": w, "biases": b, **{k: v for k, v in fields.items()
                                                   if k != "weights"}}
            return fields
    ws = load_weights(write_matconvnet(tmp_path / "old.mat", params, edit=split))
    assert_params_equal(ws.params, params)
