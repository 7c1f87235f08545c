"""A batch classification from start to summary: inputs, resume, runner, results, progress.

:func:`classify_batch` is what ``vggjit classify`` runs. The same inputs and options give the
same records wherever they run: in-process (:mod:`vggjit.batch.local`), on a local Dask cluster
or an existing one (:mod:`vggjit.batch.cluster`). With an output file the run resumes: inputs
already recorded there are skipped, the rest are written as their tasks complete.
"""
from __future__ import annotations

import os
import sys
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import Callable, Iterator

from ..errors import InputError
from ..registry import get_driver
from .cluster import Where, check_workers, run_tasks
from .inputs import Inputs, chunks, is_inside
from .local import classify_in_process
from .progress import Progress, Summary
from .results import ResultStore, open_store
from .tasks import ClassifySpec, check_top_k, check_worker, classify_named, network_for


def resolve(spec: ClassifySpec, where: Where) -> ClassifySpec:
    """``spec`` with the driver named, so that the workers do not each pick their own default,
    and with the network loaded here when the weight file is here: that checks --top-k against
    the classes and converts a .mat once for all local workers. On an existing cluster the
    weights and the driver may exist only on the workers; they check them there."""
    weights = Path(spec.weights).expanduser()
    remote_only = where.scheduler and not weights.is_file()
    # a worker has a working directory of its own: give it absolute paths
    weights = str(weights if remote_only else weights.absolute())
    if spec.quant:
        name = "cnml-dlp"
    elif spec.driver and where.scheduler:
        name = spec.driver
    else:
        name = get_driver(spec.driver).name
    spec = replace(spec, driver=name, weights=weights)
    if not remote_only:
        check_top_k(network_for(spec), spec.top_k)
    return spec


def classify_batch(inputs: Inputs, spec: ClassifySpec, *, batch_size: int = 4,
                   output=None, overwrite: bool = False, retry_failed: bool = False,
                   where: Where | None = None, on_record: Callable[[dict, Progress], None] | None = None,
                   log: Callable[[str], None] = print, progress: bool | None = None) -> Summary:
    """Classify every input once; return the summary.

    output: a results file (.jsonl, .csv, .parquet), resumed if it exists (replaced with
    ``overwrite``); on_record(record, progress): called for every new record (to print it);
    log: one-line messages (count, plan); progress: the bar (None: on a terminal).
    """
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    where = where or Where()
    total = inputs.count()  # also the early check of every directory, glob and manifest
    if output is not None and is_inside(output, chain(inputs, inputs.manifests)):
        raise InputError(f"{output} is one of the inputs; write the results elsewhere")
    spec = resolve(spec, where)
    store: ResultStore | None = (open_store(output, spec.top_k, overwrite=overwrite,
                                            retry_failed=retry_failed) if output else None)
    try:
        done = store.done if store else set()
        skipped = sum(1 for path in inputs if path in done) if done else 0
        note = f", {skipped} already in {output}" if skipped else ""
        log(f"{total} image(s){note}, {total - skipped} to classify")
        cluster = None if where.in_process or skipped == total else where.open()
        try:
            if cluster is not None:
                log(cluster.plan)
                check_workers(cluster, check_worker, spec)
            bar = Progress(total - skipped, enabled=progress, skipped=skipped)
            try:
                _run(inputs, done, spec, batch_size, cluster, store, bar, on_record)
            finally:
                summary = bar.close()
        finally:
            if cluster is not None:
                cluster.close()
    finally:
        if store is not None:
            store.close()
    return summary


def _todo(inputs: Inputs, done: set, batch_size: int) -> Iterator[list[str]]:
    """The batches still to run. Batches are cut from *all* inputs, so a resumed run feeds the
    network the same batches as an uninterrupted one and its records are bit-identical; a batch
    that was only partly recorded runs whole and its recorded paths are dropped (by the caller)."""
    for batch in chunks(inputs, batch_size):
        if not all(path in done for path in batch):
            yield batch


def _run(inputs, done, spec, batch_size, cluster, store, bar: Progress, on_record) -> None:
    def take(records: list[dict]) -> None:
        failed = taken = 0
        for record in records:
            if record["path"] in done:  # recorded before an interrupt: keep the first
                continue
            if store is not None:
                store.add(record)  # adds the path to ``done``
            if on_record is not None:
                on_record(record, bar)
            taken += 1
            failed += "error" in record
        bar.add(done=taken - failed, failed=failed)

    def lost(paths: list[str], message: str) -> None:
        paths = [p for p in paths if p not in done]
        bar.summary.lost_paths.extend(paths)
        bar.add(lost=len(paths))
        bar.write(f"lost {len(paths)} image(s) ({paths[0]} ...): {message}", file=sys.stderr)

    batches = _todo(inputs, done, batch_size)
    if cluster is None:
        classify_in_process(spec, batches, take)
    else:
        named = ([(path, os.path.abspath(path)) for path in batch] for batch in batches)
        run_tasks(cluster, classify_named, named, lambda batch, records: take(records),
                  lambda batch, message: lost([name for name, _ in batch], message), spec)
