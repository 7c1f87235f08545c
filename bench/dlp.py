"""The DLP (cnml-dlp) emulator: VGG19 forward time beside float32, and int8 accuracy.

* Speed: VGG19 (random He-normal weights), one 224x224 image, the emulator's whole-network
  forward and the float32 driver's (numba-cpu) forward, interleaved in the same run; medians.
  Target (docs/design-notes.md, note 12): the emulator within 3x of float32.
* Accuracy: the int8-vs-float32 report (vggjit.quant.accuracy_report) on the project's own
  images: procedurally generated ones (no photographs ship with vggjit), calibrated on one half
  and evaluated on the other. With the real ImageNet weights (found like `vggjit classify`
  finds them) when present, else random weights - then the agreement measures int8 fidelity
  only, not ImageNet accuracy.

    python -m bench.dlp [--quick]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import interleaved, markdown_table, suite_main  # noqa: E402


# -- images ------------------------------------------------------------------------------
def procedural_images(count: int, seed: int = 0):
    """``count`` varied 320x256 RGB PIL images: gradients, stripes, rings, blobs, checkers."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = 256, 320
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    images = []
    for i in range(count):
        kind = i % 5
        c = rng.uniform(0, 255, (2, 3))
        if kind == 0:    # diagonal gradient between two colours
            t = ((xx + yy) / (w + h))[..., None]
            img = c[0] * (1 - t) + c[1] * t
        elif kind == 1:  # stripes at a random angle and period
            a, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
            t = (0.5 + 0.5 * np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period))
            img = c[0] * (1 - t[..., None]) + c[1] * t[..., None]
        elif kind == 2:  # concentric rings
            r = np.hypot(xx - rng.uniform(0, w), yy - rng.uniform(0, h))
            t = (0.5 + 0.5 * np.cos(r / rng.uniform(4, 20)))[..., None]
            img = c[0] * (1 - t) + c[1] * t
        elif kind == 3:  # smooth random blobs
            noise = rng.standard_normal((h // 16 + 1, w // 16 + 1, 3))
            big = np.kron(noise, np.ones((16, 16, 1)))[:h, :w]
            img = 128 + 60 * big
        else:            # checkerboard
            size = rng.integers(8, 48)
            t = (((xx // size) + (yy // size)) % 2)[..., None]
            img = c[0] * (1 - t) + c[1] * t
        img = img + rng.normal(0, 6, img.shape)  # sensor-like noise
        images.append(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB"))
    return images


def _network(driver):
    """(net, description): the real weights when they can be found, else random VGG19."""
    from vggjit.network import VGG19, Network
    try:
        from vggjit.weights import find_weights, load_weights
        ws = load_weights(find_weights())
        if ws.has_classifier:  # a convolution stack alone cannot be compared on classes
            return Network.from_weights(ws, driver), f"ImageNet weights: {ws.label}"
    except Exception:
        pass
    return VGG19.random(seed=0, driver=driver), "random He-normal VGG19 (seed 0)"


# -- the suite ---------------------------------------------------------------------------
def run(quick: bool = False) -> dict:
    from vggjit.images import preprocess
    from vggjit.network import Network
    from vggjit.quant import accuracy_report, calibrate_network, float_driver, format_report
    from vggjit.registry import get_driver

    fp32 = float_driver()  # the best float32 driver: numba-cpu where installed
    net32, weights = _network(fp32)
    repeat = 3 if quick else 7
    count = 4 if quick else 10

    images = [preprocess(img, mean_pixel=net32.mean_pixel) for img in procedural_images(count)]
    calib, evaluate = images[: count // 2], images[count // 2:]
    table = calibrate_network(net32, calib)

    dlp = get_driver("cnml-dlp", quant=table, backend="emulator")
    netq = Network(net32.layers, net32.weights, driver=dlp, mean_pixel=net32.mean_pixel)
    x = evaluate[0]
    start = time.perf_counter()
    netq.forward(x)  # builds the graph: quantises every weight once
    build_s = time.perf_counter() - start
    net32.forward(x)  # warm-up (JIT compilation)
    # interleaved, so both see the same machine load
    times = interleaved({"float32": lambda: net32.forward(x), "emulator": lambda: netq.forward(x)},
                        repeat)
    t32, tq = times["float32"], times["emulator"]
    med32, medq = t32["median"], tq["median"]
    speed = {"float_driver": fp32.name, "weights": weights, "repeat": repeat,
             "float32_s": t32, "emulator_s": tq,
             "emulator_build_s": build_s, "ratio": medq / med32, "target_ratio": 3.0}

    report = accuracy_report(net32, dlp, evaluate)
    rows = [["VGG19 forward, 1 x 224 x 224, float32 (" + fp32.name + ")", med32,
             t32["min"], t32["max"]],
            ["VGG19 forward, 1 x 224 x 224, cnml-dlp emulator (int8/fp16)", medq, tq["min"],
             tq["max"]]]
    markdown = "\n\n".join([
        f"Weights: {weights}. Medians of {repeat} interleaved runs, seconds.",
        markdown_table(["", "median s", "min s", "max s"], rows),
        f"Emulator / float32: **{medq / med32:.2f}x** (target <= 3x). Building the emulator "
        f"graph (quantising every weight once): {build_s:.1f} s.",
        f"Accuracy: calibrated on {len(calib)} procedural images, evaluated on "
        f"{len(evaluate)} others.",
        "```\n" + format_report(report) + "\n```"])
    return {"speed": speed, "accuracy": report, "markdown": markdown}


def main(argv=None) -> int:
    return suite_main("dlp", run, __doc__.splitlines()[0], argv,
                      quick_help="fewer runs and images")


if __name__ == "__main__":
    sys.exit(main())
