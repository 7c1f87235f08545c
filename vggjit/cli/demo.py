"""`vggjit demo`: style transfer end to end, offline, in under two minutes."""
from __future__ import annotations

from . import add_driver_option, add_weights_option, subcommand

DESCRIPTION = """\
Run neural style transfer end to end on two images vggjit draws itself (a house under a sun,
and a colourful swirl texture), offline. Writes to output/ (or --output DIR):

  content.png, style.png     the generated inputs
  result.png                 the stylised image
  result_0010.png ...        intermediate images, named by step
  result.log.json            settings and per-step losses
  result.loss.png            the loss curve

With the ImageNet VGG19 weights (see `vggjit weights fetch`) the result is real style transfer.
Without them the demo uses random weights and says so: the result then shows texture transfer
only (with per-layer loss normalisation and average pooling, which keep the subject
recognisable on a random network). The first run also compiles the JIT kernels, all of them
before the first image (as `vggjit warmup` does: on two processes where two CPUs are free;
cached afterwards). For your own images use `vggjit stylize`."""


def register(subparsers) -> None:
    from ..demo import DEMO_ITERATIONS, DEMO_SIZE

    p = subcommand(subparsers, "demo", help="style transfer on generated images (start here)",
                   description=DESCRIPTION, run=run)
    p.add_argument("--output", default="output", metavar="DIR",
                   help="directory for the results (default: output)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier demo in that directory")
    p.add_argument("--size", type=int, default=DEMO_SIZE, metavar="PX",
                   help=f"longer side of the result (default: {DEMO_SIZE})")
    p.add_argument("-n", "--iterations", type=int, default=DEMO_ITERATIONS, metavar="N",
                   help=f"L-BFGS steps (default: {DEMO_ITERATIONS})")
    add_weights_option(p, preprocess=False)
    add_driver_option(p)


def run(args) -> int:
    import time

    from ..demo import run_demo
    from .stylize import sigterm_as_interrupt

    start = time.perf_counter()
    with sigterm_as_interrupt():
        result = run_demo(args.output, weights=args.weights, driver=args.driver, size=args.size,
                          iterations=args.iterations, overwrite=args.overwrite)
    files = result.files
    if result.stopped == "interrupted":
        print(f"vggjit demo: interrupted after step {result.steps}; partial result in "
              f"{files.get('image')}")
        return 130
    print(f"vggjit demo: done in {time.perf_counter() - start:.0f} s "
          f"({result.steps} steps, loss {result.history[0]['loss']:.4g} -> {result.loss:.4g})")
    print(f"  result        {files['image']}")
    print(f"  inputs        {args.output}/content.png, {args.output}/style.png")
    if files.get("steps"):
        print(f"  intermediate  {files['steps'][0]} ... {files['steps'][-1]}")
    print(f"  loss curve    {files.get('curve')}")
    print(f"  log           {files.get('log')}")
    if result.settings.get("random_weights"):
        print("  (random weights: texture transfer only; `vggjit weights fetch` gets the real "
              "ones)")
    return 0
