"""What a style-transfer run returns (:class:`StyleResult`) and raises when its loss diverges
or its result cannot be written."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..errors import VggjitError


class LossDivergedError(VggjitError):
    """The loss became NaN/Inf or exploded; ``result`` holds the last good image."""

    def __init__(self, message: str, result: "StyleResult | None" = None):
        super().__init__(message)
        self.result = result


class ResultNotSavedError(VggjitError):
    """The run finished but its result could not be written where asked; ``result`` holds it,
    ``result.files["kept"]`` where it was kept instead."""

    def __init__(self, message: str, result: "StyleResult | None" = None):
        super().__init__(message)
        self.result = result


@dataclass
class StyleResult:
    """image: the result (PIL, 8-bit RGB, at the output size); history: one dict per step
    (step, loss, terms, evaluations, seconds; with several scales also scale, height, width);
    settings: the options (plus the run's facts); array: the optimised network input
    [1, 3, H, W] (at the current scale's size: a coarse one's after an interrupt there); steps:
    steps completed (at the last scale reached); stopped: None (finished), "interrupted",
    "converged" or "diverged"; files: what was written {role: path}."""

    image: Image.Image
    history: list
    settings: dict
    array: np.ndarray
    steps: int
    stopped: str | None = None
    message: str = ""
    files: dict = field(default_factory=dict)

    @property
    def loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None

