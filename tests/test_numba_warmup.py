"""numba-cpu's two-process warm-up (drivers/vggjit_numba_cpu/warmup.py): its split covers every
kernel the full warm-up loads, after a warm-up a network's forward, backward and Gram need no
kernel more, and a helper process that fails only costs time.

Each check runs in a fresh process (this one has every kernel loaded already), on the kernel
cache the session's warm-up filled (tests/conftest.py), so no test compiles: a kernel shows up
as a new signature of its dispatcher whether it is loaded from the cache or compiled.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vggjit import get_driver
from vggjit_numba_cpu import kernel_cache, warmup

TESTS = Path(__file__).resolve().parent

#: prints json: {name: [the package's kernel signatures loaded so far]} at each stage
_SNAPSHOT = textwrap.dedent("""
    import gc, json, sys, warnings
    import numpy as np
    from numba.core.registry import CPUDispatcher

    def kernels():
        return sorted(f"{d.py_func.__module__}.{d.py_func.__qualname__} {sig}"
                      for d in gc.get_objects() if isinstance(d, CPUDispatcher)
                      and d.py_func.__module__.startswith("vggjit_numba_cpu")
                      for sig in d.overloads)
""")


def _run(script: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _SNAPSHOT + textwrap.dedent(script)],
                         capture_output=True, text=True, timeout=600, cwd=TESTS)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_split_covers_the_warmup_and_a_network_needs_nothing_more():
    stages = _run("""
        from matconvnet_fixture import FIXTURE_BLOCKS, FIXTURE_CLASSIFIER, random_params
        from vggjit.network import Network, vgg_layers
        from vggjit_numba_cpu import linear, warmup
        from vggjit_numba_cpu.driver import NumbaCpuDriver

        driver = NumbaCpuDriver(threads=2)
        for step in warmup.HERE_STEPS + warmup.HELPER_STEPS:   # the split's two shares, here
            step(driver)
        split = kernels()
        driver.warmup()                                         # the whole warm-up
        full = kernels()
        net = Network(vgg_layers(FIXTURE_BLOCKS, FIXTURE_CLASSIFIER), random_params(),
                      driver=driver)
        rng = np.random.default_rng(0)
        for batch in (1, linear.STREAM_MAX_BATCH + 1):          # classify: streamed and sgemm fc
            net.forward(rng.standard_normal((batch, 3, 224, 224)).astype(np.float32))
        x = rng.standard_normal((1, 3, 64, 48)).astype(np.float32)
        out = net.forward(x, outputs=("relu1_1", "relu3_1", "conv4_2"), keep=True)
        for name in ("relu1_1", "relu3_1"):                     # style transfer: Gram, dx
            driver.gram(out[name])
        net.backward({name: np.ones_like(a) for name, a in out.items()})
        net.forward(x, outputs=("conv4_2",), keep=True)         # training: dw and db too
        net.backward({"conv4_2": np.ones_like(out["conv4_2"])}, weight_grads=True)
        print(json.dumps({"split": split, "full": full, "after": kernels()}))
    """)
    assert stages["split"], "the split's steps loaded no kernel"
    assert sorted(set(stages["full"]) - set(stages["split"])) == []
    assert sorted(set(stages["after"]) - set(stages["full"])) == []


def test_a_failed_helper_is_reported_once_and_the_warmup_still_completes():
    result = _run("""
        from vggjit_numba_cpu import warmup
        from vggjit_numba_cpu.driver import NumbaCpuDriver

        def broken(driver):
            raise RuntimeError("no kernels today")

        warmup.cache_is_warm = lambda: False     # as on a cold cache (the kernels are there)
        driver = NumbaCpuDriver(threads=2)
        reason = warmup.helper_unavailable(driver)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = warmup.split_warmup(driver, here=(), helper=(broken,))
            second = warmup.split_warmup(driver, here=(), helper=(broken,))
            driver.warmup()          # no helper any more: everything here, loaded or compiled
        print(json.dumps({"reason": reason, "first": first, "second": second,
                          "warnings": [str(w.message) for w in caught
                                       if issubclass(w.category, RuntimeWarning)],
                          "after": kernels()}))
    """)
    if result["reason"] is not None:
        pytest.skip(f"no helper process here: {result['reason']}")
    assert result["first"] == "helper failed: RuntimeError: no kernels today"
    assert result["second"] == "one process: a helper process failed earlier in this process"
    assert len(result["warnings"]) == 1 and "no kernels today" in result["warnings"][0]
    assert any("winograd4_forward" in k for k in result["after"])


def test_a_hanging_helper_is_killed_and_reported():
    result = _run("""
        import time
        from vggjit_numba_cpu import warmup
        from vggjit_numba_cpu.driver import NumbaCpuDriver

        def hang(driver):
            time.sleep(600)

        warmup.cache_is_warm = lambda: False
        warmup.MIN_WAIT_S = 0.5
        driver = NumbaCpuDriver(threads=2)
        reason = warmup.helper_unavailable(driver)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outcome = warmup.split_warmup(driver, here=(), helper=(hang,))
        print(json.dumps({"reason": reason, "outcome": outcome,
                          "warnings": [str(w.message) for w in caught]}))
    """)
    if result["reason"] is not None:
        pytest.skip(f"no helper process here: {result['reason']}")
    assert result["outcome"] == "helper failed: it did not finish within 0.5 s"
    assert len(result["warnings"]) == 1


def test_a_working_helper_shares_the_warmup():
    result = _run("""
        from vggjit_numba_cpu import warmup
        from vggjit_numba_cpu.driver import NumbaCpuDriver

        import threading

        warmup.cache_is_warm = lambda: False     # as on a cold cache (the kernels are there)
        driver = NumbaCpuDriver(threads=2)
        reason = warmup.helper_unavailable(driver)
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()                           # fork would copy only the calling thread
        with_thread = warmup.helper_unavailable(driver)
        stop.set()
        thread.join()
        outcome = warmup.split_warmup(driver) if reason is None else ""
        print(json.dumps({"reason": reason, "with_thread": with_thread, "outcome": outcome,
                          "here": kernels(), "after": warmup.helper_unavailable(driver)}))
    """)
    if result["reason"] is not None:
        pytest.skip(f"no helper process here: {result['reason']}")
    assert result["with_thread"] == "other threads are running (fork copies only this one)"
    assert result["outcome"] == "two processes"
    assert "threads are running" in result["after"]            # Numba's, started by the split
    here = result["here"]
    assert any("winograd_forward" in k for k in here)          # this process's share ...
    assert not any("linear_forward" in k for k in here)        # ... and not the helper's


def test_no_helper_once_a_warmup_has_filled_the_cache():
    # the session's warm-up (tests/conftest.py) marked the cache warm
    assert warmup.helper_unavailable(get_driver("numba-cpu")).startswith(
        "the kernel cache is warm")


def test_the_warm_mark_follows_the_sources(tmp_path):
    pkg, cache = tmp_path / "pkg", tmp_path / "cache"
    pkg.mkdir()
    (pkg / "conv.py").write_text("A = 1\n")
    kernel_cache.purge_stale_cache(cache, pkg)               # a new cache: stamped, empty
    assert not kernel_cache.cache_is_warm(cache, pkg)
    kernel_cache.mark_cache_warm(cache, pkg)                 # a complete warm-up filled it
    assert kernel_cache.cache_is_warm(cache, pkg)
    (pkg / "conv.py").write_text("A = 2\n")                 # a source changed:
    assert not kernel_cache.cache_is_warm(cache, pkg)
    assert kernel_cache.purge_stale_cache(cache, pkg) is False   # (no kernels to remove)
    (pkg / "conv.py").write_text("A = 1\n")                 # and back, after a purge
    assert not kernel_cache.cache_is_warm(cache, pkg)        # the mark went with the kernels


def test_no_helper_for_a_one_thread_driver(monkeypatch):
    monkeypatch.setattr(warmup, "cache_is_warm", lambda: False)
    assert warmup.helper_unavailable(get_driver("numba-cpu", threads=1)).startswith("one CPU")


def test_cache_index_updates_hold_the_lock_of_their_directory(tmp_path):
    # Numba pickles the kernel while the wrapper holds the lock: a probe in the data tries to
    # take the same lock (a second open file, as another process would) and must be refused.
    fcntl = pytest.importorskip("fcntl")
    from numba.core.caching import IndexDataCacheFile

    held = []

    class Probe:
        def __reduce__(self):
            with open(ours / "vggjit_numba_cpu.lock", "ab") as other:
                try:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held.append(False)
                except BlockingIOError:
                    held.append(True)
            return (int, (0,))

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    assert kernel_cache.serialise_cache_writes(ours)
    IndexDataCacheFile(str(ours), "conv.f-1.py311", "stamp").save("key", Probe())
    IndexDataCacheFile(str(theirs), "other.f-1.py311", "stamp").save("key", Probe())
    assert held == [True, False]           # our kernels' directory locked, another one not
    assert (ours / "conv.f-1.py311.nbi").exists()
