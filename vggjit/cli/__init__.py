"""The ``vggjit`` command line.

Each sub-command lives in its own module of this package with two functions:
``register(subparsers)`` adds its parser (cheap: no heavy imports), and the parser's ``run``
default does the work and returns an exit status. Errors derived from VggjitError are printed
as one clear message (exit status 2); Ctrl-C exits with 130.
"""
from __future__ import annotations

import argparse
import sys
from importlib import import_module

from .. import __version__
from ..errors import VggjitError

#: Sub-command modules, in the order ``vggjit --help`` lists them.
COMMANDS = ("demo", "classify", "stylize", "weights", "quantize", "drivers", "warmup", "bench")

DESCRIPTION = """\
VGG19 image classification and Gatys neural style transfer on hand-written, JIT-compiled
kernels (img2col + GEMM convolution, pooling, ReLU, fully connected, softmax, Gram), with
pluggable device drivers (numba-cpu, cnml-dlp, naive).

Start with `vggjit demo`. Every sub-command has its own --help."""

EPILOG = """\
environment:
  VGGJIT_DRIVER   driver used when --driver is not given (see `vggjit drivers`)
  VGGJIT_WEIGHTS  weight file used when --weights is not given
  VGGJIT_HOME     cache directory for weights and converted files (default ~/.cache/vggjit)
  VGGJIT_MEMORY_LIMIT  most memory a command may plan to use (4G, 500M; default: what the
                  machine has available); larger work is refused before it starts"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vggjit", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vggjit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse would blame the top-level parser and show its usage; the mistake belongs
        # to the sub-command the user typed, whose usage lists the options that do exist
        _innermost_parser(parser, argv).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except VggjitError as exc:
        print(f"vggjit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vggjit {args.command}: interrupted", file=sys.stderr)
        return 130


def _innermost_parser(parser: argparse.ArgumentParser, argv: list[str]
                      ) -> argparse.ArgumentParser:
    """The parser of the deepest sub-command named in ``argv`` (``vggjit weights fetch``)."""
    for word in argv:
        choices = next((action.choices for action in parser._actions
                        if isinstance(action, argparse._SubParsersAction)), None)
        if choices is None:
            break
        if word in choices:
            parser = choices[word]
    return parser


def add_driver_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--driver", metavar="NAME",
                        help="device driver (default: $VGGJIT_DRIVER, else the fastest "
                             "available; list them with `vggjit drivers`)")


def add_weights_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", metavar="PATH",
                        help="VGG19 weight file: MatConvNet imagenet-vgg-verydeep-19.mat (either "
                             "version) or vggjit's converted .npz (default: $VGGJIT_WEIGHTS, "
                             "else the cache directory; get it with `vggjit weights fetch`)")


def subcommand(subparsers, name: str, help: str, description: str, run,
               epilog: str | None = None) -> argparse.ArgumentParser:
    """Add a sub-command parser with the house formatting and its ``run`` function."""
    parser = subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
