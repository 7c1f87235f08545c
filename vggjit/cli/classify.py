"""`vggjit classify`: ImageNet classes of images with VGG19 or VGG16."""
from __future__ import annotations

import sys

from . import add_driver_option, add_weights_option, subcommand

DESCRIPTION = """\
Classify images into the 1000 ImageNet classes with VGG19 or VGG16 (whichever the weight file
holds; the first line on stderr names it and its source).

Each image is read with its EXIF orientation applied, converted to RGB (grey, palette, RGBA,
CMYK and 16-bit images are fine), resized, and the weight file's mean pixel is subtracted.
--resize crop (the default, the standard evaluation transform) scales the shorter side to 256
and takes the centre 224x224; --resize stretch resizes the whole image to 224x224 as the lab
does. An image that cannot be read is reported by name and skipped; the exit status is then 1.

Many images: IMG may be a directory (its images, recursively), a glob ('photos/**/*.jpg',
quoted) or a file; --manifest adds a list of paths. With -o results.jsonl (or .csv, .parquet)
each image's record is written as soon as it is classified, and running the same command again
resumes: images already in the file are skipped. --workers N runs on a local Dask cluster of N
processes, --scheduler ADDRESS on an existing one (pip install "vggjit[cluster]"); the results
are the same. See docs/scale-out.md.

Weights: --weights PATH (MatConvNet .mat, PyTorch .pth, .safetensors, ONNX, Keras .h5 or a
converted .npz), else $VGGJIT_WEIGHTS, else $VGGJIT_HOME/imagenet-vgg-verydeep-19.mat and the
torch hub, Hugging Face and Keras caches; get them once with `vggjit weights fetch`. A file
without VGG's classifier (a fine-tuned model's convolution stack) is refused."""

EPILOG = """\
examples:
  vggjit classify cat.jpg
  vggjit classify photos/*.jpg --top-k 1 --batch-size 8
  vggjit classify cat.jpg --json | jq '.top[0].description'
  vggjit classify cat.jpg --resize stretch --driver naive
  vggjit classify cat.jpg --weights vgg16-397923af.pth      (torchvision's VGG16)
  vggjit classify cat.jpg --weights vgg19.onnx --preprocess torchvision
  vggjit classify cat.jpg --driver cnml-dlp --quant params.npz   (int8, see `vggjit quantize`)
  vggjit classify photos/ -o results.jsonl            (resumes if interrupted)
  vggjit classify --manifest val.txt -o val.csv --workers 2 --batch-size 8
  vggjit classify 'frames/*.png' -o out.jsonl --scheduler tcp://10.0.0.5:8786

output:
  a table per image (rank, class index, WordNet id, probability, description), or with
  --json one JSON object per line and image:
  {"path": ..., "top": [{"rank": 1, "index": 281, "wnid": "n02123045",
   "description": "tabby, tabby cat", "probability": 0.53}, ...]}
  and {"path": ..., "error": ...} for an image that could not be read.
  With -o the same records go to the file (nothing on stdout); stderr shows the count up
  front, a progress bar with images/s and the ETA, and a summary (done, failed, skipped, time)."""

#: Show a progress bar (on a terminal) from this many images on.
PROGRESS_FROM = 8


def register(subparsers) -> None:
    parser = subcommand(subparsers, "classify", help="ImageNet top-k classes of images",
                        description=DESCRIPTION, epilog=EPILOG, run=run)
    parser.add_argument("images", nargs="*", metavar="IMG",
                        help="image files, directories (recursive) or quoted globs")
    add_weights_option(parser)
    parser.add_argument("--top-k", type=int, default=5, metavar="K",
                        help="how many classes to show per image (default: 5)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per image and line instead of tables")
    add_driver_option(parser)
    parser.add_argument("--quant", metavar="PARAMS.npz",
                        help="int8 quantisation parameters for the cnml-dlp driver (made by "
                             "`vggjit quantize`); implies --driver cnml-dlp")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N",
                        help="images per forward pass and per cluster task (default: 4; larger "
                             "batches raise throughput and memory use)")
    parser.add_argument("--resize", choices=("crop", "stretch"), default="crop",
                        help="crop: shorter side 256, centre 224x224 (default); stretch: whole "
                             "image to 224x224")
    batch = parser.add_argument_group("many images")
    batch.add_argument("--manifest", action="append", default=[], metavar="FILE",
                       help="a text file of image paths, one per line (relative ones to the "
                            "file's directory); may be repeated")
    batch.add_argument("-o", "--output", metavar="RESULTS",
                       help="write one record per image to RESULTS.jsonl, .csv or .parquet "
                            "(pyarrow) as they complete; an existing file is resumed")
    batch.add_argument("--overwrite", action="store_true",
                       help="start the results file afresh instead of resuming it")
    batch.add_argument("--retry-failed", action="store_true",
                       help="when resuming, classify again the images recorded with an error")
    batch.add_argument("--workers", type=int, metavar="N",
                       help="run on a local Dask cluster of N worker processes")
    batch.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on the Dask cluster whose scheduler is at ADDRESS "
                            "(tcp://HOST:8786); paths must be valid on the workers")
    batch.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                       help="seconds to wait for the scheduler (default: 10)")


