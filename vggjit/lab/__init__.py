"""The course lab's student package (``stu_upload``) on vggjit's drivers.

Lab 3 of the "AI Computing Systems" course defines its system by three driver scripts
(``main_exp_3_1.py``: VGG19 on the CPU, ``main_exp_3_2.py``: VGG19 on the DLP through
``pycnml``, ``main_exp_3_3.py``: the img2col speed-up test and Gatys style transfer) and by the
modules they import from ``stu_upload``. This package provides those modules with the course's
interface (float64 NCHW arrays in and out, the course's weight layouts), every op running on a
vggjit driver: ``type=1`` layers on the fast driver (:func:`use_fast_driver`, default the best
available), ``type=0`` layers on ``naive``; ``vgg19_demo`` on ``pycnml`` (the real library, or
the cnml-dlp driver's emulator of it).

``vggjit lab run SCRIPT`` serves these modules as ``stu_upload`` to an unchanged course
script; ``vggjit lab init DIR`` writes a ``stu_upload/`` package that re-exports them. See
docs/lab.md.
"""
from __future__ import annotations

from .engine import use_fast_driver

#: The course's ``stu_upload`` modules, each provided by the module of that name here.
MODULES = ("layers_1", "layers_2", "layers_3", "vgg_cpu", "exp_3_3_style_transfer",
           "vgg19_demo")

__all__ = ["MODULES", "use_fast_driver"]
