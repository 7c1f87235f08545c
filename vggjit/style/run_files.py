"""The files of a style-transfer run: their names, the never-overwrite check, the log and the
loss curve.

For ``output="out.png"``: ``out.png`` (the result), ``out_0100.png`` (every ``save_every``
steps; a coarse-to-fine run's ``out_s<k>_0100.png``, scale k from 1), ``out.log.json``
(settings and per-step losses), ``out.loss.png`` (the loss curve) and, while a run is
unfinished (interrupted, failed), ``out.ckpt.npz`` (the checkpoint that
:func:`vggjit.style.resume` continues). While the run works, ``.out.png.lock`` says so
(:mod:`vggjit.style.run_lock`).
"""
from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path

from PIL import Image

from ..errors import InputError, OutputExistsError
from ..fileio import atomic_save, atomic_write, check_writable, refuse_input_as_output
from .checkpoint import CHECKPOINT_SUFFIX
from .results import StyleResult
from .run_lock import RunLock


class RunFiles:
    """The files one run writes for ``output`` (None: a run that writes none).

    A run replaces a file only with ``overwrite`` or when the file is its own: written by
    this run, or by the interrupted run it continues. It never writes over one of ``inputs``
    (its content, style and init images; a resumed run's checkpoint only as its checkpoint),
    whatever ``overwrite`` says. While it runs it holds the output's lock
    (:mod:`vggjit.style.run_lock`). ``written`` maps a role (image, log, curve, checkpoint;
    steps: a list) to the path written, as :class:`StyleResult` reports it.
    """

    def __init__(self, output, scales: int, overwrite: bool = False, inputs=()):
        self.output = Path(output) if output is not None else None
        self.scales = int(scales)
        self.overwrite = overwrite
        self.inputs = [Path(p) for p in inputs if isinstance(p, (str, os.PathLike))]
        self.written: dict = {}
        self._own: set[Path] = set()
        self.lock = RunLock(self.output) if self.output is not None else None

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

    def adopt(self, scale_index: int, step: int, iterations: int) -> None:
        """Resuming: the interrupted run's files are this run's own: its result, log, curve,
        checkpoint and every intermediate image of the current scale up to its ``iterations``.
        Those after ``step`` too: the interrupted run checked at its start that none of those
        names existed, so one that exists now is an image it wrote after its last checkpoint
        (a hard kill between the two) and is replaced as the run passes that step again."""
        if self.output is None:
            return
        self._own.update(p.resolve() for p in self.paths().values())
        self._own.update(self.step_path(k, scale_index).resolve()
                         for k in range(1, max(step, iterations) + 1))

    def check(self, scale_index: int, from_step: int, iterations: int, save_every: int) -> None:
        """Before the first step: the result's format can be written, every file the run will
        write (scale ``scale_index``'s from ``from_step`` on, and every later scale's) is
        writable, is not an input and (unless overwrite, or it is the run's own) does not exist
        yet; then the output's lock is taken and orphan temporary files of earlier runs that
        were killed hard are removed."""
        if self.output is None:
            return
        check_image_format(self.output)
        check_writable(self.output, overwrite=True)
        planned = {role: [path] for role, path in self.paths().items()}
        if save_every:
            planned["steps"] = [
                self.step_path(n, k) for k in range(scale_index, self.scales)
                for n in range(from_step + 1 if k == scale_index else 1, iterations + 1)
                if n % save_every == 0]
        for role, paths in planned.items():
            for path in paths:
                inputs = [p for p in self.inputs
                          if not (role == "checkpoint" and p.suffix == ".npz")]
                refuse_input_as_output(path, inputs, _ROLE_NAMES[role])
        self.lock.acquire()
        try:
            if not self.overwrite:
                every = [p for paths in planned.values() for p in paths]
                clash = [p for p in every if p.exists() and p.resolve() not in self._own]
                if clash:
                    names = ", ".join(str(p) for p in clash[:3]) + (" ..." if len(clash) > 3
                                                                    else "")
                    hint = (" (a checkpoint of an unfinished run: continue it with --resume)"
                            if clash[0] == self.paths()["checkpoint"] else "")
                    raise OutputExistsError(f"{names} already exist"
                                            f"{'s' if len(clash) == 1 else ''}{hint}; pass "
                                            f"--overwrite to replace")
            self.remove_orphans()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """The run is over (finished, stopped or failed): give the output's lock back."""
        if self.lock is not None:
            self.lock.release()

    def remove_orphans(self) -> None:
        """Delete the temporary files a hard-killed run of this output left (a half-written
        checkpoint, image or log: ``.out.ckpt.k3j9x0qa.npz``). Only while holding the lock, so
        no other run can be writing them."""
        out = self.output
        suffix = re.escape(out.suffix)
        names = [re.escape(p.stem) + r"\.[a-z0-9_]{8}" + re.escape(p.suffix)
                 for p in self.paths().values()]
        names += [re.escape(self.paths()["log"].name) + r"\.[a-z0-9_]{8}\.tmp",
                  re.escape(out.stem) + r"_(?:s\d+_)?\d{4,}\.[a-z0-9_]{8}" + suffix]
        pattern = re.compile(r"\.(?:" + "|".join(names) + ")")
        try:
            entries = list(out.parent.iterdir())
        except OSError:
            return
        for entry in entries:
            if pattern.fullmatch(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)

    def wrote(self, role: str, path: Path) -> None:
        """Record ``path`` as written in ``role`` (and as the run's own)."""
        self._own.add(path.resolve())
        if role == "steps":
            self.written.setdefault("steps", []).append(str(path))
        else:
            self.written[role] = str(path)

    def stage_image(self, image: Image.Image, path: Path) -> Path:
        """Write ``image`` to a temporary file beside ``path`` (same suffix, hidden name);
        :meth:`commit` puts it in place. Lets a run write its checkpoint in between, so that
        an intermediate image never exists without the checkpoint of its step."""
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        os.close(fd)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)   # what a plain open() gives, not mkstemp's 0600
        try:
            image.save(tmp)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def commit(self, tmp: Path, path: Path, role: str) -> None:
        """Move the staged ``tmp`` to ``path``. The result itself, when neither overwrite nor
        the run's own, goes in only if ``path`` still does not exist (a hard link cannot
        replace a file): a file that appeared there meanwhile is refused, not replaced."""
        try:
            if role == "image" and not self.overwrite and path.resolve() not in self._own:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise OutputExistsError(f"{path} appeared while the run was working (another "
                                            f"program wrote it); it was not replaced") from None
                tmp.unlink()
            else:
                os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.wrote(role, path)

    def save_image(self, image: Image.Image, role: str, path: Path | None = None) -> None:
        """Write the result (role "image") or an intermediate image (role "steps", ``path``)."""
        path = self.paths()["image"] if path is None else path
        self.commit(self.stage_image(image, path), path, role)

    def keep_elsewhere(self, image: Image.Image) -> Path:
        """The result when it could not be written to OUT: as PNG beside it
        (``out.unsaved.png``, ``out.unsaved-1.png``...) or, where that fails too, in the
        temporary directory. Returns where it went."""
        out = self.output
        candidates = [out.with_name(f"{out.stem}.unsaved{'' if n == 0 else f'-{n}'}.png")
                      for n in range(20)]
        for candidate in candidates:
            try:
                fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue
            except OSError:
                break
            try:
                with os.fdopen(fd, "wb") as handle:
                    image.save(handle, format="PNG")
                return candidate
            except OSError:
                candidate.unlink(missing_ok=True)
                break
        fd, tmp = tempfile.mkstemp(prefix=f"vggjit-{out.stem}-", suffix=".png")
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG")
        return Path(tmp)

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


_ROLE_NAMES = {"image": "-o", "log": "the log", "curve": "the loss curve",
               "checkpoint": "the checkpoint", "steps": "the intermediate image"}


def check_image_format(path: Path) -> None:
    """Refuse, before any work, an output whose format Pillow cannot write as RGB: the
    extension must be an image type and a 1x1 RGB image must encode in it (.psd has no
    writer, .xbm takes only black and white)."""
    suffix = path.suffix.lower()
    formats = Image.registered_extensions()
    if suffix not in formats:
        raise InputError(f"{path}: unknown image file extension {path.suffix!r} "
                         f"(use .png or .jpg)")
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=formats[suffix])
    except (KeyError, OSError, ValueError, TypeError) as exc:
        why = f"no {formats[suffix]} writer" if isinstance(exc, KeyError) else str(exc)
        raise InputError(f"{path}: Pillow cannot write {path.suffix} images of the result "
                         f"({why}); use .png, .jpg, .tif or .webp") from None


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

