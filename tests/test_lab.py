"""The course's lab 3 call sequences on vggjit: `vggjit lab run`, `vggjit lab init` + python.

Our own scripts (tests/lab_scripts/, see its README) make the calls the course's
main_exp_3_1.py, main_exp_3_2.py and main_exp_3_3.py make, in a copy of the course's layout
(the weights at ../imagenet-vgg-verydeep-19.mat) on a small VGG19-shaped fixture network. The
runs are in-process calls of the CLI (runpy), except one `python` run after `vggjit lab init`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matconvnet_fixture import random_params, write_matconvnet
from vggjit import get_driver
from vggjit.cli import main
from vggjit.images import preprocess
from vggjit.lab import files as lab_files
from vggjit.losses import StyleObjective, content_targets, layer_weights, style_targets
from vggjit.network import Network
from vggjit.quant import calibrate_network, save_quant

SCRIPTS = Path(__file__).parent / "lab_scripts"
WEIGHTS = "imagenet-vgg-verydeep-19.mat"
CONTENT = ["relu4_2"]
STYLES = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


def _image(path: Path, seed: int, size=(60, 80)) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """The course's layout: weights, images and quantisation file, one directory per
    experiment holding our script (and, for 3.2, a student's own stu_upload/)."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(SCRIPTS, root, dirs_exist_ok=True)
    params = random_params(seed=3)
    w8, b8 = params["fc8"]
    params["fc8"] = (w8 * np.float32(0.02), b8)  # spread-out probabilities, not one-hot
    write_matconvnet(root / WEIGHTS, params)
    for name, seed in (("cat1.png", 1), ("content.png", 2), ("style.png", 3)):
        _image(root / name, seed)
    net = Network.from_file(root / WEIGHTS)
    x = preprocess(root / "cat1.png", resize="stretch", mean_pixel=net.mean_pixel)
    save_quant(root / "vgg19_quant_param_new.npz", calibrate_network(net, [x]))
    np.save(root / "exp_3_1" / "pool5_dump.npy", net.forward(x, ("pool5",))["pool5"])
    return root


def _cli(capsys, *argv) -> tuple[int, str, str]:
    status = main(["lab", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def _class_line(out: str) -> tuple[int, float]:
    match = re.search(r"Classification result: id = (\d+), prob = ([\d.]+)", out)
    assert match, out
    return int(match.group(1)), float(match.group(2))


def test_experiment_3_1_pool5_and_class_equal_vggjits_network(lab, capsys):
    status, out, err = _cli(capsys, "run", lab / "exp_3_1" / "main_cpu.py")
    assert status == 0, err
    assert "CHECK POOL5 PASS." in out
    net = Network.from_file(lab / WEIGHTS)
    x = preprocess(lab / "cat1.png", resize="stretch", mean_pixel=net.mean_pixel)
    want = net.forward(x, ("pool5", "prob"))
    # layer by layer on the same driver: pool5 is the network's, bit for bit
    np.testing.assert_array_equal(np.load(lab / "exp_3_1" / "out_pool5.npy"), want["pool5"])
    prob = np.load(lab / "exp_3_1" / "out_prob.npy")
    np.testing.assert_allclose(prob, want["prob"], rtol=1e-5, atol=1e-7)  # fc6 sums reordered
    top1, p = _class_line(out)
    assert top1 == int(want["prob"].argmax()) and p == pytest.approx(want["prob"].max(),
                                                                     abs=2e-6)
    assert want["prob"].max() < 0.9  # the fixture's answer is not a foregone one-hot
    assert not (lab / "exp_3_1" / "stu_upload").exists()  # nothing written beside the script


def _dlp_reference(lab: Path) -> np.ndarray:
    driver = get_driver("cnml-dlp", quant=lab / "vgg19_quant_param_new.npz")
    net = Network.from_file(lab / WEIGHTS, driver=driver)
    x = preprocess(lab / "cat1.png", resize="stretch", mean_pixel=net.mean_pixel)
    return net.forward(x)["prob"][0]


@pytest.mark.parametrize("whose", ["student", "vggjit"])
def test_experiment_3_2_on_the_emulated_pycnml_equals_the_cnml_dlp_driver(lab, capsys, whose):
    script = lab / "exp_3_2" / "main_dlp.py"
    argv = ["run", "--own", script] if whose == "student" else ["run", script]
    status, out, err = _cli(capsys, *argv)
    assert status == 0, err
    assert err.count("vggjit lab: pycnml: vggjit's emulator") == 1
    # the student's package beside the script is named when it is not the one that runs
    assert ("vggjit lab: stu_upload: vggjit's (not " in err) == (whose == "vggjit")
    assert out.count("Classification result") == 2
    prob = np.load(lab / "exp_3_2" / "out_prob.npy")
    want = _dlp_reference(lab)
    np.testing.assert_array_equal(prob, want.astype(np.float64))  # exactly the same numbers
    assert _class_line(out)[0] == int(want.argmax())


def test_experiment_3_2_equals_vggjit_classify_on_the_same_quantisation(lab, capsys):
    status = main(["classify", "--driver", "cnml-dlp", "--quant",
                   str(lab / "vgg19_quant_param_new.npz"), "--weights", str(lab / WEIGHTS),
                   "--resize", "stretch", "--top-k", "3", "--json", str(lab / "cat1.png")])
    out = capsys.readouterr().out
    assert status == 0
    top = __import__("json").loads(out)["top"]
    status, out, err = _cli(capsys, "run", "--own", lab / "exp_3_2" / "main_dlp.py")
    prob = np.load(lab / "exp_3_2" / "out_prob.npy")
    assert [t["index"] for t in top] == list(np.argsort(-prob, kind="stable")[:3])
    assert [t["probability"] for t in top] == [round(float(prob[t["index"]]), 6) for t in top]


def test_experiment_3_3_speed_up_test_and_three_style_steps(lab, capsys):
    steps, height, width = 3, 32, 48
    status, out, err = _cli(capsys, "run", lab / "exp_3_3" / "main_style.py",
                            8, 6, 10, height, width, steps)
    assert status == 0, err
    assert "SPEEDUP CONV TEST PASS." in out
    ratios = [float(v) for v in re.findall(r"CONV (?:FORWARD|BACKWARD) SPEEDUP RATIO: ([\d.]+)",
                                           out)]
    assert len(ratios) == 2 and all(r > 0 for r in ratios)
    for step in range(steps):
        assert (lab / "exp_3_3" / "output" / f"output_{step}.jpg").is_file()
    with Image.open(lab / "exp_3_3" / "output" / "output_0.jpg") as saved:
        assert saved.size == (80, 60)  # resized back to the content image's own size

    # vggjit's own objective (one forward, one backward seeded at all six layers) on the
    # images the script optimised: the same loss and gradient
    run = np.load(lab / "exp_3_3" / "out_steps.npz")
    net = Network.from_file(lab / WEIGHTS)

    def image(name):
        return lab_files.read_image(lab / name, height, width, net.mean_pixel)[0]

    content = image("content.png").astype(np.float32)
    style = image("style.png").astype(np.float32)
    objective = StyleObjective(
        net, content, {"relu4_2": 1.0}, layer_weights(STYLES, None, "style"),
        style_targets(net, [style], [1.0], STYLES, height, width), alpha=1, beta=500,
        content_features=content_targets(net, content, CONTENT))
    losses = []
    for step in range(steps):
        result = objective(run["images"][step].astype(np.float32))
        losses.append(result.loss)
        grad = run["gradients"][step]
        scale = np.abs(grad).max()
        np.testing.assert_allclose(result.grad, grad, rtol=0, atol=2e-4 * scale)
    np.testing.assert_allclose(run["losses"], losses, rtol=2e-4)
    assert run["losses"][-1] < run["losses"][0]  # Adam went downhill


def test_lab_init_then_plain_python(lab, tmp_path, capsys):
    work = tmp_path / "lab"
    shutil.copytree(lab, work)
    status, out, _ = _cli(capsys, "init", work / "exp_3_1")
    assert status == 0 and out.count("wrote ") == 7
    text = (work / "exp_3_1" / "stu_upload" / "vgg_cpu.py").read_text()
    assert "from vggjit.lab.vgg_cpu import *" in text
    env = {k: v for k, v in os.environ.items() if k not in ("VGGJIT_DRIVER", "PYTHONPATH")}
    done = subprocess.run([sys.executable, "main_cpu.py"], cwd=work / "exp_3_1", env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "CHECK POOL5 PASS." in done.stdout
    np.testing.assert_array_equal(np.load(work / "exp_3_1" / "out_pool5.npy"),
                                  np.load(lab / "exp_3_1" / "pool5_dump.npy"))


def test_lab_init_never_replaces_a_students_files(tmp_path, capsys):
    shutil.copytree(SCRIPTS / "exp_3_2", tmp_path / "exp_3_2")
    mine = tmp_path / "exp_3_2" / "stu_upload" / "vgg19_demo.py"
    before = mine.read_text()
    status, out, err = _cli(capsys, "init", tmp_path / "exp_3_2")
    assert status == 2
    assert "__init__.py, vgg19_demo.py" in err and "--overwrite" in err
    assert mine.read_text() == before
    assert not (tmp_path / "exp_3_2" / "stu_upload" / "layers_1.py").exists()  # nothing at all
    status, out, err = _cli(capsys, "init", tmp_path / "exp_3_2", "--overwrite")
    assert status == 0 and "vggjit.lab.vgg19_demo" in mine.read_text()
    status, out, err = _cli(capsys, "init", tmp_path / "missing")
    assert status == 2 and "no such directory" in err


def _script(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "main.py"
    path.write_text(text)
    return path


def test_a_missing_script_is_a_clear_error(tmp_path, capsys):
    status, out, err = _cli(capsys, "run", tmp_path / "main_exp_3_1.py")
    assert status == 2 and "main_exp_3_1.py: no such script" in err and "Traceback" not in err


def test_the_scripts_exception_argv_directory_and_status_are_its_own(tmp_path, capsys):
    cwd, argv, path0 = os.getcwd(), list(sys.argv), sys.path[0]
    script = _script(tmp_path / "exp", (
        "import os, sys\n"
        "from stu_upload.layers_1 import ReLULayer\n"
        "print(os.getcwd(), sys.argv, sys.path[0], __name__)\n"
        "def fail():\n"
        "    raise ValueError('the script broke')\n"
        "if sys.argv[1] == 'raise':\n"
        "    fail()\n"
        "sys.exit(int(sys.argv[1]))\n"))
    status, out, err = _cli(capsys, "run", script, "raise")
    assert status == 1
    assert out.split() == [str(tmp_path / "exp"), "['main.py',", "'raise']",
                           str(tmp_path / "exp"), "__main__"]
    assert err.startswith("Traceback") and "ValueError: the script broke" in err
    assert 'main.py", line 7' in err and 'main.py", line 5, in fail' in err
    assert "runpy" not in err and "runner.py" not in err  # the script's frames only
    status, out, err = _cli(capsys, "run", script, "3")
    assert status == 3 and err == ""
    # everything is put back for the next run
    assert (os.getcwd(), sys.argv, sys.path[0]) == (cwd, argv, path0)
    assert not [m for m in sys.modules if m.startswith("stu_upload") or m == "pycnml"]


def test_a_missing_weight_file_says_how_to_get_it(tmp_path, capsys):
    script = _script(tmp_path / "exp_3_1", (
        "from stu_upload.vgg_cpu import VGG19\n"
        "vgg = VGG19(param_path='../imagenet-vgg-verydeep-19.mat')\n"
        "vgg.build_model()\n"
        "vgg.load_model()\n"))
    status, out, err = _cli(capsys, "run", script)
    assert status == 1 and "Building model" in out
    assert "MissingWeightFile: ../imagenet-vgg-verydeep-19.mat: no such weight file" in err
    assert "vggjit weights fetch" in err and str(tmp_path / WEIGHTS) in err


def test_own_modules_mix_with_vggjits(tmp_path, capsys):
    student = tmp_path / "exp" / "stu_upload"
    student.mkdir(parents=True)
    (student / "__init__.py").write_text("")
    (student / "layers_1.py").write_text("class ReLULayer:\n    MINE = True\n")
    script = _script(tmp_path / "exp", (
        "from stu_upload.layers_1 import ReLULayer\n"
        "from stu_upload.layers_2 import FlattenLayer\n"
        "print(getattr(ReLULayer, 'MINE', False), FlattenLayer.__module__)\n"))
    for argv, want in ((["--own-module", "layers_1"], "True vggjit.lab.layers_2"),
                       ([], "False vggjit.lab.layers_2")):
        status, out, err = _cli(capsys, "run", *argv, script)
        assert status == 0, err
        assert out.strip() == want
    status, out, err = _cli(capsys, "run", "--own", script)
    assert status == 1 and "No module named 'stu_upload.layers_2'" in err
    status, out, err = _cli(capsys, "run", "--own-module", "layers_9", script)
    assert status == 2 and "not a course module" in err


def test_the_real_pycnml_is_used_where_it_is_importable(tmp_path, capsys):
    script = _script(tmp_path / "exp_3_2", (
        "import pycnml\n"
        "from stu_upload.vgg19_demo import VGG19\n"
        "print(pycnml.WHOSE, VGG19().net.WHOSE)\n"))
    (tmp_path / "exp_3_2" / "pycnml.py").write_text(  # found first, on sys.path[0]
        "WHOSE = 'real'\n"
        "class CnmlNet:\n"
        "    WHOSE = 'real net'\n"
        "    def __init__(self, cores):\n"
        "        pass\n")
    status, out, err = _cli(capsys, "run", script)
    assert status == 0, err
    assert out.split() == ["real", "real", "net"]
    assert err.strip() == (f"vggjit lab: pycnml: Cambricon's library "
                           f"({tmp_path / 'exp_3_2' / 'pycnml.py'})")


@pytest.mark.parametrize("argv", [["lab", "--help"], ["lab", "run", "--help"],
                                  ["lab", "init", "--help"]])
def test_help_teaches_with_examples(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "examples:" in out and "vggjit lab " in out.split("examples:")[1]
