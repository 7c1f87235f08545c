"""Style transfer over many content images and one or more styles, resumable.

Every (content, style) pair is a job whose result goes to its own file in the output directory,
``OUT_DIR/<content label>.<style name>.png`` (the label is the content's path relative to the
directory it was found in, without its extension; see :meth:`vggjit.batch.inputs.Inputs.labelled`).
Each result is written atomically when its job finishes, so a directory never holds a half
image, and a rerun skips every job whose file exists: an interrupted batch resumes where it
stopped. A content image that cannot be read, or a run whose loss diverges, is reported and the
batch goes on (that job has no file, so a rerun tries it again).

In-process, one :class:`vggjit.style.StyleTransfer` per style serves all contents (the style's
Gram targets are computed once per output size). On Dask, each worker keeps the network and
the transfers it has built, and sends the finished image back: the client writes the files, so
the output directory need not be shared with the workers (the inputs must be readable there).
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from ..contract import BACKWARD
from ..errors import InputError, VggjitError
from ..images import save_image
from ..registry import get_driver
from ..style import LossDivergedError, StyleSettings, StyleTransfer, build_network
from ..weights import find_weights
from .cluster import Cluster, check_workers, run_tasks
from .inputs import Inputs
from .progress import Progress, Summary

OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class StyleJob:
    """One result to make: ``content`` in the style of ``style``, written to ``output``."""

    content: str
    style: str
    output: str


def output_name(label: str, style: str, suffix: str = ".png") -> str:
    """``sub/cat.jpg`` in the style ``starry.jpg`` -> ``sub/cat.starry.png``."""
    stem = os.path.splitext(label)[0]
    return f"{stem}.{Path(style).stem}{suffix}"


def plan_jobs(contents: Inputs, styles: list[str], out_dir, suffix: str = ".png"
              ) -> Iterator[StyleJob]:
    """Every (content, style) job, style by style (a transfer serves all its contents)."""
    for style in styles:
        for path, label in contents.labelled():
            yield StyleJob(path, style, os.path.join(os.fspath(out_dir),
                                                     output_name(label, style, suffix)))


def check_jobs(contents: Inputs, styles: list[str], out_dir, suffix: str) -> int:
    """Before any work: the styles are readable, no two jobs share an output, no output
    replaces an input. Returns the number of jobs."""
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"--format must be one of {', '.join(OUTPUT_SUFFIXES)}, got {suffix!r}")
    if not styles:
        raise InputError("give at least one style image with --style")
    for style in styles:
        if not os.path.isfile(style):
            raise InputError(f"{style}: no such style image")
    stems = [Path(s).stem for s in styles]
    if len(set(stems)) != len(stems):
        raise InputError(f"two style images share a name ({', '.join(stems)}): their results "
                         f"would have the same file names; rename one")
    inputs = {os.path.abspath(p) for p in contents} | {os.path.abspath(s) for s in styles}
    owners: dict[str, str] = {}
    count = 0
    for job in plan_jobs(contents, styles, out_dir, suffix):
        count += 1
        target = os.path.abspath(job.output)
        if target in inputs:
            raise InputError(f"{job.output} would replace an input image; choose another "
                             f"--output-dir")
        if target in owners and owners[target] != job.content:
            raise InputError(f"{owners[target]} and {job.content} would both be written to "
                             f"{job.output}; give them separately or rename one")
        owners[target] = job.content
    return count


# -- the work of one job, the same in-process and on a worker ------------------------------------

_cache: dict = {}
_cache_lock = threading.Lock()


def _transfer(settings: StyleSettings, style: str) -> StyleTransfer:
    """This process's network (built once) and its transfer for ``style`` (one per style)."""
    with _cache_lock:
        net_key = (settings.weights, settings.driver, settings.pooling, settings.seed)
        if net_key not in _cache:
            _cache[net_key] = build_network(settings)
        key = (net_key, style, repr(settings))
        if key not in _cache:
            _cache[key] = StyleTransfer(style, net=_cache[net_key], settings=settings)
        return _cache[key]


