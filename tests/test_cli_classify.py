"""`vggjit classify`, in-process on fixture weight files."""
from __future__ import annotations

import json

import pytest

from vggjit.cli import main

from matconvnet_fixture import (COLOUR_CLASSES, class_names, colour_params, uniform_image,
                                write_matconvnet)

RED, GREEN, BLUE = COLOUR_CLASSES[0], COLOUR_CLASSES[1], COLOUR_CLASSES[2]
WNIDS, DESCRIPTIONS = class_names(10)


pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def weights(tmp_path):
    return write_matconvnet(tmp_path / "colour.mat", colour_params(), version="new")


@pytest.fixture
def images(tmp_path):
    paths = {}
    for name, colour, size in (("red", (255, 0, 0), (300, 260)), ("green", (0, 255, 0), (224, 224)),
                               ("blue", (0, 0, 255), (500, 90))):
        paths[name] = tmp_path / f"{name}.png"
        uniform_image(colour).resize(size).save(paths[name])
    paths["missing"] = tmp_path / "missing.jpg"
    paths["text"] = tmp_path / "notes.jpg"
    paths["text"].write_text("not an image")
    return paths


def classify(capsys, *args):
    # The documented example plugin (installed by conftest): fast float32 NumPy ops.
    code = main(["classify", *map(str, args), "--driver", "example-numpy"])
    out, err = capsys.readouterr()
    return code, out, err


def test_table(capsys, weights, images):
    code, out, err = classify(capsys, images["red"], "--weights", weights)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == str(images["red"])
    assert lines[1].split() == ["rank", "class", "wnid", "prob", "description"]
    first = lines[2].split()
    assert first[:3] == ["1", str(RED), WNIDS[RED]] and float(first[3]) > 0.9
    assert lines[2].endswith(DESCRIPTIONS[RED])
    assert len(lines) == 2 + 5  # top 5 by default


def test_json_lines_and_top_k(capsys, weights, images):
    code, out, err = classify(capsys, images["red"], images["blue"], "--weights", weights,
                              "--json", "--top-k", "2")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in records] == [str(images["red"]), str(images["blue"])]
    for record, cls in zip(records, (RED, BLUE)):
        assert len(record["top"]) == 2
        best = record["top"][0]
        assert best == {"rank": 1, "index": cls, "wnid": WNIDS[cls],
                        "description": DESCRIPTIONS[cls], "probability": best["probability"]}
        assert 0.9 < best["probability"] <= 1.0
        assert record["top"][1]["rank"] == 2


def test_bad_images_are_reported_and_skipped(capsys, weights, images):
    code, out, err = classify(capsys, images["red"], images["missing"], images["text"],
                              images["blue"], "--weights", weights, "--top-k", "1")
    assert code == 1
    assert f"{images['missing']}: no such file" in err
    assert f"{images['text']}: not an image file" in err
    assert "2 of 4 image(s) could not be classified" in err
    heads = [line for line in out.splitlines() if not line.startswith(" ")]
    assert heads == [str(images["red"]), str(images["blue"])]

    code, out, err = classify(capsys, images["missing"], images["green"], "--weights", weights,
                              "--json")
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["path"] == str(images["missing"]) and "no such file" in records[0]["error"]
    assert records[1]["top"][0]["index"] == GREEN


def test_batches_keep_the_order(capsys, weights, images):
    order = [images["blue"], images["red"], images["green"], images["red"], images["blue"]]
    code, out, err = classify(capsys, *order, "--weights", weights, "--json", "--batch-size", "2")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["top"][0]["index"] for r in records] == [BLUE, RED, GREEN, RED, BLUE]


def test_resize_stretch_and_env_weights(capsys, weights, images, monkeypatch):
    monkeypatch.setenv("VGGJIT_WEIGHTS", str(weights))
    code, out, err = classify(capsys, images["blue"], "--resize", "stretch", "--json")
    assert code == 0, err
    assert json.loads(out)["top"][0]["index"] == BLUE


def test_missing_weights_stops_with_how_to(capsys, images, tmp_path):
    code, out, err = classify(capsys, images["red"])
    assert code == 2 and out == ""
    assert "vggjit weights fetch" in err
    assert "http://www.vlfeat.org/matconvnet/models/beta16/imagenet-vgg-verydeep-19.mat" in err
    assert str(tmp_path / "home" / "imagenet-vgg-verydeep-19.mat") in err


def test_bad_weight_file_is_one_clear_error(capsys, images, tmp_path):
    broken = tmp_path / "broken.mat"
    broken.write_text("<html>404</html>")
    code, out, err = classify(capsys, images["red"], "--weights", broken)
    assert code == 2 and out == ""
    assert err.startswith("vggjit classify: error: ") and str(broken) in err
    assert "Traceback" not in err


def test_bad_options(capsys, weights, images):
    code, _, err = classify(capsys, images["red"], "--weights", weights, "--top-k", "11")
    assert code == 2 and "--top-k must be between 1 and 10" in err
    code, _, err = classify(capsys, images["red"], "--weights", weights, "--batch-size", "0")
    assert code == 2 and "--batch-size" in err
    code, _, err = classify(capsys, images["red"], "--weights", "random")
    assert code == 2 and "classes mean nothing" in err and "weights fetch" in err


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["classify", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for fragment in ("--top-k", "--json", "--resize", "stretch", "vggjit weights fetch",
                     "examples:", "VGGJIT_WEIGHTS"):
        assert fragment in text
