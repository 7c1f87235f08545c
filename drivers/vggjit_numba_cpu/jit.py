"""The one place where the numba-cpu driver decides how its kernels are compiled and threaded.

Everything here runs when the driver is first selected (``vggjit_numba_cpu.driver`` imports it);
``import vggjit`` and ``vggjit drivers`` never import numba.

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

Threads (:class:`ThreadPlan`)
    The driver uses exactly one thread pool: Numba's. Every GEMM is a single-threaded sgemm
    called from inside a Numba worker on that worker's own tile (blas.py), so BLAS's own pool
    never runs at the same time as Numba's and nothing is oversubscribed; independent GEMMs per
    worker also scale better than one 2-thread GEMM. While a kernel runs, the BLAS library the
    kernels call is limited to one thread through threadpoolctl (a few microseconds) and
    restored afterwards.

    Threading layer: ``workqueue`` unless ``NUMBA_THREADING_LAYER`` says otherwise. Numba's
    default on Linux is GNU OpenMP, whose idle workers spin (for a while by default, without
    end under ``OMP_WAIT_POLICY=active``) and starve whatever runs next on the same cores:
    issue 3 measured an im2col + sgemm convolution built from a prange region followed by a
    multi-threaded np.dot at 45% of the sgemm ceiling with OpenMP, 84% with workqueue, and with
    the active policy NumPy's own sgemm in the same process drops to about half
    (bench/kernels.py). Workqueue workers block on a semaphore when idle, cannot spin at all,
    and the layer ships with Numba. ``OMP_WAIT_POLICY=passive`` would do the same for OpenMP
    but only if set before libgomp loads, which a library cannot guarantee. Because this driver
    never hands off between Numba's pool and BLAS's, its convolutions themselves measure the
    same under all layers. Workqueue is not re-entrant, so the driver serialises its kernels
    with one process-wide lock (:data:`KERNEL_LOCK`): calls from several Python threads are
    safe and run one at a time.

    Thread count: ``threads=`` given to the driver, else ``$NUMBA_NUM_THREADS``, else
    ``$OMP_NUM_THREADS``, else every core Numba sees.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numba

from vggjit.fileio import home_dir

PACKAGE_DIR = Path(__file__).resolve().parent

#: fastmath flags of every kernel (see the module docstring for why these and not all).
FASTMATH = frozenset({"contract", "reassoc"})
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
        sub = _CacheLocator.get_suitable_cache_subpath(str(PACKAGE_DIR / "jit.py"))
    except Exception:   # pragma: no cover - other Numba versions: nothing to purge
        return None
    return Path(choice.directory) / sub


def source_stamp(package_dir: Path = PACKAGE_DIR) -> str:
    """Hash of every source file of this package."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def purge_stale_cache(cache_dir: Path | None, package_dir: Path = PACKAGE_DIR) -> bool:
    """Drop this package's cached kernels when any of its source files changed.

    Numba keys a cached kernel by the file that defines it only; a kernel that inlines a
    helper from another file of the package (blas.sgemm, the jit options here) would
    otherwise keep running the old helper. Returns True when files were removed.
    """
    if cache_dir is None or not cache_dir.is_dir():
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
    for path in cache_dir.iterdir():
        if path.suffix in (".nbi", ".nbc") and path.name.split(".", 1)[0] in modules:
            with contextlib.suppress(OSError):
                path.unlink()
                removed = True
    with contextlib.suppress(OSError):
        stamp_file.write_text(stamp)
    return removed


CACHE = choose_cache()
configure_cache(CACHE)
purge_stale_cache(_kernel_cache_dir(CACHE))


# -- threading layer ---------------------------------------------------------------------------
def _choose_threading_layer() -> str:
    """workqueue unless the user chose one through NUMBA_THREADING_LAYER (see module doc)."""
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return os.environ["NUMBA_THREADING_LAYER"]
    numba.config.THREADING_LAYER = "workqueue"
    return "workqueue"


REQUESTED_THREADING_LAYER = _choose_threading_layer()

#: Held while a kernel of this driver runs: workqueue must not be entered from two threads, and
#: the driver's reusable buffers belong to one call at a time.
KERNEL_LOCK = threading.RLock()


def threading_layer() -> str:
    """The layer actually in use (known after the first parallel kernel ran), else the request."""
    try:
        return numba.threading_layer()
    except ValueError:
        return REQUESTED_THREADING_LAYER


def default_threads(environ=os.environ) -> int:
    """NUMBA_NUM_THREADS, else OMP_NUM_THREADS, else all of Numba's threads (capped by them)."""
    limit = numba.config.NUMBA_NUM_THREADS
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        value = environ.get(var, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return max(1, min(int(value), limit))
    return limit


class ThreadPlan:
    """How many Numba workers a call uses, and BLAS held at one thread while they run."""

    def __init__(self, threads: int | None = None, blas_library: str = ""):
        limit = numba.config.NUMBA_NUM_THREADS
        if threads is None:
            threads = default_threads()
        threads = int(threads)
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = min(threads, limit)
        self.blas_library = blas_library
        self._blas = None   # threadpoolctl controllers of the BLAS the kernels call, found lazily

    def _blas_controllers(self):
        if self._blas is None:
            self._blas = _blas_controllers(self.blas_library)
        return self._blas

    @contextlib.contextmanager
    def kernels(self):
        """Run Numba kernels (which may call BLAS from each worker) with this plan."""
        with KERNEL_LOCK:
            if numba.get_num_threads() != self.threads:
                numba.set_num_threads(self.threads)   # per calling thread in Numba
            saved = []
            for lib in self._blas_controllers():
                n = lib.get_num_threads()
                if n != 1:
                    lib.set_num_threads(1)
                    saved.append((lib, n))
            try:
                yield
            finally:
                for lib, n in saved:
                    lib.set_num_threads(n)

    def describe(self) -> dict:
        libs = self._blas_controllers()
        return {"numba_threads": self.threads, "threading_layer": threading_layer(),
                "blas_limited_to_one_thread": [f"{lib.internal_api} {lib.version} "
                                               f"({lib.filepath})" for lib in libs]
                                              or ["none found (not limited)"],
                "cache": CACHE.directory or "disabled", "cache_reason": CACHE.reason}


def _blas_controllers(library: str) -> list:
    """threadpoolctl controllers of the BLAS library at ``library`` (the one the kernels call);
    every loaded BLAS when the path is unknown, so that none can start its own threads."""
    from threadpoolctl import ThreadpoolController

    libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    if library:
        mine = [lib for lib in libs
                if os.path.realpath(lib.filepath) == os.path.realpath(library)]
        if mine:
            return mine
    return libs


# -- the JIT helper ----------------------------------------------------------------------------
def jit(fn=None, *, parallel: bool = True, **overrides):
    """``numba.njit`` with the project's options; ``@jit`` or ``@jit(parallel=False)``."""
    options = dict(cache=CACHE.enabled, parallel=parallel, nogil=True, fastmath=set(FASTMATH),
                   error_model=ERROR_MODEL, boundscheck=False)
    options.update(overrides)
    decorate = numba.njit(**options)
    return decorate if fn is None else decorate(fn)

