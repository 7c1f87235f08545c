"""How the numba-cpu driver's kernels are compiled and where they are cached.

Everything here runs when the first kernel module of the driver is imported (when the driver is
first selected); ``import vggjit`` and ``vggjit drivers`` never import numba. How the kernels
run (threads, the threading layer, BLAS held at one thread) is in threads.py.

JIT options (:func:`jit`)
    ``cache=True``: compiled kernels are written to disk, so a new process loads them instead of
    compiling (the first run compiles for about 20 s; ``vggjit warmup`` does it up front).
    ``nogil=True``: kernels release the GIL, so other Python threads keep running, and a Numba
    worker that needs the GIL once (BLAS binding on its first use) cannot deadlock.
    ``error_model="numpy"``: integer and float division follow NumPy (no ZeroDivisionError check
    in every loop, which would also block vectorisation).
    ``fastmath={"contract", "reassoc"}``: lets LLVM fuse multiply-adds and reorder sums so that
    reductions (softmax, pooling, db) vectorise. Deliberately *not* ``nnan``/``ninf``: the NaN
    policy in :mod:`vggjit.checks` says NaN propagates through ReLU and pooling, and those flags
    would allow the compiler to assume there is none. Results differ from strictly ordered
    float32 arithmetic by rounding only.

Cache location
    Numba caches next to the source (``__pycache__``). When the package is installed somewhere
    read-only that fails, so :func:`configure_cache` points Numba at ``$NUMBA_CACHE_DIR`` if the
    user set it, else ``$VGGJIT_HOME/numba``, else ``~/.cache/vggjit/numba``; when no directory at
    all is writable the kernels compile without caching (every process compiles) and
    :data:`CACHE` says why. Numba keys a cached kernel by the content of the file that defines
    it, not of the helpers it inlines from other files, so :func:`purge_stale_cache` drops all
    of this package's cached kernels whenever any of its source files changed.

Several processes, one cache
    Numba writes every cache file to a temporary name and renames it into place, so a reader
    never sees half a file. Adding a kernel to its index is not atomic, though: Numba reads the
    index, picks the first free data-file number and writes both back, so two processes adding
    different signatures of one kernel at once could both pick ``.1.nbc`` and leave an index
    that names the other's code. :func:`serialise_cache_writes` holds a file lock
    (``vggjit_numba_cpu.lock`` in the cache directory) around that step for this package's
    kernels, which makes the two-process warm-up (warmup.py) and any other processes sharing
    the cache (a cluster's workers, parallel test runs) safe.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numba

from vggjit.fileio import atomic_write, home_dir

# The threading layer must be chosen before the first parallel kernel is compiled; every kernel
# module imports this one first.
from . import threads  # noqa: F401

PACKAGE_DIR = Path(__file__).resolve().parent

#: fastmath flags of every kernel (see the module docstring for why these and not all).
FASTMATH = frozenset({"contract", "reassoc"})
#: what Numba's parallel passes may turn into parallel loops: the explicit prange loops only.
PARALLEL_OPTIONS = {"prange": True, "comprehension": False, "reduction": False,
                    "inplace_binop": False, "setitem": False, "numpy": False, "stencil": False,
                    "fusion": False}
#: error model of every kernel.
ERROR_MODEL = "numpy"


# -- where the compiled kernels are cached -----------------------------------------------------
@dataclass(frozen=True)
class CacheChoice:
    enabled: bool
    directory: str      # where the kernels of this package are cached ("" when disabled)
    reason: str         # one line for `vggjit drivers` / the bench


def _writable_dir(path: Path) -> bool:
    """Can Numba cache into ``path``? The same test Numba's locators make: mkdir + a temp file."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def user_cache_dir(environ=os.environ) -> Path:
    """$VGGJIT_HOME/numba: the kernel cache when the package directory is read-only."""
    return home_dir(environ) / "numba"


