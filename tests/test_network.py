"""The network on the driver contract: forward, backward, classification, driver agreement."""
from __future__ import annotations

import types
import warnings
import weakref

import numpy as np
import pytest

from vggjit.errors import InputError, VggjitError
from vggjit.images import preprocess
from vggjit.network import VGG16, VGG19, Network, vgg_layers

from matconvnet_fixture import (COLOUR_CLASSES, FIXTURE16_BLOCKS, FIXTURE_BLOCKS,
                                FIXTURE_CLASSIFIER, FIXTURE_MEAN, class_names, colour_params,
                                random_params, uniform_image, write_matconvnet)
from float64_driver import Float64Driver
from vggjit_example_driver import NumpyDriver  # the documented example plugin: fast float32

TINY_BLOCKS, TINY_CLASSIFIER = ((2, 1), (3, 1)), (5, 6, 4)  # input 28 x 28 (pool2 is 7 x 7)


def driver_available(name: str) -> bool:
    from vggjit.registry import list_drivers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return any(r.name == name and r.available for r in list_drivers())


needs_numba = pytest.mark.skipif(not driver_available("numba-cpu"),
                                 reason="the numba-cpu driver is not installed yet")


def fixture_net(driver, params=None, blocks=FIXTURE_BLOCKS, classifier=FIXTURE_CLASSIFIER,
                **kwargs) -> Network:
    params = params if params is not None else random_params(blocks, classifier)
    return Network(vgg_layers(blocks, classifier), params, driver=driver, **kwargs)


def seeds_for(net, x, names, rng):
    shapes = {k: v.shape for k, v in Network(net.layers, net.weights, driver=NumpyDriver())
              .forward(x.astype(np.float32), names).items()}
    return {k: rng.standard_normal(shape).astype(np.float32) for k, shape in shapes.items()}


def tiny_float64_problem(seed: int, weight_seed: int):
    """(net, x, seeds): the tiny network on the float64 test driver, an image and random
    gradients at relu1_1 and relu2_1."""
    rng = np.random.default_rng(seed)
    net = fixture_net(Float64Driver(), random_params(TINY_BLOCKS, TINY_CLASSIFIER,
                                                     seed=weight_seed),
                      TINY_BLOCKS, TINY_CLASSIFIER)
    x = rng.uniform(-20, 20, (1, 3, 28, 28))
    return net, x, seeds_for(net, x, ("relu1_1", "relu2_1"), rng)


# -- backward against finite differences (float64 end to end) ----------------------------------

def test_backward_equals_finite_differences():
    rng = np.random.default_rng(0)
    params = random_params(TINY_BLOCKS, TINY_CLASSIFIER, seed=1)
    net = fixture_net(Float64Driver(), params, TINY_BLOCKS, TINY_CLASSIFIER)
    x = rng.uniform(-5, 5, (2, 3, 28, 28))
    seeds = seeds_for(net, x, ("prob", "relu1_1", "pool2"), rng)

    def loss(image):
        out = net.forward(image, tuple(seeds))
        return sum(float(np.sum(out[k] * seeds[k].astype(np.float64))) for k in seeds)

    net.forward(x, tuple(seeds), keep=True)
    dx, dparams = net.backward(seeds, weight_grads=True)
    assert dx.shape == x.shape and set(dparams) == {"conv1_1", "conv2_1", "fc6", "fc7", "fc8"}
    eps = 1e-5  # small steps rarely cross a ReLU or pooling kink; float64 keeps them exact
    for _ in range(4):  # directional derivatives over the whole image
        v = rng.standard_normal(x.shape)
        fd = (loss(x + eps * v) - loss(x - eps * v)) / (2 * eps)
        assert fd == pytest.approx(float(np.sum(dx * v)), rel=1e-6, abs=1e-8)
    for index in [(0, 0, 0, 0), (1, 2, 27, 13), (0, 1, 14, 14)]:  # single pixels, borders too
        e = np.zeros_like(x)
        e[index] = eps
        assert (loss(x + e) - loss(x - e)) / (2 * eps) == pytest.approx(dx[index], rel=1e-5,
                                                                           abs=1e-8)
    for name, index in [("conv1_1", (1, 2, 0, 2)), ("conv2_1", (2, 1, 1, 0)), ("fc6", (3, 100)),
                        ("fc8", (2, 4))]:
        w, b = params[name]
        for which, array, grad in (("w", w, dparams[name][0]), ("b", b, dparams[name][1])):
            at = index if which == "w" else index[:1]
            original = float(array[at])  # float32 + eps would round the step
            values = []
            for sign in (1, -1):
                changed = array.astype(np.float64)
                changed[at] = original + sign * eps
                net.weights = {**params, name: (changed, b) if which == "w" else (w, changed)}
                values.append(loss(x))
            net.weights = params
            assert (values[0] - values[1]) / (2 * eps) == pytest.approx(grad[at], rel=1e-5,
                                                                        abs=1e-8), (name, which)