def run(args) -> int:
    from ..batch.classify import classify_batch
    from ..batch.cluster import Where
    from ..batch.inputs import Inputs
    from ..batch.tasks import ClassifySpec, check_top_k, network_for
    from ..errors import InputError
    from ..registry import get_driver
    from ..weights import describe_network, find_weights

    if args.weights == "random":
        raise InputError("--weights random is for style transfer: random weights' classes mean "
                         "nothing; classify needs ImageNet weights (`vggjit weights fetch`)")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.quant and args.driver not in (None, "cnml-dlp"):
        raise InputError(f"--quant is for the cnml-dlp driver, not {args.driver!r}")
    if (args.overwrite or args.retry_failed) and not args.output:
        raise InputError("--overwrite and --retry-failed are about the results file: give -o")
    where = Where(workers=args.workers, scheduler=args.scheduler,
                  connect_timeout=args.connect_timeout)
    inputs = Inputs(args.images, args.manifest, unique=bool(args.output))
    # Cheap checks first, before anything slow: a bad driver name, then no weights. On an
    # existing cluster the weights and the driver need only exist on the workers.
    if args.scheduler and args.weights:
        weights = args.weights
    else:
        if not args.quant and not (args.scheduler and args.driver):
            get_driver(args.driver)
        weights = str(find_weights(args.weights))
    spec = ClassifySpec(weights=weights, driver=args.driver, quant=args.quant,
                        top_k=args.top_k, resize=args.resize, preprocess=args.preprocess)
    if where.in_process:
        # Loaded once here and kept for the tasks: which network runs, whether a batch fits in
        # memory and how long the driver will take are said before the first image is read.
        net = network_for(spec)
        print(f"vggjit classify: {describe_network(net)}", file=sys.stderr, flush=True)
        check_top_k(net, args.top_k)
        count = inputs.count()
        _check_batch_memory(net, max(1, min(args.batch_size, count)))
        _say_what_the_driver_will_do(net, count, bool(args.quant))

    many = bool(args.output) or not where.in_process or args.manifest
    if args.output:
        on_record = None  # the records go to the file; the terminal shows progress
    else:
        def on_record(record, progress) -> None:
            if "error" in record:
                progress.write(f"vggjit classify: {record['error']}", file=sys.stderr)
            if args.json or "error" not in record:
                progress.write(_format(record, args.json))

    def log(line: str) -> None:
        if many:
            print(f"vggjit classify: {line}", file=sys.stderr, flush=True)

    try:
        summary = classify_batch(
            inputs, spec, batch_size=args.batch_size, output=args.output,
            overwrite=args.overwrite, retry_failed=args.retry_failed, where=where,
            on_record=on_record, log=log,
            progress=None if (many or args.images and len(args.images) >= PROGRESS_FROM)
            else False)
    except KeyboardInterrupt:
        if args.output:
            print(f"vggjit classify: interrupted; the finished images are in {args.output}; "
                  f"run the same command again to continue", file=sys.stderr)
        raise
    if many:
        where_to = f" -> {args.output}" if args.output else ""
        print(f"vggjit classify: {summary.line()}{where_to}", file=sys.stderr)
    elif summary.failed:
        print(f"vggjit classify: {summary.failed} of {summary.total} image(s) could not be "
              f"classified", file=sys.stderr)
    return 1 if summary.failed or summary.lost else 0


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


def _format(record: dict, as_json: bool) -> str:
    import json

    if as_json:
        return json.dumps(record)
    lines = [f"{record['path']}",
             f"  {'rank':>4}  {'class':>5}  {'wnid':10} {'prob':>7}  description"]
    for entry in record["top"]:
        lines.append(f"  {entry['rank']:>4}  {entry['index']:>5}  {entry['wnid']:10} "
                     f"{entry['probability']:7.4f}  {entry['description']}")
    return "\n".join(lines)
