"""`vggjit stylize`: Gatys neural style transfer from the command line."""
from __future__ import annotations

import argparse
import contextlib
import signal

from . import add_driver_option, add_weights_option, subcommand

DESCRIPTION = """\
Paint CONTENT in the style of STYLE (Gatys et al.): optimise an image so that its VGG features
(VGG19 or VGG16, from any weight file vggjit reads, a convolution stack alone included) match
the content image's at the content layers and its Gram matrices match the style image's at the
style layers. Several style images are blended (--style-blend).

Before the first step every input is checked: the images are read, the layer names and the
image sizes are checked against the network, the run's peak memory is estimated and a run
that cannot fit is refused (naming the largest --size that fits), the result's format must be
one Pillow can write, every file the run will write must be writable, must not be an input
(not even with --overwrite) and (without --overwrite) must not exist yet. While it runs,
.OUT.lock keeps a second run with the same -o from starting.

While it runs: a progress bar with the loss and speed; per-layer losses every --print-every
steps; intermediate images OUT_0100.png every --save-every steps (with a checkpoint). At the end:
OUT, OUT.log.json (settings and per-step losses) and OUT.loss.png (the loss curve).

Large outputs: --scales N runs coarse-to-fine, first at 1/2^(N-1) of the size, then at twice
that, and so on up to the full size, each scale starting from the previous result upsampled;
intermediate images are then OUT_s<scale>_0100.png.

Ctrl-C or SIGTERM stops at once and keeps the last completed step: its image goes to OUT and
a checkpoint to OUT.ckpt.npz; `vggjit stylize --resume OUT.ckpt.npz` continues the run
exactly where it stopped (even after a hard kill: the intermediate images and the checkpoint
always form a pair). A loss that becomes NaN or explodes stops the run with a message naming
the step, and the last good image is kept in OUT. If OUT cannot be written at the end, the
result is kept in OUT.unsaved.png (the message says where) with its log and checkpoint.

Many images: with --output-dir DIR every positional argument is a content image, a directory
(its images, recursively) or a quoted glob, and --style (repeatable) names the styles; each
content is painted in each style (one style computation serves all contents) and written to
DIR/<content>.<style>.png as soon as it is done. Rerunning the command skips the results that
exist, so an interrupted batch resumes. --workers N or --scheduler ADDRESS run the batch on Dask
(pip install "vggjit[cluster]"); see docs/scale-out.md.

See docs/style-transfer.md for the loss, every option and a gallery."""

EPILOG = """\
examples:
  vggjit stylize photo.jpg starry.jpg -o out.png
  vggjit stylize photo.jpg starry.jpg --preset lab -o lab.png
  vggjit stylize photo.jpg a.jpg b.jpg --style-blend 0.7,0.3 --preserve-colors -o out.png
  vggjit stylize photo.jpg starry.jpg --optimizer adam --lr 10 -n 300 --tv-weight 1e-3 -o o.png
  vggjit stylize photo.jpg starry.jpg --size 1024 --scales 3 -n 200 -o big.png
  vggjit stylize --resume out.ckpt.npz
  vggjit stylize --resume out.ckpt.npz --iterations 1000     (continue further)
  vggjit stylize frames/ --style starry.jpg --style wave.jpg --output-dir painted/ -n 200
  vggjit stylize 'album/*.jpg' --style starry.jpg --output-dir out/ --workers 2

weights:
  --weights random uses He-normal random weights (no download): the result then shows texture
  transfer only; use it with --pooling avg (`vggjit demo` adds --beta 500 --tv-weight 0).
  --weights vgg16-397923af.pth (torchvision), a timm .safetensors, a Keras .h5, or an ONNX
  graph with --preprocess caffe|torchvision (a Keras export's VGG16 convolution stack works).

presets:
  lab   the course lab: content relu4_2; style relu1_1..relu5_1 (equal); alpha 1, beta 500;
        Adam, lr 1.0, 100 steps; 192x320; init content*(1-0.5) + uniform(-20, 20)*0.5;
        max pooling; an image every step. Options given explicitly override the preset."""

#: Reporting defaults of the command (the API's are 0: off), as the established tools do.
CLI_SAVE_EVERY, CLI_PRINT_EVERY = 100, 50

