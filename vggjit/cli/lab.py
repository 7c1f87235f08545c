"""`vggjit lab`: the course's lab 3 scripts on vggjit (run, init)."""
from __future__ import annotations

import argparse

from . import add_driver_option, subcommand

DESCRIPTION = """\
Run the AI Computing Systems course's lab 3 scripts, unchanged, on vggjit.

The course's scripts (main_exp_3_1.py: VGG19 on the CPU, main_exp_3_2.py: VGG19 on the DLP
through pycnml, main_exp_3_3.py: the img2col speed-up test and style transfer) import the
student package stu_upload (layers_1, layers_2, layers_3, vgg_cpu, exp_3_3_style_transfer,
vgg19_demo). vggjit.lab implements those modules on vggjit's drivers: a teaching assistant's
reference answer, a student's oracle, and experiment 3.2 without a Cambricon card (pycnml is
emulated with the DLP's int8/fp16 numerics where the real library is missing).

  run SCRIPT [ARGS...]   run a script as `python SCRIPT` would, in its own directory, with
                         stu_upload served by vggjit (or the student's own: --own)
  init DIR               write DIR/stu_upload/ re-exporting vggjit.lab, for `python SCRIPT`

See docs/lab.md for where the course's files go and what each run prints."""

EPILOG = """\
examples:
  vggjit lab run exp_3_1/main_exp_3_1.py
  vggjit lab run exp_3_2/main_exp_3_2.py                  (pycnml emulated without an MLU)
  vggjit lab run --driver naive exp_3_3/main_exp_3_3.py
  vggjit lab run --own exp_3_1/main_exp_3_1.py            (the student's own stu_upload)
  vggjit lab run --own-module layers_3 exp_3_3/main_exp_3_3.py
  vggjit lab init exp_3_1 && cd exp_3_1 && python main_exp_3_1.py"""

RUN_DESCRIPTION = """\
Run SCRIPT as `python SCRIPT` would, with the script's directory as the working directory
(its relative paths, such as ../imagenet-vgg-verydeep-19.mat, mean what they mean in the lab)
and ARGS as its arguments. `import stu_upload...` gets vggjit.lab's modules, even where the
directory has its own stu_upload/ (--own runs the student's instead; --own-module takes
single modules from it, vggjit's for the rest). Where `import pycnml` would fail, pycnml is
the cnml-dlp driver's emulator; one line on stderr says which pycnml is used.

type=1 layers (convolution, pooling) and the layers without a type run on --driver (default:
$VGGJIT_DRIVER, else the fastest available); type=0 layers on the naive driver, the plain
loops the speed-up test compares against.

The script's output, exceptions (with their traceback) and exit status are its own."""

RUN_EPILOG = """\
examples:
  vggjit lab run main_exp_3_1.py
  vggjit lab run --own main_exp_3_1.py          (check the student's own package)
  vggjit lab run --own-module layers_2 main_exp_3_3.py
  vggjit lab run my_script.py --steps 3         (options after SCRIPT go to the script)

exit status: the script's (an uncaught exception: 1); 2 when SCRIPT cannot be run."""

INIT_DESCRIPTION = """\
Write DIR/stu_upload/ (__init__.py and one file per course module), each module a single
`from vggjit.lab.<module> import *`, so that `python main_exp_3_1.py` run in DIR uses vggjit.
Files that exist are never replaced without --overwrite (nothing is written then)."""

INIT_EPILOG = """\
examples:
  vggjit lab init exp_3_1
  vggjit lab init . --overwrite                 (replace the modules with vggjit's)"""


def register(subparsers) -> None:
    parser = subcommand(subparsers, "lab", help="run the course's lab 3 scripts on vggjit",
                        description=DESCRIPTION, epilog=EPILOG, run=_help)
    parser.set_defaults(lab_parser=parser)
    actions = parser.add_subparsers(dest="lab_command", metavar="ACTION")

    run_parser = actions.add_parser("run", help="run a course script with stu_upload served "
                                    "by vggjit", description=RUN_DESCRIPTION,
                                    epilog=RUN_EPILOG,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    run_parser.set_defaults(run=run)
    add_driver_option(run_parser)
    which = run_parser.add_mutually_exclusive_group()
    which.add_argument("--own", action="store_true",
                       help="use the student's own stu_upload/ beside SCRIPT (all of it)")
    which.add_argument("--own-module", action="append", default=[], metavar="MODULE",
                       help="use the student's stu_upload/MODULE.py, vggjit's for the other "
                            "modules (repeatable)")
    run_parser.add_argument("script", metavar="SCRIPT", help="the course script to run")
    run_parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                            help="arguments for the script")

    init_parser = actions.add_parser("init", help="write a stu_upload/ package that uses "
                                     "vggjit", description=INIT_DESCRIPTION,
                                     epilog=INIT_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    init_parser.set_defaults(run=init)
    init_parser.add_argument("directory", metavar="DIR", help="the experiment's directory")
    init_parser.add_argument("--overwrite", action="store_true",
                             help="replace existing stu_upload files")


def _help(args) -> int:
    args.lab_parser.print_help()
    return 0


def run(args) -> int:
    from ..lab.runner import run_script

    return run_script(args.script, args.args, own=args.own, own_modules=args.own_module,
                      driver=args.driver)


def init(args) -> int:
    from ..lab.scaffold import write_package

    for path in write_package(args.directory, overwrite=args.overwrite):
        print(f"wrote {path}")
    return 0
