"""Batch classification on a 2-worker local Dask cluster (processes on 127.0.0.1): the same
records as in-process, a worker killed mid-run, a resumed output, an unreachable scheduler.

One cluster serves the module (starting one costs seconds); the tests reach it by its
scheduler address, as `--scheduler` does.
"""
from __future__ import annotations

import os
import signal
import socket
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("distributed")

from vggjit.batch.classify import classify_batch  # noqa: E402
from vggjit.batch.cluster import Where, check_workers, machine_cores, start_local  # noqa: E402
from vggjit.batch.inputs import Inputs  # noqa: E402
from vggjit.batch.stylize import stylize_batch  # noqa: E402
from vggjit.batch.tasks import ClassifySpec, check_worker  # noqa: E402
from vggjit.cli import main  # noqa: E402
from vggjit.errors import VggjitError  # noqa: E402
from vggjit.style import make_settings  # noqa: E402

from batch_tools import (DRIVER, by_path, make_images, make_style_weights,  # noqa: E402
                         make_weights, read_jsonl)


@pytest.fixture(scope="module")
def cluster():
    local = start_local(2, cores=2)
    yield local
    local.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    weights = make_weights(root)
    images = make_images(root / "images", 12, bad=1)
    spec = ClassifySpec(weights=str(weights), driver=DRIVER, top_k=3)
    reference = root / "in-process.jsonl"
    classify_batch(Inputs([str(root / "images")]), spec, batch_size=2, output=reference,
                   log=lambda line: None, progress=False)
    return root, spec, images, by_path(read_jsonl(reference))


def on(cluster) -> Where:
    return Where(scheduler=cluster.client.scheduler.address)


def run(data, cluster, output, **options):
    root, spec, _, _ = data
    lines = []
    summary = classify_batch(Inputs([str(root / "images")]), spec, batch_size=2, output=output,
                             where=on(cluster), log=lines.append, progress=False, **options)
    return summary, lines


