"""The in-process runner: batches through one network, the next batch decoded while the
current one is computed.

Decoding (Pillow: read, resize, convert) runs in a helper thread; the network's kernels release
the GIL, so with a prefetch of a batch or two the decoding is hidden behind the compute. Records
come back batch by batch, in input order.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

from .tasks import ClassifySpec, classify_decoded, decode, network_for

#: Batches decoded ahead of the one being computed.
PREFETCH = 2


def classify_in_process(spec: ClassifySpec, batches: Iterable[list[str]],
                        on_records: Callable[[list[dict]], None],
                        prefetch: int = PREFETCH) -> None:
    """Classify every batch of paths; call ``on_records`` with each batch's records, in order.

    An interrupt (Ctrl-C) stops after the batch being computed has been handed over."""
    net = network_for(spec)
    batches = iter(batches)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vggjit-decode") as pool:
        ahead: deque = deque()

        def fill() -> None:
            while len(ahead) <= prefetch:
                paths = next(batches, None)
                if paths is None:
                    return
                ahead.append((paths, pool.submit(decode, paths, spec, net.mean_pixel)))

        try:
            fill()
            while ahead:
                paths, decoded = ahead.popleft()
                good, x, errors = decoded.result()
                fill()  # the next batches decode while this one is computed
                on_records(classify_decoded(net, good, x, errors, spec.top_k, paths))
        finally:
            for _, future in ahead:
                future.cancel()
