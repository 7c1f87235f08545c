# Experiment 3.3 call sequence: the conv speed-up test (type=0 against type=1), then Adam
# style transfer. Usage: main_style.py CHANNELS CONV_H CONV_W IMAGE_H IMAGE_W STEPS
# (the course's values: 256 24 40 192 320 100).
import sys
import time

import numpy as np

from stu_upload.exp_3_3_style_transfer import *  # noqa: F403 - the course's script does so
from stu_upload.layers_2 import ConvolutionalLayer


def mean_square_error(a, b):
    return float(np.mean((np.ravel(a) - np.ravel(b)) ** 2))


def test_speed_up(channels, height, width):
    data = np.random.rand(1, channels, height, width)
    dloss = np.random.rand(1, channels, height, width)
    weight = np.random.rand(channels, 3, 3, channels)
    bias = np.random.rand(channels)
    results = []
    for kind in (0, 1):
        conv = ConvolutionalLayer(3, channels, channels, 1, 1, kind)
        conv.init_param()
        conv.load_param(weight, bias)
        stamp = time.time()
        forward = conv.forward(data)
        forward_time = time.time() - stamp
        stamp = time.time()
        backward = conv.backward(dloss)
        backward_time = time.time() - stamp
        print('conv type %d: forward %f ms, backward %f ms' % (kind, forward_time * 1000, backward_time * 1000))
        results.append((forward, backward, forward_time, backward_time))
    (f0, b0, tf0, tb0), (f1, b1, tf1, tb1) = results
    if mean_square_error(f0, f1) < 0.003 and mean_square_error(b0, b1) < 0.003:
        print('SPEEDUP CONV TEST PASS.')
    else:
        print('SPEEDUP CONV TEST FAILED.')
        exit()
    print('CONV FORWARD SPEEDUP RATIO: %f' % (tf0 / tf1))
    print('CONV BACKWARD SPEEDUP RATIO: %f' % (tb0 / tb1))


if __name__ == '__main__':
    channels, conv_h, conv_w, height, width, steps = [int(a) for a in sys.argv[1:7]]
    np.random.seed(1234)
    test_speed_up(channels, conv_h, conv_w)
    print('-------------------------')
    CONTENT_LOSS_LAYERS = ['relu4_2']
    STYLE_LOSS_LAYERS = ['relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1']
    NOISE = 0.5
    ALPHA, BETA = 1, 500

    vgg = VGG19(param_path='../imagenet-vgg-verydeep-19.mat')
    vgg.build_model()
    vgg.init_model()
    vgg.load_model()
    content_loss_layer = ContentLossLayer()
    style_loss_layer = StyleLossLayer()
    adam = AdamOptimizer(1.0, [1, 3, height, width])

    content_image, content_shape = vgg.load_image('../content.png', height, width)
    style_image, _ = vgg.load_image('../style.png', height, width)
    content_layers = vgg.forward(content_image, CONTENT_LOSS_LAYERS)
    style_layers = vgg.forward(style_image, STYLE_LOSS_LAYERS)
    transfer_image = get_random_img(content_image, NOISE)
    images, losses, gradients = [], [], []
    for step in range(steps):
        start = time.time()
        transfer_layers = vgg.forward(transfer_image, CONTENT_LOSS_LAYERS + STYLE_LOSS_LAYERS)
        content_loss, style_loss = [], []
        content_diff = np.zeros(transfer_image.shape)
        style_diff = np.zeros(transfer_image.shape)
        for layer in CONTENT_LOSS_LAYERS:
            content_loss.append(content_loss_layer.forward(transfer_layers[layer], content_layers[layer]))
            dloss = content_loss_layer.backward(transfer_layers[layer], content_layers[layer])
            content_diff += vgg.backward(dloss, layer)
        for layer in STYLE_LOSS_LAYERS:
            style_loss.append(style_loss_layer.forward(transfer_layers[layer], style_layers[layer]))
            dloss = style_loss_layer.backward(transfer_layers[layer], style_layers[layer])
            style_diff += vgg.backward(dloss, layer)
        total_loss = ALPHA * np.mean(content_loss) + BETA * np.mean(style_loss)
        image_diff = ALPHA * content_diff / len(CONTENT_LOSS_LAYERS) + BETA * style_diff / len(STYLE_LOSS_LAYERS)
        images.append(transfer_image)
        losses.append(total_loss)
        gradients.append(image_diff)
        transfer_image = adam.update(transfer_image, image_diff)
        print('Step %d, loss = %f' % (step, total_loss), content_loss, style_loss)
        print('cost time: %f' % (time.time() - start))
        vgg.save_image(transfer_image, content_shape, 'output/output_' + str(step) + '.jpg')
    np.savez('out_steps.npz', images=np.array(images), losses=np.array(losses),
             gradients=np.array(gradients), final=transfer_image)
