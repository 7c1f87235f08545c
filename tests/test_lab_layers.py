"""vggjit.lab's layers: the course's interface (layouts, float64, what backward keeps) on
vggjit's drivers, checked against the equations written out in NumPy."""
from __future__ import annotations

import numpy as np
import pytest

from vggjit.errors import DriverNotFoundError, InputError, VggjitError
from vggjit.lab import engine
from vggjit.lab.exp_3_3_style_transfer import AdamOptimizer, get_random_img
from vggjit.lab.layers_1 import FullyConnectedLayer, ReLULayer, SoftmaxLossLayer
from vggjit.lab.layers_2 import ConvolutionalLayer, FlattenLayer, MaxPoolingLayer
from vggjit.lab.layers_3 import ContentLossLayer, StyleLossLayer
from vggjit.optimizers import Adam

RNG = np.random.default_rng(11)


def _conv_reference(x, w, b, pad):
    """The course's equation with its weight layout [Cin, K, K, Cout], stride 1."""
    k = w.shape[1]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
    return np.einsum("nchwij,cijo->nohw", win, w) + b[None, :, None, None]


@pytest.mark.parametrize("kind", [0, 1])
def test_convolution_in_the_courses_layout_with_its_gradients(kind):
    x = RNG.standard_normal((2, 3, 7, 6))
    w = RNG.standard_normal((3, 3, 3, 4))
    b = RNG.standard_normal(4)
    conv = ConvolutionalLayer(3, 3, 4, 1, 1, type=kind)
    assert conv.driver.name == ("naive" if kind == 0 else engine.fast_driver().name)
    conv.load_param(w, b)
    y = conv.forward(x)
    assert y.dtype == np.float64 and y.shape == (2, 4, 7, 6)
    np.testing.assert_allclose(y, _conv_reference(x, w, b, 1), rtol=1e-4, atol=1e-4)
    dy = RNG.standard_normal(y.shape)
    dx = conv.backward(dy)
    # d(sum(y * dy)) / dw by the definition, in the course's layout
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    d_weight, d_bias = conv.get_gradient()
    np.testing.assert_allclose(d_weight, np.einsum("nchwij,nohw->cijo", win, dy), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(d_bias, dy.sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    eps = 1e-3
    probe = np.zeros_like(x)
    probe[1, 2, 3, 4] = eps
    numeric = (np.sum(_conv_reference(x + probe, w, b, 1) * dy)
               - np.sum(_conv_reference(x - probe, w, b, 1) * dy)) / (2 * eps)
    assert dx[1, 2, 3, 4] == pytest.approx(numeric, rel=1e-3)
    assert conv.get_forward_time() > 0 and conv.get_backward_time() > 0
    conv.update_param(0.5)
    np.testing.assert_allclose(conv.weight, w - 0.5 * d_weight)
    np.testing.assert_allclose(conv.forward(x), _conv_reference(x, conv.weight, conv.bias, 1),
                               rtol=1e-4, atol=1e-3)  # the driver got the new weights


def test_parameter_shapes_and_order_of_calls_are_checked():
    conv = ConvolutionalLayer(3, 2, 4, 1, 1)
    with pytest.raises(AssertionError, match=r"weight has shape \(4, 3, 3, 2\), expected "
                                             r"\(2, 3, 3, 4\)"):
        conv.load_param(np.zeros((4, 3, 3, 2)), np.zeros(4))
    with pytest.raises(VggjitError, match="call init_param"):
        conv.forward(np.zeros((1, 2, 5, 5)))
    conv.init_param()
    assert conv.weight.shape == (2, 3, 3, 4) and 0 < conv.weight.std() < 0.05
    with pytest.raises(VggjitError, match="call forward first"):
        conv.backward(np.zeros((1, 4, 5, 5)))
    with pytest.raises(VggjitError, match="call backward"):
        conv.get_gradient()
    with pytest.raises(InputError, match="type must be 0"):
        ConvolutionalLayer(3, 2, 4, 1, 1, type=2)


def test_fully_connected_relu_and_softmax_loss():
    x = RNG.standard_normal((3, 5))
    w, b = RNG.standard_normal((5, 4)), RNG.standard_normal((1, 4))
    fc = FullyConnectedLayer(5, 4)
    fc.load_param(w, b)
    np.testing.assert_allclose(fc.forward(x), x @ w + b, rtol=1e-5, atol=1e-5)
    dy = RNG.standard_normal((3, 4))
    np.testing.assert_allclose(fc.backward(dy), dy @ w.T, rtol=1e-5, atol=1e-5)
    d_weight, d_bias = fc.get_gradient()
    np.testing.assert_allclose(d_weight, x.T @ dy, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_bias, dy.sum(axis=0, keepdims=True), rtol=1e-5, atol=1e-5)

    relu = ReLULayer()
    np.testing.assert_array_equal(relu.forward(x), np.maximum(x.astype(np.float32), 0))
    np.testing.assert_array_equal(relu.backward(np.ones_like(x)), (x > 0).astype(float))

    logits = RNG.standard_normal((3, 6))
    softmax = SoftmaxLossLayer()
    prob = softmax.forward(logits)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(prob, e / e.sum(axis=1, keepdims=True), rtol=1e-5)
    label = np.array([0, 5, 2])
    assert softmax.get_loss(label) == pytest.approx(-np.mean(np.log(prob[[0, 1, 2], label])))
    grad = softmax.backward()
    expected = prob.copy()
    expected[[0, 1, 2], label] -= 1
    np.testing.assert_allclose(grad, expected / 3)
    with pytest.raises(InputError, match="labels must be 3 integers"):
        softmax.get_loss(np.array([0, 6, 1]))


def test_flatten_is_in_h_w_c_order_and_pooling_routes_to_the_maximum():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)
    flatten = FlattenLayer([3, 2, 2], [12])
    y = flatten.forward(x)
    np.testing.assert_array_equal(y[0, :4], [x[0, 0, 0, 0], x[0, 1, 0, 0], x[0, 2, 0, 0],
                                             x[0, 0, 0, 1]])
    np.testing.assert_array_equal(flatten.backward(y), x)
    with pytest.raises(InputError, match="hold different numbers"):
        FlattenLayer([3, 2, 2], [11])

    for kind in (0, 1):
        pool = MaxPoolingLayer(2, 2, type=kind)
        z = RNG.standard_normal((1, 2, 4, 4))
        out = pool.forward(z)
        np.testing.assert_array_equal(out, z.astype(np.float32).reshape(1, 2, 2, 2, 2, 2)
                                      .max(axis=(3, 5)))
        back = pool.backward(np.arange(1, 9, dtype=np.float64).reshape(out.shape))

        def windows(a):
            return a.reshape(1, 2, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(1, 2, 2, 2, 4)

        # each window's gradient sits at its maximum, nowhere else
        np.testing.assert_array_equal(windows(back).argmax(axis=-1), windows(z).argmax(axis=-1))
        np.testing.assert_array_equal(windows(back).sum(axis=-1), np.arange(1, 9).reshape(out.shape))


def test_content_and_style_losses_follow_the_equations():
    x, y = RNG.standard_normal((1, 3, 4, 5)), RNG.standard_normal((1, 3, 4, 5))
    content = ContentLossLayer()
    n = x.size
    assert content.forward(x, y) == pytest.approx(np.sum((x - y) ** 2) / (2 * n))
    np.testing.assert_allclose(content.backward(x, y), (x - y) / n)

    style = StyleLossLayer()
    f, s = x.reshape(3, 20), y.reshape(3, 20)
    g, a = f @ f.T, s @ s.T
    scale = 3 * 3 * 20 * 20
    assert style.forward(x, y) == pytest.approx(np.sum((g - a) ** 2) / (4 * scale), rel=1e-5)
    np.testing.assert_allclose(style.backward(x, y), ((g - a).T @ f / scale).reshape(x.shape),
                               rtol=1e-4, atol=1e-7)
    with pytest.raises(InputError, match="one shape"):
        style.forward(x, y[:, :2])


def test_adam_and_the_random_start_are_the_labs():
    shape = (1, 3, 4, 4)
    adam, reference = AdamOptimizer(0.5, shape), Adam(0.5)
    x = RNG.standard_normal(shape)
    for _ in range(3):
        g = RNG.standard_normal(shape)
        np.testing.assert_array_equal(adam.update(x, g), reference.update(x, g))
    with pytest.raises(InputError, match="must both have the shape"):
        adam.update(x, np.zeros((1, 3, 4, 5)))
    np.random.seed(5)
    content = RNG.standard_normal(shape)
    noisy = get_random_img(content, 0.25)
    np.random.seed(5)
    np.testing.assert_allclose(noisy, np.random.uniform(-20, 20, shape) * 0.25 + content * 0.75)


def test_the_fast_driver_is_chosen_by_use_fast_driver():
    try:
        engine.use_fast_driver("naive")
        assert ConvolutionalLayer(3, 1, 1, 1, 1, type=1).driver.name == "naive"
        with pytest.raises(DriverNotFoundError):
            engine.use_fast_driver("no-such-driver")
    finally:
        engine.use_fast_driver(None)
    assert ConvolutionalLayer(3, 1, 1, 1, 1, type=1).driver.name != "naive"
