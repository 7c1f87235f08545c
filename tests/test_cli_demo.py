"""`vggjit demo` from the command line: on a tiny random network, and on a small weight file."""
from __future__ import annotations

import json

from style_tools import files, tiny  # noqa: F401  (fixtures; tiny: every network built is tiny)
from vggjit.cli import main
from vggjit.style import make_settings


def test_demo_runs_end_to_end_with_random_weights(tiny, tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--output", str(out), "--size", "40", "-n", "4"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "random VGG19 weights" in printed and "texture transfer only" in printed
    assert str(out / "result.png") in printed
    for name in ("content.png", "style.png", "result.png", "result.loss.png", "result.log.json"):
        assert (out / name).exists(), name
    settings = tiny[0]
    assert settings.normalize and settings.pooling == "avg" and settings.weights == "random"
    # Its own loss, whatever the defaults: the look of the gallery's random-weight pictures.
    assert (settings.alpha, settings.beta, settings.tv_weight) == (1.0, 500.0, 0.0)
    # A second run refuses to replace the first one's files unless asked to.
    assert main(["demo", "--output", str(out), "--size", "40", "-n", "4"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_demo_and_stylize_use_a_weight_file_when_there_is_one(files, tmp_path, capsys):
    """No monkeypatching: the real network builder loads a (small) MatConvNet file."""
    from matconvnet_fixture import write_matconvnet

    weights = tmp_path / "small-vgg19.mat"
    write_matconvnet(weights)
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--size", "40", "-n", "2",
                 "--weights", str(weights)]) == 0
    printed = capsys.readouterr().out
    assert "random" not in printed and str(out / "result.png") in printed
    s = json.loads((out / "result.log.json").read_text())["settings"]
    assert not s["random_weights"] and s["pooling"] == "max"
    # With real weights the demo runs the defaults (not the random network's beta 500, no TV).
    defaults = make_settings()
    assert (s["alpha"], s["beta"], s["tv_weight"], s["normalize"]) == (
        defaults.alpha, defaults.beta, defaults.tv_weight, defaults.normalize)
    assert s["driver"] != "cnml-dlp"  # the default driver for style transfer can go backward
    content, style = files
    assert main(["stylize", str(content), str(style), "-o", str(tmp_path / "w.png"), "--size",
                 "32", "-n", "2", "--weights", str(weights), "--save-every", "0"]) == 0
    assert main(["stylize", str(content), str(style), "-o", str(tmp_path / "d.png"), "--size",
                 "32", "-n", "2", "--weights", str(weights), "--driver", "cnml-dlp"]) == 2
    assert "backward" in capsys.readouterr().err
