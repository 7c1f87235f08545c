"""Progress of a batch run: a bar with images/s and an ETA while it lasts, a summary after.

The bar (tqdm, on stderr) shows only on a terminal, or when asked; lines written through
:meth:`Progress.write` appear above it without breaking it.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from tqdm import tqdm


@dataclass
class Summary:
    """What a run did: images done (classified or stylised), failed (recorded with their
    error), skipped (finished by an earlier run), lost (tasks whose workers kept dying; not
    recorded, a rerun retries them), and the seconds it took."""

    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    lost: int = 0
    seconds: float = 0.0
    lost_paths: list = field(default_factory=list)

    @property
    def rate(self) -> float:
        worked = self.done + self.failed
        return worked / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        parts = [f"{self.done} done", f"{self.failed} failed", f"{self.skipped} skipped"]
        if self.lost:
            parts.append(f"{self.lost} lost (rerun to retry them)")
        return (f"{', '.join(parts)} of {self.total} in {self.seconds:.1f} s "
                f"({self.rate:.2f} images/s)")


class Progress:
    """Counts and the bar. ``enabled``: None shows the bar on a terminal only."""

    def __init__(self, total: int, unit: str = "image", enabled: bool | None = None,
                 skipped: int = 0):
        self.summary = Summary(total=total + skipped, skipped=skipped)
        self._start = time.perf_counter()
        self.bar = tqdm(total=total, unit=unit, file=sys.stderr, leave=False, smoothing=0.1,
                        dynamic_ncols=True,
                        disable=(not enabled) if enabled is not None else None)

    def write(self, text: str, file=None) -> None:
        if self.bar.disable:
            print(text, file=file or sys.stdout, flush=True)
        else:
            self.bar.write(text, file=file or sys.stdout)

    def add(self, done: int = 0, failed: int = 0, lost: int = 0) -> None:
        self.summary.done += done
        self.summary.failed += failed
        self.summary.lost += lost
        self.bar.update(done + failed + lost)

    def close(self) -> Summary:
        self.bar.close()
        self.summary.seconds = time.perf_counter() - self._start
        return self.summary