def test_seeds_accumulate_while_walking_back():
    """Seeding two layers gives the sum of the two single-seed gradients."""
    net, x, seeds = tiny_float64_problem(2, 3)
    grads = {}
    for names in (("relu1_1",), ("relu2_1",), ("relu1_1", "relu2_1")):
        net.forward(x, names, keep=True)
        grads[names] = net.backward({k: seeds[k] for k in names})
    np.testing.assert_allclose(grads[("relu1_1", "relu2_1")],
                               grads[("relu1_1",)] + grads[("relu2_1",)], rtol=1e-12, atol=1e-12)
    assert np.abs(grads[("relu1_1",)]).max() > 0 and np.abs(grads[("relu2_1",)]).max() > 0


# -- the naive driver agrees with the float64 oracle -------------------------------------------

def test_naive_network_matches_float64_network():
    rng = np.random.default_rng(4)
    params = random_params(TINY_BLOCKS, TINY_CLASSIFIER, seed=5)
    # small values: a saturated float32 softmax would make the fc8 gradient all rounding
    x = rng.uniform(-5, 5, (2, 3, 28, 28)).astype(np.float32)
    names = ("relu1_1", "pool2", "fc6", "prob")
    naive = fixture_net("naive", params, TINY_BLOCKS, TINY_CLASSIFIER)
    exact = fixture_net(Float64Driver(), params, TINY_BLOCKS, TINY_CLASSIFIER)
    got, want = naive.forward(x, names, keep=True), exact.forward(x, names, keep=True)
    for name in names:
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5 *
                                   np.abs(want[name]).max(), err_msg=name)
    seeds = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in got.items()}
    dx, dp = naive.backward(seeds, weight_grads=True)
    ex, ep = exact.backward(seeds, weight_grads=True)
    np.testing.assert_allclose(dx, ex, rtol=1e-4, atol=1e-5 * np.abs(ex).max())
    for name in ep:
        for g, e in zip(dp[name], ep[name]):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5 * np.abs(e).max(),
                                       err_msg=name)


def test_numpy_test_driver_matches_naive():
    rng = np.random.default_rng(6)
    params = random_params(seed=7)
    x = rng.uniform(-100, 100, (1, 3, 32, 32)).astype(np.float32)
    names = ("relu1_2", "pool3", "relu5_4", "pool5")
    got = fixture_net(NumpyDriver(), params).forward(x, names)
    want = fixture_net("naive", params).forward(x, names)
    for name in names:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5,
                                   atol=1e-5 * np.abs(want[name]).max(), err_msg=name)


# -- numba-cpu against naive (runs once the numba-cpu driver exists) ---------------------------

