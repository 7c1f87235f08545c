"""``stu_upload.vgg_cpu``: VGG19 classification on the CPU from the lab's layers (experiment 3.1).

    vgg = VGG19(param_path='../imagenet-vgg-verydeep-19.mat')
    vgg.build_model(); vgg.init_model(); vgg.load_model(); vgg.load_image('../cat1.jpg')
    prob = vgg.forward()          # or layer by layer: vgg.layers[name].forward(x)
    vgg.evaluate()                # prints 'Classification result: id = 281, prob = ...'

``param_layer_name`` lists conv1_1 .. pool5, ``flatten``, fc6, relu6, fc7, relu7, fc8,
``softmax``; ``layers`` maps each name to its layer. The layers are the weight file's (any
VGG-shaped file works); convolutions and pooling use ``type=1`` (the fast driver).
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import VggjitError
from .files import (course_conv_weight, fc_columns_hwc, layer_table, load_model_weights,
                    read_image, read_weights)
from .layers_1 import FullyConnectedLayer, ReLULayer, SoftmaxLossLayer
from .layers_2 import ConvolutionalLayer, FlattenLayer, MaxPoolingLayer

#: The course's input size: the whole image resized to 224 x 224.
IMAGE_SIZE = 224


class VGG19:
    """VGG19 as the course's experiment 3.1 builds it (see the module docstring)."""

    def __init__(self, param_path=None):
        self.param_path = param_path
        self.param_layer_name: list[str] = []
        self.layers: dict[str, object] = {}
        self.image_mean = None
        self.input_image = None
        self._weights = None

    def build_model(self) -> None:
        """Make every layer (the weight file's table when the file is there, else VGG19's)."""
        print("Building model...")
        table = layer_table(self.param_path)
        self.param_layer_name, self.layers = [], {}
        channels = 3
        for layer in table:
            if layer.kind == "conv":
                self._add(layer.name, ConvolutionalLayer(3, layer.cin, layer.cout, 1, 1, type=1))
                channels = layer.cout
            elif layer.kind == "relu":
                self._add(layer.name, ReLULayer())
            elif layer.kind == "pool":
                self._add(layer.name, MaxPoolingLayer(2, 2, type=1))
            elif layer.kind == "fc":
                if "flatten" not in self.layers:
                    side = int(round((layer.cin // channels) ** 0.5))
                    self._add("flatten", FlattenLayer([channels, side, side], [layer.cin]))
                    self._pool5_channels = channels
                self._add(layer.name, FullyConnectedLayer(layer.cin, layer.cout))
            elif layer.kind == "softmax":
                self._add("softmax", SoftmaxLossLayer())

    def _add(self, name, layer) -> None:
        self.param_layer_name.append(name)
        self.layers[name] = layer

    def _with_params(self):
        if not self.layers:
            raise VggjitError("VGG19: call build_model() first")
        return [name for name in self.param_layer_name
                if isinstance(self.layers[name], (ConvolutionalLayer, FullyConnectedLayer))]

    def init_model(self) -> None:
        """Random parameters in every conv and fc layer (normal, std 0.01)."""
        print("Initializing parameters of each layer in vgg-19...")
        for name in self._with_params():
            self.layers[name].init_param()

    def load_model(self) -> None:
        """The weight file's parameters, in the course's layouts; the mean pixel."""
        names = self._with_params()
        ws, self.image_mean = load_model_weights(self.param_path)
        for name in names:
            w, b = ws.params[name]
            layer = self.layers[name]
            if isinstance(layer, ConvolutionalLayer):
                layer.load_param(course_conv_weight(w), b)
            else:
                if name == self._first_fc():  # the flatten hands it pool5 in H, W, C order
                    w = fc_columns_hwc(w, self._pool5_channels)
                layer.load_param(np.asarray(w).T, np.asarray(b).reshape(1, -1))

    def _first_fc(self) -> str:
        return self.param_layer_name[self.param_layer_name.index("flatten") + 1]

    def load_image(self, image_dir) -> np.ndarray:
        """The image resized to 224 x 224 (bilinear, no crop) minus the mean:
        ``input_image`` [1, 3, 224, 224] float64."""
        print(f"Loading and preprocessing image from {image_dir}")
        mean = self.image_mean if self.image_mean is not None else self._file_mean()
        self.input_image, _ = read_image(image_dir, IMAGE_SIZE, IMAGE_SIZE, mean)
        return self.input_image

    def _file_mean(self):
        self.image_mean = np.asarray(read_weights(self.param_path).mean_pixel, np.float64)
        return self.image_mean

    def forward(self) -> np.ndarray:
        """Every layer on ``input_image``; returns the probabilities [1, classes]."""
        if self.input_image is None:
            raise VggjitError("VGG19.forward: call load_image(path) first")
        print("Inferencing...")
        started = time.time()
        current = self.input_image
        for name in self.param_layer_name:
            current = self.layers[name].forward(current)
        print(f"Inference time: {time.time() - started:f}")
        return current

    def evaluate(self) -> int:
        """forward() and print the most probable class; returns its index."""
        prob = self.forward()
        top1 = int(np.argmax(prob[0]))
        print("Classification result: id = %d, prob = %f" % (top1, prob[0, top1]))
        return top1


__all__ = ["VGG19"]