# Options that define the run; --resume takes them from the checkpoint instead.
RUN_OPTIONS = ("preset", "content_layers", "content_layer_weights", "style_layers",
               "style_layer_weights", "alpha", "beta", "tv_weight", "normalize", "optimizer", "lr",
               "init", "noise", "seed", "size", "height", "width", "scales", "style_scale",
               "style_blend", "preserve_colors", "pooling", "save_every", "print_every")


def _names(text: str) -> tuple:
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    if not items:
        raise argparse.ArgumentTypeError("give at least one name")
    return items


def _floats(text: str) -> tuple:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def register(subparsers) -> None:
    p = subcommand(subparsers, "stylize", help="neural style transfer (Gatys) of an image",
                   description=DESCRIPTION, epilog=EPILOG, run=run)
    p.add_argument("content", nargs="?", metavar="CONTENT", help="the content image")
    p.add_argument("styles", nargs="*", metavar="STYLE", help="one or more style images")
    p.add_argument("-o", "--output", metavar="OUT.png",
                   help="the result image (.png or .jpg); required unless --resume")
    p.add_argument("--preset", choices=("lab",), help="a named set of options (see below)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (never done without it)")
    g = p.add_argument_group("many images")
    g.add_argument("--output-dir", metavar="DIR",
                   help="batch mode: every positional is a content image, directory or glob; "
                        "results go to DIR/<content>.<style>.png; existing ones are skipped")
    g.add_argument("--style", dest="style_list", action="append", default=[], metavar="STYLE",
                   help="a style image of the batch (repeat for several: each gives its own "
                        "results)")
    g.add_argument("--manifest", action="append", default=[], metavar="FILE",
                   help="a text file of content image paths, one per line")
    g.add_argument("--format", dest="output_format", choices=("png", "jpg"), default="png",
                   help="file type of the batch results (default: png)")
    g.add_argument("--workers", type=int, metavar="N",
                   help="run the batch on a local Dask cluster of N worker processes")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the batch on the Dask cluster whose scheduler is at ADDRESS")
    g.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the scheduler (default: 10)")
    p.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue an interrupted run from its OUT.ckpt.npz (its settings, "
                        "images and optimiser state; -o, --iterations, --driver may change)")

    g = p.add_argument_group("loss")
    g.add_argument("--content-layers", type=_names, metavar="L,..",
                   help="content layers (default: relu4_2)")
    g.add_argument("--content-layer-weights", type=_floats, metavar="W,..",
                   help="one weight per content layer (default: equal, summing to 1)")
    g.add_argument("--style-layers", type=_names, metavar="L,..",
                   help="style layers (default: relu1_1,relu2_1,relu3_1,relu4_1,relu5_1)")
    g.add_argument("--style-layer-weights", type=_floats, metavar="W,..",
                   help="one weight per style layer (default: equal, summing to 1)")
    g.add_argument("--alpha", "--content-weight", dest="alpha", type=float, metavar="A",
                   help="content loss weight (default: 1)")
    g.add_argument("--beta", "--style-weight", dest="beta", type=float, metavar="B",
                   help="style loss weight (default: 50; the lab's 500 wants --no-normalize)")
    g.add_argument("--tv-weight", type=float, metavar="T",
                   help="total-variation weight, smooths pixel-level noise (default: 1e-4; "
                        "pixel units, so the same for every network)")
    g.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="divide each loss layer's weight by the mean square of its target "
                        "(features for content, Gram per position for style), so every term "
                        "is a relative error and alpha, beta hold for any VGG and weight "
                        "source (default: on; --no-normalize: the lab's raw scaling)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=("lbfgs", "adam"),
                   help="lbfgs (better images; default) or adam (the lab's; less memory)")
    g.add_argument("--lr", type=float, metavar="LR",
                   help="Adam's learning rate in pixel units (default: 10; lab: 1)")
    g.add_argument("-n", "--iterations", type=int, metavar="N",
                   help="optimisation steps (default: 500)")
    g.add_argument("--init", metavar="content|noise|random|PATH",
                   help="start image: the content (default), the lab's content*(1-r) + "
                        "uniform(-20,20)*r (noise), uniform noise (random), or an image file")
    g.add_argument("--noise", type=float, metavar="R",
                   help="the noise ratio r of --init noise (default: 0.5)")
    g.add_argument("--seed", type=int, metavar="S", help="random seed (default: 0)")

    g = p.add_argument_group("size")
    g.add_argument("--size", type=int, metavar="PX",
                   help="longer side of the result (default: 512); aspect kept")
    g.add_argument("--height", type=int, metavar="H",
                   help="exact height (with --width: exact size, the style image stretched "
                        "to it; alone: aspect kept)")
    g.add_argument("--width", type=int, metavar="W", help="exact width (see --height)")
    g.add_argument("--scales", type=int, metavar="N",
                   help="coarse-to-fine: run first at 1/2^(N-1) of the size, then upsample "
                        "(bicubic) and refine at twice the size, up to the full size; each "
                        "scale runs --iterations steps. Good for large outputs: the coarse "
                        "scales set the layout cheaply, the full size adds the detail "
                        "(default: 1, a single scale)")
    g.add_argument("--style-scale", type=float, metavar="S",
                   help="size of the style images relative to the result (default: 1)")
    g.add_argument("--style-blend", type=_floats, metavar="W,..",
                   help="weights of several style images (default: equal)")
    g.add_argument("--preserve-colors", action="store_true", default=None,
                   help="keep the content's colours: transfer the style on luminance only")

    g = p.add_argument_group("network")
    add_weights_option(g)
    add_driver_option(g)
    g.add_argument("--pooling", choices=("max", "avg"),
                   help="max (default; the trained network's) or avg (smoother textures)")

    g = p.add_argument_group("progress")
    g.add_argument("--save-every", type=int, metavar="N",
                   help=f"write OUT_<step>.png and a checkpoint every N steps "
                        f"(default: {CLI_SAVE_EVERY}; 0: never)")
    g.add_argument("--print-every", type=int, metavar="N",
                   help=f"print the per-layer losses every N steps (default: "
                        f"{CLI_PRINT_EVERY}; 0: never)")


