"""Hostile and huge inputs on the command line: each is one clear line, none a traceback or a
hang (docs/bad-input.md lists them). Fixture networks only; nothing large is allocated."""
from __future__ import annotations

import json
import os
import struct
import zlib

import numpy as np
import pytest
from matconvnet_fixture import colour_params, uniform_image, write_matconvnet

from vggjit.cli import main
from vggjit.errors import InputError
from vggjit.fileio import input_file, refuse_input_as_output
from vggjit.images import MAX_PIXELS, load_image, preprocess
from vggjit.memory import ENV_LIMIT


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGJIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VGGJIT_WEIGHTS", raising=False)
    monkeypatch.delenv("VGGJIT_DRIVER", raising=False)
    monkeypatch.delenv(ENV_LIMIT, raising=False)


@pytest.fixture
def weights(tmp_path):
    return write_matconvnet(tmp_path / "colour.mat", colour_params(), version="new")


@pytest.fixture
def red(tmp_path):
    path = tmp_path / "red.png"
    uniform_image((255, 0, 0)).save(path)
    return path


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels and holds none: a decompression bomb's
    header (65 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                            0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def classify(capsys, *args):
    code = main(["classify", *map(str, args), "--driver", "example-numpy"])
    out, err = capsys.readouterr()
    return code, out, err


# -- images ---------------------------------------------------------------------------------
@pytest.mark.parametrize("width,height", [(30000, 30000), (12000, 12000)])
def test_a_decompression_bomb_is_reported_and_skipped(capsys, tmp_path, weights, red,
                                                     width, height):
    # 30000^2 trips Pillow's own error; 12000^2 only its warning, so our limit must catch it
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(width, height))
    assert width * height > MAX_PIXELS
    code, out, err = classify(capsys, bomb, red, "--weights", weights, "--json")
    assert code == 1 and "Traceback" not in err
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["path"] == str(bomb) and "decompression bomb" in records[0]["error"]
    assert "cannot read image" not in records[0]["error"]     # our message, not wrapped
    assert "top" in records[1]


def test_an_extreme_strip_is_refused_by_name_not_blown_up(tmp_path):
    strip = tmp_path / "strip.png"
    uniform_image((9, 9, 9), size=1).resize((40000, 1)).save(strip)
    assert strip.stat().st_size < 400    # crop would first scale it to 10240000x256 pixels
    with pytest.raises(InputError, match=r"strip.png: a 40000x1 image is more than 32 times"):
        preprocess(strip)
    assert preprocess(strip, resize="stretch").shape == (1, 3, 224, 224)  # no aspect kept


def test_a_panorama_still_works(tmp_path):
    wide = tmp_path / "wide.png"
    uniform_image((0, 0, 255)).resize((2000, 300)).save(wide)
    assert preprocess(wide).shape == (1, 3, 224, 224)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.png"
    os.mkfifo(path)  # nobody writes to it: opening it for reading would block forever
    return path


def test_a_fifo_is_refused_not_read(fifo, weights, capsys):
    with pytest.raises(InputError, match="is a FIFO"):
        load_image(fifo)
    code, _, err = classify(capsys, fifo, "--weights", weights)
    assert code == 1 and "is a FIFO" in err
    code, _, err = classify(capsys, fifo, "--weights", fifo)
    assert code == 2 and "is a FIFO" in err and "Traceback" not in err


def test_a_device_is_refused():
    with pytest.raises(InputError, match="is a device"):
        input_file("/dev/zero", "image file")


def test_a_path_too_long_is_one_line(tmp_path, weights, capsys):
    long = tmp_path / ("a" * 5000 + ".png")
    code, _, err = classify(capsys, long, "--weights", weights)
    assert code == 1 and "too long" in err and "(5" in err and len(err) < 600
    code, _, err = classify(capsys, weights, "--weights", long)
    assert code == 2 and "too long" in err and "Traceback" not in err
    code, _, err = capture(capsys, ["weights", "convert", str(weights), "--output", str(long)])
    assert code == 2 and "too long" in err


def capture(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# -- memory -----------------------------------------------------------------------------------
def test_a_batch_that_cannot_fit_names_the_largest_that_can(capsys, weights, red, monkeypatch):
    # the fixture network needs ~2.9 MiB of activations per image; fake a 7 MiB machine
    monkeypatch.setenv(ENV_LIMIT, "7M")
    code, out, err = classify(capsys, red, red, red, red, "--weights", weights,
                              "--batch-size", "4")
    assert code == 2 and out == ""
    assert "classifying a batch of 4 image(s) needs about" in err
    assert "the largest --batch-size that fits is 2" in err
    code, out, err = classify(capsys, red, red, "--weights", weights, "--batch-size", "2")
    assert code == 0, err


# -- outputs that are inputs ------------------------------------------------------------------
def test_convert_refuses_to_write_over_its_input(capsys, weights, tmp_path):
    before = weights.read_bytes()
    link = tmp_path / "link.mat"
    link.symlink_to(weights)
    hard = tmp_path / "hard.mat"
    os.link(weights, hard)
    for target in (weights, link, hard, tmp_path / "sub" / ".." / "colour.mat"):
        code, _, err = capture(capsys, ["weights", "convert", str(weights), "--output",
                                        str(target), "--overwrite"])
        assert code == 2 and "would destroy that input" in err, target
    assert weights.read_bytes() == before


def test_an_output_not_yet_there_that_resolves_to_an_input(tmp_path):
    source = tmp_path / "in.png"
    source.write_bytes(b"x")
    dangling = tmp_path / "out.png"
    dangling.symlink_to(tmp_path / "later.png")   # resolves to a path that is not an input
    refuse_input_as_output(dangling, [source])
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path)
    with pytest.raises(InputError, match="is the input"):
        refuse_input_as_output(alias / "in.png", [source, None])
    with pytest.raises(InputError, match="is the input"):
        refuse_input_as_output(tmp_path / "x" / ".." / "in.png", [source])  # x does not exist