@needs_numba
def test_numba_forward_and_backward_match_naive():
    rng = np.random.default_rng(8)
    params = random_params(seed=9)
    x = rng.uniform(-100, 100, (2, 3, 32, 32)).astype(np.float32)
    names = ("relu1_1", "relu2_1", "relu3_1", "relu4_2", "relu5_1", "pool5")
    fast, slow = fixture_net("numba-cpu", params), fixture_net("naive", params)
    got, want = fast.forward(x, names, keep=True), slow.forward(x, names, keep=True)
    for name in names:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4,
                                   atol=1e-4 * np.abs(want[name]).max(), err_msg=name)
    seeds = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in want.items()}
    dx, dp = fast.backward(seeds, weight_grads=True)
    ex, ep = slow.backward(seeds, weight_grads=True)
    np.testing.assert_allclose(dx, ex, rtol=1e-3, atol=1e-4 * np.abs(ex).max())
    for name in ep:
        np.testing.assert_allclose(dp[name][0], ep[name][0], rtol=1e-3,
                                   atol=1e-4 * np.abs(ep[name][0]).max(), err_msg=name)


@needs_numba
def test_numba_full_forward_at_224_matches_the_reference():
    """Through fc6 and softmax (the numpy reference is itself checked against naive above)."""
    params = colour_params()
    x = preprocess(uniform_image((40, 200, 90)), mean_pixel=FIXTURE_MEAN)
    x = x + np.random.default_rng(10).uniform(-30, 30, x.shape).astype(np.float32)
    got = fixture_net("numba-cpu", params).forward(x, ("fc6", "prob"))
    want = fixture_net(NumpyDriver(), params).forward(x, ("fc6", "prob"))
    for name in ("fc6", "prob"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4,
                                   atol=1e-4 * np.abs(want[name]).max(), err_msg=name)


# -- what forward computes and keeps --------------------------------------------------------------

class RecordingDriver(NumpyDriver):
    def __init__(self):
        self.calls = []

    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        if name.startswith("_") and not name.startswith("__") and callable(attr) \
                and name not in ("_windows",):
            calls = object.__getattribute__(self, "calls")

            def wrapped(*args, **kwargs):
                calls.append(name[1:])
                return attr(*args, **kwargs)
            return wrapped
        return attr


def test_forward_stops_at_the_deepest_requested_layer():
    driver = RecordingDriver()
    net = fixture_net(driver)
    x = np.zeros((1, 3, 32, 32), np.float32)
    out = net.forward(x, ("relu1_1", "relu2_1"))
    assert set(out) == {"relu1_1", "relu2_1"}
    assert out["relu2_1"].shape == (1, 4, 16, 16)
    # each conv asks for its ReLU fused (the base class then runs _conv2d and _relu itself)
    fused = ["conv2d_relu", "conv2d", "relu"]
    # inference pools without switches (the base class then runs _max_pool2d itself)
    assert driver.calls == fused + fused + ["max_pool2d_values", "max_pool2d"] + fused
    driver.calls.clear()
    net.forward(x, ("conv1_1",))
    assert driver.calls == ["conv2d"]
    driver.calls.clear()
    net.forward(x, ("conv1_2", "relu1_1"))      # a conv output asked for is never fused
    assert driver.calls == fused + ["conv2d"]


def test_forward_returns_every_requested_layer():
    net = fixture_net(NumpyDriver(), colour_params())
    x = preprocess(uniform_image((255, 0, 0)), mean_pixel=FIXTURE_MEAN)
    out = net.forward(x, ("pool5", "fc8", "prob", "conv1_1"))
    assert out["pool5"].shape == (1, 8, 7, 7) and out["fc8"].shape == (1, 10)
    np.testing.assert_allclose(out["prob"].sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["conv1_1"][0, 0], 255 - FIXTURE_MEAN[0] + 200, rtol=1e-6)


def test_keep_saves_what_backward_needs_and_nothing_more():
    net = fixture_net(NumpyDriver())
    x = np.random.default_rng(11).standard_normal((1, 3, 32, 32)).astype(np.float32)
    net.forward(x, ("relu3_1",))
    assert net._saved is None  # keep=False keeps nothing
    net.forward(x, ("relu3_1",), keep=True)
    saved = net._saved
    upto = net.layer_names[:net.layer_names.index("relu3_1") + 1]
    assert sorted(saved) == list(range(len(upto)))  # every layer passed, none beyond
    for i, name in enumerate(upto):
        kind = net.layers[i].kind
        if kind == "pool":
            switches, shape = saved[i]
            assert len(shape) == 4 and switches is not None  # max pooling keeps its switches
        elif kind == "conv" and i > 0 and net.layers[i - 1].kind == "relu":
            assert saved[i] is saved[i - 1]  # a conv's input *is* the ReLU output before it
    # the arrays held: the input, each ReLU output, each pooled output (conv input), switches
    arrays = {id(a): a for a in saved.values() if isinstance(a, np.ndarray)}
    relu_outputs = sum(net.layers[i].kind == "relu" for i in saved)
    pooled = sum(net.layers[i].kind == "pool" for i in saved)
    assert len(arrays) == 1 + relu_outputs + pooled


