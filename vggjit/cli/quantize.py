"""`vggjit quantize`: int8 parameters for the DLP (cnml-dlp) from calibration images, and the
int8-versus-float32 accuracy report."""
from __future__ import annotations

import sys

from . import add_weights_option, subcommand

EPILOG = """\
examples:
  vggjit quantize --weights imagenet-vgg-verydeep-19.mat photos/*.jpg -o params.npz
  vggjit quantize --weights W photos/*.jpg -o params.npz --report
  vggjit quantize --weights W --quant params.npz --report other/*.jpg   (evaluate a file)
  vggjit classify --driver cnml-dlp --quant params.npz cat.jpg

The file has the lab's format (keys `input` and `filter`, one (position, scale) pair per
conv/fc layer: 19 for VGG19); see docs/dlp.md."""


def register(subparsers) -> None:
    parser = subcommand(
        subparsers, "quantize",
        help="calibrate int8 parameters for the DLP (cnml-dlp) and report int8 accuracy",
        description="Run the float32 network over calibration images, record the largest "
                    "magnitude reaching every conv/fc\nlayer (and of every filter), and write "
                    "Cambricon's (position, scale) pairs in the lab's .npz format.\n"
                    "--report compares the int8 network (cnml-dlp) with float32 on the images: "
                    "top-1 / top-5\nagreement, the largest probability difference and the "
                    "SQNR of every layer.",
        run=run, epilog=EPILOG)
    add_weights_option(parser)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="calibration (and, with --report, evaluation) images")
    parser.add_argument("-o", "--output", metavar="PARAMS.npz",
                        help="where to write the parameters")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quant", metavar="PARAMS.npz",
                        help="evaluate this existing parameter file instead of calibrating "
                             "(needs --report)")
    parser.add_argument("--report", action="store_true",
                        help="print the int8 vs float32 accuracy report for the images")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--driver", metavar="NAME",
                        help="float32 driver for calibration and the reference (default: the "
                             "best available, numba-cpu where installed)")
    parser.add_argument("--resize", choices=("crop", "stretch"), default="crop",
                        help="crop: shorter side to 256 then the centre 224 (default); "
                             "stretch: straight to 224x224 (the lab's way)")


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="image", file=sys.stderr, disable=None)


def run(args) -> int:
    import json
    from pathlib import Path

    from .. import quant
    from ..errors import InputError
    from ..fileio import atomic_write, check_writable, input_file, refuse_input_as_output
    from ..images import preprocess
    from ..network import Network
    from ..registry import get_driver
    from ..weights import find_weights

    if args.quant and args.output:
        raise InputError("give either -o (calibrate and write a file) or --quant (evaluate an "
                         "existing file), not both")
    if not args.quant and not args.output:
        raise InputError("say where to write the parameters: -o PARAMS.npz (or evaluate a "
                         "file with --quant PARAMS.npz --report)")
    if args.quant and not args.report:
        raise InputError("--quant only makes sense with --report (nothing else to do)")
    # what the command reads; a weight file found through $VGGJIT_WEIGHTS is checked below
    inputs = [*args.images, args.quant, args.weights]
    if args.output:
        if not args.output.endswith(".npz"):
            raise InputError(f"{args.output}: the parameter file must end in .npz")
        refuse_input_as_output(args.output, inputs, "-o")
        check_writable(args.output, overwrite=args.overwrite)
    if args.json:
        refuse_input_as_output(args.json, inputs, "--json")
        check_writable(args.json, overwrite=True)
    for image in args.images:  # missing, a FIFO, a directory, a name too long: refused now
        input_file(image, "image file")
    table = quant.load_quant(args.quant) if args.quant else None

    driver = quant.float_driver(args.driver)
    if driver.name == "naive":
        print("vggjit quantize: note: using the naive reference driver (numba-cpu is not "
              "available): expect minutes per image", file=sys.stderr)
    weights = find_weights(args.weights)
    for output, option in ((args.output, "-o"), (args.json, "--json")):
        if output:
            refuse_input_as_output(output, [weights], option)
    net = Network.from_file(weights, driver=driver)
    names = [layer.name for layer in quant.param_layers(net)]
    if table is not None:
        table.check_for(names)

    def batches():
        for path in args.images:
            yield preprocess(path, resize=args.resize, mean_pixel=net.mean_pixel)

    if table is None:
        with _progress(len(args.images), "calibrating") as bar:
            calibrated = quant.calibrate_network(net, batches(), progress=bar.update)
        out = quant.save_quant(args.output, quant.QuantTable(
            calibrated.input, calibrated.filter, calibrated.layers, args.output),
            overwrite=args.overwrite)
        print(f"wrote {out}: (position, scale) for the inputs and filters of {len(names)} "
              f"conv/fc layers, calibrated on {len(args.images)} image(s) with {driver.name}")
        table = quant.load_quant(out)
    if args.report:
        int8 = get_driver("cnml-dlp", quant=table)
        with _progress(len(args.images), "comparing") as bar:
            report = quant.accuracy_report(net, int8, batches(), progress=bar.update)
        if args.output:
            print("note: the report is on the calibration images themselves")
        print(quant.format_report(report))
        if args.json:
            with atomic_write(args.json, "w") as handle:
                json.dump(report, handle, indent=2)
    return 0
