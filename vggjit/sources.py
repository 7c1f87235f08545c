"""``vggjit weights fetch --source torchvision|timm``: their published files, verified.

The transfer itself is :func:`vggjit.download.download` (resumable ``.part`` file, retries) into
a staging name beside the target; the staged file is checked, then renamed over the target, so
a file at the target is always a verified one. torchvision's files are checked by the SHA-256
prefix their names carry (what torch hub checks); timm publishes no checksum vggjit could pin,
so its file is checked by reading it whole as a VGG (every layer's shape). The addresses are in
:mod:`vggjit.weights_urls`.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from .download import download
from .errors import OutputExistsError, VggjitError, WeightFileError
from .fileio import home_dir
from .weights import load_weights
from .weights_urls import NETWORKS, SOURCE_FILES

STAGING_SUFFIX = ".unverified"


def file_sha256(path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def source_target(source: str, network: str, output=None) -> Path:
    """Where the file goes: ``output``, else ``home_dir()/<published name>``."""
    _, name, _ = _entry(source, network)
    return Path(output).expanduser() if output else home_dir() / name


def fetch_source(source: str, network: str = "vgg19", *, url: str | None = None, output=None,
                 overwrite: bool = False, progress: bool = True, **options) -> Path:
    """Download ``network`` from ``source`` ("torchvision" or "timm"), verify it, put it in
    place; return its path. An existing verified file is kept."""
    default_url, _, sha_prefix = _entry(source, network)
    target = source_target(source, network, output)
    if target.is_dir():
        raise VggjitError(f"{target} is a directory; give a file name")
    if target.exists():
        problem = _problem(target, sha_prefix)
        if problem is None:
            return target
        if not overwrite:
            raise OutputExistsError(f"{target} already exists and {problem}; pass --force to "
                                    f"replace it, or --output to download elsewhere")
    staged = target.with_name(target.name + STAGING_SUFFIX)
    if not staged.exists():
        download(url or default_url, staged, None, progress=progress, **options)
    problem = _problem(staged, sha_prefix)
    if problem is not None:
        with contextlib.suppress(OSError):
            staged.unlink()
        raise WeightFileError(f"{url or default_url}: the downloaded file {problem}. It was "
                              f"deleted and nothing was installed at {target}; run the command "
                              f"again (a proxy or mirror may have altered the file)")
    os.replace(staged, target)
    return target


def _entry(source: str, network: str):
    if network not in NETWORKS:
        raise VggjitError(f"unknown network {network!r}; choose one of {', '.join(NETWORKS)}")
    try:
        return SOURCE_FILES[(source, network)]
    except KeyError:
        sources = sorted({s for s, _ in SOURCE_FILES})
        raise VggjitError(f"unknown source {source!r} for {network}; choose one of "
                          f"{', '.join(sources)} (or matconvnet, VGG19 only)") from None


def _problem(path: Path, sha_prefix: str | None) -> str | None:
    """Why ``path`` is not the published file (None: it is)."""
    if sha_prefix is not None:
        digest = file_sha256(path)
        return None if digest.startswith(sha_prefix) else (
            f"has SHA-256 {digest[:16]}..., not the published {sha_prefix}...")
    try:
        load_weights(path, cache=False)
    except WeightFileError as exc:
        return f"is not a readable VGG file ({exc})"
    return None
