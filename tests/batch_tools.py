"""Shared pieces of the batch tests: a small weight file and a folder of tiny images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from matconvnet_fixture import colour_params, write_matconvnet

#: The documented example plugin (installed by conftest): fast float32 NumPy ops, and
#: importable in Dask's worker processes, which inherit sys.path.
DRIVER = "example-numpy"


def make_weights(directory: Path) -> Path:
    return write_matconvnet(directory / "colour.mat", colour_params(), version="new")


def make_images(directory: Path, count: int, bad: int = 0) -> list[Path]:
    """``count`` small random images in ``directory`` (some in a sub-folder), plus ``bad``
    files with an image extension that are not images."""
    rng = np.random.default_rng(count)
    paths = []
    for i in range(count):
        folder = directory / ("sub" if i % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (24 + i % 5, 30, 3), np.uint8)).save(path)
        paths.append(path)
    for i in range(bad):
        path = directory / f"broken{i}.jpg"
        path.write_text("not an image")
        paths.append(path)
    return paths


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def by_path(records: list[dict]) -> dict[str, dict]:
    """{path: record}, checking that no path appears twice."""
    table = {r["path"]: r for r in records}
    assert len(table) == len(records), "a path was recorded twice"
    return table


def make_style_weights(directory: Path) -> Path:
    """A tiny VGG-shaped weight file with every layer style transfer uses by default."""
    from matconvnet_fixture import random_params
    from style_tools import TINY_BLOCKS, TINY_CLASSIFIER

    return write_matconvnet(directory / "tiny.mat",
                            random_params(TINY_BLOCKS, TINY_CLASSIFIER),
                            blocks=TINY_BLOCKS, classifier=TINY_CLASSIFIER)


#: Style-transfer options that make a batch job take a fraction of a second.
STYLE_OPTIONS = ["--size", "32", "-n", "2", "--optimizer", "adam", "--lr", "5"]
