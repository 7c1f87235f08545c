"""Style runs that cannot take the machine down or lose work: memory estimated before any work,
outputs that can be written and are never an input, checkpoints that are checked field by field
and always form a pair with their images, one run per output, determinism in one process.
The bad inputs and what the user sees are listed in docs/bad-input.md."""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from style_tools import TINY_CONTENT, Interrupt, picture, tiny_net
from vggjit.errors import InputError, OutputExistsError
from vggjit.losses import StyleObjective
from vggjit.network import vgg_layers
from vggjit.style import StyleTransfer, resume, stylize
from vggjit.style.budget import RunShape, estimate
from vggjit.style.checkpoint import Checkpoint, write_checkpoint
from vggjit.style.results import ResultNotSavedError
from vggjit.style.run_files import RunFiles
from vggjit.style.session import Session
from vggjit.style.settings import CONTENT_LAYERS, STYLE_LAYERS, StyleSettings

SMALL = dict(content_layers=TINY_CONTENT, size=32, lr=5.0)


class NoWork:
    """A driver that fails the test if any computation reaches it."""

    name = "no-work"

    def __getattr__(self, name):
        raise AssertionError(f"work started ({name}) before the inputs were checked")


@pytest.fixture(scope="module")
def net():
    return tiny_net(pooling="max")


@pytest.fixture
def idle():
    return tiny_net(driver=NoWork())


@pytest.fixture(scope="module")
def images():
    return picture(32, 32, seed=1), picture(40, 28, seed=2)


# -- memory estimated before any work ------------------------------------------------------------
def _vgg19_shape(side: int, optimizer: str = "lbfgs", style: int | None = None) -> RunShape:
    return RunShape(vgg_layers(), (*CONTENT_LAYERS, *STYLE_LAYERS), optimizer,
                    ((side, side),), (((style or side, style or side),),))


def test_the_estimate_grows_with_the_size_and_lbfgs_history():
    sizes = [_vgg19_shape(s) for s in (256, 512, 1024)]
    small, default, large = (estimate(s) for s in sizes)
    assert 2**29 < default < 3 * 2**30          # a default run: between 0.5 and 3 GiB
    assert small < default < large and large - default > 3 * (default - small)
    # L-BFGS keeps 10 (s, y) pairs of float64 images: 20 more image vectors than Adam's few
    assert estimate(_vgg19_shape(512)) - estimate(_vgg19_shape(512, "adam")) >= 8 * 3 * 512**2 * 8
    # a large style image counts even when the output is small
    assert estimate(_vgg19_shape(64, style=4096)) > 50 * estimate(_vgg19_shape(64))


@pytest.mark.parametrize("options,message", [
    (dict(size=100000), "the largest --size that fits is about"),
    (dict(size=64, style_scale=1000.0), "the largest --style-scale that fits is about"),
    (dict(height=20000, width=30000), "the largest output that fits is about"),
    (dict(size=100000, scales=3), "in 3 scales"),
])
def test_runs_beyond_the_memory_budget_are_refused_before_any_work(images, tmp_path, options,
                                                                  message, monkeypatch):
    monkeypatch.setenv("VGGJIT_MEMORY_LIMIT", "2G")
    content, style = images
    net = tiny_net(driver=NoWork())
    net.layers = vgg_layers()       # the estimate of the full VGG19, no work possible
    settings = {**SMALL, "content_layers": CONTENT_LAYERS, **options}
    with pytest.raises(InputError, match="needs about .* of memory, more than the") as info:
        stylize(content, style, net=net, output=tmp_path / "o.png", **settings)
    assert message in str(info.value)
    assert not list(tmp_path.iterdir())


def test_the_size_named_as_fitting_does_fit(images, monkeypatch):
    monkeypatch.setenv("VGGJIT_MEMORY_LIMIT", "1G")
    content, style = images
    net = tiny_net(driver=NoWork())
    net.layers = vgg_layers()
    with pytest.raises(InputError) as info:
        stylize(content, style, net=net, size=4096, content_layers=CONTENT_LAYERS)
    largest = int(str(info.value).rsplit("about ", 1)[1])
    assert 200 < largest < 1024
    fits = estimate(_vgg19_shape(largest))
    assert fits <= 2**30 < estimate(_vgg19_shape(int(largest * 1.05)))


