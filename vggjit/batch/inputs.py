"""The images of a batch run: files, directories, globs and manifests, streamed.

A run over a million images must not hold a million decoded anything, and should say how
many images it will see before it starts. :class:`Inputs` therefore walks its sources twice:
:meth:`Inputs.count` (names only, no image is opened) and :meth:`Inputs.__iter__`, which yields
the paths one by one in a stable order (sources in the order given; a directory's files sorted,
recursively; a glob's matches sorted; a manifest's lines as written). With ``unique`` (what a
results file keyed by path needs) a path reached twice, say a file inside a directory that was
also given, is yielded once; without it, a file named twice is classified twice.

A source that names nothing (a missing file given by name, a glob without a match, an empty
directory) is an :class:`vggjit.errors.InputError` before the run starts; a file that is given
by name is kept whatever its extension (the run records it as failed if it is not an image).
"""
from __future__ import annotations

import glob
import itertools
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..errors import InputError

#: Extensions of the files a directory or a glob contributes (lower case, with the dot).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                              ".webp", ".ppm", ".pgm", ".pbm", ".jfif"})

_GLOB_CHARS = frozenset("*?[")


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def walk_images(directory: str) -> Iterator[str]:
    """Image files under ``directory``, recursively, sorted by name at every level.

    Hidden entries (a leading dot: editors' and vggjit's own temporary files) are skipped."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"{directory}: cannot list the directory ({exc.strerror or exc})"
                         ) from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from walk_images(entry.path)
        elif entry.is_file() and is_image_name(entry.name):
            yield entry.path


def read_manifest(path: str) -> Iterator[str]:
    """The paths of a manifest: one per line; blank lines and lines starting with # skipped.

    Relative paths are relative to the manifest's directory, so a manifest can travel with its
    images."""
    base = os.path.dirname(path)
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                name = line.strip()
                if name and not name.startswith("#"):
                    yield name if os.path.isabs(name) else os.path.join(base, name)
    except FileNotFoundError:
        raise InputError(f"{path}: no such manifest file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc})") from None


class Inputs:
    """The image paths named by ``sources`` (files, directories, globs) and ``manifests``.

    Iterate for the paths (strings, as given or joined onto the directory given);
    :meth:`count` counts them without opening any image.
    """

    def __init__(self, sources: Sequence[str] = (), manifests: Sequence[str] = (),
                 unique: bool = True):
        self.unique = unique
        self.sources = [os.fspath(s) for s in sources]
        self.manifests = [os.fspath(m) for m in manifests]
        self._count: int | None = None
        if not self.sources and not self.manifests:
            raise InputError("no images given: name files, directories, globs or --manifest")

    def _expand(self, source: str) -> Iterable[tuple[str, str]]:
        if os.path.isdir(source):
            found = walk_images(source)
            first = next(found, None)
            if first is None:
                raise InputError(f"{source}: no image files in the directory (looked for "
                                 f"{', '.join(sorted(IMAGE_EXTENSIONS))}, recursively)")
            for path in itertools.chain([first], found):
                yield path, os.path.relpath(path, source)
        elif not os.path.exists(source) and _GLOB_CHARS & set(source):
            matches = sorted(glob.iglob(source, recursive=True))
            files = [(m, os.path.basename(m)) for m in matches
                     if os.path.isfile(m) and is_image_name(m)]
            for directory in (m for m in matches if os.path.isdir(m)):
                files.extend((p, os.path.relpath(p, directory)) for p in walk_images(directory))
            if not files:
                raise InputError(f"{source}: the pattern matches no image files")
            yield from files
        else:
            # A plain name is kept even if missing: the run records "no such file" for it, as
            # `vggjit classify` always has, instead of refusing the whole batch.
            yield source, os.path.basename(source)

    def labelled(self) -> Iterator[tuple[str, str]]:
        """(path, label) pairs. The label names the path relative to the directory it was found
        in (``sub/cat.jpg``), else it is the file name; batch outputs are named after it."""
        seen: set[str] = set()
        manifests = (((p, os.path.basename(p)) for p in read_manifest(m))
                     for m in self.manifests)
        for group in (*(self._expand(s) for s in self.sources), *manifests):
            for path, label in group:
                if not self.unique:
                    yield path, label
                    continue
                key = os.path.normpath(path)
                if key not in seen:
                    seen.add(key)
                    yield path, label

    def __iter__(self) -> Iterator[str]:
        return (path for path, _ in self.labelled())

    def count(self) -> int:
        """How many paths iteration yields (one listing pass, the first time it is asked; no
        image is opened). The command line asks before the run, the run again for its total."""
        if self._count is None:
            self._count = sum(1 for _ in self)
        return self._count


def chunks(paths: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive lists of ``size`` paths (the last may be shorter)."""
    batch: list[str] = []
    for path in paths:
        batch.append(path)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def is_inside(path: str | os.PathLike, paths: Iterable[str]) -> bool:
    """Whether ``path`` is one of ``paths`` (resolved), so an output never replaces an input.

    Only the paths with the same file name are resolved: cheap over a million inputs."""
    target = Path(path).resolve()
    return any(Path(p).resolve() == target for p in paths
               if os.path.basename(p) == target.name)
