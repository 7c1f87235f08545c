"""Softmax over the rows of [N, classes]: rows shared out among the workers, computed stably
(the row maximum is subtracted first, so large logits cannot overflow exp), exp and sum in
float64.
"""
from __future__ import annotations

import math

import numpy as np

from .handoff import share
from .kernel_cache import jit


@jit(parallel=False)
def softmax_forward(t, x, y, workers):
    """y [N, K] = exp(x - max) / sum exp(x - max), row by row; x [N, K]. Worker t of
    ``workers`` (threads.ThreadPlan.run) does a contiguous share of the rows."""
    N, K = x.shape[0], x.shape[1]
    first, last = share(N, workers, t, 1)
    for i in range(first, last):
        m = x[i, 0]
        for k in range(1, K):
            if x[i, k] > m or x[i, k] != x[i, k]:
                m = x[i, k]
        s = 0.0
        for k in range(K):
            s += math.exp(np.float64(x[i, k]) - m)
        inv = 1.0 / s
        for k in range(K):
            y[i, k] = math.exp(np.float64(x[i, k]) - m) * inv