def test_an_extreme_strip_is_refused_where_its_aspect_is_kept(idle, tmp_path):
    strip = picture(4, 200, seed=3)
    with pytest.raises(InputError, match="200x4 pixels, more than 32 times as wide as it is tall"):
        stylize(strip, picture(32, 32), net=idle, height=64, content_layers=TINY_CONTENT)
    with pytest.raises(InputError, match="style image 1 .* more than 32 times as tall"):
        stylize(picture(32, 32), strip.transpose(1, 0, 2), net=idle, size=32,
                content_layers=TINY_CONTENT)


# -- outputs: a writable format, never an input ------------------------------------------------
@pytest.mark.parametrize("suffix", [".psd", ".xbm"])
def test_an_output_format_pillow_cannot_write_is_refused_before_any_work(idle, images, tmp_path,
                                                                        suffix):
    content, style = images
    with pytest.raises(InputError, match=f"Pillow cannot write \\{suffix} images"):
        stylize(content, style, net=idle, output=tmp_path / f"out{suffix}", **SMALL)
    assert not list(tmp_path.iterdir())


def _paths(tmp_path, images):
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    Image.fromarray(images[0]).save(content)
    Image.fromarray(images[1]).save(style)
    return content, style


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink", "dotdot"])
def test_an_output_that_is_an_input_is_refused_even_with_overwrite(idle, images, tmp_path, link):
    content, style = _paths(tmp_path, images)
    before = style.read_bytes()
    out = {"same": style, "dotdot": tmp_path / "sub" / ".." / "style.png",
           "symlink": tmp_path / "link.png", "hardlink": tmp_path / "hard.png"}[link]
    (tmp_path / "sub").mkdir()
    if link == "symlink":
        out.symlink_to(style)
    elif link == "hardlink":
        os.link(style, out)
    with pytest.raises(InputError, match="is the input .*style.png; writing it would destroy"):
        stylize(content, style, net=idle, output=out, overwrite=True, **SMALL)
    assert style.read_bytes() == before


def test_an_intermediate_image_or_log_that_is_an_input_is_refused(idle, images, tmp_path):
    content, style = _paths(tmp_path, images)
    shutil.copy(content, tmp_path / "o_0002.png")
    with pytest.raises(InputError, match="the intermediate image .*o_0002.png is the input"):
        stylize(tmp_path / "o_0002.png", style, net=idle, output=tmp_path / "o.png",
                overwrite=True, save_every=2, iterations=4, **SMALL)
    shutil.copy(content, tmp_path / "o.loss.png")
    with pytest.raises(InputError, match="the loss curve .*o.loss.png is the input"):
        stylize(tmp_path / "o.loss.png", style, net=idle, output=tmp_path / "o.png",
                overwrite=True, **SMALL)


def test_a_failed_final_save_keeps_the_result_log_and_checkpoint(net, images, tmp_path,
                                                                monkeypatch):
    content, style = images
    original = RunFiles.commit

    def full_disk(self, tmp, path, role):
        if role == "image":
            tmp.unlink()
            raise OSError(28, "No space left on device")
        return original(self, tmp, path, role)
    monkeypatch.setattr(RunFiles, "commit", full_disk)
    out = tmp_path / "o.png"
    with pytest.raises(ResultNotSavedError, match="No space left on device.*kept in .*"
                                                  "o.unsaved.png") as info:
        stylize(content, style, net=net, optimizer="adam", iterations=3, output=out, **SMALL)
    kept = tmp_path / "o.unsaved.png"
    assert Image.open(kept).size == (32, 32) and info.value.result.files["kept"] == str(kept)
    assert (tmp_path / "o.log.json").exists() and (tmp_path / "o.ckpt.npz").exists()
    assert not out.exists() and not (tmp_path / ".o.png.lock").exists()
    monkeypatch.setattr(RunFiles, "commit", original)
    again = resume(tmp_path / "o.ckpt.npz", net=net, output=tmp_path / "again.png")
    assert again.steps == 3 and (tmp_path / "again.png").exists()
    np.testing.assert_array_equal(np.asarray(Image.open(kept)),
                                  np.asarray(Image.open(tmp_path / "again.png")))


# -- one run per output ------------------------------------------------------------------------
def test_a_second_run_on_the_same_output_is_refused_while_the_first_works(net, images, tmp_path):
    content, style = images
    out = tmp_path / "o.png"
    transfer = StyleTransfer(style, net=net, optimizer="adam", iterations=2, **SMALL)
    first = transfer.start(content, output=out)
    assert (tmp_path / ".o.png.lock").exists()
    with pytest.raises(OutputExistsError, match=f"o.png is being written by another vggjit run "
                                                f"\\(process {os.getpid()}"):
        transfer.start(content, output=out, overwrite=True)
    result = first.run()
    assert result.steps == 2 and out.exists() and not (tmp_path / ".o.png.lock").exists()