def test_only_a_keeping_forward_asks_max_pooling_for_its_switches():
    driver = NumpyDriver()
    asked = []
    pool = driver.max_pool2d

    def recording(x, size=2, stride=2, switches=True):
        asked.append(switches)
        return pool(x, size, stride, switches=switches)

    driver.max_pool2d = recording
    net = fixture_net(driver)
    x = np.random.default_rng(12).standard_normal((1, 3, 32, 32)).astype(np.float32)
    plain = net.forward(x, ("relu3_1",))["relu3_1"]
    assert asked == [False, False]                      # inference: no switches recorded
    kept = net.forward(x, ("relu3_1",), keep=True)["relu3_1"]
    assert asked[2:] == [True, True]
    np.testing.assert_array_equal(plain, kept)


def test_backward_needs_a_keeping_forward_and_valid_seeds():
    net = fixture_net(Float64Driver(), random_params(TINY_BLOCKS, TINY_CLASSIFIER),
                      TINY_BLOCKS, TINY_CLASSIFIER)
    x = np.zeros((1, 3, 28, 28))
    net.forward(x, ("relu1_1",))
    with pytest.raises(VggjitError, match="keep=True"):
        net.backward({"relu1_1": np.zeros((1, 2, 28, 28))})
    net.forward(x, ("relu1_1",), keep=True)
    with pytest.raises(InputError, match="deeper than the last forward"):
        net.backward({"relu2_1": np.zeros((1, 3, 14, 14))})
    with pytest.raises(InputError, match="unknown layer"):
        net.backward({"relu9_9": np.zeros(1)})


# -- classification -------------------------------------------------------------------------------

@pytest.fixture
def colour_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGJIT_HOME", str(tmp_path / "home"))

    def make(version="old"):
        return write_matconvnet(tmp_path / f"colour-{version}.mat", colour_params(),
                                version=version)
    return make


@pytest.mark.parametrize("version", ["old", "new"])
def test_classify_gives_the_class_the_weights_force(colour_file, version):
    net = VGG19.from_file(colour_file(version), driver=NumpyDriver())
    wnids, descriptions = class_names(10)
    images = [uniform_image((255, 0, 0)), uniform_image((0, 255, 0)), uniform_image((0, 0, 255))]
    results = net.classify(images, top_k=3)
    for channel, top in enumerate(results):
        rank, index, wnid, description, probability = top[0]
        assert (rank, index) == (1, COLOUR_CLASSES[channel])
        assert (wnid, description) == (wnids[index], descriptions[index])
        assert probability > 0.9
        assert [r[0] for r in top] == [1, 2, 3]
        assert top[1][4] <= probability


def test_classify_uses_the_mean_pixel_of_the_file(colour_file):
    # R - G = 8: green wins after subtracting the fixture's mean (R 120.5, G 110.25), red would
    # win after subtracting ImageNet's (R 123.68, G 116.779).
    net = VGG19.from_file(colour_file("new"), driver=NumpyDriver())
    assert net.classify([uniform_image((130, 122, 0))], top_k=1)[0][0][1] == COLOUR_CLASSES[1]
    other = Network(net.layers, net.weights, driver=NumpyDriver(), wnids=net.wnids)
    assert other.classify([uniform_image((130, 122, 0))], top_k=1)[0][0][1] == COLOUR_CLASSES[0]