def test_quantize_refuses_outputs_that_are_inputs(capsys, weights, red, tmp_path):
    params = tmp_path / "p.npz"
    code, _, err = capture(capsys, ["quantize", "--weights", str(weights), str(red), "-o",
                                    str(params), "--json", str(red), "--driver", "naive"])
    assert code == 2 and "--json" in err and "would destroy" in err
    os.environ["VGGJIT_WEIGHTS"] = str(weights)
    try:
        code, _, err = capture(capsys, ["quantize", str(red), "-o", str(params), "--json",
                                        str(weights), "--driver", "naive"])
    finally:
        del os.environ["VGGJIT_WEIGHTS"]
    assert code == 2 and "would destroy" in err
    assert not params.exists()


# -- what the command line says about itself --------------------------------------------------
def test_an_unknown_option_shows_the_sub_commands_usage(capsys):
    for argv, usage in ((["classify", "x.png", "--bogus"], "usage: vggjit classify"),
                        (["weights", "fetch", "--bogus"], "usage: vggjit weights fetch")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and usage in err and "--bogus" in err, err
        assert "--top-k" in err if argv[0] == "classify" else "--variant" in err


def test_a_driver_from_the_environment_says_so(capsys, monkeypatch, red, weights):
    monkeypatch.setenv("VGGJIT_DRIVER", "nope")
    assert main(["classify", str(red), "--weights", str(weights)]) == 2
    assert "unknown driver 'nope' (from $VGGJIT_DRIVER)" in capsys.readouterr().err
    assert main(["classify", str(red), "--weights", str(weights), "--driver", "nope"]) == 2
    assert "VGGJIT_DRIVER" not in capsys.readouterr().err


def test_a_slow_driver_warns_before_long_work(capsys, monkeypatch, red, weights):
    from vggjit import get_driver
    from vggjit.network import vgg_layers
    from vggjit.workload import forward_flops, slow_work_note

    vgg19 = forward_flops(vgg_layers())
    assert 38e9 < vgg19 < 40e9                      # the published 19.6 G multiply-adds
    note = slow_work_note(get_driver("naive"), vgg19, "one image")
    assert note and "minutes" in note and "naive" in note
    assert slow_work_note(get_driver("numba-cpu"), vgg19 * 1000, "a lot") is None
    # the CLI says it once, before the work (a driver made to look slow; the naive one
    # would take seconds on the fixture network even at 224x224)
    monkeypatch.setattr(get_driver("example-numpy"), "flops_per_second", 1e3, raising=False)
    code, _, err = classify(capsys, red, red, "--weights", weights)
    assert code == 0 and err.count("warning: classifying 2 image(s) is about") == 1


def test_the_dlp_without_quant_says_once_that_it_calibrates(capsys, red, weights):
    code = main(["classify", str(red), str(red), "--weights", str(weights),
                 "--driver", "cnml-dlp", "--top-k", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("calibrates int8 parameters") == 1


# -- the native weight cache --------------------------------------------------------------------
def _flip_a_weight_byte(path):
    """Change one byte inside conv1_1's weights, then put the modification time back, as a
    careful tamperer would (the change time still moves: only the kernel sets it)."""
    from vggjit.weights import read_native

    info = path.stat()
    offset = read_native(path).params["conv1_1"][0]
    data = bytearray(path.read_bytes())
    start = data.find(np.asarray(offset).tobytes()[:64])
    assert start > 0
    data[start + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def test_a_tampered_native_file_is_refused_and_verify_says_why(capsys, weights, tmp_path):
    from vggjit.errors import WeightFileError
    from vggjit.weights import load_weights

    native = tmp_path / "vgg.npz"
    assert main(["weights", "convert", str(weights), "--output", str(native)]) == 0
    assert main(["weights", "verify", str(native)]) == 0
    assert "every member matches" in capsys.readouterr().out
    load_weights(native)                                     # good as written
    _flip_a_weight_byte(native)
    with pytest.raises(WeightFileError, match="conv1_1.weight.npy fails its checksum"):
        load_weights(native)
    assert main(["weights", "verify", str(native)]) == 2
    assert "modified after vggjit wrote it" in capsys.readouterr().err


def test_a_tampered_cache_is_rebuilt_not_used(capsys, weights):
    from vggjit.weights import cache_path_for, load_weights

    first = load_weights(weights)                            # writes the cache
    cache = cache_path_for(weights)
    expected = np.asarray(first.params["conv1_1"][0]).copy()
    del first
    _flip_a_weight_byte(cache)
    assert main(["weights", "verify", str(weights)]) == 2
    assert "fails its checksum" in capsys.readouterr().err
    again = load_weights(weights)                            # detected: parsed from the .mat
    np.testing.assert_array_equal(again.params["conv1_1"][0], expected)
    assert main(["weights", "verify", str(weights)]) == 0    # and the cache was rewritten