def test_a_stale_lock_of_a_killed_run_is_taken_over(net, images, tmp_path):
    content, style = images
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".o.png.lock").write_text(json.dumps({"pid": dead.pid,
                                                      "host": socket.gethostname()}))
    result = stylize(content, style, net=net, optimizer="adam", iterations=1,
                     output=tmp_path / "o.png", **SMALL)
    assert result.steps == 1 and not (tmp_path / ".o.png.lock").exists()


def test_a_result_that_appeared_meanwhile_is_not_replaced(net, images, tmp_path, monkeypatch):
    content, style = images
    out = tmp_path / "o.png"
    original = StyleObjective.__call__

    def call(obj, x, need_grad=True):
        if not out.exists():
            out.write_bytes(b"another program's file")
        return original(obj, x, need_grad)
    monkeypatch.setattr(StyleObjective, "__call__", call)
    with pytest.raises(ResultNotSavedError, match="appeared while the run was working"):
        stylize(content, style, net=net, optimizer="adam", iterations=2, output=out, **SMALL)
    assert out.read_bytes() == b"another program's file"
    assert (tmp_path / "o.unsaved.png").exists()


# -- checkpoints: a consistent pair with the images, checked field by field --------------------
def test_resume_after_a_hard_kill_between_image_and_checkpoint(net, images, tmp_path,
                                                               monkeypatch):
    content, style = images
    options = dict(net=net, optimizer="adam", iterations=6, save_every=2, **SMALL)
    whole = stylize(content, style, output=tmp_path / "whole.png", **options)
    with monkeypatch.context() as patch:
        Interrupt(patch, 4)
        stylize(content, style, output=tmp_path / "r.png", **options)
    # What a hard kill left: an image past the checkpoint's step (the old order wrote it first),
    # half-written temporary files, and the lock of a process that no longer runs.
    shutil.copy(tmp_path / "r_0002.png", tmp_path / "r_0004.png")
    orphans = [tmp_path / ".r.ckpt.k3j9x0qa.npz", tmp_path / ".r_0006.ab_cd123.png",
               tmp_path / ".r.log.json.zz99yy88.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half")
    (tmp_path / "keep.me").write_bytes(b"not ours")
    result = resume(tmp_path / "r.ckpt.npz", net=net)
    assert result.steps == 6
    np.testing.assert_array_equal(result.array, whole.array)
    for step in (2, 4, 6):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"r_000{step}.png")),
                                      np.asarray(Image.open(tmp_path / f"whole_000{step}.png")))
    assert not any(o.exists() for o in orphans) and (tmp_path / "keep.me").exists()


def test_a_kill_after_the_checkpoint_before_its_image_is_repaired_on_resume(net, images, tmp_path,
                                                                          monkeypatch):
    class Killed(BaseException):
        pass

    content, style = images
    original = RunFiles.commit

    def kill_at_4(self, tmp, path, role):
        if path.name == "r_0004.png":
            raise Killed
        return original(self, tmp, path, role)
    with monkeypatch.context() as patch:
        patch.setattr(RunFiles, "commit", kill_at_4)
        with pytest.raises(Killed):
            stylize(content, style, net=net, optimizer="adam", iterations=6, save_every=2,
                    output=tmp_path / "r.png", **SMALL)
    with np.load(tmp_path / "r.ckpt.npz") as data:
        assert int(data["step"]) == 4
    assert not (tmp_path / "r_0004.png").exists()
    session = resume(tmp_path / "r.ckpt.npz", net=net, start_only=True)
    assert (tmp_path / "r_0004.png").exists()     # the pair is whole again before any step
    assert session.run().steps == 6


