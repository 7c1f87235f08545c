"""Style-transfer losses: direct formulas (docs/equations.md, section 5), and the total loss's
gradient with respect to the image against central finite differences on a tiny network."""
from __future__ import annotations

import numpy as np
import pytest

from style_tools import (TINY_CONTENT, TINY_STYLE, Float64Driver, fast_driver_name, tiny_net)
from vggjit import get_driver
from vggjit.errors import InputError
from vggjit.losses import (StyleObjective, content_loss, content_targets, feature_geometry,
                           layer_weights, min_size, style_loss, style_targets, tv_loss)
from vggjit.network import Network
from vggjit.style import make_settings


def direct_gram(x):
    return np.einsum("nihw,njhw->nij", x.astype(np.float64), x.astype(np.float64))


# -- direct formulas ---------------------------------------------------------------------------
@pytest.mark.parametrize("driver", ["naive", "default"])
def test_driver_gram_equals_direct_sum(driver):
    d = get_driver("naive") if driver == "naive" else get_driver(fast_driver_name())
    x = np.random.default_rng(0).standard_normal((2, 5, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(d.gram(x), direct_gram(x), rtol=1e-5, atol=1e-5)


def test_content_loss_and_gradient_equal_the_formula():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))
    loss, grad = content_loss(x, y)
    n, c, h, w = x.shape
    assert loss == pytest.approx(np.sum((x - y) ** 2) / (2 * n * c * h * w), rel=1e-12)
    np.testing.assert_allclose(grad, (x - y) / (n * c * h * w), rtol=1e-12)
    # a term's weight scales its gradient (applied inside), not the loss it reports
    weighted_loss, weighted = content_loss(x, y, 2.5)
    assert weighted_loss == loss
    np.testing.assert_allclose(weighted, 2.5 * grad, rtol=1e-12)


def test_style_loss_and_gradient_equal_the_formula():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5))
    a = direct_gram(rng.standard_normal((2, 3, 4, 5)))
    g = direct_gram(x)
    loss, grad = style_loss(x, g, a)
    n, c, h, w = x.shape
    expected = np.sum((g - a) ** 2) / (4 * n * c ** 2 * h ** 2 * w ** 2)
    assert loss == pytest.approx(expected, rel=1e-12)
    # dL/dX[n,i,h,w] = 1/(N C^2 H^2 W^2) sum_j X[n,j,h,w] (G[n,j,i] - A[n,j,i]), term by term.
    manual = np.zeros_like(x)
    for b in range(n):
        for i in range(c):
            for j in range(c):
                manual[b, i] += x[b, j] * (g[b, j, i] - a[b, j, i])
    np.testing.assert_allclose(grad, manual / (n * c ** 2 * h ** 2 * w ** 2), rtol=1e-10)
    weighted_loss, weighted = style_loss(x, g, a, 2.5)
    assert weighted_loss == loss
    np.testing.assert_allclose(weighted, 2.5 * grad, rtol=1e-12)


def test_style_loss_is_zero_at_its_target():
    x = np.random.default_rng(3).standard_normal((1, 4, 3, 3)).astype(np.float32)
    loss, grad = style_loss(x, direct_gram(x), direct_gram(x))
    assert loss == 0 and not grad.any()


def test_tv_loss_equals_the_formula_and_finite_differences():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 3, 5, 6))
    loss, grad = tv_loss(x)
    dh, dw = np.diff(x, axis=2), np.diff(x, axis=3)
    assert loss == pytest.approx((np.sum(dh ** 2) + np.sum(dw ** 2)) / (2 * x.size), rel=1e-12)
    eps = 1e-6
    for idx in [(0, 0, 0, 0), (0, 1, 2, 3), (0, 2, 4, 5), (0, 1, 0, 5)]:
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric = (tv_loss(plus)[0] - tv_loss(minus)[0]) / (2 * eps)
        assert grad[idx] == pytest.approx(numeric, rel=1e-6, abs=1e-10)