def choose_cache(package_dir: Path = PACKAGE_DIR, environ=os.environ,
                 writable=_writable_dir) -> CacheChoice:
    """Decide where this package's kernels are cached (pure decision; see configure_cache)."""
    user_dir = environ.get("NUMBA_CACHE_DIR")
    if user_dir:
        if writable(Path(user_dir)):
            return CacheChoice(True, user_dir, "NUMBA_CACHE_DIR")
        fallback = user_cache_dir(environ)
        if writable(fallback):
            return CacheChoice(True, str(fallback),
                               f"NUMBA_CACHE_DIR={user_dir} is not writable; using {fallback}")
        return CacheChoice(False, "", f"no writable cache directory (tried {user_dir}, "
                                      f"{fallback}): kernels compile in every process")
    in_tree = package_dir / "__pycache__"
    if writable(in_tree):
        return CacheChoice(True, str(in_tree), "package directory")
    fallback = user_cache_dir(environ)
    if writable(fallback):
        return CacheChoice(True, str(fallback),
                           f"package directory {package_dir} is read-only; using {fallback}")
    return CacheChoice(False, "", f"no writable cache directory (tried {in_tree}, {fallback}): "
                                  "kernels compile in every process")


def configure_cache(choice: CacheChoice) -> None:
    """Apply ``choice`` before any kernel of this package is decorated."""
    if choice.enabled and choice.directory and not choice.directory.endswith("__pycache__"):
        # Numba's UserProvidedCacheLocator reads config.CACHE_DIR when a function is decorated;
        # the environment variable keeps it in force if Numba re-reads its configuration.
        numba.config.CACHE_DIR = choice.directory
        os.environ["NUMBA_CACHE_DIR"] = choice.directory
    if not choice.enabled:
        warnings.warn(f"vggjit numba-cpu: {choice.reason}", RuntimeWarning, stacklevel=2)


def _kernel_cache_dir(choice: CacheChoice) -> Path | None:
    """The directory Numba will write this package's cache files into."""
    if not choice.enabled:
        return None
    if choice.directory.endswith("__pycache__"):
        return Path(choice.directory)
    try:   # Numba's own naming of the per-source-directory subfolder
        from numba.core.caching import _CacheLocator
        sub = _CacheLocator.get_suitable_cache_subpath(str(PACKAGE_DIR / "kernel_cache.py"))
    except Exception:   # pragma: no cover - other Numba versions: nothing to purge
        return None
    return Path(choice.directory) / sub


