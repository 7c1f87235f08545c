"""``stu_upload.vgg19_demo``: VGG19 on the DLP through ``pycnml`` (experiment 3.2).

    vgg = VGG19()
    vgg.build_model(param_path='../imagenet-vgg-verydeep-19.mat',
                    quant_param_path='../vgg19_quant_param_new.npz')
    vgg.load_model(); vgg.load_image('../cat1.jpg'); vgg.forward()
    prob = vgg.net.getOutputData()      # a list of the class probabilities

``pycnml`` is Cambricon's library where it is installed, else the cnml-dlp driver's emulator
of it (vggjit.lab.engine.pycnml_module), so the numbers are those of
``vggjit classify --driver cnml-dlp --quant PARAMS.npz --resize stretch``. The network is
built with the library's documented calls: a flatten layer before fc6 (which the weight file
lacks, so fc layers sit one index further on than in the file), the i-th (position, scale)
pair of the quantisation file's ``input`` and ``filter`` for the i-th conv/fc layer, conv
weights OIHW, fc weights [out, in] with fc6's inputs in the H, W, C order of the MLU's NHWC
tensors (docs/dlp.md).
"""
from __future__ import annotations

import numpy as np

from ..errors import VggjitError
from ..quant import load_quant
from .engine import pycnml_module
from .files import fc_columns_hwc, read_image, read_weights

#: The core count the lab gives CnmlNet.
CORES = 16
IMAGE_SIZE = 224


class VGG19:
    """VGG19 built on ``pycnml`` (see the module docstring); ``net`` is the CnmlNet."""

    def __init__(self):
        self.pycnml = pycnml_module()
        self.net = self.pycnml.CnmlNet(CORES)
        self.input_quant_params = []
        self.filter_quant_params = []
        self._weights = None

    def build_model(self, param_path=None, quant_param_path="vgg19_quant_param_new.npz"):
        """Create every layer with its input quantisation (pairs read from the .npz)."""
        self.param_path = param_path
        ws = self._weights = read_weights(param_path)
        names = [layer.name for layer in ws.layers if layer.has_params]
        table = load_quant(quant_param_path)
        table.check_for(names)
        qp = self.pycnml.QuantParam
        self.input_quant_params = [qp(p.position, p.scale) for p in table.input]
        self.filter_quant_params = [qp(p.position, p.scale) for p in table.filter]
        self.net.setInputShape(1, 3, IMAGE_SIZE, IMAGE_SIZE)
        k, channels, flattened = 0, 3, False
        for layer in ws.layers:
            if layer.kind == "conv":
                self.net.createConvLayer(layer.name, layer.cout, 3, 1, 1, 1,
                                         self.input_quant_params[k])
                channels, k = layer.cout, k + 1
            elif layer.kind == "relu":
                self.net.createReLuLayer(layer.name)
            elif layer.kind == "pool":
                self.net.createPoolingLayer(layer.name, 2, 2)
            elif layer.kind == "fc":
                if not flattened:
                    self.net.createFlattenLayer("flatten", [1, layer.cin, 1, 1])
                    self._pool5_channels, self._first_fc, flattened = channels, layer.name, True
                self.net.createMlpLayer(layer.name, layer.cout, self.input_quant_params[k])
                k += 1
            elif layer.kind == "softmax":
                self.net.createSoftmaxLayer("softmax", 1)

    def load_model(self):
        """Load every conv and fc layer's parameters into the net, by the net's own index."""
        if self._weights is None:
            raise VggjitError("vgg19_demo.VGG19: call build_model(param_path, "
                              "quant_param_path) first")
        params = self._weights.params
        self.image_mean = np.asarray(self._weights.mean_pixel, np.float64)
        k = 0
        for i in range(self.net.size()):
            if not self.net.needToBeQuantized(i):
                continue
            name = self.net.getLayerName(i)
            w, b = params[name]
            if name == self._first_fc:
                w = fc_columns_hwc(w, self._pool5_channels)
            self.net.loadParams(i, np.asarray(w, np.float64).reshape(-1),
                                np.asarray(b, np.float64).reshape(-1),
                                self.filter_quant_params[k])
            k += 1

    def load_image(self, image_dir):
        """The image resized to 224 x 224 (bilinear, no crop) minus the mean, NCHW, handed to
        the net with setInputData."""
        mean = self._weights.mean_pixel if self._weights is not None else None
        if mean is None:
            raise VggjitError("vgg19_demo.VGG19: call build_model(...) before load_image")
        self.input_image, _ = read_image(image_dir, IMAGE_SIZE, IMAGE_SIZE, mean)
        self.net.setInputData(self.input_image.reshape(-1))

    def forward(self):
        """Run the net; the probabilities are then ``self.net.getOutputData()``."""
        self.net.forward()


__all__ = ["VGG19"]