def test_layer_weights_default_to_the_labs_mean_and_reject_bad_lists():
    assert layer_weights(["a", "b", "c", "d"], None, "style") == {k: 0.25 for k in "abcd"}
    assert layer_weights(["a"], [3.0], "content") == {"a": 3.0}
    with pytest.raises(InputError, match="2 style layers but 1"):
        layer_weights(["a", "b"], [1.0], "style")
    with pytest.raises(InputError, match="non-negative"):
        layer_weights(["a"], [-1.0], "style")


def test_geometry_names_the_problem():
    net = tiny_net("naive")
    assert feature_geometry(net, "relu3_1", 40, 33) == (4, 10, 8)
    assert min_size(net, ["relu1_1", "relu5_1"]) == 16
    with pytest.raises(InputError, match="too small for layer 'relu5_1'"):
        feature_geometry(net, "relu5_1", 12, 40)
    with pytest.raises(InputError, match="unknown layer 'relu9_9'"):
        feature_geometry(net, "relu9_9", 32, 32)
    with pytest.raises(InputError, match="fc layer"):
        feature_geometry(net, "fc6", 224, 224)


# -- the float64 test driver is itself right ---------------------------------------------------
@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_float64_driver_matches_the_naive_reference(pooling):
    x = np.random.default_rng(5).uniform(-50, 50, (1, 3, 20, 18)).astype(np.float32)
    layers = ("relu1_1", "pool1", "relu3_1")
    ours = tiny_net(Float64Driver(), pooling).forward(x, layers, keep=True)
    ref = tiny_net("naive", pooling).forward(x, layers, keep=True)
    for name in layers:
        np.testing.assert_allclose(ours[name], ref[name], rtol=1e-4, atol=1e-4)
    seeds = {name: np.random.default_rng(6).standard_normal(ref[name].shape) for name in layers}
    net64, net32 = tiny_net(Float64Driver(), pooling), tiny_net("naive", pooling)
    net64.forward(x, layers, keep=True)
    net32.forward(x, layers, keep=True)
    np.testing.assert_allclose(net64.backward(seeds), net32.backward(seeds), rtol=1e-3, atol=1e-4)


# -- the total loss's gradient against finite differences --------------------------------------
TERMS = {
    "content": dict(beta=0.0),
    "style": dict(alpha=0.0),
    "tv": dict(alpha=0.0, beta=0.0, tv_weight=1.0),
    "combined": dict(alpha=1.0, beta=500.0, tv_weight=30.0),
    "combined-normalized": dict(alpha=1.0, beta=10.0, tv_weight=1e-3, normalize=True),
}


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    h, w = 24, 20
    content = rng.uniform(-80, 80, (1, 3, h, w))
    style = rng.uniform(-80, 80, (1, 3, 28, 16))
    x = content + rng.uniform(-30, 30, content.shape)
    return content, style, x


@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("term", list(TERMS))
def test_total_loss_gradient_equals_central_differences(problem, term, pooling):
    content, style, x = problem
    net = tiny_net(Float64Driver(), pooling)
    h, w = content.shape[2:]
    grams = style_targets(net, [style], [1.0], TINY_STYLE, h, w)
    obj = StyleObjective(net, content, layer_weights(TINY_CONTENT, None, "content"),
                         layer_weights(TINY_STYLE, [1, 2, 1, 3, 1], "style"), grams,
                         **TERMS[term])
    ev = obj(x)
    assert ev.grad.shape == x.shape and np.isfinite(ev.loss) and ev.loss > 0
    rng = np.random.default_rng(8)
    eps = 1e-4
    # Directional derivatives along random directions plus single-pixel partial derivatives.
    directions = [rng.standard_normal(x.shape) for _ in range(3)]
    for idx in [(0, 0, 0, 0), (0, 1, 11, 9), (0, 2, 23, 19)]:
        e = np.zeros(x.shape)
        e[idx] = 1.0
        directions.append(e)
    for d in directions:
        numeric = (obj(x + eps * d, need_grad=False).loss
                   - obj(x - eps * d, need_grad=False).loss) / (2 * eps)
        analytic = float(np.sum(ev.grad * d))
        assert analytic == pytest.approx(numeric, rel=2e-4, abs=1e-9 * ev.loss), term


