"""`vggjit quantize` end to end on a small VGG-shaped MatConvNet file (naive float driver)."""
from __future__ import annotations

import contextlib
import io
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


@pytest.fixture(scope="module")
def calibrated(files):
    """One calibration with --report and --json: (exit status, stdout, params, report)."""
    root, weights, image = files
    out, report = root / "params.npz", root / "report.json"
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        rc = main(["quantize", "--weights", str(weights), str(image), "-o", str(out),
                   "--driver", "naive", "--report", "--json", str(report)])
    return rc, capture.getvalue(), out, report


def test_calibrate_write_and_report(files, calibrated, capsys):
    rc, text, out, report = calibrated
    assert rc == 0, text
    table = load_quant(out)
    assert len(table) == 8 and table.layers[0] == "conv1_1" and table.layers[-1] == "fc8"
    assert all(1.0 <= p.scale < 2.0 for p in table.input + table.filter)
    assert "wrote" in text and "top-1 agreement" in text and "fc8" in text
    data = json.loads(report.read_text())
    assert data["images"] == 1 and set(data["sqnr_db"]) >= {"conv1_1", "fc8"}
    assert data["sqnr_db"]["conv1_1"] > 20  # int8 of one layer: well above 20 dB

    # evaluate the file just written, without calibrating
    _, weights, image = files
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


def test_classify_with_the_dlp_driver_and_a_quant_file(files, calibrated, capsys):
    root, weights, image = files
    out = calibrated[2]
    base = ["classify", "--weights", str(weights), str(image), "--json", "--top-k", "3"]
    assert main(base + ["--driver", "cnml-dlp", "--quant", str(out)]) == 0
    int8 = json.loads(capsys.readouterr().out)
    assert main(base + ["--quant", str(out)]) == 0  # --quant implies the driver
    assert json.loads(capsys.readouterr().out) == int8
    assert main(base + ["--driver", "naive"]) == 0
    float32 = json.loads(capsys.readouterr().out)
    assert int8["top"][0]["index"] == float32["top"][0]["index"]

    assert main(base + ["--driver", "naive", "--quant", str(out)]) == 2
    assert "--quant is for the cnml-dlp driver" in capsys.readouterr().err
    other = root / "vgg19_sized.npz"
    np.savez(other, input=np.tile([0.0, 1.0], 19), filter=np.tile([0.0, 1.0], 19))
    assert main(base + ["--quant", str(other)]) == 2
    assert "vgg19_sized.npz: has 19" in capsys.readouterr().err