def _options(args) -> dict:
    keys = [k for k in RUN_OPTIONS if k != "preset"] + ["iterations", "weights", "driver"]
    return {k: getattr(args, k) for k in keys}


def run(args) -> int:
    from ..errors import InputError

    if args.output_dir or args.style_list:
        return _run_batch(args)
    if args.manifest or args.workers or args.scheduler:
        raise InputError("--manifest, --workers and --scheduler are for batches: give "
                         "--output-dir DIR and the styles with --style")
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in RUN_OPTIONS if getattr(args, k) is not None]
        if args.content or args.styles or given:
            raise InputError("--resume continues a run with its own images and settings; "
                             "give only -o, --iterations, --driver, --weights, --preprocess, "
                             "--overwrite "
                             f"(not {', '.join(given) or 'CONTENT/STYLE'})")
    else:
        if not args.content or not args.styles:
            raise InputError("give a CONTENT image and at least one STYLE image "
                             "(or --resume CHECKPOINT)")
        if not args.output:
            raise InputError("give the result's path with -o OUT.png")

    with sigterm_as_interrupt():
        result = _run(args)
    return _report(result)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block SIGTERM acts like Ctrl-C: the run saves its image and checkpoint."""
    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args):
    from ..errors import InputError
    from ..style import PRESETS, StyleTransfer, make_settings, resume
    from ..weights import describe_network, find_weights, load_weights

    def log(line: str) -> None:
        print(line, flush=True)

    if args.resume:
        if args.preprocess:
            if not args.weights:
                raise InputError("--preprocess with --resume needs the --weights file it is for")
            load_weights(find_weights(args.weights), preprocess=args.preprocess)
        return resume(args.resume, iterations=args.iterations, output=args.output,
                      overwrite=args.overwrite, progress=True, driver=args.driver,
                      weights=args.weights, log=log)
    options = _options(args)
    preset_keys = set(PRESETS[args.preset]) if args.preset else set()
    for key, default in (("save_every", CLI_SAVE_EVERY), ("print_every", CLI_PRINT_EVERY)):
        if options[key] is None and key not in preset_keys:
            options[key] = default
    settings = make_settings(args.preset, **options)
    if args.preprocess and settings.weights != "random":
        # Folded and recorded in the weight cache, where the network built below finds it.
        load_weights(find_weights(settings.weights), preprocess=args.preprocess)
    transfer = StyleTransfer(args.styles, settings=settings)
    # start() checks before any work: images, layers and sizes, the output files, then the
    # driver and the weight file (when it builds the network), then computes the targets.
    session = transfer.start(args.content, output=args.output, overwrite=args.overwrite,
                             progress=True, log=log)
    net = transfer.net
    h, w = session.output_hw
    scales = (f" per scale, {session.scales} scales from {session.content_rgb.shape[1]}x"
              f"{session.content_rgb.shape[0]} px" if session.scales > 1 else "")
    print(f"vggjit stylize: {w}x{h} px, {settings.optimizer} x {settings.iterations}{scales}, "
          f"{describe_network(net)}, driver {net.driver.name}", flush=True)
    _warn_if_slow(session)
    return session.run()


def _warn_if_slow(session) -> None:
    """Once, before the first step: a driver whose declared speed makes this run long."""
    import sys

    from ..style.budget import RunShape, run_flops
    from ..workload import slow_work_note

    s, net = session.settings, session.transfer.net
    shape = RunShape(net.layers, (*s.content_layers, *s.style_layers), s.optimizer,
                     tuple(c.shape[:2] for c, _ in session.scale_images),
                     tuple(tuple(r.shape[:2] for r in st) for _, st in session.scale_images))
    note = slow_work_note(net.driver, run_flops(shape, s.iterations),
                          f"this run ({s.iterations} steps)")
    if note:
        print(f"vggjit stylize: warning: {note}", file=sys.stderr, flush=True)


def _run_batch(args) -> int:
    import sys

    from ..batch.cluster import Where
    from ..batch.inputs import Inputs
    from ..batch.stylize import stylize_batch
    from ..errors import InputError
    from ..style import make_settings

    if not args.output_dir:
        raise InputError("--style is for batches: give --output-dir DIR too (or use the "
                         "single form `vggjit stylize CONTENT STYLE -o OUT.png`)")
    if args.output or args.resume:
        raise InputError("--output-dir writes a batch; -o and --resume are for one image")
    if not args.style_list:
        raise InputError("with --output-dir, name the styles with --style STYLE (every "
                         "positional argument is a content image, directory or glob)")
    if args.style_blend:
        raise InputError("--style-blend mixes several styles into one result; in a batch each "
                         "--style gives results of its own")
    sources = [a for a in (args.content, *args.styles) if a]
    contents = Inputs(sources, args.manifest)
    where = Where(workers=args.workers, scheduler=args.scheduler,
                  connect_timeout=args.connect_timeout)
    options = _options(args)
    options["save_every"] = options["print_every"] = 0
    settings = make_settings(args.preset, **options)

    def log(line: str) -> None:
        print(f"vggjit stylize: {line}", file=sys.stderr, flush=True)

    cluster = None if where.in_process else where.open()
    try:
        if cluster is not None:
            log(cluster.plan)
        with sigterm_as_interrupt():
            try:
                summary = stylize_batch(contents, args.style_list, settings, args.output_dir,
                                        suffix=f".{args.output_format}",
                                        overwrite=args.overwrite, cluster=cluster, log=log)
            except KeyboardInterrupt:
                log(f"interrupted; the finished results are in {args.output_dir}; run the "
                    f"same command again to make the rest")
                raise
    finally:
        if cluster is not None:
            cluster.close()
    log(f"{summary.line()} -> {args.output_dir}")
    return 1 if summary.failed or summary.lost else 0


def _report(result) -> int:
    files = result.files
    where = f" to {files['image']}" if "image" in files else ""
    scales = result.settings.get("scales", 1)
    if result.stopped == "interrupted":
        at = f" at scale {result.settings['scale']}/{scales}" if scales > 1 else ""
        print(f"vggjit stylize: interrupted{at} after step {result.steps}; saved the image{where} "
              f"and the checkpoint {files.get('checkpoint')}; continue with:\n"
              f"  vggjit stylize --resume {files.get('checkpoint')}")
        return 130
    loss = f"{result.loss:.6g}" if result.loss is not None else "n/a"
    note = f" ({result.message})" if result.stopped == "converged" else ""
    steps = (f"{scales} scales, {result.steps} steps at the last" if scales > 1
             else f"{result.steps} steps")
    print(f"vggjit stylize: wrote{where} after {steps}, loss {loss}{note}")
    if "log" in files:
        print(f"  log {files['log']}" + (f", loss curve {files['curve']}" if "curve" in files
                                         else ""))
    if files.get("steps"):
        print(f"  intermediate images: {len(files['steps'])} ({files['steps'][0]} ...)")
    return 0
