"""The numba-cpu driver: the contract's ops on the kernels of this package.

The base class has already checked every argument and made arrays float32 and C-contiguous;
this class plans tiles, hands out reusable buffers and runs each kernel under the thread plan
(threads.ThreadPlan: the worker threads, BLAS held at one thread inside them, one kernel at a
time).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from vggjit.checks import conv_output_length
from vggjit.contract import BACKWARD, FORWARD, Driver
from vggjit.errors import InputError

from . import conv, elementwise, gram, handoff, linear, pool, softmax
from . import winograd as wino      # the module; `winograd` is also the option's name
from . import winograd4 as wino4
from . import winograd_split as wino_split
from .allocator import release_memory, settle_malloc
from .blas import find_sgemm
from .kernel_cache import CACHE, mark_cache_warm
from .threads import ThreadPlan
from .warmup import STEPS, split_warmup

#: per-worker tile target: the column tile of one worker stays around this size (L2 is 2 MiB
#: per core here, and OpenBLAS needs room for its packed panels beside it).
DEFAULT_TILE_KB = 1024
#: fewest floats a streaming kernel (ReLU, 2x2 pooling, the small-batch linear layer, softmax)
#: is shared out for: below it one worker does it all, as a launch (50-70 us) would cost more
#: than the work (a ReLU of 64 K floats takes about 20 us)
MIN_SHARE = 1 << 16

#: values of the conv_path and dw_path options (see NumbaCpuDriver)
CONV_PATHS = ("auto", "img2col", "shifted", "cout-split", "winograd", "winograd-split",
              "winograd4", "winograd4-split")
#: the Winograd paths among them (F(2x2, 3x3) in winograd.py and winograd_split.py, F(4x4, 3x3)
#: in winograd4.py)
WINOGRAD_PATHS = ("winograd", "winograd-split", "winograd4", "winograd4-split")
DW_PATHS = ("auto", "rows", "channels")


class MaxPoolSwitches(NamedTuple):
    """This driver's record of a max pooling (what max_pool2d returns beside y).

    index: int32 [N, C, Ho, Wo], each window's arg-max as ``row * W + col`` in its plane;
    size, stride: the window, so the backward can check every index lies in its own window.
    """

    index: np.ndarray
    size: int
    stride: int


class NumbaCpuDriver(Driver):
    """img2col + sgemm and Winograd convolutions, parallel Numba kernels for everything else.

    Options (``vggjit.get_driver("numba-cpu", **options)``):
      threads: workers (default: $NUMBA_NUM_THREADS, else $OMP_NUM_THREADS, else all
          cores); BLAS runs single-threaded inside each worker.
      memory_bound_mb: upper bound of the convolution's working buffers (default 128 MB); the
          tiles shrink to fit, down to one output row per worker.
      tile_kb: the per-worker tile size the planner aims for (default 1024).
      blas: which sgemm the workers call: "auto" (NumPy's BLAS when it can be called directly,
          else SciPy's), "numpy" or "scipy" (see blas.py).
      winograd: 3x3 stride-1 pad-1 convolutions (forward and backward dx) by Winograd
          F(2x2, 3x3) or F(4x4, 3x3) where each measured faster (default True; False: img2col
          paths only, for comparison; see winograd.py and winograd4.py).
      conv_path: "auto" (default: each convolution takes the path that measured fastest for
          its shape, see the ``use_*`` rules in conv.py and winograd.py), or one path forced
          wherever its geometry allows it, img2col elsewhere: "img2col", "shifted" (stride 1,
          K > 1), "cout-split", "winograd" (F(2x2, 3x3)), "winograd-split" (F(2x2, 3x3) with
          the output channels split among the workers), "winograd4" (F(4x4, 3x3)) or
          "winograd4-split", the last four for 3x3 stride 1 pad 1, forward and backward dx.
          Forcing is for checking and timing each path (the record's conformance variants,
          see __init__.py); every path gives the same results within float32 rounding.
      dw_path: "auto" (default), "rows" or "channels": how the weight gradient is split among
          the workers (conv.conv2d_weight_grad_rows or conv.weight_grad_channels).
    """

    name = "numba-cpu"
    capabilities = frozenset({FORWARD, BACKWARD})
    #: what conv_path and dw_path can force ("auto" aside); the warm-up runs each (warmup.py)
    forced_conv_paths = CONV_PATHS[1:]
    winograd_paths = WINOGRAD_PATHS
    forced_dw_paths = DW_PATHS[1:]

    def __init__(self, threads: int | None = None, memory_bound_mb: float = 128,
                 tile_kb: int = DEFAULT_TILE_KB, blas: str = "auto", winograd: bool = True,
                 conv_path: str = "auto", dw_path: str = "auto"):
        if conv_path not in CONV_PATHS:
            raise InputError(f"conv_path must be one of {', '.join(CONV_PATHS)}; "
                             f"got {conv_path!r}")
        if dw_path not in DW_PATHS:
            raise InputError(f"dw_path must be one of {', '.join(DW_PATHS)}; got {dw_path!r}")
        self.conv_path, self.dw_path = conv_path, dw_path
        if memory_bound_mb <= 0:
            raise InputError(f"memory_bound_mb must be positive, got {memory_bound_mb!r}")
        if tile_kb <= 0:
            raise InputError(f"tile_kb must be positive, got {tile_kb!r}")
        try:
            self._sgemm = find_sgemm(blas)
            self._plan = ThreadPlan(threads, self._sgemm.library, handoff.process_workers)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        settle_malloc()    # activations reuse the heap's memory, not fresh pages (allocator.py)
        self.memory_bound = int(memory_bound_mb * 1024 * 1024)
        self.tile_bytes = int(tile_kb * 1024)
        self._work = GrowingBuffer()                # every call's tiles (_workspace)
        self.winograd = bool(winograd)
        # Winograd weight transforms, reused while the weights stay the same (winograd.py)
        self._transforms = wino.TransformCache(fingerprint=self._checksum)
        # F(4x4)'s forward and dx kernels have transforms of their own (winograd4.py)
        self._transforms4 = wino.TransformCache(wino4.CACHE_BYTES, wino4.weight_transform,
                                                fingerprint=self._checksum)
        # ... and so do F(2x2)'s split by output channels (winograd_split.py)
        self._transforms_split = wino.TransformCache(
            wino_split.CACHE_BYTES, wino_split.weight_transform, fingerprint=self._checksum)

    @property
    def threads(self) -> int:
        return self._plan.threads

    def describe(self) -> dict:
        """Threads, threading layer, BLAS, cache and work space (the bench prints this)."""
        info = self._plan.describe()
        info.update(sgemm=self._sgemm.describe(), memory_bound_mb=self.memory_bound / 2**20,
                    malloc_keeps_freed_memory=settle_malloc(),
                    tile_kb=self.tile_bytes // 1024,
                    workspace_mb=round(self.workspace_bytes / 2**20, 1),
                    cache=CACHE.directory or "disabled", cache_reason=CACHE.reason,
                    cache_enabled=CACHE.enabled, winograd=self.winograd,
                    conv_path=self.conv_path, dw_path=self.dw_path)
        return info

    def _workspace(self, size: int) -> np.ndarray:
        """The float32 work buffer (tiles of every worker), at least ``size`` elements.

        One buffer serves every call: it is kept, reused, and only grown when a call needs
        more, so what the driver holds is the largest single call's need, which the planner
        keeps under ``memory_bound`` (see conv.plan_forward/plan_backward)."""
        return self._work.at_least(size)

    @property
    def workspace_bytes(self) -> int:
        return self._work.nbytes

    def release_buffers(self) -> None:
        """Drop the work buffers and the cached Winograd weight transforms (all are re-created
        by the next convolution), and return the memory the heap keeps free to the system
        (allocator.py)."""
        self._work.release()
        for cache in (self._transforms, self._transforms4, self._transforms_split):
            cache.clear()
        release_memory()

    def warmup(self) -> None:
        """Compile (or load from the cache) every kernel, including each convolution path.

        First, where it can, warmup.split_warmup compiles the kernels on two processes at once
        (a forked helper and this one). Then, whatever that did, the base class runs every op
        once on tiny shapes here, and so does every step of warmup.STEPS (each convolution
        path and dw split forced in turn, the general pooling, the sgemm linear...), loading
        what the helper compiled from the cache and compiling the rest.
        """
        split_warmup(self)
        super().warmup()
        for step in STEPS:
            step(self)
        mark_cache_warm()     # every kernel is in the cache now: later warm-ups need no helper

    @property
    def accuracy_paths(self) -> tuple[str, ...]:
        """The convolution paths this driver may take whose float32 error is larger than
        img2col's (the test suite's tolerance table bounds each): "winograd4" (F(4x4), see
        winograd4.py) unless Winograd is off or another path is forced."""
        if self.winograd and self.conv_path in ("auto", "winograd4", "winograd4-split"):
            return ("winograd4",)
        return ()

    def _winograd_path(self, n, cin, cout, h, wd, k, stride, pad) -> str | None:
        """"winograd" or "winograd-split" (F(2x2)), "winograd4" or "winograd4-split" (F(4x4)),
        or None (no Winograd) for this convolution: only 3x3 s1 p1, and (conv_path "auto")
        only where it measured faster."""
        if not (self.winograd and wino.applies(k, stride, pad)):
            return None
        if self.conv_path != "auto":
            return self.conv_path if self.conv_path in WINOGRAD_PATHS else None
        if wino4.use_winograd4(n, cin, cout, h, wd, self.threads):
            return "winograd4"
        if wino4.use_split(n, cin, cout, h, wd, self.threads):
            return "winograd4-split"
        if wino_split.use_split(n, cin, cout, h, wd, self.threads):
            return "winograd-split"
        if wino.use_winograd(n, cin, cout, h, wd, self.threads):
            return "winograd"
        return None

    def _forward_path(self, n, cin, cout, h, wd, k, stride, pad) -> str:
        """One of WINOGRAD_PATHS, "shifted", "cout-split" or "img2col" for this convolution:
        the forced path where its geometry allows it, else the measured rule."""
        ho = conv_output_length(h, k, stride, pad)
        wo = conv_output_length(wd, k, stride, pad)
        winograd_path = self._winograd_path(n, cin, cout, h, wd, k, stride, pad)
        if winograd_path is not None:
            return winograd_path
        forced = self.conv_path
        if forced == "shifted" or (forced == "auto" and conv.use_shifted(stride, k, cout)):
            if stride == 1 and k > 1:
                return "shifted"
        fits = 4 * cin * k * k * ho * wo <= self.memory_bound     # the split's one column matrix
        if forced == "cout-split" or (forced == "auto" and conv.use_cout_split(
                n, ho, wo, cout, cin * k * k, self.threads, self.memory_bound)):
            if fits:
                return "cout-split"
        return "img2col"

    def _rows_dw(self, n, cout, kd, ho, wo) -> bool:
        """dw by row tiles (else by channel blocks)?"""
        if self.dw_path != "auto":
            return self.dw_path == "rows"
        return conv.use_rows_dw(cout, kd, n, ho, wo)

    def _checksum(self, w) -> int:
        """winograd.checksum of w, its blocks shared out among the workers."""
        partial = np.empty(wino.CHECKSUM_BLOCKS, np.uint64)
        workers = self._share_workers(w.size)
        self._plan.run(wino.checksum_blocks, workers, w, workers, partial)
        return wino.combine_checksum(partial)

    def _transform4(self, w, flip, pixels):
        """F(4x4)'s weight transform of w (flip: the dx kernel's) for a call on ``pixels``
        output pixels (N*H*W): from the cache while w is unchanged, but computed for the call
        alone on large maps, where it costs a few percent of the convolution and the cached
        forward and dx copies (each 4x the weights) would add to the peak memory of a style
        step (winograd4.transform_per_call). A fresh array each time: the heap keeps freed
        memory (allocator.py), so it costs no page faults, and while the large maps of
        conv1_x peak it holds nothing (a buffer kept for the largest call held 37.7 MB
        through the whole step, at the same speed)."""
        if not wino4.transform_per_call(pixels):
            return self._transforms4.get(w, flip)
        return wino4.weight_transform(w, flip)

    def _winograd(self, path, x, w, b, flip, relu=False, mask=None):
        """conv3x3(x, w) + b (stride 1, pad 1) by Winograd, ``path`` "winograd" (F(2x2, 3x3)),
        "winograd4" (F(4x4, 3x3) by tile rows), "winograd4-split" or "winograd-split" (F(4x4)
        or F(2x2) by output channels, one image at a time: every worker first transforms its
        share of the input channels, then computes its block of output channels from all of
        them); flip=True convolves with the backward-dx kernel of w instead (see winograd.py),
        b then has Cin entries; relu=True applies the ReLU as the output is written; mask
        (shaped like x): x is read as 0 where mask <= 0."""
        n, cin, h, wd = x.shape
        cout = w.shape[1] if flip else w.shape[0]
        y = np.empty((n, cout, h, wd), np.float32)
        mask = conv.NO_MASK if mask is None else mask
        if path in ("winograd4-split", "winograd-split"):
            workers = self.threads
            with self._plan.kernels():
                if path == "winograd4-split":
                    split, u = wino4, self._transform4(w, flip, n * h * wd)
                else:
                    split, u = wino_split, self._transforms_split.get(w, flip)
            work = self._workspace(split.split_floats(cin, cout, h, wd, workers))
            blas = self._sgemm.kernel_args(workers)
            bounds = conv.channel_blocks(cout, workers)
            for i in range(n):
                self._plan.run(split.split_inputs, workers, x, i, workers, work, mask, cout)
                self._plan.run(split.split_outputs, workers, u, b, i, bounds, work, y, blas,
                               relu, cin)
            return y
        if path == "winograd4":
            rows = wino4.plan_rows(h, wd, cin, cout, self.threads, n, self.tile_bytes,
                                   self.memory_bound)
            workers = max(1, min(self.threads, n * -(-((h + 3) // 4) // rows)))
            work = self._workspace(workers * wino4.chunk_floats(cin, cout, wd, rows))
            with self._plan.kernels():
                u = self._transform4(w, flip, n * h * wd)
            self._plan.run(wino4.winograd4_forward, workers, x, u, b, rows, workers, work, y,
                           self._sgemm.kernel_args(workers), relu, mask)
            return y
        rows = wino.plan_rows(h, wd, cin, cout, self.threads, n, self.tile_bytes,
                              self.memory_bound)
        workers = max(1, min(self.threads, n * -(-((h + 1) // 2) // rows)))
        work = self._workspace(workers * wino.chunk_floats(cin, cout, wd, rows))
        with self._plan.kernels():
            u = self._transforms.get(w)   # one transform serves forward and dx (flip)
        self._plan.run(wino.winograd_forward, workers, x, u, b, rows, workers, work, y,
                       self._sgemm.kernel_args(workers), flip, relu, mask)
        return y

    # -- convolution --------------------------------------------------------------------------
    def _conv2d(self, x, w, b, stride, pad):
        return self._conv(x, w, b, stride, pad, False)

    def _conv2d_relu(self, x, w, b, stride, pad):
        return self._conv(x, w, b, stride, pad, True)

    def _conv(self, x, w, b, stride, pad, relu):
        """Every forward path takes ``relu``: the ReLU is applied to each output tile as it is
        written, so the fused op costs no pass over y and no second array."""
        n, cin, h, wd = x.shape
        cout, _, k, _ = w.shape
        ho, wo = conv_output_length(h, k, stride, pad), conv_output_length(wd, k, stride, pad)
        kd = cin * k * k
        path = self._forward_path(n, cin, cout, h, wd, k, stride, pad)
        if path in WINOGRAD_PATHS:
            return self._winograd(path, x, w, b, False, relu)
        y = np.empty((n, cout, ho, wo), np.float32)
        if path == "shifted":
            rows = conv.plan_forward_shifted(ho, wd, pad, cin, cout, k, self.threads, n,
                                             self.tile_bytes, self.memory_bound)
            workers = max(1, min(self.threads, n * -(-ho // rows)))
            work = self._workspace(workers * conv.shifted_tile(cin, cout, k, wd, pad, rows))
            # wk[kw, co, c*K + kh] = w[co, c, kh, kw]: one small copy per call (Cout <= 128)
            wk = np.ascontiguousarray(w.transpose(3, 0, 1, 2)).reshape(k, cout, cin * k)
            self._plan.run(conv.conv2d_forward_s1, workers, x, wk, b, k, pad, rows, workers,
                           work, y, self._sgemm.kernel_args(workers), relu)
            return y
        if path == "cout-split":
            bounds = conv.channel_blocks(cout, self.threads)
            workers = min(self.threads, len(bounds) - 1)
            cols = self._workspace(kd * ho * wo)
            blas = self._sgemm.kernel_args(workers)
            for i in range(n):      # all workers build image i's columns, then split Cout
                self._plan.run(conv.image_columns, workers, x, i, k, stride, pad, ho, wo,
                               workers, cols)
                self._plan.run(conv.conv2d_forward_cout, workers, i, w.reshape(cout, kd), b,
                               bounds, workers, cols, y, blas, relu)
            return y
        rows = conv.plan_forward(ho, wo, kd, self.threads, n, self.tile_bytes, self.memory_bound)
        workers = max(1, min(self.threads, n * -(-ho // rows)))
        cols = self._workspace(workers * kd * rows * wo)
        self._plan.run(conv.conv2d_forward, workers, x, w.reshape(cout, kd), b, k, stride, pad,
                       rows, workers, cols, y, self._sgemm.kernel_args(workers), relu)
        return y

    def _conv2d_relu_backward(self, dy, relu_out, x, w, stride, pad, need_dx, need_dw):
        """dx of relu(conv(x)) with the ReLU backward done while dy is read (no masked copy of
        dy); with dw as well, the unfused base version (db needs the masked dy summed)."""
        if need_dw or not need_dx:
            return super()._conv2d_relu_backward(dy, relu_out, x, w, stride, pad, need_dx,
                                                 need_dw)
        return self._conv2d_backward(dy, x, w, stride, pad, True, False, relu_out=relu_out)

    def _conv2d_backward(self, dy, x, w, stride, pad, need_dx, need_dw, relu_out=None):
        """relu_out: None, or the output of the ReLU fused into this convolution; dy is then
        read as 0 where it is <= 0 (dx only: db would need the masked dy too)."""
        n, cin, h, wd = x.shape
        cout, _, k, _ = w.shape
        ho, wo = dy.shape[2], dy.shape[3]
        if not (need_dx or need_dw):
            return None, None, None
        kd = cin * k * k
        dx = dw = db = None
        winograd_path = need_dx and self._winograd_path(n, cout, cin, ho, wo, k, stride, pad)
        if winograd_path:
            # dx = conv3x3(dy, w flipped and transposed): a forward convolution, see winograd.py
            dx = self._winograd(winograd_path, dy, w, np.zeros(cin, np.float32), True,
                                mask=relu_out)
            need_dx = False
            if not need_dw:
                return dx, None, None
        if need_dw:
            dw = np.empty((cout, kd), np.float32)
            db = np.empty(cout, np.float32)
        # dw of a small layer: by row tiles with one partial per worker (see
        # conv.conv2d_weight_grad_rows); else by channel blocks.
        rows_dw = need_dw and self._rows_dw(n, cout, kd, ho, wo)
        if rows_dw:
            rows = conv.plan_forward(ho, wo, kd + cout, self.threads, n, self.tile_bytes,
                                     max(1, self.memory_bound - 4 * self.threads * cout * kd))
            workers = max(1, min(self.threads, n * -(-ho // rows)))
            tile = workers * (kd + cout) * rows * wo
            work = self._workspace(tile + workers * cout * kd)
            partial = work[tile:tile + workers * cout * kd].reshape(workers, kd, cout)
            db_partial = np.empty((workers, cout), np.float64)
            self._plan.run(conv.conv2d_weight_grad_rows, workers, dy, x, k, stride, pad, rows,
                           workers, work[:tile], partial, db_partial,
                           self._sgemm.kernel_args(workers))
            with self._plan.kernels():
                conv.sum_partials_t(partial, dw)
            db[:] = db_partial.sum(axis=0)
        if need_dx:
            dx = np.empty_like(x)
            self._by_channels(functools.partial(conv.input_grad, relu_out=relu_out), cin, dy,
                              w.reshape(cout, kd), k, stride, pad, dx)
        if need_dw and not rows_dw:
            self._by_channels(conv.weight_grad_channels, cin, dy, x, k, stride, pad, dw)
            with self._plan.kernels():
                conv.bias_grad(dy, db)
        if need_dw:
            dw = dw.reshape(w.shape)
        return dx, dw, db

    def _by_channels(self, kernel, cin, dy, operand, k, stride, pad, out):
        """Run conv.input_grad or conv.weight_grad_channels (the ``cin`` input channels split
        among the workers) with its blocks, tile height and work buffer planned here."""
        cout, wo = dy.shape[1], dy.shape[3]
        bounds, rows = conv.plan_backward(cin, k, dy.shape[2], wo, cout, self.threads,
                                          self.tile_bytes, self.memory_bound)
        workers = max(1, min(self.threads, len(bounds) - 1))
        work = self._workspace(conv.input_grad_floats(cout, k, wo, rows, bounds, workers))
        self._plan.run(kernel, workers, dy, operand, k, stride, pad, rows, bounds, workers,
                       work, out, self._sgemm.kernel_args(workers))

    # -- ReLU ---------------------------------------------------------------------------------
    def _share_workers(self, elements: int) -> int:
        """Workers for a streaming kernel over ``elements`` floats: one below MIN_SHARE, where
        the launch would cost more than the work."""
        return self.threads if elements >= MIN_SHARE else 1

    def _relu(self, x):
        y = np.empty_like(x)
        workers = self._share_workers(x.size)
        self._plan.run(elementwise.relu_forward, workers, x.reshape(-1), y.reshape(-1), workers)
        return y

    def _relu_backward(self, dy, x):
        dx = np.empty_like(dy)
        workers = self._share_workers(dy.size)
        self._plan.run(elementwise.relu_backward, workers, dy.reshape(-1), x.reshape(-1),
                       dx.reshape(-1), workers)
        return dx

    # -- pooling ------------------------------------------------------------------------------
    def _max_pool2d(self, x, size, stride):
        n, c, h, wd = x.shape
        shape = (n, c, conv_output_length(h, size, stride, 0),
                 conv_output_length(wd, size, stride, 0))
        y = np.empty(shape, np.float32)
        switches = np.empty(shape, np.int32)
        with self._plan.kernels():
            if size == stride == 2:
                pool.max_pool2x2_forward(x, y, switches)
            else:
                pool.max_pool2d_forward(x, size, stride, y, switches)
        return y, MaxPoolSwitches(switches, size, stride)

    def _max_pool2d_values(self, x, size, stride):
        if size != 2 or stride != 2:
            return self._max_pool2d(x, size, stride)[0]
        n, c, h, wd = x.shape
        y = np.empty((n, c, h // 2, wd // 2), np.float32)
        workers = self._share_workers(y.size)
        self._plan.run(pool.max_pool2x2_values, workers, x, y, workers)
        return y

    def _max_pool2d_backward(self, dy, switches, x_shape):
        if not isinstance(switches, MaxPoolSwitches):
            raise InputError(f"max_pool2d_backward: switches must be what this driver's "
                             f"max_pool2d returned, got {type(switches).__name__}")
        sw, size, stride = np.asarray(switches.index), switches.size, switches.stride
        if sw.shape != dy.shape or sw.dtype != np.int32:
            raise InputError(f"max_pool2d_backward: switches must be the int32 array of shape "
                             f"{dy.shape} that this driver's max_pool2d returned, got "
                             f"{sw.dtype} {sw.shape}")
        sw = np.ascontiguousarray(sw)
        dx = np.empty(x_shape, np.float32)
        with self._plan.kernels():
            if size == stride == 2 and _pool2x2_fits(dy.shape, x_shape):
                bad = pool.max_pool2x2_backward(dy, sw, dx)   # counts strays, as the general
            else:
                bad = pool.max_pool2d_backward(dy, sw, dx, size, stride)
        if bad:
            raise InputError(f"max_pool2d_backward: {bad} switches lie outside their "
                             f"{size}x{size} window (negative, or made for another input than "
                             f"shape {tuple(x_shape)})")
        return dx

    def _avg_pool2d(self, x, size, stride):
        n, c, h, wd = x.shape
        y = np.empty((n, c, conv_output_length(h, size, stride, 0),
                      conv_output_length(wd, size, stride, 0)), np.float32)
        with self._plan.kernels():
            pool.avg_pool2d_forward(x, size, stride, y)
        return y

    def _avg_pool2d_backward(self, dy, x_shape, size, stride):
        dx = np.empty(x_shape, np.float32)
        with self._plan.kernels():
            pool.avg_pool2d_backward(dy, size, stride, dx)
        return dx

    # -- fully connected ----------------------------------------------------------------------
    def _linear(self, x, w, b):
        y = np.empty((x.shape[0], w.shape[0]), np.float32)
        if x.shape[0] <= linear.STREAM_MAX_BATCH:
            workers = self._share_workers(w.size)
            self._plan.run(linear.linear_forward_stream, workers, x, w, b, workers, y)
            return y
        self._plan.run(linear.linear_forward, self.threads, x, w, b, self.threads, y,
                       self._sgemm.kernel_args(self.threads))
        return y

    def _linear_backward(self, dy, x, w, need_dx, need_dw):
        dx = np.empty_like(x) if need_dx else _EMPTY2
        dw = np.empty_like(w) if need_dw else _EMPTY2
        db = np.empty(w.shape[0], np.float32) if need_dw else _EMPTY1
        if need_dx or need_dw:
            self._plan.run(linear.linear_backward, self.threads, dy, x, w, need_dx, need_dw,
                           self.threads, dx, dw, db, self._sgemm.kernel_args(self.threads))
        return (dx if need_dx else None, dw if need_dw else None, db if need_dw else None)

    # -- softmax and Gram ---------------------------------------------------------------------
    def _softmax(self, x):
        y = np.empty_like(x)
        workers = min(self._share_workers(x.size), x.shape[0])
        self._plan.run(softmax.softmax_forward, workers, x, y, workers)
        return y

    def _gram(self, x):
        n, c = x.shape[:2]
        g = np.empty((n, c, c), np.float32)
        items, first, workers, parts, mirror = gram.plan_gram(
            n, c, x.shape[2] * x.shape[3], self.threads)
        out = g if parts == 1 else np.empty((n * parts, c, c), np.float32)
        self._plan.run(gram.gram_upper, workers, x, items, first, mirror, out,
                       self._sgemm.kernel_args(workers),
                       gram.syrk_for(self._sgemm).kernel_args(workers))
        if parts > 1:
            with self._plan.kernels():
                gram.gram_sum_mirror(out, parts, g)
        return g

    def _gram_backward(self, dg, x, accumulate):
        """On the workers, each a share of the H*W columns (gram.gram_backward_columns): the
        core's NumPy matmul ran on BLAS's own threads, which spun on after it while the
        next convolution's workers wanted the cores."""
        s = np.ascontiguousarray(dg + dg.transpose(0, 2, 1))
        dx = np.empty_like(x) if accumulate is None else accumulate
        workers = self._share_workers(x.size)
        self._plan.run(gram.gram_backward_columns, workers, s, x, workers,
                       accumulate is not None, dx, self._sgemm.kernel_args(workers))
        return dx


class GrowingBuffer:
    """A float32 buffer kept between calls and only ever grown, the old one dropped before the
    new one is allocated: it holds the largest single need so far, never two buffers."""

    def __init__(self):
        self.array: np.ndarray | None = None

    def at_least(self, size: int) -> np.ndarray:
        if self.array is None or self.array.size < size:
            self.array = None
            self.array = np.empty(max(size, 1), np.float32)
        return self.array

    @property
    def nbytes(self) -> int:
        return 0 if self.array is None else self.array.nbytes

    def release(self) -> None:
        self.array = None


def _pool2x2_fits(dy_shape, x_shape) -> bool:
    """Could dy [N, C, Ho, Wo] come from 2x2 stride-2 pooling of x_shape?"""
    return dy_shape[2] == x_shape[2] // 2 and dy_shape[3] == x_shape[3] // 2


# Placeholders for outputs a kernel is told not to compute (typed like the real ones, so the
# kernel compiles once for both cases).
_EMPTY1 = np.empty(0, np.float32)
_EMPTY2 = np.empty((0, 0), np.float32)
