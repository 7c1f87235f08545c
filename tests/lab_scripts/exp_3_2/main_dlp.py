# Experiment 3.2 call sequence: VGG19 on the DLP through stu_upload.vgg19_demo (pycnml).
import time

import numpy as np

from stu_upload.vgg19_demo import VGG19


def evaluate(vgg):
    started = time.time()
    vgg.forward()
    print('inference time: %f' % (time.time() - started))
    result = vgg.net.getOutputData()
    best = max(result)
    print('Classification result: id = %d, prob = %f' % (result.index(best), best))
    return result


if __name__ == '__main__':
    vgg = VGG19()
    vgg.build_model(param_path='../imagenet-vgg-verydeep-19.mat',
                    quant_param_path='../vgg19_quant_param_new.npz')
    vgg.load_model()
    vgg.load_image('../cat1.png')
    for _ in range(2):
        result = evaluate(vgg)
    np.save('out_prob.npy', np.array(result))
