"""``stu_upload.exp_3_3_style_transfer``: Gatys style transfer from the lab's layers (3.3).

    vgg = VGG19(param_path='../imagenet-vgg-verydeep-19.mat')
    vgg.build_model(); vgg.init_model(); vgg.load_model()
    content, shape = vgg.load_image('../weinisi.jpg', 192, 320)   # [1, 3, 192, 320] float64
    feats = vgg.forward(image, ['relu4_2', 'relu1_1', ...])       # {layer: activation}
    grad = vgg.backward(dloss, 'relu4_2')                         # the gradient at the image
    x = AdamOptimizer(1.0, [1, 3, 192, 320]).update(x, grad)
    vgg.save_image(x, shape, 'output/output_0.jpg')

The network is conv1_1 .. pool5 of the weight file (VGG19's when there is no file), every
conv and pool with ``type=1`` (the fast driver). ``backward(dloss, layer)`` walks from that
layer back to the image through what the last ``forward`` kept, so it can be called once per
loss layer after one forward. Also exported: the loss layers (layers_3) and the other layers.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError, VggjitError
from ..network import MEAN_PIXEL
from ..optimizers import Adam
from .files import course_conv_weight, layer_table, load_model_weights, read_image, write_image
from .layers_1 import FullyConnectedLayer, ReLULayer, SoftmaxLossLayer
from .layers_2 import ConvolutionalLayer, FlattenLayer, MaxPoolingLayer
from .layers_3 import ContentLossLayer, StyleLossLayer


class VGG19:
    """The convolutional part of VGG19 for style transfer (see the module docstring)."""

    def __init__(self, param_path=None):
        self.param_path = param_path
        self.param_layer_name: list[str] = []
        self.layers: dict[str, object] = {}
        self.image_mean = None
        self._deepest = -1  # index of the last layer the last forward ran

    def build_model(self) -> None:
        print("Building model...")
        self.param_layer_name, self.layers = [], {}
        for layer in layer_table(self.param_path):
            if layer.kind == "conv":
                made = ConvolutionalLayer(3, layer.cin, layer.cout, 1, 1, type=1)
            elif layer.kind == "relu":
                made = ReLULayer()
            elif layer.kind == "pool":
                made = MaxPoolingLayer(2, 2, type=1)
            else:
                break  # the classifier, fc6 on, takes no part in style transfer
            self.param_layer_name.append(layer.name)
            self.layers[layer.name] = made

    def _convs(self):
        if not self.layers:
            raise VggjitError("VGG19: call build_model() first")
        return [n for n in self.param_layer_name if isinstance(self.layers[n], ConvolutionalLayer)]

    def init_model(self) -> None:
        print("Initializing parameters of each layer in vgg-19...")
        for name in self._convs():
            self.layers[name].init_param()

    def load_model(self) -> None:
        names = self._convs()
        ws, self.image_mean = load_model_weights(self.param_path)
        for name in names:
            w, b = ws.params[name]
            self.layers[name].load_param(course_conv_weight(w), b)

    def _mean(self):
        # the weight file's mean once load_model has run; VGG's ImageNet mean before
        return self.image_mean if self.image_mean is not None else MEAN_PIXEL.astype(np.float64)

    def load_image(self, image_dir, image_height: int, image_width: int):
        """(image [1, 3, image_height, image_width] float64 minus the mean, the file's shape)."""
        return read_image(image_dir, image_height, image_width, self._mean())

    def save_image(self, input_image, image_shape, image_dir) -> None:
        """Mean added back, clipped, resized to the original ``image_shape``, written."""
        write_image(input_image, image_shape, image_dir, self._mean())

    def forward(self, input_image, layer_list) -> dict:
        """{name: activation} for every name in ``layer_list``; runs up to the deepest one."""
        wanted = list(layer_list)
        unknown = [n for n in wanted if n not in self.layers]
        if unknown or not wanted:
            raise InputError(f"VGG19.forward: unknown layer(s) {', '.join(unknown) or '(none)'};"
                             f" valid names: {', '.join(self.param_layer_name)}")
        last = max(self.param_layer_name.index(n) for n in wanted)
        current, result = input_image, {}
        for name in self.param_layer_name[:last + 1]:
            current = self.layers[name].forward(current)
            if name in wanted:
                result[name] = current
        self._deepest = last
        return result

    def backward(self, dloss, layer_name) -> np.ndarray:
        """The gradient at the image of a loss whose gradient at ``layer_name`` is ``dloss``."""
        if layer_name not in self.layers:
            raise InputError(f"VGG19.backward: unknown layer {layer_name!r}; valid names: "
                             f"{', '.join(self.param_layer_name)}")
        start = self.param_layer_name.index(layer_name)
        if start > self._deepest:
            raise VggjitError(f"VGG19.backward: the last forward did not reach {layer_name!r}")
        for name in reversed(self.param_layer_name[:start + 1]):
            dloss = self.layers[name].input_gradient(dloss)
        return dloss


def get_random_img(content_image, noise):
    """uniform(-20, 20) noise * noise + content_image * (1 - noise) (numpy's global generator)."""
    noise_image = np.random.uniform(-20, 20, np.shape(content_image))
    return noise_image * noise + np.asarray(content_image) * (1 - noise)


class AdamOptimizer:
    """The lab's Adam (beta1 0.9, beta2 0.999, eps 1e-8) on an image of shape ``diff_shape``:
    vggjit.optimizers.Adam."""

    def __init__(self, lr: float, diff_shape):
        self.diff_shape = tuple(int(d) for d in diff_shape)
        self._adam = Adam(lr)

    @property
    def lr(self) -> float:
        return self._adam.lr

    @property
    def step(self) -> int:
        return self._adam.t

    def update(self, input, grad):
        """One step: returns the updated image."""
        if tuple(np.shape(grad)) != self.diff_shape or np.shape(input) != np.shape(grad):
            raise InputError(f"AdamOptimizer.update: image {np.shape(input)} and gradient "
                             f"{np.shape(grad)} must both have the shape {self.diff_shape}")
        return self._adam.update(np.asarray(input, np.float64), np.asarray(grad, np.float64))


__all__ = ["VGG19", "AdamOptimizer", "get_random_img", "ContentLossLayer", "StyleLossLayer",
           "ConvolutionalLayer", "MaxPoolingLayer", "FlattenLayer", "FullyConnectedLayer",
           "ReLULayer", "SoftmaxLossLayer"]