def test_classify_on_the_naive_driver(colour_file):
    net = VGG19.from_file(colour_file("old"), driver="naive")
    top = net.classify([uniform_image((0, 0, 255))], top_k=1)[0]
    assert top[0][1] == COLOUR_CLASSES[2]


def test_classify_takes_arrays_and_paths(colour_file, tmp_path):
    net = VGG19.from_file(colour_file("old"), driver=NumpyDriver())
    path = tmp_path / "green.png"
    uniform_image((0, 255, 0), size=300).save(path)
    x = preprocess(uniform_image((255, 0, 0)), mean_pixel=net.mean_pixel)
    assert net.classify(x, top_k=1)[0][0][1] == COLOUR_CLASSES[0]
    assert net.classify([path], top_k=1)[0][0][1] == COLOUR_CLASSES[1]


def test_random_network_refuses_to_classify():
    net = fixture_net(NumpyDriver())
    net.random_weights = True
    with pytest.raises(VggjitError, match="random weights"):
        net.classify(np.zeros((1, 3, 224, 224), np.float32))


def test_classification_needs_224(colour_file):
    net = VGG19.from_file(colour_file("old"), driver=NumpyDriver())
    with pytest.raises(InputError, match="224x224"):
        net.forward(np.zeros((1, 3, 64, 64), np.float32))


def test_vgg19_and_vgg16_classes_insist_on_their_depth(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGJIT_HOME", str(tmp_path / "home"))
    path = write_matconvnet(tmp_path / "vgg16.mat", random_params(FIXTURE16_BLOCKS, seed=3),
                            blocks=FIXTURE16_BLOCKS)
    with pytest.raises(InputError, match=r"vgg16\.mat.*13 conv layers.*not VGG19.*VGG16\.from_file"):
        VGG19.from_file(path)
    assert type(VGG16.from_file(path)) is VGG16
    assert len(Network.from_file(path).layers) == len(vgg_layers(FIXTURE16_BLOCKS))


@pytest.mark.parametrize("driver", ["numba-cpu", "naive"])
def test_backward_leaves_the_callers_seed_gradients_alone(driver):
    # the network adds a seed into the gradient coming down in place; never into a seed
    net = Network.random(0, driver, blocks=TINY_BLOCKS, classifier=TINY_CLASSIFIER)
    x = np.random.default_rng(3).standard_normal((1, 3, 28, 28)).astype(np.float32)
    outs = net.forward(x, ("relu1_1", "relu2_1"), keep=True)
    seeds = {name: np.ones_like(f) for name, f in outs.items()}
    copies = {name: g.copy() for name, g in seeds.items()}
    dx = net.backward(seeds)
    for name, g in seeds.items():
        np.testing.assert_array_equal(g, copies[name])
    assert np.abs(dx).max() > 0


def test_callable_seeds_and_release_give_the_same_gradient():
    # a seed may be a callable that adds its term to the gradient arriving from deeper layers
    # (None at the deepest seeded layer); release frees what the walk has passed, empties the
    # caller's mapping and leaves nothing for a second backward
    net, x, seeds = tiny_float64_problem(4, 5)
    net.forward(x, ("relu1_1", "relu2_1"), keep=True)
    want = net.backward(seeds)
    net.forward(x, ("relu1_1", "relu2_1"), keep=True)
    deep = weakref.ref(net._saved[net.index["relu2_1"]])
    arriving = []

    def deepest(dy):
        arriving.append(dy)
        return seeds["relu2_1"].copy()

    def shallow(dy):
        arriving.append(dy)
        assert deep() is None           # relu2_1's output went when the walk passed it
        dy += seeds["relu1_1"]
        return dy

    grads = {"relu2_1": deepest, "relu1_1": shallow}
    with pytest.raises(InputError, match="dict"):
        net.backward(types.MappingProxyType(grads), release=True)
    got = net.backward(grads, release=True)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert arriving[0] is None and arriving[1].shape == seeds["relu1_1"].shape
    assert grads == {} and net._saved is None
    with pytest.raises(VggjitError, match="forward"):
        net.backward({"relu1_1": seeds["relu1_1"]})
