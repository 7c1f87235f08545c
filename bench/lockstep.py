"""Implementations timed in turn, each in a process of its own.

Why processes: an engine's settings are often process-wide and leak into whatever shares its
process. vggjit's numba-cpu driver sets glibc malloc to keep freed memory (its allocator.py),
which made PyTorch's 512 px style step 15-30 % faster than PyTorch runs on its own; thread pools
that spin after a call (ONNX Runtime, OpenVINO, OpenMP) slow the next engine's first
milliseconds. Users run one engine per process, so each is measured that way, and its runs
still alternate with the others' (the machine is shared and its speed drifts, so only runs
that alternate make a fair ratio).

    with Lockstep({"vggjit": ("bench.style:vggjit_steps", (512,)),
                   "torch": ("bench.style:torch_steps", (512,))}) as ls:
        ls.untimed("step")                         # each one's first run
        times = ls.interleaved("step", repeat=3, pause=0.3)   # {name: median/min/max/runs}
        outputs = ls.outputs("step")               # {name: the array its output() returns}

A *builder* "module:function" is called in the child with the given arguments (numbers and
strings) and returns {label: (run, output)}: ``run()`` is what is timed, ``output()`` (or None)
returns an array to compare. The child times ``run`` itself, so the pipe costs nothing.

    python -m bench.lockstep MODULE:FUNCTION JSON_ARGS     (the child; driven over its stdin)
"""
from __future__ import annotations

import importlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, summary

#: prefix of the child's answers on stdout (anything else it prints is passed over)
MARK = "LOCKSTEP "
#: seconds a child may take to answer one command (build the network, run one step) before it
#: is stopped and reported: a 1024 px style step takes about 10 s, a build under a minute
ANSWER_TIMEOUT_S = 900


class ChildError(RuntimeError):
    """A child failed to build or to run; the message ends with its stderr."""


class _Child:
    def __init__(self, name: str, builder: str, args: tuple, workdir: Path):
        self.name = name
        self.stderr_path = workdir / f"{name}.stderr"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", ""))
                                            if p)
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.lockstep", builder, json.dumps(list(args))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                cwd=ROOT, env=env, bufsize=1)
        self._pending = b""       # what the child wrote after the last line read

    def _line(self, deadline: float) -> str | None:
        """The child's next line of output (None once it has closed its end), read from the
        pipe itself so that waiting can time out; ChildError after ``deadline``."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                self.proc.kill()
                self._fail(f"no answer within {ANSWER_TIMEOUT_S} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode(errors="replace")

    def ask(self, *words: str):
        """Send one command, return the child's answer (JSON)."""
        try:
            self.proc.stdin.write(" ".join(words) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._fail(f"exited before {' '.join(words)!r}")
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while (line := self._line(deadline)) is not None:
            if line.startswith(MARK):
                answer = json.loads(line[len(MARK):])
                if isinstance(answer, dict) and "error" in answer:
                    self._fail(answer["error"])
                return answer
        self._fail(f"exited during {' '.join(words)!r}")

    def _fail(self, what: str):
        self.proc.wait(timeout=30)
        tail = self.stderr_path.read_text(errors="replace")[-2000:]
        raise ChildError(f"benchmark process {self.name!r}: {what}\n{tail}")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Lockstep:
    """One child process per implementation (see the module doc); started one after another
    (each waits until its builder has returned, so that no build overlaps another's runs)."""

    def __init__(self, builders: dict[str, tuple[str, tuple]]):
        self.builders = builders
        self.children: dict[str, _Child] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="vggjit-bench-lockstep-")

    def __enter__(self) -> "Lockstep":
        try:
            for name, (builder, args) in self.builders.items():
                child = _Child(name, builder, args, Path(self._tmp.name))
                self.children[name] = child
                child.ask("ready")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for child in self.children.values():
            child.close()
        self._tmp.cleanup()

    def untimed(self, label: str) -> None:
        """One run of ``label`` in every child, not timed (JIT, caches, first allocations)."""
        for child in self.children.values():
            child.ask("run", label)

    def interleaved(self, label: str, repeat: int, pause: float = 0.0) -> dict[str, dict]:
        """``repeat`` rounds; in each, every child runs ``label`` once, in turn, after
        ``pause`` seconds of idle (as bench.common.interleaved). Seconds as median/min/max."""
        times = {name: [] for name in self.children}
        for _ in range(repeat):
            for name, child in self.children.items():
                if pause:
                    time.sleep(pause)
                times[name].append(child.ask("run", label)["seconds"])
        return {name: summary(t) for name, t in times.items()}

    def outputs(self, label: str) -> dict[str, np.ndarray]:
        """What each child's ``output()`` for ``label`` returns (children without one are left
        out)."""
        out = {}
        for name, child in self.children.items():
            path = Path(self._tmp.name) / f"{name}-{label}.npy"
            if child.ask("output", label, str(path))["saved"]:
                out[name] = np.load(path)
        return out

    def peak_rss_mb(self) -> dict[str, float]:
        """Each child's peak resident memory so far, MB."""
        return {name: child.ask("rss")["mb"] for name, child in self.children.items()}


# -- the child -------------------------------------------------------------------------------------
def _answer(value) -> None:
    sys.stdout.write(MARK + json.dumps(value) + "\n")
    sys.stdout.flush()


def serve(builder: str, args: list) -> int:
    """Build, then answer commands from stdin until "quit" or end of input."""
    from bench.common import peak_rss_mb

    try:
        module, function = builder.split(":")
        steps = getattr(importlib.import_module(module), function)(*args)
    except Exception as exc:                    # reported to the parent, which raises it
        _answer({"error": f"building {builder}{tuple(args)}: {type(exc).__name__}: {exc}"})
        return 1
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        try:
            if words[0] in ("run", "output") and words[1] not in steps:
                _answer({"error": f"no step {words[1]!r} (it has {', '.join(sorted(steps))})"})
                return 1
            if words[0] == "ready":
                _answer({"labels": sorted(steps)})
            elif words[0] == "run":
                run = steps[words[1]][0]
                start = time.perf_counter()
                run()
                _answer({"seconds": time.perf_counter() - start})
            elif words[0] == "output":
                output = steps[words[1]][1]
                if output is not None:
                    np.save(words[2], np.asarray(output()))
                _answer({"saved": output is not None})
            elif words[0] == "rss":
                _answer({"mb": peak_rss_mb()})
            else:
                _answer({"error": f"unknown command {line.strip()!r}"})
        except Exception as exc:
            _answer({"error": f"{line.strip()!r}: {type(exc).__name__}: {exc}"})
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], json.loads(sys.argv[2])))
