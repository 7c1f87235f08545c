"""The files of a style-transfer run: their names, the never-overwrite check, the log and the
loss curve.

For ``output="out.png"``: ``out.png`` (the result), ``out_0100.png`` (every ``save_every``
steps; a coarse-to-fine run's ``out_s<k>_0100.png``, scale k from 1), ``out.log.json``
(settings and per-step losses), ``out.loss.png`` (the loss curve) and, while a run is
unfinished (interrupted, failed), ``out.ckpt.npz`` (the checkpoint that
:func:`vggjit.style.resume` continues).
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from ..errors import InputError, OutputExistsError
from ..fileio import atomic_save, atomic_write, check_writable
from ..images import save_image
from .checkpoint import CHECKPOINT_SUFFIX
from .results import StyleResult


class RunFiles:
    """The files one run writes for ``output`` (None: a run that writes none).

    A run replaces a file only with ``overwrite`` or when the file is its own: written by
    this run, or by the interrupted run it continues. ``written`` maps a role (image, log,
    curve, checkpoint; steps: a list) to the path written, as :class:`StyleResult` reports it.
    """

    def __init__(self, output, scales: int, overwrite: bool = False):
        self.output = Path(output) if output is not None else None
        self.scales = int(scales)
        self.overwrite = overwrite
        self.written: dict = {}
        self._own: set[Path] = set()

    def paths(self) -> dict[str, Path]:
        out = self.output
        if out is None:
            return {}
        stem = out.with_suffix("")
        return {"image": out, "log": Path(f"{stem}.log.json"), "curve": Path(f"{stem}.loss.png"),
                "checkpoint": Path(f"{stem}{CHECKPOINT_SUFFIX}")}

    def step_path(self, step: int, scale_index: int) -> Path:
        """OUT_0100.png; in a coarse-to-fine run OUT_s<scale>_0100.png (scale from 1), so the
        scales' intermediate images never collide."""
        out = self.output
        if self.scales == 1:
            return out.with_name(f"{out.stem}_{step:04d}{out.suffix}")
        return out.with_name(f"{out.stem}_s{scale_index + 1}_{step:04d}{out.suffix}")

    def adopt(self, scale_index: int, step: int) -> None:
        """Resuming: the interrupted run's files (its result, log, curve, checkpoint and the
        current scale's images up to ``step``) are this run's own."""
        if self.output is None:
            return
        self._own.update(p.resolve() for p in self.paths().values())
        self._own.update(self.step_path(k, scale_index).resolve() for k in range(1, step + 1))

    def check(self, scale_index: int, from_step: int, iterations: int, save_every: int) -> None:
        """Before the first step: every file the run will write (scale ``scale_index``'s from
        ``from_step`` on, and every later scale's) is writable and (unless overwrite, or it is
        the run's own) does not exist yet."""
        if self.output is None:
            return
        if self.output.suffix.lower() not in Image.registered_extensions():
            raise InputError(f"{self.output}: unknown image file extension "
                             f"{self.output.suffix!r} (use .png or .jpg)")
        check_writable(self.output, overwrite=True)
        planned = list(self.paths().values())
        if save_every:
            for k in range(scale_index, self.scales):
                first = from_step + 1 if k == scale_index else 1
                planned += [self.step_path(n, k) for n in range(first, iterations + 1)
                            if n % save_every == 0]
        if self.overwrite:
            return
        clash = [p for p in planned if p.exists() and p.resolve() not in self._own]
        if clash:
            names = ", ".join(str(p) for p in clash[:3]) + (" ..." if len(clash) > 3 else "")
            hint = (" (a checkpoint of an unfinished run: continue it with --resume)"
                    if clash[0] == self.paths()["checkpoint"] else "")
            raise OutputExistsError(f"{names} already exist{'s' if len(clash) == 1 else ''}"
                                    f"{hint}; pass --overwrite to replace")

    def wrote(self, role: str, path: Path) -> None:
        """Record ``path`` as written in ``role`` (and as the run's own)."""
        self._own.add(path.resolve())
        if role == "steps":
            self.written.setdefault("steps", []).append(str(path))
        else:
            self.written[role] = str(path)

    def save_image(self, image: Image.Image, role: str, path: Path | None = None) -> None:
        """Write the result (role "image") or an intermediate image (role "steps", ``path``)."""
        path = self.paths()["image"] if path is None else path
        save_image(image, path, overwrite=True)
        self.wrote(role, path)

    def drop_checkpoint(self) -> None:
        """A finished run's checkpoint is done: remove it when it is the run's own."""
        path = self.paths()["checkpoint"]
        if path.resolve() in self._own:
            path.unlink(missing_ok=True)
            self.written.pop("checkpoint", None)

    def write_log(self, result: StyleResult, seconds: float, final_loss=None) -> None:
        path = self.paths()["log"]
        write_log(path, result, seconds, final_loss)
        self.wrote("log", path)

    def write_curve(self, history: list[dict]) -> None:
        path = self.paths()["curve"]
        plot_losses(history, path)
        self.wrote("curve", path)


def write_log(path: Path, result: StyleResult, seconds: float, final_loss=None) -> None:
    data = {"settings": result.settings, "steps": result.steps, "stopped": result.stopped,
            "message": result.message, "seconds": round(seconds, 3),
            "final_loss": final_loss if final_loss is not None else result.loss,
            "history": result.history}
    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=1, default=float)


def plot_losses(history: list[dict], path: Path) -> None:
    """The loss curve (total, content, style, tv against the step; log scale) as a PNG.
    A coarse-to-fine run's scales follow each other, with a dashed line where a scale starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    multi = any("scale" in e for e in history)
    steps = list(range(1, len(history) + 1)) if multi else [e["step"] for e in history]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    if multi:
        for i in range(1, len(history)):
            if history[i].get("scale") != history[i - 1].get("scale"):
                ax.axvline(i + 0.5, color="grey", linestyle="--", linewidth=0.8)
    curves = {"total": [e["loss"] for e in history]}
    for kind in ("content", "style", "tv"):
        values = [sum(v for k, v in e["terms"].items() if k.split(":")[0] == kind)
                  for e in history]
        if any(values):
            curves[kind] = values
    for label, values in curves.items():
        ax.plot(steps, [max(v, 1e-30) for v in values], label=label,
                linewidth=2 if label == "total" else 1)
    ax.set_yscale("log")
    ax.set_xlabel("step (all scales, in order)" if multi else "step")
    ax.set_ylabel("weighted loss")
    ax.set_title("vggjit stylize: loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)

