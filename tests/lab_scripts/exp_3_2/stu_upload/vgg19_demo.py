# A student-style vgg19_demo.py written against Cambricon's pycnml API (not vggjit's):
# the weight file read with scipy.io.loadmat and indexed the course's way, fc6 laid out in
# the H, W, C order of the device's flatten. It knows nothing about vggjit.
import numpy as np
import pycnml
import scipy.io
from PIL import Image


class VGG19(object):
    def __init__(self):
        self.net = pycnml.CnmlNet(16)
        self.input_quant_params = []
        self.filter_quant_params = []

    def build_model(self, param_path, quant_param_path):
        self.param_path = param_path
        quant = np.load(quant_param_path)
        pairs_in, pairs_filter = quant['input'], quant['filter']
        for i in range(0, len(pairs_in), 2):
            self.input_quant_params.append(pycnml.QuantParam(int(pairs_in[i]), float(pairs_in[i + 1])))
            self.filter_quant_params.append(pycnml.QuantParam(int(pairs_filter[i]), float(pairs_filter[i + 1])))
        raw = scipy.io.loadmat(param_path)
        self.layer_specs = []
        for i in range(raw['layers'].shape[1]):
            entry = raw['layers'][0][i][0][0]
            kind = str(entry['type'][0])
            name = str(entry['name'][0])
            if kind == 'conv':
                weight = entry['weights'][0][0]
                self.layer_specs.append((name, kind, weight.shape))
            else:
                self.layer_specs.append((name, kind, None))
        self.net.setInputShape(1, 3, 224, 224)
        q = 0
        for name, kind, shape in self.layer_specs:
            if kind == 'conv' and name.startswith('conv'):
                self.net.createConvLayer(name, shape[3], 3, 1, 1, 1, self.input_quant_params[q])
                q += 1
            elif kind == 'conv':  # fc6, fc7, fc8 are stored as convolutions
                if name == 'fc6':
                    self.net.createFlattenLayer('flatten', [1, shape[0] * shape[1] * shape[2], 1, 1])
                self.net.createMlpLayer(name, shape[3], self.input_quant_params[q])
                q += 1
            elif kind == 'relu':
                self.net.createReLuLayer(name)
            elif kind == 'pool':
                self.net.createPoolingLayer(name, 2, 2)
            elif kind == 'softmax':
                self.net.createSoftmaxLayer('softmax', 1)

    def load_model(self):
        raw = scipy.io.loadmat(self.param_path)
        self.image_mean = np.mean(raw['normalization'][0][0][0], axis=(0, 1))
        count = 0
        for idx in range(self.net.size()):
            name = self.net.getLayerName(idx)
            if 'conv' in name:
                weight, bias = raw['layers'][0][idx][0][0][0][0]
                weight = np.transpose(weight, [3, 2, 0, 1]).flatten().astype(np.float64)
            elif 'fc' in name:
                weight, bias = raw['layers'][0][idx - 1][0][0][0][0]
                weight = weight.reshape(-1, weight.shape[3]).T.flatten().astype(np.float64)
            else:
                continue
            self.net.loadParams(idx, weight, bias.reshape(-1).astype(np.float64),
                                self.filter_quant_params[count])
            count += 1

    def load_image(self, image_dir):
        image = Image.open(image_dir).convert('RGB').resize((224, 224), Image.BILINEAR)
        image = np.asarray(image, dtype=np.float64) - self.image_mean
        self.net.setInputData(image.transpose(2, 0, 1).flatten())

    def forward(self):
        self.net.forward()