def _checkpoint(tmp_path, **changes) -> tuple:
    """A valid checkpoint of a 32x32 Adam run at step 2 (written without any work), then
    ``changes``: {field: new array, or None to delete it}."""
    settings = StyleSettings(content_layers=TINY_CONTENT, size=32, optimizer="adam",
                             iterations=4)
    content, style = picture(32, 32, 1), picture(32, 32, 2)
    x = np.zeros((1, 3, 32, 32))
    history = [{"step": n, "loss": 1.0, "terms": {"content:relu4_1": 1.0}} for n in (1, 2)]
    path = tmp_path / "c.ckpt.npz"
    write_checkpoint(path, Checkpoint(settings, x, 2, history, [(content, [style])], 0,
                                      {"t": np.array(2), "m": x, "v": x},
                                      str(tmp_path / "content.png"), [str(tmp_path / "s.png")],
                                      tmp_path / "c.png"))
    if changes:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        for key, value in changes.items():
            if value is None:
                arrays.pop(key)
            else:
                arrays[key] = value
        np.savez(path, **arrays)
    return path


def test_a_valid_checkpoint_passes_every_check(idle, tmp_path):
    path = _checkpoint(tmp_path)
    with pytest.raises(AssertionError, match="work started"):   # only the work itself fails
        resume(path, net=idle)


def test_resume_never_writes_over_the_runs_original_images(idle, tmp_path):
    path = _checkpoint(tmp_path)
    original = tmp_path / "content.png"
    original.write_bytes(b"the user's photo")
    with pytest.raises(InputError, match="content.png is the input"):
        resume(path, net=idle, output=original, overwrite=True)
    assert original.read_bytes() == b"the user's photo"


@pytest.mark.parametrize("changes,message", [
    (dict(settings=np.array("{not json")), "field 'settings' is not valid JSON"),
    (dict(settings=np.array(json.dumps({"iterations": "ten"}))),
     "field 'settings' has iterations = 'ten'"),
    (dict(settings=np.array(json.dumps({"optimizer": "sgd"}))), "field 'settings' is not a valid"),
    (dict(settings=np.array(json.dumps({"colour": 1}))), "unknown option"),
    (dict(x=np.zeros((1, 3, 16, 32))), "field 'x' must be a float array of shape (1, 3, 32, 32)"),
    (dict(x=np.full((1, 3, 32, 32), np.nan)), "field 'x' holds NaN"),
    (dict(content=np.zeros((32, 32), np.uint8)), "field 'content' must be an RGB image"),
    (dict(step=np.array(-3)), "field 'step' is -3, outside 0..4"),
    (dict(step=np.array(2**62)), "field 'step' is 4611686018427387904, outside 0..4"),
    (dict(step=np.array(2.5)), "field 'step' must be one integer"),
    (dict(history=np.array("[1, 2]")), "field 'history' entry 0 is not a step record"),
    (dict(history=np.array('{"step": 1}')), "field 'history' must be a JSON list"),
    (dict(opt_m=np.zeros((1, 3, 8, 8))), "field 'opt_m' must be a float array"),
    (dict(opt_v=None), "field 'opt_v' is missing"),
    (dict(opt_v=-np.ones((1, 3, 32, 32))), "field 'opt_v' holds negative values"),
    (dict(opt_s=np.zeros((2, 3072))), "field 'opt_s' is no part of adam's state"),
    (dict(format=np.array(7)), "field 'format' is array(7), this vggjit reads checkpoint format 1"),
    (dict(x=None), "no field 'x'"),
    (dict(style_0=None), "style images are missing"),
    (dict(facts=np.array(json.dumps({"suffix": ".exe"}))), "field 'facts' has the image suffix"),
])
def test_a_damaged_checkpoint_names_the_file_and_field_before_any_work(idle, tmp_path, changes,
                                                                      message):
    if "settings" in changes and "not json" not in str(changes["settings"]):
        data = StyleSettings(content_layers=TINY_CONTENT, size=32, optimizer="adam",
                             iterations=4).to_dict()
        data.update(json.loads(str(changes["settings"])))
        changes = dict(settings=np.array(json.dumps(data)))
    path = _checkpoint(tmp_path, **changes)
    with pytest.raises(InputError) as info:
        resume(path, net=idle)
    text = str(info.value)
    assert message in text and str(path) in text and "allow_pickle" not in text


def test_lbfgs_history_of_the_wrong_shape_is_refused(idle, tmp_path):
    path = _checkpoint(tmp_path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if not k.startswith("opt_")}
    settings = json.loads(str(arrays["settings"]))
    settings["optimizer"] = "lbfgs"
    arrays.update(settings=np.array(json.dumps(settings)), opt_f=np.array(1.0),
                  opt_g=np.zeros((1, 3, 32, 32)), opt_s=np.zeros((2, 100)),
                  opt_y=np.zeros((2, 100)))
    np.savez(path, **arrays)
    with pytest.raises(InputError, match="field 'opt_s' must be a float array of shape "
                                         "\\(2, 3072\\)"):
        resume(path, net=idle)