def stylize_job(settings: StyleSettings, job: StyleJob) -> tuple[np.ndarray | None, str]:
    """Run one job: (the result as [H, W, 3] uint8, "") or (None, what went wrong)."""
    try:
        result = _transfer(settings, job.style).run(job.content)
    except LossDivergedError as exc:
        return None, f"{job.content}: {exc}"
    except InputError as exc:
        return None, str(exc)
    if result.stopped == "interrupted":
        raise KeyboardInterrupt
    if result.stopped == "diverged":
        return None, f"{job.content}: {result.message}"
    return np.asarray(result.image, dtype=np.uint8), ""


def check_worker(settings: StyleSettings, styles: list[str]) -> str | None:
    """On a worker before the run: None if the weights, driver and styles are usable there."""
    try:
        if settings.weights != "random":
            if settings.weights and not os.path.isfile(settings.weights):
                return f"no weight file {settings.weights}"
        get_driver(settings.driver, require={BACKWARD})
        missing = [s for s in styles if not os.path.isfile(s)]
        if missing:
            return f"no style image {missing[0]}"
    except (OSError, VggjitError) as exc:
        return str(exc)
    return None


def _absolute(job: StyleJob) -> StyleJob:
    return replace(job, content=os.path.abspath(job.content), style=os.path.abspath(job.style))


# -- the run ----------------------------------------------------------------------------------

def stylize_batch(contents: Inputs, styles: list[str], settings: StyleSettings, out_dir, *,
                  suffix: str = ".png", overwrite: bool = False, cluster: Cluster | None = None,
                  log: Callable[[str], None] = print, progress: bool | None = None) -> Summary:
    """Make every missing result in ``out_dir``; return the summary.

    settings: the style-transfer options (intermediate images and checkpoints are off in a
    batch); cluster: run the jobs on Dask (None: in-process); overwrite: redo existing results.
    """
    total = check_jobs(contents, styles, out_dir, suffix)
    # Named here, so that every worker uses the same driver and weight file as this process.
    weights = (settings.weights if settings.weights == "random"
               else str(find_weights(settings.weights).absolute()))
    settings = replace(settings, save_every=0, print_every=0, weights=weights,
                       driver=get_driver(settings.driver, require={BACKWARD}).name)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    skipped = 0 if overwrite else sum(1 for job in plan_jobs(contents, styles, out_dir, suffix)
                                      if os.path.exists(job.output))
    log(f"{total} result(s) ({total // len(styles)} content image(s) x {len(styles)} "
        f"style(s)), {skipped} already in {out_dir}, {total - skipped} to make")
    jobs = (job for job in plan_jobs(contents, styles, out_dir, suffix)
            if overwrite or not os.path.exists(job.output))
    bar = Progress(total - skipped, unit="result", enabled=progress, skipped=skipped)

    def take(job: StyleJob, outcome) -> None:
        image, error = outcome
        if image is None:
            bar.write(f"vggjit stylize: {error}", file=sys.stderr)
            bar.add(failed=1)
            return
        save_image(Image.fromarray(image, "RGB"), job.output, overwrite=True)
        bar.add(done=1)

    def lost(job: StyleJob, message: str) -> None:
        bar.summary.lost_paths.append(job.content)
        bar.add(lost=1)
        bar.write(f"vggjit stylize: lost {job.output}: {message}", file=sys.stderr)

    try:
        if cluster is None:
            for job in jobs:
                take(job, stylize_job(settings, job))
        else:
            # a worker has a working directory of its own: give it absolute paths
            absolute = [os.path.abspath(s) for s in styles]
            check_workers(cluster, check_worker, settings, absolute)
            run_tasks(cluster, stylize_job, (_absolute(job) for job in jobs), take, lost,
                      settings)
    finally:
        summary = bar.close()
    return summary
