"""`vggjit stylize` from the command line, on a tiny random network."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from PIL import Image

from style_tools import files, picture, tiny, tiny_net  # noqa: F401  (files, tiny: fixtures)
from vggjit.cli import main
from vggjit.losses import StyleObjective
from vggjit.style import transfer as transfer_mod

TINY = ["--content-layers", "relu4_1", "--size", "32", "--weights", "random"]


@pytest.fixture
def no_work(monkeypatch):
    def build(settings, driver=None):
        raise AssertionError("the network was built: work started before the inputs were checked")
    monkeypatch.setattr(transfer_mod, "build_network", build)


def test_stylize_writes_result_intermediates_log_and_curve(tiny, files, tmp_path, capsys):
    content, style = files
    out = tmp_path / "out" / "result.png"
    rc = main(["stylize", str(content), str(style), "-o", str(out), *TINY, "-n", "4",
               "--optimizer", "adam", "--lr", "5", "--save-every", "2", "--print-every", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "style:relu1_1" in printed and "content:relu4_1" in printed  # per-layer losses
    assert f"wrote to {out}" in printed
    for name in ("result.png", "result_0002.png", "result_0004.png", "result.log.json",
                 "result.loss.png"):
        assert (out.parent / name).exists(), name
    assert not (out.parent / "result.ckpt.npz").exists()
    assert Image.open(out).size == (32, 29)  # longer side 32, aspect of 40x36 kept
    log = json.loads((out.parent / "result.log.json").read_text())
    assert log["settings"]["optimizer"] == "adam" and len(log["history"]) == 4


def test_several_styles_blend_and_options_reach_the_settings(tiny, files, tmp_path):
    content, style = files
    out = tmp_path / "blend.png"
    rc = main(["stylize", str(content), str(style), str(content), "-o", str(out), *TINY,
               "-n", "2", "--style-blend", "3,1", "--style-layers", "relu1_1,relu3_1",
               "--style-layer-weights", "1,2", "--alpha", "2", "--beta", "30", "--tv-weight",
               "0.5", "--pooling", "avg", "--init", "random", "--seed", "4",
               "--preserve-colors", "--no-normalize", "--style-scale", "0.75", "--save-every",
               "0"])
    assert rc == 0
    s = json.loads((tmp_path / "blend.log.json").read_text())["settings"]
    assert s["blend"] == [0.75, 0.25] and s["style_layers"] == ["relu1_1", "relu3_1"]
    assert (s["alpha"], s["beta"], s["tv_weight"], s["pooling"], s["init"], s["seed"]) == (
        2.0, 30.0, 0.5, "avg", "random", 4)
    assert s["preserve_colors"] and s["style_layer_weights"] == [1.0, 2.0]
    assert s["normalize"] is False  # on by default; --no-normalize turns it off
    assert tiny[0].pooling == "avg"


def test_lab_preset_with_overrides(tiny, files, tmp_path):
    content, style = files
    out = tmp_path / "lab.png"
    rc = main(["stylize", str(content), str(style), "-o", str(out), "--preset", "lab",
               "--content-layers", "relu4_1", "--height", "32", "--width", "48", "-n", "2",
               "--weights", "random"])
    assert rc == 0
    s = json.loads((tmp_path / "lab.log.json").read_text())["settings"]
    assert (s["optimizer"], s["lr"], s["init"], s["noise"], s["beta"]) == (
        "adam", 1.0, "noise", 0.5, 500.0)
    assert (s["height"], s["width"], s["save_every"]) == (32, 48, 1)
    assert (tmp_path / "lab_0001.png").exists() and (tmp_path / "lab_0002.png").exists()
    assert Image.open(out).size == (48, 32)


@pytest.mark.parametrize("argv,message", [
    (["{missing}", "{style}"], "no such file"),
    (["{content}", "{missing}"], "no such file"),
    (["{content}", "{style}", "--style-layers", "relu1_1,conv9_9"], "unknown style layer 'conv9_9'"),
    (["{content}", "{style}", "--content-layers", "prob"], "unknown content layer 'prob'"),
    (["{content}", "{style}", "--size", "8"], "too small for layer"),
    (["{content}", "{style}", "-o", "{blocked}"], "cannot write"),
    (["{content}", "{style}", "--init", "{missing}"], "no such file"),
    (["{content}", "{style}", "--optimizer", "adam", "--lr", "-1"], "learning rate"),
    (["{content}", "{style}", "--scales", "0"], "scales must be a positive integer, got 0"),
    (["{content}", "{style}", "--size", "32", "--scales", "2"],
     "with 2 scales, scale 1/2 works at 1/2 of the output size: the output would be 14x16 "
     "pixels, too small for layer 'relu5_1': it needs at least 16 pixels on each side (use 1 "
     "scale (no coarse-to-fine) here"),
    (["{content}"], "at least one STYLE"),
    (["--resume", "{missing}"], "nope.png (the checkpoint): no such file"),
    (["{content}", "{style}", "-o", "{style}", "--overwrite"], "is the input"),
    (["{content}", "{style}", "-o", "{out_psd}"], "Pillow cannot write .psd images"),
    (["{content}", "{style}", "--size", "100000", "-n", "1"], "the largest --size that fits"),
    (["{content}", "{style}", "--size", "64", "--style-scale", "1000"],
     "the largest --style-scale that fits is about"),
])
def test_bad_inputs_are_clear_errors_before_any_work(no_work, files, tmp_path, capsys, argv,
                                                     message, monkeypatch):
    monkeypatch.setenv("VGGJIT_MEMORY_LIMIT", "4G")
    content, style = files
    style_bytes = style.read_bytes()
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    names = {"content": content, "style": style, "missing": tmp_path / "nope.png",
             "blocked": blocker / "out.png", "out_psd": tmp_path / "out.psd"}
    args = [a.format(**names) for a in argv]
    if "-o" not in args and "--resume" not in args:
        args += ["-o", str(tmp_path / "out.png")]
    if "--resume" not in args:
        args += ["--weights", "random"] + (
            [] if "--content-layers" in args else ["--content-layers", "relu4_1"])
    rc = main(["stylize", *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("vggjit stylize: error:") and err.count("\n") == 1
    assert not (tmp_path / "out.png").exists() and style.read_bytes() == style_bytes


def test_existing_output_needs_overwrite(tiny, files, tmp_path, capsys):
    content, style = files
    out = tmp_path / "o.png"
    out.write_bytes(b"precious")
    argv = ["stylize", str(content), str(style), "-o", str(out), *TINY, "-n", "1",
            "--optimizer", "adam"]
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert not tiny  # refused before the network was built
    assert main(argv + ["--overwrite"]) == 0
    assert Image.open(out).size == (32, 29)


def test_scales_run_coarse_to_fine_end_to_end(tiny, files, tmp_path, capsys):
    content, style = files
    out = tmp_path / "big.png"
    argv = ["stylize", str(content), str(style), "-o", str(out), "--content-layers", "relu4_1",
            "--size", "40", "--weights", "random", "-n", "2", "--optimizer", "adam", "--lr", "5",
            "--save-every", "2", "--print-every", "1", "--scales", "2"]
    (tmp_path / "big_s2_0002.png").write_bytes(b"precious")  # planned: refused before work
    assert main(argv) == 2
    assert "big_s2_0002.png already exists" in capsys.readouterr().err and not tiny
    (tmp_path / "big_s2_0002.png").unlink()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "40x36 px, adam x 2 per scale, 2 scales from 20x18 px" in printed
    assert "scale 1/2 at 20x18 px: 2 steps" in printed and "scale 2/2 at 40x36 px" in printed
    assert "scale 1/2  step     1" in printed and "scale 2/2  step     2" in printed
    assert f"wrote to {out} after 2 scales, 2 steps at the last" in printed
    assert Image.open(out).size == (40, 36)
    assert Image.open(tmp_path / "big_s1_0002.png").size == (20, 18)
    assert Image.open(tmp_path / "big_s2_0002.png").size == (40, 36)
    log = json.loads((tmp_path / "big.log.json").read_text())
    assert [(e["scale"], e["height"], e["width"]) for e in log["history"]] == [
        (1, 18, 20), (1, 18, 20), (2, 36, 40), (2, 36, 40)]
    assert log["settings"]["scales"] == 2 and log["settings"]["scale_sizes"] == [[18, 20],
                                                                                [36, 40]]


def test_sigterm_saves_a_checkpoint_and_resume_matches_the_uninterrupted_run(
        tiny, files, tmp_path, monkeypatch, capsys):
    content, style = files
    common = [str(content), str(style), *TINY, "-n", "6", "--optimizer", "adam", "--lr", "5",
              "--init", "noise", "--save-every", "0"]
    assert main(["stylize", *common, "-o", str(tmp_path / "whole.png")]) == 0

    original, calls = StyleObjective.__call__, []

    def terminating(obj, x, need_grad=True):
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` would
        return original(obj, x, need_grad)
    monkeypatch.setattr(StyleObjective, "__call__", terminating)
    part = tmp_path / "part.png"
    assert main(["stylize", *common, "-o", str(part)]) == 130
    printed = capsys.readouterr().out
    checkpoint = tmp_path / "part.ckpt.npz"
    assert "interrupted after step 3" in printed and f"--resume {checkpoint}" in printed
    assert checkpoint.exists() and part.exists()
    monkeypatch.setattr(StyleObjective, "__call__", original)

    assert main(["stylize", "--resume", str(checkpoint)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(part)),
                                  np.asarray(Image.open(tmp_path / "whole.png")))
    whole_log = json.loads((tmp_path / "whole.log.json").read_text())
    part_log = json.loads((tmp_path / "part.log.json").read_text())
    assert [e["loss"] for e in part_log["history"]] == [e["loss"] for e in whole_log["history"]]
    assert not checkpoint.exists()
    # Resuming takes the run's own settings: changing them is refused.
    assert main(["stylize", "--resume", str(checkpoint), "--beta", "3"]) == 2


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_image(tiny, files, tmp_path,
                                                                   monkeypatch, capsys):
    content, style = files
    original, calls = StyleObjective.__call__, []

    def poisoned(obj, x, need_grad=True):
        calls.append(1)
        ev = original(obj, x, need_grad)
        if len(calls) > 3:
            ev.loss = float("inf")
        return ev
    monkeypatch.setattr(StyleObjective, "__call__", poisoned)
    out = tmp_path / "n.png"
    rc = main(["stylize", str(content), str(style), "-o", str(out), *TINY, "-n", "9",
               "--optimizer", "adam"])
    err = capsys.readouterr().err
    assert rc == 2 and "the loss became inf at step 4" in err and "last good image (step 2)" in err
    assert out.exists()


def test_a_slow_driver_is_announced_once_before_the_first_step(files, tmp_path, capsys,
                                                               monkeypatch):
    net = tiny_net()
    monkeypatch.setattr(net.driver, "flops_per_second", 1e3, raising=False)
    monkeypatch.setattr(transfer_mod, "build_network", lambda settings, driver=None: net)
    content, style = files
    rc = main(["stylize", str(content), str(style), "-o", str(tmp_path / "o.png"), *TINY,
               "-n", "2", "--optimizer", "adam"])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("warning: this run (2 steps) is about") == 1 and "a faster driver" in err