@pytest.mark.parametrize("damage,message", [
    ("random", "not an .npz archive"),
    ("truncated", "not an .npz archive"),
    ("empty", "not an .npz archive"),
    ("pickle", "holds Python objects (a pickle), which vggjit never loads"),
    ("huge", "declares a float64 array of shape (1, 3, 100000, 100000) (240,000,000,000 bytes) "
             "but the file holds"),
    ("crc", "field 'x' cannot be read"),
])
def test_a_file_that_is_no_checkpoint_is_one_clear_error(idle, tmp_path, damage, message):
    path = _checkpoint(tmp_path)
    raw = path.read_bytes()
    if damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "truncated":
        path.write_bytes(raw[:len(raw) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage in ("pickle", "huge"):
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files if k != "x"}
        buffer = io.BytesIO()
        if damage == "pickle":
            np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        else:   # a header declaring 224 GiB, followed by a few bytes
            np.lib.format.write_array_header_1_0(
                buffer, {"descr": "<f8", "fortran_order": False,
                         "shape": (1, 3, 100000, 100000)})
            buffer.write(b"\0" * 64)
        np.savez(path, **arrays)
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("x.npy", buffer.getvalue())
    elif damage == "crc":
        start = raw.index(b"x.npy") + 200          # inside x's data, past its header
        path.write_bytes(raw[:start] + bytes([raw[start] ^ 0xFF]) + raw[start + 1:])
    with pytest.raises(InputError) as info:
        resume(path, net=idle)
    text = str(info.value)
    assert message in text and str(path) in text and "allow_pickle" not in text


# -- determinism ---------------------------------------------------------------------------------
def test_the_same_run_twice_in_one_process_gives_the_same_bits(images):
    """docs/design-notes.md, note 13: the same input, thread count and machine give the same
    bits; a second run reuses the driver's buffers and weight transforms, a fresh network does
    not."""
    content, style = images
    first = stylize(content, style, net=tiny_net(), optimizer="lbfgs", iterations=3, **SMALL)
    net = tiny_net()
    second = stylize(content, style, net=net, optimizer="lbfgs", iterations=3, **SMALL)
    third = stylize(content, style, net=net, optimizer="lbfgs", iterations=3, **SMALL)
    np.testing.assert_array_equal(first.array, second.array)
    np.testing.assert_array_equal(second.array, third.array)
    assert [e["loss"] for e in first.history] == [e["loss"] for e in third.history]


def test_session_close_gives_the_lock_back(net, images, tmp_path):
    content, style = images
    session = StyleTransfer(style, net=net, **SMALL).start(content, output=tmp_path / "o.png")
    assert isinstance(session, Session) and (tmp_path / ".o.png.lock").exists()
    session.close()
    assert not (tmp_path / ".o.png.lock").exists()


def test_a_batch_multiplies_what_each_image_holds():
    one, four = _vgg19_shape(512), RunShape(**{**_vgg19_shape(512).__dict__, "batch": 4})
    per_image = estimate(one) - estimate(RunShape(**{**one.__dict__, "scale_hws": ((1, 1),),
                                                   "scale_style_hws": (((512, 512),),)}))
    assert estimate(four) - estimate(one) >= 3 * per_image * 0.9


def test_resume_to_another_output_does_not_take_its_files_as_its_own(net, images, tmp_path,
                                                                     monkeypatch):
    content, style = images
    with monkeypatch.context() as patch:
        Interrupt(patch, 3)
        stylize(content, style, net=net, optimizer="adam", iterations=4, save_every=2,
                output=tmp_path / "r.png", **SMALL)
    (tmp_path / "other_0004.png").write_bytes(b"the user's own file")
    with pytest.raises(OutputExistsError, match="other_0004.png already exists"):
        resume(tmp_path / "r.ckpt.npz", net=net, output=tmp_path / "other.png")
    assert (tmp_path / "other_0004.png").read_bytes() == b"the user's own file"


def test_a_resumed_run_beyond_the_budget_is_refused_before_any_work(idle, tmp_path, monkeypatch):
    path = _checkpoint(tmp_path)
    monkeypatch.setenv("VGGJIT_MEMORY_LIMIT", "1M")
    with pytest.raises(InputError, match="c.ckpt.npz are fixed; free some memory"):
        resume(path, net=idle)
