"""Style transfer end to end on a tiny network: the run loop, checkpoints and resume, colour
preservation, divergence, outputs, init, reuse and coarse-to-fine scales."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from style_tools import TINY_CONTENT, Interrupt, picture, tiny_net
from vggjit.errors import InputError, OutputExistsError
from vggjit.losses import StyleObjective
from vggjit.style import transfer as transfer_mod
from vggjit.style import LossDivergedError, StyleTransfer, resume, rgb_to_yiq, stylize, upsample

SMALL = dict(content_layers=TINY_CONTENT, size=32, lr=5.0)


@pytest.fixture(scope="module")
def net():
    return tiny_net(pooling="max")


@pytest.fixture(scope="module")
def images():
    return picture(32, 32, seed=1), picture(40, 28, seed=2)


# -- the run loop ------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_loss_decreases_over_20_steps(net, images, optimizer):
    content, style = images
    # The default loss is normalised: on this tiny random network its style terms are relative
    # errors that 5-unit Adam steps overshoot (151 -> 1415 in 4 steps); 1-unit steps descend.
    options = {**SMALL, "lr": 1.0} if optimizer == "adam" else SMALL
    result = stylize(content, style, net=net, optimizer=optimizer, iterations=20, **options)
    losses = [e["loss"] for e in result.history]
    assert result.steps == 20 and len(losses) == 20 and result.stopped is None
    assert losses[-1] < 0.5 * losses[0]
    if optimizer == "lbfgs":  # each accepted step satisfies the Armijo condition
        assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert result.image.size == (32, 32) and result.image.mode == "RGB"
    assert result.settings["optimizer"] == optimizer and result.settings["height"] == 32


@pytest.mark.parametrize("optimizer,at", [("adam", 5), ("lbfgs", 8)])
def test_resume_after_an_interrupt_equals_the_uninterrupted_run(net, images, tmp_path,
                                                                 monkeypatch, optimizer, at):
    content, style = images
    options = dict(net=net, optimizer=optimizer, iterations=8, init="noise", **SMALL)
    whole = stylize(content, style, output=tmp_path / "whole.png", **options)
    assert whole.stopped is None and not (tmp_path / "whole.ckpt.npz").exists()

    with monkeypatch.context() as patch:
        Interrupt(patch, at)
        part = stylize(content, style, output=tmp_path / "part.png", **options)
    assert part.stopped == "interrupted" and 0 < part.steps < 8
    checkpoint = tmp_path / "part.ckpt.npz"
    assert checkpoint.exists() and (tmp_path / "part.png").exists()
    with np.load(checkpoint, allow_pickle=False) as data:  # no pickles inside
        assert int(data["step"]) == part.steps
        assert json.loads(str(data["settings"]))["optimizer"] == optimizer

    resumed = resume(checkpoint, net=net)
    assert resumed.stopped is None and resumed.steps == 8
    np.testing.assert_array_equal(resumed.array, whole.array)
    assert [e["loss"] for e in resumed.history] == [e["loss"] for e in whole.history]
    assert not checkpoint.exists()  # finished: the checkpoint is removed
    log = json.loads((tmp_path / "part.log.json").read_text())
    assert log["steps"] == 8 and len(log["history"]) == 8 and log["stopped"] is None


def test_resume_can_extend_a_run(net, images, tmp_path, monkeypatch):
    content, style = images
    with monkeypatch.context() as patch:
        Interrupt(patch, 3)
        stylize(content, style, net=net, optimizer="adam", iterations=5,
                output=tmp_path / "r.png", **SMALL)
    result = resume(tmp_path / "r.ckpt.npz", net=net, iterations=9)
    assert result.steps == 9 and len(result.history) == 9


def test_preserve_colors_keeps_the_contents_chroma(net, images):
    content, style = images
    result = stylize(content, style, net=net, optimizer="lbfgs", iterations=6, init="noise",
                     preserve_colors=True, **SMALL)
    out = np.asarray(result.image, np.float64)
    inside = np.all((out > 0) & (out < 255), axis=-1)  # clipping may shift chroma; skip those
    assert inside.mean() > 0.8
    yiq_out, yiq_content = rgb_to_yiq(out), rgb_to_yiq(content.astype(np.float64))
    # I and Q (chroma) are the content's, up to 8-bit rounding; Y (luminance) has changed.
    np.testing.assert_allclose(yiq_out[inside][:, 1:], yiq_content[inside][:, 1:], atol=1.0)
    assert np.abs(yiq_out[..., 0] - yiq_content[..., 0]).mean() > 1.0
    plain = stylize(content, style, net=net, optimizer="lbfgs", iterations=6, init="noise",
                    **SMALL)
    chroma_shift = np.abs(rgb_to_yiq(np.asarray(plain.image, np.float64))[..., 1:]
                          - yiq_content[..., 1:]).mean()
    assert chroma_shift > 2.0  # without the option the chroma does move


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_image(net, images, tmp_path,
                                                                      monkeypatch, optimizer):
    content, style = images
    original = StyleObjective.__call__
    calls = []

    def poisoned(obj, x, need_grad=True):
        calls.append(1)
        ev = original(obj, x, need_grad)
        if len(calls) >= 6:
            ev.loss = float("nan")
        return ev
    monkeypatch.setattr(StyleObjective, "__call__", poisoned)
    out = tmp_path / "nan.png"
    with pytest.raises(LossDivergedError, match=r"at step \d+.*last good image") as info:
        stylize(content, style, net=net, optimizer=optimizer, iterations=20, output=out, **SMALL)
    result = info.value.result
    assert out.exists() and result.steps < 20 and result.stopped == "diverged"
    assert np.isfinite(result.array).all()
    assert json.loads((tmp_path / "nan.log.json").read_text())["stopped"] == "diverged"


def test_exploding_adam_loss_stops(net, images):
    content, style = images
    with pytest.raises(LossDivergedError, match="exploded"):
        stylize(content, style, net=net, optimizer="adam", iterations=30, init="content",
                content_layers=TINY_CONTENT, size=32, lr=1e9)


# -- outputs -----------------------------------------------------------------------------------
def test_outputs_intermediates_log_and_curve(net, images, tmp_path):
    content, style = images
    out = tmp_path / "sub" / "result.png"
    result = stylize(content, style, net=net, optimizer="adam", iterations=4, save_every=2,
                     output=out, **SMALL)
    for name in ("result.png", "result_0002.png", "result_0004.png", "result.log.json",
                 "result.loss.png"):
        assert (tmp_path / "sub" / name).exists(), name
    assert Image.open(tmp_path / "sub" / "result.loss.png").format == "PNG"
    log = json.loads((tmp_path / "sub" / "result.log.json").read_text())
    assert [e["step"] for e in log["history"]] == [1, 2, 3, 4]
    assert set(log["history"][0]["terms"]) == {"content:relu4_1", "tv", *(
        f"style:relu{b}_1" for b in range(1, 6))}  # the default tv weight is not 0
    assert log["settings"]["network"].startswith("random") and result.files["image"] == str(out)
    # Existing files are never replaced without overwrite, and the check comes first.
    with pytest.raises(OutputExistsError, match="result.png"):
        stylize(content, style, net=net, optimizer="adam", iterations=4, output=out, **SMALL)
    stylize(content, style, net=net, optimizer="adam", iterations=2, output=out, overwrite=True,
            **SMALL)


class NoWork:
    """A driver that fails the test if any computation reaches it."""

    name = "no-work"

    def __getattr__(self, name):
        raise AssertionError(f"work started ({name}) before the inputs were checked")


@pytest.mark.parametrize("options,message", [
    (dict(style_layers=("relu1_1", "relu9_1")), "unknown style layer 'relu9_1'"),
    (dict(content_layers=("fc7",)), "unknown content layer 'fc7'"),
    (dict(size=12), "too small for layer 'relu5_1'"),
    (dict(height=40, width=8), "too small"),
    (dict(style_scale=0.2), "style image 1 would be"),
    (dict(init="/nonexistent/init.png"), "no such file"),
    (dict(style_blend=(1.0, 2.0)), "1 style images but 2 blend weights"),
    (dict(optimizer="sgd"), "unknown optimiser"),
    (dict(noise=2.0), "noise ratio"),
    (dict(scales=0), "scales must be a positive integer, got 0"),
    (dict(scales=2), "with 2 scales, scale 1/2 works at 1/2 of the output size: the style "
                     "image 1 would be 16x11 pixels"),
])
def test_bad_inputs_fail_before_any_work(images, tmp_path, options, message):
    content, style = images
    net = tiny_net(driver=NoWork())
    settings = {**SMALL, **options}
    with pytest.raises(InputError, match=message):
        stylize(content, style, net=net, output=tmp_path / "o.png", **settings)
    assert not list(tmp_path.iterdir())


def test_missing_files_and_unwritable_output_fail_before_any_work(images, tmp_path):
    content, style = images
    net = tiny_net(driver=NoWork())
    with pytest.raises(InputError, match="no such file"):
        stylize(tmp_path / "missing.jpg", style, net=net, **SMALL)
    with pytest.raises(InputError, match="no such file"):
        stylize(content, [style, tmp_path / "missing.png"], net=net, **SMALL)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    with pytest.raises(Exception, match="cannot write"):
        stylize(content, style, net=net, output=blocker / "out.png", **SMALL)
    with pytest.raises(InputError, match="extension"):
        stylize(content, style, net=net, output=tmp_path / "out.xyz", **SMALL)


# -- settings, presets, init, reuse -------------------------------------------------------------
def test_init_noise_is_the_labs_mix(net, images):
    content, style = images
    transfer = StyleTransfer(style, net=net, init="noise", noise=0.3, seed=5, **SMALL)
    session = transfer.start(content)
    base = session.content_input.astype(np.float64)
    noise = np.random.default_rng(5).uniform(-20, 20, base.shape)
    np.testing.assert_allclose(session.x, base * 0.7 + noise * 0.3)
    random = StyleTransfer(style, net=net, init="random", seed=5, **SMALL).start(content)
    np.testing.assert_allclose(random.x, noise)


def test_one_transfer_serves_many_contents_with_one_style_computation(net, images, monkeypatch):
    content, style = images
    calls = []
    original = transfer_mod.style_targets
    monkeypatch.setattr(transfer_mod, "style_targets",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    transfer = StyleTransfer(style, net=net, optimizer="adam", iterations=2, **SMALL)
    first = transfer.run(content)
    second = transfer.run(picture(32, 32, seed=9))
    assert len(calls) == 1 and first.steps == second.steps == 2
    session = transfer.start(content)  # a session can be advanced bit by bit
    session.run(1)
    assert session.step == 1
    assert session.run(3).steps == 3


# -- coarse-to-fine (scales) ---------------------------------------------------------------------
# 48 px: the tiny network's relu5_1 needs 16 px, so 2 scales (24, 48) fit and 3 (12, ...) do not.
MULTI = dict(content_layers=TINY_CONTENT, size=48, lr=5.0, init="noise", scales=2)


def test_scales_run_coarse_to_fine_and_log_every_scale(net, images, tmp_path):
    content, style = images
    out = tmp_path / "multi.png"
    result = stylize(content, style, net=net, optimizer="adam", iterations=3, save_every=3,
                     output=out, **MULTI)
    assert result.stopped is None and result.steps == 3 and result.image.size == (48, 48)
    assert result.array.shape == (1, 3, 48, 48)
    assert result.settings["scales"] == 2 and result.settings["scale"] == 2
    assert result.settings["scale_sizes"] == [[24, 24], [48, 48]]
    log = json.loads((tmp_path / "multi.log.json").read_text())
    assert [(e["scale"], e["step"], e["height"], e["width"]) for e in log["history"]] == [
        (1, 1, 24, 24), (1, 2, 24, 24), (1, 3, 24, 24), (2, 1, 48, 48), (2, 2, 48, 48),
        (2, 3, 48, 48)]
    # Each scale's intermediate images have their own names and the scale's size.
    assert Image.open(tmp_path / "multi_s1_0003.png").size == (24, 24)
    assert Image.open(tmp_path / "multi_s2_0003.png").size == (48, 48)
    assert not (tmp_path / "multi_0003.png").exists()
    assert Image.open(out).size == (48, 48) and (tmp_path / "multi.loss.png").exists()
    # The intermediate names are planned before any work: an existing one is never replaced.
    (tmp_path / "again_s2_0003.png").write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="again_s2_0003.png"):
        stylize(content, style, net=net, optimizer="adam", iterations=3, save_every=3,
                output=tmp_path / "again.png", **MULTI)
    assert (tmp_path / "again_s2_0003.png").read_bytes() == b"precious"
    assert not (tmp_path / "again.png").exists()


def test_the_next_scale_starts_from_the_previous_result_upsampled(net, images, monkeypatch):
    content, style = images
    # The first scale is a one-scale run at half the size: same images, same start, same steps.
    half = stylize(content, style, net=net, optimizer="lbfgs", iterations=3,
                   **{**MULTI, "scales": 1, "size": 24})
    first_x = {}
    original = StyleObjective.__call__

    def record(obj, x, need_grad=True):
        first_x.setdefault(x.shape, np.array(x))
        return original(obj, x, need_grad)
    monkeypatch.setattr(StyleObjective, "__call__", record)
    multi = stylize(content, style, net=net, optimizer="lbfgs", iterations=3, **MULTI)
    assert list(first_x) == [(1, 3, 24, 24), (1, 3, 48, 48)]
    np.testing.assert_array_equal([e["loss"] for e in multi.history[:3]],
                                  [e["loss"] for e in half.history])
    expected = upsample(half.array, (48, 48))
    np.testing.assert_array_equal(first_x[(1, 3, 48, 48)], expected.astype(np.float32))


def test_too_many_scales_fail_before_any_work_naming_what_fits(images, tmp_path):
    content, style = images
    net = tiny_net(driver=NoWork())
    with pytest.raises(InputError, match=r"with 3 scales, scale 1/3 works at 1/4 of the output "
                                         r"size: the output would be 12x12 pixels, too small "
                                         r"for layer 'relu5_1': it needs at least 16 pixels on "
                                         r"each side \(use at most 2 scales here"):
        stylize(content, style, net=net, output=tmp_path / "o.png", **{**MULTI, "scales": 3})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("optimizer,at,scale", [("adam", 3, 1), ("lbfgs", 4, 1), ("adam", 7, 2)])
def test_resume_after_an_interrupt_at_any_scale_equals_the_uninterrupted_run(
        net, images, tmp_path, monkeypatch, optimizer, at, scale):
    content, style = images
    options = dict(net=net, optimizer=optimizer, iterations=3, **MULTI)
    whole = stylize(content, style, output=tmp_path / "whole.png", **options)
    assert whole.stopped is None and len(whole.history) == 6

    with monkeypatch.context() as patch:
        Interrupt(patch, at)
        part = stylize(content, style, output=tmp_path / "part.png", **options)
    assert part.stopped == "interrupted" and part.settings["scale"] == scale
    assert part.message.startswith(f"interrupted at scale {scale}/2 after step")
    # OUT has the output's size even when the run stopped at the coarse scale.
    assert Image.open(tmp_path / "part.png").size == (48, 48)
    checkpoint = tmp_path / "part.ckpt.npz"
    with np.load(checkpoint, allow_pickle=False) as data:
        assert int(data["stage"]) == scale - 1 and int(data["step"]) == part.steps
        assert data["x"].shape[2:] == ((24, 24) if scale == 1 else (48, 48))

    resumed = resume(checkpoint, net=net)
    assert resumed.stopped is None and resumed.steps == 3
    np.testing.assert_array_equal(resumed.array, whole.array)
    assert [e["loss"] for e in resumed.history] == [e["loss"] for e in whole.history]
    assert [e["scale"] for e in resumed.history] == [1, 1, 1, 2, 2, 2]
    assert not checkpoint.exists()
