"""`vggjit stylize --output-dir`: many contents times several styles, written atomically,
resumed by skipping finished results, bad content images reported."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vggjit.cli import main

from batch_tools import DRIVER, STYLE_OPTIONS, make_images, make_style_weights


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stylize")
    weights = make_style_weights(root)
    contents = make_images(root / "contents", 3, bad=1)
    styles = make_images(root / "styles", 2)
    return root, weights, contents, styles


def stylize(root, weights, styles, out, *extra):
    args = ["stylize", str(root / "contents"), *(a for s in styles for a in ("--style", str(s))),
            "--output-dir", str(out), "--weights", str(weights), "--driver", DRIVER,
            *STYLE_OPTIONS, *extra]
    return main(args)


def test_batch_writes_every_pair_and_resumes(data, tmp_path, capsys):
    root, weights, contents, styles = data
    out = tmp_path / "out"
    assert stylize(root, weights, styles, out) == 1  # the broken content fails, twice
    err = capsys.readouterr().err
    assert "8 result(s) (4 content image(s) x 2 style(s)), 0 already" in err
    assert "6 done, 2 failed, 0 skipped" in err and "broken0.jpg" in err
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    expected = sorted(f"{folder}img{i:03d}.{s.stem}.png" for i, folder in
                      ((0, "sub/"), (1, ""), (2, "")) for s in styles)
    assert made == expected
    first = out / expected[0]
    pixels = np.asarray(Image.open(first))
    assert pixels.shape[2] == 3 and max(pixels.shape[:2]) == 32

    first.unlink()  # as if the run had been interrupted before this one
    assert stylize(root, weights, styles, out) == 1
    err = capsys.readouterr().err
    assert "5 already in" in err and "1 done, 2 failed, 5 skipped" in err
    np.testing.assert_array_equal(np.asarray(Image.open(first)), pixels)  # same seed, same image
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary left


def test_batch_mode_needs_styles_and_keeps_the_single_form(data, tmp_path, capsys):
    root, weights, contents, styles = data
    code = main(["stylize", str(contents[1]), str(styles[0]), "--output-dir", str(tmp_path)])
    assert code == 2 and "--style STYLE" in capsys.readouterr().err
    code = main(["stylize", str(contents[1]), "--style", str(styles[0]), "-o", "x.png"])
    assert code == 2 and "--output-dir" in capsys.readouterr().err
    single = tmp_path / "one.png"
    code = main(["stylize", str(contents[1]), str(styles[0]), "-o", str(single),
                 "--weights", str(weights), "--driver", DRIVER, *STYLE_OPTIONS])
    assert code == 0 and single.is_file()