def test_terms_add_up_and_seed_the_shared_layer_once():
    """A layer used for both content and style gets both gradients (sum), and the reported
    terms add up to the total."""
    rng = np.random.default_rng(9)
    net = tiny_net(Float64Driver(), "avg")
    content, style = rng.uniform(-80, 80, (2, 1, 3, 20, 20))
    grams = style_targets(net, [style], [1.0], ("relu3_1",), 20, 20)
    both = StyleObjective(net, content, {"relu3_1": 1.0}, {"relu3_1": 1.0}, grams, beta=7.0)
    only_c = StyleObjective(net, content, {"relu3_1": 1.0}, {}, {}, beta=7.0)
    only_s = StyleObjective(net, content, {}, {"relu3_1": 1.0}, grams, beta=7.0)
    x = content + rng.uniform(-10, 10, content.shape)
    ev, c, s = both(x), only_c(x), only_s(x)
    assert ev.loss == pytest.approx(c.loss + s.loss, rel=1e-12)
    assert ev.loss == pytest.approx(sum(ev.terms.values()), rel=1e-12)
    # The network takes the seeds in float32: agreement to float32 precision of the largest.
    np.testing.assert_allclose(ev.grad, c.grad + s.grad, rtol=1e-5,
                               atol=1e-6 * np.abs(ev.grad).max())


def test_normalize_divides_each_weight_by_its_targets_mean_square():
    rng = np.random.default_rng(10)
    net = tiny_net(Float64Driver(), "avg")
    content, style = rng.uniform(-80, 80, (2, 1, 3, 20, 20))
    grams = style_targets(net, [style], [1.0], ("relu2_1",), 20, 20)
    feats = content_targets(net, content, ("relu3_1",))
    obj = StyleObjective(net, content, {"relu3_1": 2.0}, {"relu2_1": 3.0}, grams, alpha=5.0,
                         beta=7.0, normalize=True)
    assert obj.weights["content:relu3_1"] == pytest.approx(
        5.0 * 2.0 / np.mean(feats["relu3_1"].astype(np.float64) ** 2))
    hw = 10 * 10  # relu2_1 of a 20x20 image
    assert obj.weights["style:relu2_1"] == pytest.approx(
        7.0 * 3.0 / np.mean((grams["relu2_1"].astype(np.float64) / hw) ** 2))


# -- the defaults hold for any VGG's scale --------------------------------------------------------
#: Per-layer factors on the convolutions' weights: every activation after conv k is multiplied by
#: the product of the factors up to k (biases get that product). Powers of two keep every
#: product and sum exact in float64, so the invariance below holds bit for bit, not to a
#: tolerance. They stand for the factors between VGGs trained by different tools (MatConvNet,
#: torchvision, Keras; a torchvision conv1_1 works on inputs 1/58 the size of Caffe's).
LAYER_SCALES = {"conv1_1": 2.0 ** -6, "conv2_1": 2.0 ** 3, "conv3_1": 2.0 ** -2,
                "conv4_2": 2.0 ** 7}


def _with_biases_and_scales(pooling, scales):
    """The tiny float64 network with non-zero biases, its conv layers scaled by ``scales``."""
    net = tiny_net(Float64Driver(), pooling)
    rng = np.random.default_rng(11)
    weights, running = {}, 1.0
    for layer in net.layers:
        if layer.kind not in ("conv", "fc"):
            continue
        w, b = net.weights[layer.name]
        b = rng.uniform(-0.5, 0.5, b.shape) if layer.kind == "conv" else np.asarray(b)
        factor = scales.get(layer.name, 1.0) if layer.kind == "conv" else 1.0
        running *= factor
        weights[layer.name] = (np.asarray(w, np.float64) * factor, b * running)
    return Network(net.layers, weights, driver=Float64Driver(), pooling=pooling)


