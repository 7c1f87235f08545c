"""Image reading (every mode, EXIF orientation), resizing, pre/deprocessing, atomic saving."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vggjit.errors import InputError, OutputExistsError
from vggjit.images import (deprocess, load_image, preprocess, resize_image, save_image,
                           to_array)
from vggjit.network import MEAN_PIXEL


def saved(tmp_path, image, name, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def rgb(image):
    return np.asarray(image, dtype=np.int16)


# -- modes ----------------------------------------------------------------------------------------

def test_grey_L(tmp_path):
    path = saved(tmp_path, Image.new("L", (5, 4), 77), "grey.png")
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (5, 4)
    assert (rgb(image) == 77).all()


def test_grey_with_alpha_LA_is_composited_on_white(tmp_path):
    la = Image.new("LA", (4, 4), (0, 0))  # black, fully transparent
    la.putpixel((1, 1), (40, 255))        # one opaque dark pixel
    la.putpixel((2, 2), (0, 128))         # half-transparent black
    image = load_image(saved(tmp_path, la, "la.png"))
    pixels = rgb(image)
    assert (pixels[0, 0] == 255).all()    # transparent -> white, not hidden black
    assert (pixels[1, 1] == 40).all()
    assert abs(int(pixels[2, 2, 0]) - 127) <= 1


def test_palette_P(tmp_path):
    p = Image.new("P", (3, 2))
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    p.putpixel((2, 1), 1)
    image = load_image(saved(tmp_path, p, "pal.png"))
    assert tuple(rgb(image)[0, 0]) == (10, 20, 30)
    assert tuple(rgb(image)[1, 2]) == (200, 100, 50)


def test_palette_with_transparency(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    p.putpixel((1, 0), 1)
    image = load_image(saved(tmp_path, p, "palt.png", transparency=0))
    assert tuple(rgb(image)[0, 0]) == (255, 255, 255)
    assert tuple(rgb(image)[0, 1]) == (200, 100, 50)


def test_rgba(tmp_path):
    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 255, 0))
    image = load_image(saved(tmp_path, rgba, "rgba.png"))
    assert tuple(rgb(image)[0, 0]) == (255, 0, 0)
    assert tuple(rgb(image)[0, 1]) == (255, 255, 255)


def test_cmyk(tmp_path):
    cmyk = Image.new("CMYK", (3, 3), (0, 255, 255, 0))  # pure red ink-wise
    image = load_image(saved(tmp_path, cmyk, "cmyk.tif"))
    assert image.mode == "RGB"
    r, g, b = rgb(image)[1, 1]
    assert r > 200 and g < 60 and b < 60


def test_sixteen_bit_grey(tmp_path):
    values = np.array([[0, 257 * 100], [65535, 32768]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    path = saved(tmp_path, image, "deep.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    pixels = rgb(load_image(path))
    assert pixels[0, 0, 0] == 0 and pixels[0, 1, 0] == 100 and pixels[1, 0, 0] == 255
    assert abs(int(pixels[1, 1, 0]) - 128) <= 1
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_pil_image_passes_through_conversion():
    image = load_image(Image.new("L", (2, 2), 9))
    assert image.mode == "RGB" and (rgb(image) == 9).all()


# -- EXIF orientation -----------------------------------------------------------------------------

def marked_image():
    """8 wide, 4 high; the top-left pixel red, the rest blue."""
    image = Image.new("RGB", (8, 4), (0, 0, 255))
    image.putpixel((0, 0), (255, 0, 0))
    return image


@pytest.mark.parametrize("orientation, size, red_at", [
    (1, (8, 4), (0, 0)),      # as stored
    (3, (8, 4), (3, 7)),      # rotated 180: red at the bottom right (row, col)
    (6, (4, 8), (0, 3)),      # rotate 90 clockwise to view: top-left goes top-right
    (8, (4, 8), (7, 0)),      # rotate 90 counter-clockwise: top-left goes bottom-left
])
def test_exif_orientation_is_applied(tmp_path, orientation, size, red_at):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = saved(tmp_path, marked_image(), f"o{orientation}.png", exif=exif)
    image = load_image(path)
    assert image.size == size
    pixels = rgb(image)
    assert tuple(pixels[red_at]) == (255, 0, 0)
    assert (pixels[..., 0] > 0).sum() == 1


# -- resizing -------------------------------------------------------------------------------------

def test_crop_is_shorter_side_256_then_centre_224():
    # 512 x 300 (w x h): the shorter side becomes 256, the width 437; a centre 224 crop.
    array = np.zeros((300, 512, 3), np.uint8)
    array[:, :256] = (255, 0, 0)  # left half red, right half green
    array[:, 256:] = (0, 255, 0)
    out = resize_image(Image.fromarray(array), "crop")
    assert out.size == (224, 224)
    pixels = rgb(out)
    assert tuple(pixels[112, 100]) == (255, 0, 0) and tuple(pixels[112, 124]) == (0, 255, 0)
    assert (pixels[:, :110, 0] > 200).all() and (pixels[:, 114:, 1] > 200).all()


def test_crop_of_a_portrait_and_a_small_image():
    assert resize_image(Image.new("RGB", (300, 900)), "crop").size == (224, 224)
    assert resize_image(Image.new("RGB", (20, 10)), "crop").size == (224, 224)  # upscaled


def test_stretch_and_longer_sizes():
    image = Image.new("RGB", (640, 200))
    assert resize_image(image, "stretch").size == (224, 224)
    assert resize_image(image, "stretch", (192, 320)).size == (320, 192)
    assert resize_image(image, "longer", 320).size == (320, 100)
    assert resize_image(image, None) is image
    with pytest.raises(InputError, match="resize must be"):
        resize_image(image, "zoom")


# -- arrays ---------------------------------------------------------------------------------------

def test_preprocess_layout_and_mean(tmp_path):
    array = np.zeros((224, 224, 3), np.uint8)
    array[..., 0], array[..., 1], array[..., 2] = 200, 100, 50
    array[0, 5] = (1, 2, 3)
    x = preprocess(Image.fromarray(array), resize=None)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[0, :, 10, 10], np.array([200, 100, 50]) - MEAN_PIXEL, rtol=1e-6)
    np.testing.assert_allclose(x[0, :, 0, 5], np.array([1, 2, 3]) - MEAN_PIXEL, rtol=1e-6)
    mean = np.array([10, 20, 30], np.float32)
    np.testing.assert_allclose(preprocess(Image.fromarray(array), None, mean_pixel=mean)[0, :, 9, 9],
                               [190, 80, 20])


def test_preprocess_resizes_by_default(tmp_path):
    path = saved(tmp_path, Image.new("RGB", (640, 480), (9, 9, 9)), "big.jpg")
    assert preprocess(path).shape == (1, 3, 224, 224)
    assert preprocess(path, resize="stretch", size=(192, 320)).shape == (1, 3, 192, 320)


def test_deprocess_inverts_preprocess():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    x = to_array(Image.fromarray(array))
    np.testing.assert_array_equal(np.asarray(deprocess(x)), array)
    np.testing.assert_array_equal(np.asarray(deprocess(x[0])), array)
    clipped = deprocess(np.full((1, 3, 2, 2), 1000.0, np.float32))
    assert (np.asarray(clipped) == 255).all()
    with pytest.raises(InputError, match="one image"):
        deprocess(np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(InputError, match="expects"):
        deprocess(np.zeros((4, 4), np.float32))


# -- bad files ------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nothere.jpg: no such file"):
        load_image(tmp_path / "nothere.jpg")


def test_directory(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load_image(tmp_path)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("just text")
    with pytest.raises(InputError, match="notes.jpg: not an image file"):
        load_image(path)


def test_truncated_image(tmp_path):
    path = saved(tmp_path, Image.effect_noise((64, 64), 50).convert("RGB"), "cut.png")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputError, match="cut.png"):
        load_image(path)


# -- saving ---------------------------------------------------------------------------------------

def test_save_image_is_atomic_and_respects_overwrite(tmp_path):
    target = tmp_path / "out" / "result.png"
    save_image(Image.new("RGB", (3, 3), (1, 2, 3)), target)
    assert tuple(rgb(Image.open(target))[0, 0]) == (1, 2, 3)
    with pytest.raises(OutputExistsError):
        save_image(Image.new("RGB", (3, 3)), target, overwrite=False)
    assert tuple(rgb(Image.open(target))[0, 0]) == (1, 2, 3)
    save_image(to_array(Image.new("RGB", (3, 3), (9, 8, 7))), target)  # arrays too
    assert tuple(rgb(Image.open(target))[0, 0]) == (9, 8, 7)
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.png"]  # no temp files


def test_save_image_failure_leaves_old_file(tmp_path, monkeypatch):
    target = tmp_path / "keep.png"
    save_image(Image.new("RGB", (2, 2), (5, 5, 5)), target)

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(Image.new("RGB", (2, 2)), target)
    monkeypatch.undo()
    assert tuple(rgb(Image.open(target))[0, 0]) == (5, 5, 5)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_save_image_unknown_extension(tmp_path):
    with pytest.raises(InputError, match="unknown image file extension"):
        save_image(Image.new("RGB", (2, 2)), tmp_path / "out.xyz")
