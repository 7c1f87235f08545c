"""Builders for tests/test_bench_lockstep.py, imported by the benchmark's child processes."""
from __future__ import annotations

import os

import numpy as np


def counter(start: int) -> dict:
    """"step" counts its runs; its output is [pid, start + runs so far]."""
    runs = [0]

    def run():
        runs[0] += 1

    return {"step": (run, lambda: np.array([os.getpid(), start + runs[0]])),
            "silent": (run, None)}


def chatty() -> dict:
    print("a line the parent must pass over")
    return {"step": (lambda: print("LOCKSTEP-lookalike, and more"), None)}


def failing_build(why: str) -> dict:
    raise ValueError(why)


def failing_run() -> dict:
    def run():
        raise RuntimeError("the step broke")

    return {"step": (run, None)}


def sleepy() -> dict:
    import time

    return {"step": (lambda: time.sleep(30), None)}