def _objective(net, content, style, settings):
    h, w = content.shape[2:]
    grams = style_targets(net, [style], [1.0], settings.style_layers, h, w)
    return StyleObjective(net, content,
                          layer_weights(settings.content_layers, None, "content"),
                          layer_weights(settings.style_layers, None, "style"), grams,
                          alpha=settings.alpha, beta=settings.beta,
                          tv_weight=settings.tv_weight, normalize=settings.normalize)


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_default_objective_is_invariant_to_the_scale_of_each_layer(problem, pooling):
    """The defaults (normalised terms, total variation in pixel units) give the same loss,
    terms and gradient whatever scale each layer's activations have, so one alpha, beta and
    tv weight serve VGG16 and VGG19 from every source. The lab's unnormalised loss does not."""
    content, style, x = problem
    defaults = make_settings()
    assert defaults.normalize and defaults.tv_weight > 0
    plain = _with_biases_and_scales(pooling, {})
    scaled = _with_biases_and_scales(pooling, LAYER_SCALES)
    # The factors reach the loss layers: relu3_1's features are 2^-5 x, relu4_2's 2^2 x.
    f, g = plain.forward(x, ("relu3_1",))["relu3_1"], scaled.forward(x, ("relu3_1",))["relu3_1"]
    np.testing.assert_array_equal(g, f * 2.0 ** -5)
    ours = _objective(plain, content, style, defaults)(x)
    theirs = _objective(scaled, content, style, defaults)(x)
    assert "tv" in ours.terms and theirs.terms == ours.terms and theirs.loss == ours.loss
    np.testing.assert_array_equal(theirs.grad, ours.grad)
    lab = make_settings("lab")
    ours = _objective(plain, content, style, lab)(x)
    theirs = _objective(scaled, content, style, lab)(x)
    assert not theirs.loss == pytest.approx(ours.loss, rel=1e-3)


def test_style_targets_rescale_other_sizes_and_blend():
    """A style image of another size has its Gram scaled by (output positions) / (its positions)
    at each layer; a blend of two styles is the weighted mean of their Grams."""
    net = tiny_net(Float64Driver(), "avg")
    rng = np.random.default_rng(11)
    big = rng.uniform(-80, 80, (1, 3, 32, 24))
    a_big = style_targets(net, [big], [1.0], ("relu1_1", "relu2_1"), 16, 16)
    feats = net.forward(big, ("relu1_1", "relu2_1"))
    np.testing.assert_allclose(a_big["relu1_1"], direct_gram(feats["relu1_1"]) * 256 / 768,
                               rtol=1e-6)
    np.testing.assert_allclose(a_big["relu2_1"], direct_gram(feats["relu2_1"]) * 64 / 192,
                               rtol=1e-6)
    small, other = rng.uniform(-80, 80, (2, 1, 3, 16, 16))
    a_small = style_targets(net, [small], [1.0], ("relu1_1",), 16, 16)["relu1_1"]
    np.testing.assert_allclose(a_small, direct_gram(net.forward(small, ("relu1_1",))["relu1_1"]),
                               rtol=1e-6)
    a_other = style_targets(net, [other], [1.0], ("relu1_1",), 16, 16)["relu1_1"]
    mix = style_targets(net, [small, other], [0.25, 0.75], ("relu1_1",), 16, 16)["relu1_1"]
    np.testing.assert_allclose(mix, 0.25 * a_small + 0.75 * a_other, rtol=1e-5)


def test_forward_stops_at_the_deepest_loss_layer():
    net = tiny_net(Float64Driver(), "max")
    x = np.zeros((1, 3, 32, 32))
    obj = StyleObjective(net, x, {"relu2_1": 1.0}, {"relu3_1": 1.0},
                         {"relu3_1": np.zeros((1, 4, 4))})
    saved = []
    backward = net.backward

    def spy(grads, **options):
        saved.append(max(net._saved))
        return backward(grads, **options)

    net.backward = spy
    obj(x + 1)
    assert net._saved_last == net.index["relu3_1"]
    assert saved == [net.index["relu3_1"]]
    assert net._saved is None           # the step's backward freed them as it went
