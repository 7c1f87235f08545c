# Experiment 3.1 call sequence: VGG19 on the CPU from stu_upload.vgg_cpu, layer by layer.
import time

import numpy as np

from stu_upload.vgg_cpu import VGG19


def mean_square_error(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(np.mean((a - b) ** 2))


def run_layers(vgg):
    current, pool5 = vgg.input_image, None
    started = time.time()
    for name in vgg.param_layer_name:
        current = vgg.layers[name].forward(current)
        if name == 'pool5':
            pool5 = current
    print('Inference time: %f' % (time.time() - started))
    return current, pool5


if __name__ == '__main__':
    vgg = VGG19(param_path='../imagenet-vgg-verydeep-19.mat')
    vgg.build_model()
    vgg.init_model()
    vgg.load_model()
    vgg.load_image('../cat1.png')
    prob, pool5 = run_layers(vgg)
    top1 = np.argmax(prob[0])
    print('Classification result: id = %d, prob = %f' % (top1, prob[0, top1]))
    np.save('out_pool5.npy', pool5)
    np.save('out_prob.npy', prob)
    error = mean_square_error(pool5, np.load('pool5_dump.npy'))
    print('test pool5 mse: %f' % error)
    if error < 0.003:
        print('CHECK POOL5 PASS.')
    else:
        print('CHECK POOL5 FAILED.')
        exit()
