"""bench.lockstep: implementations timed in turn, each in a process of its own. No timing is
asserted: only that every child runs, in its own process, as often as asked, and that a failing
child is reported with its reason."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import lockstep  # noqa: E402
from bench.lockstep import ChildError, Lockstep  # noqa: E402


@pytest.fixture(autouse=True)
def builders_importable(monkeypatch):
    # the children import tests/lockstep_builders.py
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT / "tests"), path) if p))


def test_each_implementation_runs_in_turn_in_a_process_of_its_own():
    builders = {"a": ("lockstep_builders:counter", (10,)),
                "b": ("lockstep_builders:counter", (100,)),
                "talks": ("lockstep_builders:chatty", ())}
    with Lockstep(builders) as ls:
        ls.untimed("step")
        times = ls.interleaved("step", repeat=3, pause=0.01)
        outputs = ls.outputs("step")
        rss = ls.peak_rss_mb()
    assert set(times) == {"a", "b", "talks"}
    assert all(t["runs"] == 3 and 0 <= t["min"] <= t["median"] <= t["max"] for t in times.values())
    assert set(outputs) == {"a", "b"}                      # chatty has no output()
    pids = {int(out[0]) for out in outputs.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    # one untimed run and three timed ones each, nothing run twice or skipped
    assert int(outputs["a"][1]) == 14 and int(outputs["b"][1]) == 104
    assert all(mb > 0 for mb in rss.values())


def test_a_child_that_cannot_build_names_why():
    builders = {"ok": ("lockstep_builders:counter", (0,)),
                "broken": ("lockstep_builders:failing_build", ("no weights here",))}
    with pytest.raises(ChildError, match="'broken'.*no weights here"):
        with Lockstep(builders):
            pass


def test_a_failing_run_names_the_child_and_the_error():
    with Lockstep({"ok": ("lockstep_builders:counter", (0,)),
                   "bad": ("lockstep_builders:failing_run", ())}) as ls:
        with pytest.raises(ChildError, match="'bad'.*the step broke"):
            ls.interleaved("step", repeat=2)


def test_a_step_without_output_gives_none_and_an_unknown_step_is_named():
    with Lockstep({"a": ("lockstep_builders:counter", (0,))}) as ls:
        assert ls.outputs("silent") == {}
        with pytest.raises(ChildError, match="no step 'fast' \\(it has silent, step\\)"):
            ls.untimed("fast")


def test_an_unknown_builder_is_reported():
    with pytest.raises(ChildError, match="no_such_module"):
        with Lockstep({"x": ("no_such_module:build", ())}):
            pass


def test_a_child_that_does_not_answer_is_stopped(monkeypatch):
    monkeypatch.setattr(lockstep, "ANSWER_TIMEOUT_S", 1)
    with Lockstep({"slow": ("lockstep_builders:sleepy", ())}) as ls:
        with pytest.raises(ChildError, match="'slow': no answer within 1 s"):
            ls.untimed("step")
        assert ls.children["slow"].proc.poll() is not None      # stopped, not left running
