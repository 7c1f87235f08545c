"""One style-transfer run in progress (:class:`Session`): the optimisation loop, its progress
report, divergence and coarse-to-fine scales.

Coarse-to-fine (``scales`` = S > 1): the run has S scales; scale k (1..S) works at the output
size divided by 2^(S-k) and runs ``iterations`` steps; scale k > 1 starts from scale k-1's result
upsampled (bicubic). Intermediate images are ``out_s<k>_0100.png``; only the last scale writes
``out.png``. History entries then carry ``scale``, ``height`` and ``width``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..images import to_array
from ..losses import StyleObjective, content_targets, layer_weights
from ..optimizers import Converged, make_optimizer
from .checkpoint import Checkpoint, write_checkpoint
from .colour import luminance_image, recolor
from .geometry import upsample
from .results import LossDivergedError, ResultNotSavedError, StyleResult
from .run_files import RunFiles

#: A loss this many times the run's first loss counts as exploding (for an optimiser without a
#: line search; a line search only descends).
EXPLODE_FACTOR = 1e4


class _Diverged(Exception):
    def __init__(self, loss: float, why: str):
        super().__init__(why)
        self.loss, self.why = loss, why


class Session:
    """One style-transfer run in progress: the image, the optimiser, the step, the history.

    transfer: the :class:`vggjit.style.StyleTransfer` (network, settings, style Grams);
    content_rgb, style_rgbs: the content and style images ([H, W, 3] uint8) at the output size;
    coarse: (content_rgb, style_rgbs) of every coarser scale of a coarse-to-fine run, the
    coarsest first; inputs: the files the run reads (never written over). The session starts at
    the first scale; ``step`` counts the steps of the current scale (``scale_index``, 0-based;
    users see scale ``scale_index + 1``).
    :meth:`begin` (a new run) or :meth:`from_checkpoint` (a resumed one) makes it ready to run.
    """

    def __init__(self, transfer, content_rgb: np.ndarray,
                 style_rgbs: list[np.ndarray], *, output=None, overwrite: bool = False,
                 progress: bool = False, log: Callable[[str], None] | None = None,
                 names=("", ()), coarse=(), inputs=()):
        self.transfer = transfer
        self.settings = transfer.settings
        self.scale_images = [*((c, list(st)) for c, st in coarse),
                             (content_rgb, list(style_rgbs))]
        self.scale_index = 0
        self.content_rgb, self.style_rgbs = self.scale_images[0]
        self.run_files = RunFiles(output, len(self.scale_images), overwrite, inputs)
        self.progress, self.log = progress, log
        self.content_name, self.style_names = names[0], list(names[1])
        self.step = 0
        self.history: list[dict] = []
        self.x: np.ndarray | None = None
        self.optimizer = make_optimizer(self.settings.optimizer, self.settings.lr)
        self.objective: StyleObjective | None = None
        self.resumed_from: str | None = None
        self.final_loss: float | None = None
        self._nonfinite = 0  # line-search trial points whose loss was not finite

    @property
    def scales(self) -> int:
        return len(self.scale_images)

    @property
    def output_hw(self) -> tuple[int, int]:
        """(height, width) of the result: the last scale's."""
        return tuple(int(d) for d in self.scale_images[-1][0].shape[:2])

    def select_scale(self, scale_index: int) -> None:
        """Make scale ``scale_index`` (0-based) current (its images; no targets computed)."""
        self.scale_index = int(scale_index)
        self.content_rgb, self.style_rgbs = self.scale_images[self.scale_index]

    def _scale_name(self) -> str:
        return f"scale {self.scale_index + 1}/{self.scales}"

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    # -- starting and resuming --------------------------------------------------------------
    def begin(self, init_rgb: np.ndarray | None = None) -> None:
        """Make a new run ready: check its output files, compute the first scale's targets and
        the start image of ``settings.init`` (``init_rgb``: the init image's RGB at the first
        scale's size, when the init is an image)."""
        s = self.settings
        self._check_outputs(0)
        with self._released_on_error():
            self.prepare()
        rng = np.random.default_rng(s.seed)
        base = self.content_input.astype(np.float64)
        if s.init == "content":
            x = base
        elif s.init == "noise":
            x = base * (1 - s.noise) + rng.uniform(-20, 20, base.shape) * s.noise
        elif s.init == "random":
            x = rng.uniform(-20, 20, base.shape)
        else:
            init_rgb = init_rgb.astype(np.float64)
            if s.preserve_colors:
                init_rgb = luminance_image(init_rgb)
            x = self.to_input(init_rgb).astype(np.float64)
        self.x = np.ascontiguousarray(x)

    @classmethod
    def from_checkpoint(cls, transfer, checkpoint: Checkpoint, source, *, output=None,
                        overwrite: bool = False, progress: bool = False,
                        log: Callable[[str], None] | None = None) -> "Session":
        """The session ``checkpoint`` (read from file ``source``) holds, ready to continue:
        image, step, history and optimiser state as saved. ``transfer`` holds the settings to
        go on with; ``output`` (default: the checkpoint's) is where it writes: at the
        checkpoint's own output the interrupted run's files are replaced, at another one
        existing files need ``overwrite`` as in a new run."""
        *coarse, (content_rgb, style_rgbs) = checkpoint.scale_images
        session = cls(transfer, content_rgb, style_rgbs,
                      output=output if output is not None else checkpoint.output,
                      overwrite=overwrite, progress=progress, log=log,
                      names=(checkpoint.content_name, transfer.style_names), coarse=coarse,
                      inputs=[source, checkpoint.content_name, *(checkpoint.style_names or [])])
        session.select_scale(checkpoint.scale_index)
        own = checkpoint.output is not None and session.run_files.output is not None and (
            session.run_files.output.resolve() == Path(checkpoint.output).resolve())
        if own:   # another -o holds no file of the interrupted run
            session.run_files.adopt(checkpoint.scale_index, checkpoint.step,
                                    checkpoint.settings.iterations)
        session._check_outputs(checkpoint.step)
        with session._released_on_error():
            session.prepare()
            session.x = checkpoint.x
            session.step, session.history = checkpoint.step, checkpoint.history
            session.resumed_from = str(source)
            # the current scale's history: an earlier scale's terms don't apply
            done = session.scale_history()
            session.optimizer.load_state_dict(checkpoint.optimizer_state,
                                              done[-1]["terms"] if done else None)
            session._restore_step_image()
        return session

    def _restore_step_image(self) -> None:
        """The intermediate image of the checkpoint's step, when it is due and missing (a hard
        kill after the checkpoint was written and before its image was put in place): written
        from the checkpoint, so that image and checkpoint are again a pair."""
        files, every = self.run_files, self.settings.save_every
        if files.output is None or not every or not self.step or self.step % every:
            return
        path = files.step_path(self.step, self.scale_index)
        if not path.exists():
            files.save_image(self.image(), "steps", path)

    @contextlib.contextmanager
    def _released_on_error(self):
        """Give the output's lock back if preparing the run fails."""
        try:
            yield
        except BaseException:
            self.run_files.release()
            raise

    def close(self) -> None:
        """Give up a session that will not be run: releases the output's lock."""
        self.run_files.release()

    def _check_outputs(self, from_step: int) -> None:
        self.run_files.check(self.scale_index, from_step, self.settings.iterations,
                             self.settings.save_every)

    # -- preparation ------------------------------------------------------------------------
    def to_input(self, rgb: np.ndarray) -> np.ndarray:
        return to_array(rgb, self.transfer.net.mean_pixel)

    def prepare(self) -> None:
        """Content features and style Grams of the current scale: computed once per scale."""
        self.content_input, self.objective = self._objective(self.content_rgb, self.style_rgbs)

    def _objective(self, content_rgb: np.ndarray, style_rgbs: list[np.ndarray]):
        """(content input [1, 3, H, W], StyleObjective) for content and style images."""
        s, net = self.settings, self.transfer.net
        content = content_rgb.astype(np.float64)
        if s.preserve_colors:
            content = luminance_image(content)
        content_input = self.to_input(content)
        h, w = content_rgb.shape[:2]
        grams = self.transfer.style_grams(style_rgbs, (h, w), net.mean_pixel, content_rgb)
        objective = StyleObjective(
            net, content_input,
            layer_weights(s.content_layers, s.content_layer_weights, "content"),
            layer_weights(s.style_layers, s.style_layer_weights, "style"), grams,
            alpha=s.alpha, beta=s.beta, tv_weight=s.tv_weight, normalize=s.normalize,
            content_features=content_targets(net, content_input, s.content_layers))
        return content_input, objective

    def _next_scale(self) -> None:
        """Go to the next scale: its targets, the current image upsampled (bicubic) to its
        size as the start, a fresh optimiser (Adam's moments and L-BFGS's curvature pairs
        belong to the other size). Everything is computed before anything is replaced, so an
        interrupt meanwhile leaves the finished scale as it was (resuming moves on from it)."""
        k = self.scale_index + 1
        content_rgb, style_rgbs = self.scale_images[k]
        content_input, objective = self._objective(content_rgb, style_rgbs)
        x = upsample(self.x, content_rgb.shape[:2])
        optimizer = make_optimizer(self.settings.optimizer, self.settings.lr)
        self.select_scale(k)
        self.content_input, self.objective, self.optimizer = content_input, objective, optimizer
        self.x, self.step, self._nonfinite = x, 0, 0
        self.final_loss = None  # the coarse scale's: not the result's

    # -- images -----------------------------------------------------------------------------
    def rgb(self, x: np.ndarray | None = None, content_rgb: np.ndarray | None = None
            ) -> np.ndarray:
        """The image x (default: the current one) as RGB float64 [H, W, 3], recoloured when the
        content's colours are preserved (with ``content_rgb``, default the current scale's)."""
        x = self.x if x is None else x
        rgb = np.asarray(x, np.float64)[0].transpose(1, 2, 0) + self.transfer.net.mean_pixel
        if self.settings.preserve_colors:
            content = self.content_rgb if content_rgb is None else content_rgb
            rgb = recolor(rgb, content.astype(np.float64))
        return rgb

    def image(self, x: np.ndarray | None = None,
              content_rgb: np.ndarray | None = None) -> Image.Image:
        rgb = np.clip(np.round(self.rgb(x, content_rgb)), 0, 255).astype(np.uint8)
        return Image.fromarray(rgb, "RGB")

    def full_image(self) -> Image.Image:
        """The current image at the output size: a coarse scale's is upsampled (bicubic), so
        OUT always has the result's size, even after an interrupt at a coarse scale."""
        if self.scale_index == self.scales - 1:
            return self.image()
        full = self.scale_images[-1][0]
        return self.image(upsample(self.x, full.shape[:2]), full)

    # -- running ----------------------------------------------------------------------------
    def _fun(self, strict: bool, reference: list):
        """The loss function of the current scale for the optimiser. strict (no line search):
        a non-finite loss, or one over EXPLODE_FACTOR times ``reference[0]`` (the scale's first
        loss, recorded here when empty), raises _Diverged; else a non-finite loss is returned as
        inf for the line search to back off from."""
        objective = self.objective

        def fun(x):
            ev = objective(np.asarray(x, np.float32))
            loss = ev.loss
            if not math.isfinite(loss):
                if strict:
                    raise _Diverged(loss, f"the loss became {loss}")
                self._nonfinite += 1  # the line search backs off from an infinite loss
                return math.inf, np.full(x.shape, np.nan), ev.terms
            if strict and reference and reference[0] > 0 and loss > EXPLODE_FACTOR * reference[0]:
                raise _Diverged(loss, f"the loss exploded to {loss:.4g} (more than "
                                      f"{EXPLODE_FACTOR:g} times the first loss, "
                                      f"{reference[0]:.4g})")
            if not reference:
                reference.append(loss)
            return loss, ev.grad.astype(np.float64), ev.terms
        return fun

    def scale_history(self) -> list[dict]:
        """The history entries of the current scale (all of them in a one-scale run)."""
        if self.scales == 1:
            return self.history
        return [e for e in self.history if e.get("scale") == self.scale_index + 1]

    def run(self, iterations: int | None = None) -> StyleResult:
        """Advance to step ``iterations`` (default: the settings' total) and finish the run:
        write the result, log and curve when there is an output path. A coarse-to-fine run
        runs every remaining scale to that step (the steps count per scale). Ctrl-C (or SIGTERM
        made into KeyboardInterrupt) stops after the last complete step and saves a checkpoint."""
        total = self.settings.iterations if iterations is None else int(iterations)
        if total != self.settings.iterations:
            self.settings = dataclasses.replace(self.settings, iterations=total)
        started = time.perf_counter()
        if self.run_files.lock is not None:
            self.run_files.lock.acquire()  # again, when an earlier run() has finished
        with self._released_on_error():
            while True:
                stopped, message = self._run_scale(total)
                if stopped in ("interrupted", "diverged") or self.scale_index == self.scales - 1:
                    break
                if stopped == "converged":  # a coarse scale that cannot improve: refine the next
                    self._say(f"{self._scale_name()}: {message}; going on to the next scale")
                try:
                    self._next_scale()
                except KeyboardInterrupt:
                    stopped, message = "interrupted", self._interrupted_message()
                    break
        return self._finish(stopped, message, time.perf_counter() - started)

    def _interrupted_message(self) -> str:
        where = f" at {self._scale_name()}" if self.scales > 1 else ""
        return f"interrupted{where} after step {self.step}"

    def _run_scale(self, total: int) -> tuple[str | None, str]:
        """Steps of the current scale up to ``total``: (stopped, message)."""
        checked_is_new = self.optimizer.evaluates_new_iterate  # else Step.checked is the old x
        done = self.scale_history()
        reference = [done[0]["loss"]] if done else []
        fun = self._fun(not self.optimizer.line_search, reference)
        last_good, last_good_step = self.x.copy(), self.step
        h, w = self.content_rgb.shape[:2]
        multi = self.scales > 1
        where = f"{self._scale_name()}: " if multi else ""
        if multi and self.step < total:
            self._say(f"{self._scale_name()} at {w}x{h} px: {total} steps"
                      + (f", from step {self.step}" if self.step else ""))
        bar = self._bar(total)
        stopped, message = None, ""
        try:
            while self.step < total:
                t0 = time.perf_counter()
                try:
                    result = self.optimizer.step(self.x, fun)
                except _Diverged as exc:
                    stopped = "diverged"
                    message = (f"{where}{exc.why} at step {self.step + 1}; stopped and kept the "
                               f"last good image (step {last_good_step})")
                    self.x, self.step = last_good, last_good_step
                    break
                except Converged as exc:
                    if self._nonfinite:
                        stopped = "diverged"
                        message = (f"{where}the loss became non-finite at step {self.step + 1} "
                                   f"(at every point the line search tried); stopped and kept "
                                   f"the last good image (step {self.step})")
                    else:
                        stopped, message = "converged", f"{exc} at step {self.step + 1}"
                    break
                self.x, self.step = result.x, self.step + 1
                last_good, last_good_step = result.checked, self.step - (0 if checked_is_new else 1)
                entry = {"step": self.step}
                if multi:
                    entry.update(scale=self.scale_index + 1, height=int(h), width=int(w))
                entry.update(loss=result.loss,
                             terms={k: float(v) for k, v in result.terms.items()},
                             evaluations=result.evaluations,
                             seconds=round(time.perf_counter() - t0, 4))
                self.history.append(entry)
                self._report(entry, bar, total)
            if stopped is None and not checked_is_new:
                # The last update was never evaluated: check (and report) the final image once.
                final = self.objective(self.x.astype(np.float32), need_grad=False)
                if not math.isfinite(final.loss):
                    stopped = "diverged"
                    message = (f"{where}the loss became {final.loss} at the final image (step "
                               f"{self.step}); kept the last good image (step {last_good_step})")
                    self.x, self.step = last_good, last_good_step
                else:
                    self.final_loss = final.loss
        except KeyboardInterrupt:
            stopped, message = "interrupted", self._interrupted_message()
        finally:
            if bar is not None:
                bar.close()
        return stopped, message


    def _bar(self, total: int):
        if not self.progress:
            return None
        # disable=None: no bar when stderr is not a terminal (logs get --print-every lines).
        desc = self._scale_name() if self.scales > 1 else "stylize"
        return tqdm(total=total, initial=self.step, unit="step", dynamic_ncols=True,
                    desc=desc, leave=True, disable=None, mininterval=0.5)

    def _report(self, entry: dict, bar, total: int) -> None:
        s = self.settings
        if bar is not None:
            bar.set_postfix_str(f"loss {entry['loss']:.4g}", refresh=False)
            bar.update(1)
        if s.print_every and (entry["step"] % s.print_every == 0 or entry["step"] == total):
            line = format_losses(entry, self.scales)
            if bar is not None:
                bar.write(line)
            elif self.log is not None:
                self.log(line)
        files = self.run_files
        if files.output is not None and s.save_every and entry["step"] % s.save_every == 0:
            # The image goes in place only after its step's checkpoint: a hard kill in between
            # leaves a checkpoint that resume continues from (and re-writes the image of), never
            # an image newer than the checkpoint.
            path = files.step_path(entry["step"], self.scale_index)
            staged = files.stage_image(self.image(), path)  # at the current scale's size
            try:
                self.save_checkpoint()
            except BaseException:
                staged.unlink(missing_ok=True)
                raise
            files.commit(staged, path, "steps")

    # -- results ----------------------------------------------------------------------------
    def facts(self) -> dict:
        net = self.transfer.net
        h, w = self.output_hw
        facts = {"content": self.content_name, "styles": self.style_names,
                 "blend": self.transfer.blend, "network": net.source,
                 "random_weights": bool(net.random_weights), "driver": net.driver.name,
                 "height": h, "width": w,
                 "optimizer_params": self.optimizer.params(),
                 "resumed_from": self.resumed_from}
        if self.scales > 1:
            facts["scale"] = self.scale_index + 1  # the scale reached (the last, when finished)
            facts["scale_sizes"] = [[int(d) for d in c.shape[:2]] for c, _ in self.scale_images]
        return facts

    def result(self, stopped=None, message: str = "") -> StyleResult:
        """The result: its image at the output size (a coarse scale's upsampled), its array
        the optimised input at the current scale's size."""
        settings = self.settings.to_dict()
        settings.update(self.facts())
        return StyleResult(self.full_image(), list(self.history), settings,
                           self.x.astype(np.float32), self.step, stopped, message,
                           dict(self.run_files.written))

    def _finish(self, stopped, message: str, seconds: float) -> StyleResult:
        result = self.result(stopped, message)
        files = self.run_files
        try:
            if files.output is not None:
                self._write_files(result, stopped, seconds)
        finally:
            files.release()
        if stopped == "diverged":
            where = f"; the last good image is in {files.written['image']}" if files.output else ""
            raise LossDivergedError(message + where, result)
        return result

    def _write_files(self, result: StyleResult, stopped, seconds: float) -> None:
        """The result, then the checkpoint (an unfinished run) or its removal, the log and the
        loss curve. When the result cannot be written (a full disk, a file that appeared at
        OUT meanwhile), nothing is lost: it is kept as a PNG elsewhere, the checkpoint and log
        are written all the same, and ResultNotSavedError says where everything is."""
        files = self.run_files
        try:
            files.save_image(result.image, "image")
        except OSError as exc:
            raise self._keep_everything(result, seconds, exc) from None
        if stopped == "interrupted":
            self.save_checkpoint()
        else:
            files.drop_checkpoint()
        files.write_log(result, seconds, self.final_loss)
        if self.history:
            files.write_curve(self.history)
        result.files = dict(files.written)

    def _keep_everything(self, result: StyleResult, seconds: float, exc: OSError
                         ) -> ResultNotSavedError:
        files = self.run_files
        kept = files.keep_elsewhere(result.image)
        saved = []
        for role, write in (("checkpoint", self.save_checkpoint),
                            ("log", lambda: files.write_log(result, seconds, self.final_loss))):
            try:
                write()
                saved.append(f"the {role} {files.written[role]}")
            except OSError as failure:
                saved.append(f"no {role} ({failure.strerror or failure})")
        result.files = dict(files.written, kept=str(kept))
        why = exc.strerror or str(exc)
        again = (f"; `vggjit stylize --resume {files.written['checkpoint']} -o OTHER.png` "
                 f"writes it again" if "checkpoint" in files.written else "")
        return ResultNotSavedError(f"could not write the result to {files.output} ({why}); it "
                                   f"is kept in {kept}; saved {' and '.join(saved)}{again}",
                                   result)

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        """The run's state as :meth:`from_checkpoint` restores it."""
        return Checkpoint(self.settings, self.x, self.step, self.history, self.scale_images,
                          self.scale_index, self.optimizer.state_dict(), self.content_name,
                          self.style_names, self.run_files.output)

    def save_checkpoint(self, path=None) -> Path | None:
        """Write the checkpoint (see :mod:`vggjit.style.checkpoint`) to ``path`` (default: the
        run's ``OUT.ckpt.npz``; None when the run writes no files)."""
        path = Path(path) if path is not None else self.run_files.paths().get("checkpoint")
        if path is None:
            return None
        write_checkpoint(path, self.checkpoint())
        self.run_files.wrote("checkpoint", path)
        return path


def format_losses(entry: dict, scales: int = 1) -> str:
    """One line: (the scale,) step, total loss and each weighted term."""
    terms = "  ".join(f"{k} {v:.4g}" for k, v in entry["terms"].items())
    scale = f"scale {entry['scale']}/{scales}  " if "scale" in entry else ""
    return f"{scale}step {entry['step']:>5}  loss {entry['loss']:.6g}  {terms}"
