"""`vggjit weights`: info, convert and the help, in-process on fixture weight files."""
from __future__ import annotations

import json

import pytest

from vggjit.cli import main

from matconvnet_fixture import COLOUR_CLASSES, colour_params, uniform_image, write_matconvnet

GREEN = COLOUR_CLASSES[1]
pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def weights(tmp_path):
    return write_matconvnet(tmp_path / "colour.mat", colour_params(), version="new")


def test_weights_info(capsys, weights):
    assert main(["weights", "info", str(weights)]) == 0
    out = capsys.readouterr().out
    assert "MatConvNet newer format" in out
    assert "conv3_4" in out and "8x8x3x3" in out and "fc6" in out and "16x392" in out
    assert "R 120.500" in out and "10 (n00000000" in out
    assert "MD5:" in out

    assert main(["weights", "info", str(weights), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "matconvnet-new" and info["classes"] == 10
    fc8 = next(layer for layer in info["layers"] if layer["name"] == "fc8")
    assert fc8 == {"name": "fc8", "type": "fc", "weight": [10, 16], "bias": [10]}
    assert len(info["layers"]) == 43 and info["official"] is None


def test_weights_convert_and_info_of_native_file(capsys, weights, tmp_path):
    out = tmp_path / "vgg.npz"
    assert main(["weights", "convert", str(weights), "--output", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out
    assert main(["weights", "convert", str(weights), "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["weights", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "vggjit native file" in text and str(weights) in text
    green = tmp_path / "green.png"
    uniform_image((0, 255, 0)).save(green)
    code = main(["classify", str(green), "--weights", str(out), "--json",
                 "--driver", "example-numpy"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(printed)["top"][0]["index"] == GREEN


def test_weights_help(capsys):
    assert main(["weights"]) == 0
    text = capsys.readouterr().out
    assert "fetch" in text and "info" in text and "convert" in text
    with pytest.raises(SystemExit):
        main(["weights", "fetch", "--help"])
    text = capsys.readouterr().out
    assert "8ee3263992981a1d26e73b3ca028a123" in text and "--variant" in text
