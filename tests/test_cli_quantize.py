"""`vggjit quantize` end to end on a small VGG-shaped MatConvNet file (naive float driver)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from matconvnet_fixture import write_matconvnet
from PIL import Image

from vggjit.cli import main
from vggjit.quant import load_quant

BLOCKS = ((4, 1), (4, 1), (8, 1), (8, 1), (8, 1))  # 5 conv + 3 fc = 8 (position, scale) pairs


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantize")
    weights = write_matconvnet(root / "small.mat", blocks=BLOCKS)
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.standard_normal((240, 260, 3)), 0), 1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 255
    image = root / "img.png"
    Image.fromarray(smooth.astype(np.uint8)).save(image)
    return root, weights, image


def test_calibrate_write_and_report(files, capsys):
    root, weights, image = files
    out, report = root / "params.npz", root / "report.json"
    rc = main(["quantize", "--weights", str(weights), str(image), "-o", str(out),
               "--driver", "naive", "--report", "--json", str(report)])
    text = capsys.readouterr().out
    assert rc == 0, text
    table = load_quant(out)
    assert len(table) == 8 and table.layers[0] == "conv1_1" and table.layers[-1] == "fc8"
    assert all(1.0 <= p.scale < 2.0 for p in table.input + table.filter)
    assert "wrote" in text and "top-1 agreement" in text and "fc8" in text
    data = json.loads(report.read_text())
    assert data["images"] == 1 and set(data["sqnr_db"]) >= {"conv1_1", "fc8"}
    assert data["sqnr_db"]["conv1_1"] > 20  # int8 of one layer: well above 20 dB

    # evaluate the file just written, without calibrating
    rc = main(["quantize", "--weights", str(weights), "--quant", str(out), "--report",
               str(image), "--driver", "naive"])
    assert rc == 0 and "top-5 agreement" in capsys.readouterr().out


@pytest.mark.parametrize("extra,words", [
    ([], "-o PARAMS.npz"),
    (["-o", "x.txt"], "must end in .npz"),
    (["--quant", "q.npz"], "only makes sense with --report"),
])
def test_usage_errors(files, capsys, extra, words):
    _, weights, image = files
    assert main(["quantize", "--weights", str(weights), str(image), *extra]) == 2
    assert words in capsys.readouterr().err


def test_malformed_quant_file_and_existing_output(files, capsys):
    root, weights, image = files
    bad = root / "bad.npz"
    np.savez(bad, input=np.array([0.0, 1.0]), filters=np.array([0.0, 1.0]))
    assert main(["quantize", "--weights", str(weights), "--quant", str(bad), "--report",
                 str(image)]) == 2
    err = capsys.readouterr().err
    assert "bad.npz" in err and "'filter'" in err
    existing = root / "exists.npz"
    existing.write_bytes(b"")
    assert main(["quantize", "--weights", str(weights), str(image), "-o", str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["quantize", "--weights", str(weights), str(root / "nope.png"),
                 "-o", str(root / "n.npz")]) == 2
    assert "nope.png" in capsys.readouterr().err