def source_stamp(package_dir: Path = PACKAGE_DIR) -> str:
    """Hash of every source file of this package."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


#: written into the cache directory by a complete warm-up: the sources, Numba and Python it
#: compiled for (see mark_cache_warm)
WARM_MARK = "vggjit_numba_cpu.warm"


def purge_stale_cache(cache_dir: Path | None, package_dir: Path = PACKAGE_DIR) -> bool:
    """Drop this package's cached kernels when any of its source files changed.

    Numba keys a cached kernel by the file that defines it only; a kernel that inlines a
    helper from another file of the package (blas.sgemm, the jit options here) would
    otherwise keep running the old helper. Returns True when files were removed.
    """
    if cache_dir is None:
        return False
    # A directory that does not exist yet gets its stamp now: Numba creates it only when the
    # first kernel is written, and without a stamp the next process would purge that kernel.
    with contextlib.suppress(OSError):
        cache_dir.mkdir(parents=True, exist_ok=True)
    if not cache_dir.is_dir():
        return False
    stamp_file = cache_dir / "vggjit_numba_cpu.sources"
    stamp = source_stamp(package_dir)
    try:
        if stamp_file.read_text() == stamp:
            return False
    except OSError:
        pass
    modules = {path.stem for path in package_dir.glob("*.py")}
    removed = False
    with contextlib.suppress(OSError):
        (cache_dir / WARM_MARK).unlink()
    for path in cache_dir.iterdir():
        if path.suffix in (".nbi", ".nbc") and path.name.split(".", 1)[0] in modules:
            with contextlib.suppress(OSError):
                path.unlink()
                removed = True
    with contextlib.suppress(OSError):
        stamp_file.write_text(stamp)
    return removed


def serialise_cache_writes(cache_dir: Path | None) -> bool:
    """Hold an exclusive file lock while Numba adds a kernel of ``cache_dir`` to its index and
    writes its data file (see the module docstring). Returns False, changing nothing, where
    there is no ``fcntl`` (not POSIX) or this Numba stores its cache otherwise."""
    try:
        import fcntl

        from numba.core.caching import IndexDataCacheFile
    except ImportError:   # pragma: no cover - Windows, or another Numba layout
        return False
    save = getattr(IndexDataCacheFile, "save", None)
    if cache_dir is None or save is None:
        return False
    if getattr(save, "vggjit_locks", None) is not None:
        save.vggjit_locks.add(os.path.realpath(cache_dir))
        return True
    locked_dirs = {os.path.realpath(cache_dir)}

    @functools.wraps(save)
    def locked_save(self, key, data):
        directory = os.path.realpath(getattr(self, "_cache_path", ""))
        if directory not in locked_dirs:     # another package's kernels: Numba's own way
            return save(self, key, data)
        try:
            lock = open(os.path.join(directory, "vggjit_numba_cpu.lock"), "ab")
        except OSError:                       # cannot lock: save as Numba would
            return save(self, key, data)
        with lock:
            with contextlib.suppress(OSError):   # a file system without locks: save unlocked
                fcntl.flock(lock, fcntl.LOCK_EX)
            return save(self, key, data)     # closing the file releases the lock

    locked_save.vggjit_locks = locked_dirs
    IndexDataCacheFile.save = locked_save
    return True


def _warm_token(package_dir: Path = PACKAGE_DIR) -> str:
    return (f"{source_stamp(package_dir)} numba {numba.__version__} "
            f"{sys.implementation.cache_tag}")


def mark_cache_warm(cache_dir: Path | None = None, package_dir: Path = PACKAGE_DIR) -> None:
    """Note in the cache directory that a complete warm-up has filled it (the driver's warmup
    calls this at its end), so the next warm-up need not share work with a helper process."""
    cache_dir = _kernel_cache_dir(CACHE) if cache_dir is None else cache_dir
    if cache_dir is not None:
        with contextlib.suppress(OSError), atomic_write(cache_dir / WARM_MARK, "w") as mark:
            mark.write(_warm_token(package_dir))


def cache_is_warm(cache_dir: Path | None = None, package_dir: Path = PACKAGE_DIR) -> bool:
    """Has a complete warm-up filled the kernel cache for these sources, this Numba and this
    Python? (purge_stale_cache drops the mark with the kernels.) A mark whose kernels were
    deleted by hand only costs the next warm-up its helper process."""
    cache_dir = _kernel_cache_dir(CACHE) if cache_dir is None else cache_dir
    try:
        return cache_dir is not None and (cache_dir / WARM_MARK).read_text() == _warm_token(
            package_dir)
    except OSError:
        return False


CACHE = choose_cache()
configure_cache(CACHE)
purge_stale_cache(_kernel_cache_dir(CACHE))
serialise_cache_writes(_kernel_cache_dir(CACHE))


# -- the JIT helper ----------------------------------------------------------------------------
def jit(fn=None, *, parallel: bool = True, **overrides):
    """``numba.njit`` with the project's options: ``@jit``, ``@jit(parallel=False)``, or
    ``@jit(signature, ...)`` for a kernel compiled for exactly that signature (then at import,
    or loaded from the cache)."""
    signature = None
    if fn is not None and not callable(fn):
        signature, fn = fn, None
    if parallel:
        parallel = dict(PARALLEL_OPTIONS)
    options = dict(cache=CACHE.enabled, parallel=parallel, nogil=True, fastmath=set(FASTMATH),
                   error_model=ERROR_MODEL, boundscheck=False)
    options.update(overrides)
    decorate = numba.njit(signature, **options) if signature else numba.njit(**options)
    return decorate if fn is None else decorate(fn)

