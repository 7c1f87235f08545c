"""`vggjit classify`: ImageNet classes of images with VGG19."""
from __future__ import annotations

import sys

from . import add_driver_option, add_weights_option, subcommand

DESCRIPTION = """\
Classify images into the 1000 ImageNet classes with VGG19 (or VGG16, if that is the weight file).

Each image is read with its EXIF orientation applied, converted to RGB (grey, palette, RGBA,
CMYK and 16-bit images are fine), resized, and the weight file's mean pixel is subtracted.
--resize crop (the default, the standard evaluation transform) scales the shorter side to 256
and takes the centre 224x224; --resize stretch resizes the whole image to 224x224 as the lab
does. An image that cannot be read is reported by name and skipped; the exit status is then 1.

Weights: --weights PATH, else $VGGJIT_WEIGHTS, else $VGGJIT_HOME/imagenet-vgg-verydeep-19.mat;
get them once with `vggjit weights fetch`."""

EPILOG = """\
examples:
  vggjit classify cat.jpg
  vggjit classify photos/*.jpg --top-k 1 --batch-size 8
  vggjit classify cat.jpg --json | jq '.top[0].description'
  vggjit classify cat.jpg --resize stretch --driver naive
  vggjit classify cat.jpg --driver cnml-dlp --quant params.npz   (int8, see `vggjit quantize`)

output:
  a table per image (rank, class index, WordNet id, probability, description), or with
  --json one JSON object per line and image:
  {"path": ..., "top": [{"rank": 1, "index": 281, "wnid": "n02123045",
   "description": "tabby, tabby cat", "probability": 0.53}, ...]}
  and {"path": ..., "error": ...} for an image that could not be read."""

#: Show a progress bar (on a terminal) from this many images on.
PROGRESS_FROM = 8


def register(subparsers) -> None:
    parser = subcommand(subparsers, "classify", help="ImageNet top-k classes of images",
                        description=DESCRIPTION, epilog=EPILOG, run=run)
    parser.add_argument("images", nargs="+", metavar="IMG", help="image files")
    add_weights_option(parser)
    parser.add_argument("--top-k", type=int, default=5, metavar="K",
                        help="how many classes to show per image (default: 5)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per image and line instead of tables")
    add_driver_option(parser)
    parser.add_argument("--quant", metavar="PARAMS.npz",
                        help="int8 quantisation parameters for the cnml-dlp driver (made by "
                             "`vggjit quantize`); implies --driver cnml-dlp")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N",
                        help="images per forward pass (default: 1; larger batches raise "
                             "throughput and memory use)")
    parser.add_argument("--resize", choices=("crop", "stretch"), default="crop",
                        help="crop: shorter side 256, centre 224x224 (default); stretch: whole "
                             "image to 224x224")


def run(args) -> int:
    import json

    import numpy as np

    from ..errors import InputError
    from ..images import preprocess
    from ..network import Network
    from ..weights import find_weights

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    from ..registry import get_driver

    if args.quant and args.driver not in (None, "cnml-dlp"):
        raise InputError(f"--quant is for the cnml-dlp driver, not {args.driver!r}")
    # Cheap checks first, before anything slow: a bad driver name, then no weights.
    driver = (get_driver("cnml-dlp", quant=args.quant) if args.quant
              else get_driver(args.driver))
    path = find_weights(args.weights)
    net = Network.from_file(path, driver=driver)
    if args.quant:  # a file made for another network: say so before any image is read
        net.driver.quant.check_for([layer.name for layer in net.layers if layer.has_params])
    classes = net.layers[-2].cout
    if not 1 <= args.top_k <= classes:
        raise InputError(f"--top-k must be between 1 and {classes}, got {args.top_k}")
    _check_batch_memory(net, min(args.batch_size, len(args.images)))
    _say_what_the_driver_will_do(net, len(args.images), bool(args.quant))

    from tqdm import tqdm

    bar = tqdm(total=len(args.images), unit="image", file=sys.stderr, leave=False,
               disable=True if len(args.images) < PROGRESS_FROM else None)
    failed = 0

    def emit(text: str) -> None:
        bar.write(text, file=sys.stdout) if not bar.disable else print(text, flush=True)

    def report(image: str, message: str) -> None:
        nonlocal failed
        failed += 1
        bar.write(f"vggjit classify: {message}", file=sys.stderr)
        if args.json:
            emit(json.dumps({"path": image, "error": message}))

    pending: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        x = np.concatenate([arr for _, arr in pending])
        for (image, _), top in zip(pending, net.classify(x, top_k=args.top_k)):
            emit(_format(image, top, args.json))
        bar.update(len(pending))
        pending.clear()

    first = True
    for image in args.images:
        try:
            pending.append((image, preprocess(image, resize=args.resize,
                                              mean_pixel=net.mean_pixel)))
        except InputError as exc:
            report(image, str(exc))
            bar.update(1)
            continue
        if len(pending) >= args.batch_size or first:
            flush()  # the first image alone: its answer appears as soon as possible
            first = False
    flush()
    bar.close()
    if failed:
        print(f"vggjit classify: {failed} of {len(args.images)} image(s) could not be "
              f"classified", file=sys.stderr)
    return 1 if failed else 0


def _check_batch_memory(net, batch: int) -> None:
    """Refuse a batch whose activations cannot fit, naming the largest --batch-size that can."""
    from ..memory import available_bytes, check_fits
    from ..workload import forward_bytes_per_image

    per_image = forward_bytes_per_image(net.layers)
    budget = available_bytes()
    largest = max(0, budget // per_image) if budget is not None else batch
    hint = (f"the largest --batch-size that fits is {largest}" if largest
            else "not even one image fits; free some memory")
    check_fits(batch * per_image, f"classifying a batch of {batch} image(s)", hint)


def _say_what_the_driver_will_do(net, images: int, quantised: bool) -> None:
    """Once, before the work: a slow driver's time estimate; a DLP without --quant."""
    from ..workload import forward_flops, slow_work_note

    note = slow_work_note(net.driver, images * forward_flops(net.layers),
                          f"classifying {images} image(s)")
    if note:
        print(f"vggjit classify: warning: {note}", file=sys.stderr)
    if net.driver.name == "cnml-dlp" and not quantised:
        print("vggjit classify: note: cnml-dlp without --quant calibrates int8 parameters from "
              "each image's own values as it runs (dynamic calibration); for fixed parameters, "
              "as the device uses, make a file with `vggjit quantize` and pass --quant",
              file=sys.stderr)


def _format(image: str, top, as_json: bool) -> str:
    import json

    if as_json:
        return json.dumps({"path": image, "top": [
            {"rank": rank, "index": index, "wnid": wnid, "description": description,
             "probability": round(probability, 6)}
            for rank, index, wnid, description, probability in top]})
    lines = [f"{image}", f"  {'rank':>4}  {'class':>5}  {'wnid':10} {'prob':>7}  description"]
    for rank, index, wnid, description, probability in top:
        lines.append(f"  {rank:>4}  {index:>5}  {wnid:10} {probability:7.4f}  {description}")
    return "\n".join(lines)
