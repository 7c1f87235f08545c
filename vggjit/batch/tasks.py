"""The unit of work of a batch classification, the same in-process and on a Dask worker.

A task is a short list of image paths (one network batch): it decodes them, classifies them in
one forward pass and returns one record per path (see :mod:`vggjit.batch.results`). The network
is loaded once per process and kept (:func:`network_for`): on a Dask worker every task after the
first finds it ready, and a converted weight file is a memory map, so the workers of one node
share its pages.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, VggjitError
from ..images import preprocess
from ..network import Network
from ..registry import get_driver
from ..weights import load_weights
from .results import error_record, record_for


@dataclass(frozen=True)
class ClassifySpec:
    """What every task needs besides its paths (small and picklable: it travels to workers).

    weights: the weight file's path (as the workers see it); driver: a driver name (None: the
    default); quant: an int8 parameter file for cnml-dlp; top_k; resize: "crop" or "stretch";
    preprocess: the input convention of a file that cannot say its own (ONNX; see
    docs/formats.md), None to take the file's.
    """

    weights: str
    driver: str | None = None
    quant: str | None = None
    top_k: int = 5
    resize: str = "crop"
    preprocess: str | None = None


_networks: dict[tuple, Network] = {}
_networks_lock = threading.Lock()


def network_for(spec: ClassifySpec) -> Network:
    """The network of ``spec``, loaded on this process's first call and kept after it."""
    key = (spec.weights, spec.driver, spec.quant, spec.preprocess)
    with _networks_lock:  # a Dask worker may run several tasks at once: load only once
        if key not in _networks:
            driver = (get_driver("cnml-dlp", quant=spec.quant) if spec.quant
                      else get_driver(spec.driver))
            ws = load_weights(spec.weights, preprocess=spec.preprocess)
            ws.require_classifier("classify")
            net = Network.from_weights(ws, driver)
            if spec.quant:
                net.driver.quant.check_for([l.name for l in net.layers if l.has_params])
            _networks[key] = net
        return _networks[key]


def check_top_k(net: Network, top_k: int) -> None:
    classes = net.layers[-2].cout
    if not 1 <= top_k <= classes:
        raise InputError(f"--top-k must be between 1 and {classes}, got {top_k}")


def decode(paths: list[str], spec: ClassifySpec, mean_pixel
           ) -> tuple[list[str], np.ndarray | None, list[dict]]:
    """Read and preprocess ``paths``: (readable paths, their batch [N, 3, 224, 224] or None,
    error records of the others)."""
    good, arrays, errors = [], [], []
    for path in paths:
        try:
            arrays.append(preprocess(path, resize=spec.resize, mean_pixel=mean_pixel))
            good.append(path)
        except InputError as exc:
            errors.append(error_record(path, str(exc)))
        except Exception as exc:  # a decoder's own failure must not end a long run
            errors.append(error_record(path, f"{path}: cannot read image "
                                             f"({type(exc).__name__}: {exc})"))
    return good, (np.concatenate(arrays) if arrays else None), errors


def classify_decoded(net: Network, good: list[str], batch: np.ndarray | None,
                     errors: list[dict], top_k: int, order: list[str]) -> list[dict]:
    """Classify a decoded batch; the records of ``order``'s paths, in that order."""
    by_path = {r["path"]: r for r in errors}
    if batch is not None:
        for path, top in zip(good, net.classify(batch, top_k=top_k)):
            by_path[path] = record_for(path, top)
    return [by_path[p] for p in order]


def classify_paths(spec: ClassifySpec, paths: list[str]) -> list[dict]:
    """The task: one record per path, in order (an unreadable image gets an error record)."""
    net = network_for(spec)
    check_top_k(net, spec.top_k)  # on a cluster the client may not have had the weights
    good, batch, errors = decode(paths, spec, net.mean_pixel)
    return classify_decoded(net, good, batch, errors, spec.top_k, paths)


def classify_named(spec: ClassifySpec, batch: list[tuple[str, str]]) -> list[dict]:
    """The task on a worker: ``batch`` holds (name, absolute path) pairs; the images are read
    from the absolute paths (a worker has a working directory of its own) and recorded under
    the names the user gave."""
    records = classify_paths(spec, [path for _, path in batch])
    return [{**record, "path": name, **({"error": record["error"].replace(path, name, 1)}
                                        if "error" in record else {})}
            for (name, path), record in zip(batch, records)]


def check_worker(spec: ClassifySpec) -> str | None:
    """Run on each worker before a run: None if the weights and the driver are usable there,
    else what is wrong (the worker's own words). Cheap: no weights are loaded."""
    try:
        weights = spec.weights
        if not os.path.isfile(weights):
            return f"no weight file {weights}" + (" (it is a directory)"
                                                  if os.path.isdir(weights) else "")
        with open(weights, "rb") as handle:
            handle.read(16)
        if spec.quant and not os.path.isfile(spec.quant):
            return f"no quantisation file {spec.quant}"
        get_driver("cnml-dlp" if spec.quant else spec.driver)
    except (OSError, VggjitError) as exc:
        return str(exc)
    return None