def test_same_records_as_in_process(data, cluster, tmp_path):
    _, _, images, reference = data
    summary, lines = run(data, cluster, tmp_path / "r.jsonl")
    assert by_path(read_jsonl(tmp_path / "r.jsonl")) == reference
    assert (summary.done, summary.failed, summary.lost) == (12, 1, 0)
    assert any("2 worker(s)" in line and "Numba/BLAS thread" in line for line in lines)
    # the workers share the cores: each one's Numba and BLAS get cores // 2 threads
    share = str(max(1, machine_cores() // 2))
    threads = cluster.client.run(os.getenv, "NUMBA_NUM_THREADS")
    assert list(threads.values()) == [share, share]
    assert set(cluster.client.run(os.getenv, "OPENBLAS_NUM_THREADS").values()) == {share}


def test_killed_worker_loses_nothing(data, cluster, tmp_path):
    _, _, _, reference = data
    client = cluster.client
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed = []

    def kill_once(record, progress):
        if not killed:
            os.kill(victim, signal.SIGKILL)  # the nanny starts a new worker process
            killed.append(time.monotonic())

    _, spec, _, _ = data
    root = data[0]
    out = tmp_path / "r.jsonl"
    summary = classify_batch(Inputs([str(root / "images")]), spec, batch_size=1, output=out,
                             where=on(cluster), on_record=kill_once, log=lambda line: None,
                             progress=False)
    assert killed and summary.lost == 0
    records = read_jsonl(out)
    # every input exactly once; batch size 1 here, so compare the classes, not the rounding
    assert sorted(r["path"] for r in records) == sorted(reference)
    for record in records:
        expected = reference[record["path"]]
        assert ("error" in record) == ("error" in expected)
        if "top" in record:
            assert [e["index"] for e in record["top"]] == [e["index"] for e in expected["top"]]
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.run(os.getpid).values()


def test_partial_output_resumed_to_the_same_content(data, cluster, tmp_path):
    _, _, _, reference = data
    out = tmp_path / "r.jsonl"
    full = tmp_path / "full.jsonl"
    run(data, cluster, full)
    text = full.read_text()
    cut = [i for i, c in enumerate(text) if c == "\n"][4] + 20  # 5 records and a cut line
    out.write_text(text[:cut])
    summary, lines = run(data, cluster, out)
    assert summary.skipped == 5 and summary.done + summary.failed == 8
    assert sorted(out.read_text().splitlines()) == sorted(text.splitlines())
    assert by_path(read_jsonl(out)) == reference


def test_weights_are_checked_on_the_workers(data, cluster, tmp_path):
    _, spec, _, _ = data
    missing = ClassifySpec(weights=str(tmp_path / "gone.mat"), driver=DRIVER)
    with pytest.raises(VggjitError, match=r"(?s)2 of 2 Dask worker\(s\).*no weight file"):
        check_workers(cluster, check_worker, missing)
    check_workers(cluster, check_worker, spec)  # and the real one passes


def test_unreachable_scheduler_is_a_clear_error(data, capsys):
    root, spec, images, _ = data
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(["classify", str(images[0]), "--weights", spec.weights, "--driver", DRIVER,
                 "--scheduler", f"tcp://127.0.0.1:{port}", "--connect-timeout", "1"])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in err
    assert "Traceback" not in err


def test_stylize_batch_on_the_cluster_matches_in_process(cluster, tmp_path):
    weights = make_style_weights(tmp_path)
    make_images(tmp_path / "contents", 3)
    styles = [str(p) for p in make_images(tmp_path / "styles", 1)]
    settings = make_settings(size=32, iterations=2, optimizer="adam", lr=5.0,
                             weights=str(weights), driver=DRIVER)
    contents = Inputs([str(tmp_path / "contents")])
    quiet = dict(log=lambda line: None, progress=False)
    local = stylize_batch(contents, styles, settings, tmp_path / "local", **quiet)
    remote = stylize_batch(contents, styles, settings, tmp_path / "remote", cluster=cluster,
                           **quiet)
    assert local.done == remote.done == 3
    for made in (tmp_path / "local").rglob("*.png"):
        twin = tmp_path / "remote" / made.relative_to(tmp_path / "local")
        np.testing.assert_array_equal(np.asarray(Image.open(made)), np.asarray(Image.open(twin)))


def test_cli_relative_paths_reach_the_workers(data, cluster, tmp_path, monkeypatch, capsys):
    root, spec, _, reference = data
    monkeypatch.chdir(root)  # the workers started elsewhere: they get absolute paths
    out = tmp_path / "r.jsonl"
    code = main(["classify", "images", "--weights", spec.weights, "--driver", DRIVER,
                 "--top-k", "3", "--batch-size", "2", "-o", str(out),
                 "--scheduler", cluster.client.scheduler.address])
    err = capsys.readouterr().err
    assert code == 1 and "12 done, 1 failed" in err  # the one broken image
    records = by_path(read_jsonl(out))
    assert sorted(records) == sorted(os.path.relpath(p, root) for p in reference)
    broken = records[os.path.join("images", "broken0.jpg")]
    assert broken["error"].startswith("images/broken0.jpg: ")
    first = records[os.path.join("images", "img001.png")]
    assert first["top"] == reference[str(root / "images" / "img001.png")]["top"]


def test_cli_local_cluster(data, tmp_path, capsys):
    root, spec, images, reference = data
    out = tmp_path / "r.jsonl"
    code = main(["classify", str(images[1]), str(images[2]), "--weights", spec.weights,
                 "--driver", DRIVER, "--top-k", "3", "--batch-size", "2", "-o", str(out),
                 "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "local Dask cluster: 1 worker process(es)" in err and "2 done, 0 failed" in err
    records = by_path(read_jsonl(out))
    assert sorted(records) == sorted(str(p) for p in images[1:3])
    for path, record in records.items():  # batched differently: compare up to rounding
        expected = reference[path]["top"]
        assert [e["index"] for e in record["top"]] == [e["index"] for e in expected]
        assert [e["probability"] for e in record["top"]] == pytest.approx(
            [e["probability"] for e in expected], abs=1e-5)
