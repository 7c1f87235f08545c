"""Batch classification in-process: inputs, result files, resume, interrupts, bad images."""
from __future__ import annotations

import json
import sys

import pytest

from vggjit.batch.classify import classify_batch
from vggjit.batch.cluster import Where
from vggjit.batch.inputs import Inputs
from vggjit.batch.results import open_store
from vggjit.batch.tasks import ClassifySpec, classify_paths
from vggjit.cli import main
from vggjit.errors import InputError, VggjitError

from batch_tools import DRIVER, by_path, make_images, make_weights, read_jsonl


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    weights = make_weights(root)
    images = make_images(root / "images", 10, bad=1)
    return root, weights, images


def spec(weights, **options) -> ClassifySpec:
    return ClassifySpec(**{"weights": str(weights), "driver": DRIVER, "top_k": 3, **options})


def quiet(line: str) -> None:
    pass


def test_inputs_directories_globs_manifests(tmp_path):
    (tmp_path / "d" / "deep").mkdir(parents=True)
    for name in ("d/b.png", "d/a.JPG", "d/deep/c.webp", "d/notes.txt", "d/.hidden.png",
                 "e.png", "f.png"):
        (tmp_path / name).write_bytes(b"")
    manifest = tmp_path / "list.txt"
    manifest.write_text("# the held-out images\nf.png\n\nd/b.png\n" + str(tmp_path / "e.png"))
    inputs = Inputs([str(tmp_path / "d"), str(tmp_path / "*.png")], [str(manifest)])
    names = [p.replace(str(tmp_path), "") for p in inputs]
    # directory sorted and recursive, hidden and non-image files left out; then the glob;
    # then the manifest (relative to its folder), every path once
    assert names == ["/d/a.JPG", "/d/b.png", "/d/deep/c.webp", "/e.png", "/f.png"]
    assert inputs.count() == 5
    assert len(list(Inputs([str(tmp_path / "e.png")] * 2, unique=False))) == 2
    # a named file is kept even when missing: the run records it
    assert list(Inputs([str(tmp_path / "missing.png")])) == [str(tmp_path / "missing.png")]

    (tmp_path / "empty").mkdir()
    for sources, manifests, message in (
            ([str(tmp_path / "empty")], [], "no image files in the directory"),
            ([str(tmp_path / "*.gif")], [], "matches no image files"),
            ([], [str(tmp_path / "nope.txt")], "no such manifest"),
            ([], [], "no images given")):
        with pytest.raises(InputError, match=message):
            Inputs(sources, manifests).count()


def ok(path: str) -> dict:
    return {"path": path, "top": [{"rank": 1, "index": 0, "wnid": "n0", "description": "zero",
                                   "probability": 1.0}]}


def test_jsonl_store_resumes_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "r.jsonl"
    with open_store(path, top_k=1) as store:
        store.add(ok("a.png"))
        store.add({"path": "b.png", "error": "b.png: broken"})
    with open(path, "a") as handle:
        handle.write('{"path": "c.p')  # a kill in the middle of a line
    store = open_store(path, top_k=1)
    assert store.done == {"a.png", "b.png"} and store.resumed == 2
    store.add(ok("c.png"))
    store.close()
    assert [r["path"] for r in read_jsonl(path)] == ["a.png", "b.png", "c.png"]
    with open_store(path, top_k=1, retry_failed=True) as store:
        assert store.done == {"a.png", "c.png"} and store.dropped_failed == 1
    assert [r["path"] for r in read_jsonl(path)] == ["a.png", "c.png"]


def test_store_refuses_another_top_k_and_parquet_without_pyarrow(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    with open_store(path, top_k=1) as store:
        store.add(ok("a.png"))
    with pytest.raises(InputError, match="top 1 classes.*--top-k 1"):
        open_store(path, top_k=5)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(VggjitError, match="pip install pyarrow"):
        open_store(tmp_path / "r.parquet", top_k=1)


def test_store_refuses_a_file_that_is_not_results(tmp_path):
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my own notes\n")
    with pytest.raises(InputError, match="not a vggjit results file.*--overwrite"):
        open_store(notes, top_k=1)
    assert notes.read_text() == "my own notes\n"
    with open_store(notes, top_k=1, overwrite=True) as store:
        assert not store.done
    assert notes.read_text() == ""
    with pytest.raises(InputError, match="unknown results format"):
        open_store(tmp_path / "r.txt", top_k=1)


def test_csv_store_round_trip_and_top_k_check(tmp_path):
    path = tmp_path / "r.csv"
    record = {"path": "a, b.png", "top": [
        {"rank": 1, "index": 3, "wnid": "n3", "description": "red, test", "probability": 0.75},
        {"rank": 2, "index": 1, "wnid": "n1", "description": "one", "probability": 0.25}]}
    with open_store(path, top_k=2) as store:
        store.add(record)
        store.add({"path": "x.png", "error": "x.png: no such file"})
    store = open_store(path, top_k=2)
    assert store.done == {"a, b.png", "x.png"}
    store.close()
    assert store._existing() == [record, {"path": "x.png", "error": "x.png: no such file"}]
    with pytest.raises(InputError, match="top 2 classes.*--top-k 2"):
        open_store(path, top_k=5)


def test_parquet_store(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "r.parquet"
    with open_store(path, top_k=1) as store:
        store.add({"path": "a.png", "top": [{"rank": 1, "index": 2, "wnid": "n2",
                                              "description": "two", "probability": 0.5}]})
    assert path.is_file() and not (tmp_path / "r.parquet.partial.jsonl").exists()
    with open_store(path, top_k=1) as store:  # resumed from the Parquet file
        assert store.done == {"a.png"}
        store.add({"path": "b.png", "error": "b.png: broken"})
    import pyarrow.parquet as pq
    rows = pq.read_table(path).to_pylist()
    assert [r["path"] for r in rows] == ["a.png", "b.png"]
    assert rows[0]["top"][0]["index"] == 2 and rows[1]["error"] == "b.png: broken"
    # a run killed outright leaves its journal: the next run resumes from it
    journal = tmp_path / "r.parquet.partial.jsonl"
    journal.write_text(json.dumps({"path": "a.png", "error": "x"}) + "\n"
                       + json.dumps({"path": "c.png", "error": "y"}) + "\n")
    with open_store(path, top_k=1) as store:
        assert store.done == {"a.png", "c.png"}
    assert [r["path"] for r in pq.read_table(path).to_pylist()] == ["a.png", "c.png"]
    assert not journal.exists()


def test_in_process_records_every_input_once(data, tmp_path):
    root, weights, images = data
    out = tmp_path / "r.jsonl"
    summary = classify_batch(Inputs([str(root / "images")]), spec(weights), batch_size=4,
                             output=out, log=quiet, progress=False)
    records = by_path(read_jsonl(out))
    assert set(records) == {str(p) for p in images}
    assert (summary.done, summary.failed, summary.skipped, summary.total) == (10, 1, 0, 11)
    assert "not an image file" in records[str(images[-1])]["error"]
    # the answer the network gives the image alone (batching changes only float rounding)
    alone = classify_paths(spec(weights), [str(images[4])])[0]["top"]
    batched = records[str(images[4])]["top"]
    assert [e["index"] for e in batched] == [e["index"] for e in alone] and len(alone) == 3
    assert [e["probability"] for e in batched] == pytest.approx(
        [e["probability"] for e in alone], abs=1e-5)


def test_interrupted_run_keeps_its_work_and_a_rerun_completes(data, tmp_path):
    root, weights, images = data
    reference = tmp_path / "ref.jsonl"
    classify_batch(Inputs([str(root / "images")]), spec(weights), batch_size=2,
                   output=reference, log=quiet, progress=False)
    out = tmp_path / "r.jsonl"
    seen = []

    def stop_after_three(record, progress):
        seen.append(record)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        classify_batch(Inputs([str(root / "images")]), spec(weights), batch_size=2, output=out,
                       on_record=stop_after_three, log=quiet, progress=False)
    assert len(read_jsonl(out)) == 3
    summary = classify_batch(Inputs([str(root / "images")]), spec(weights), batch_size=2,
                             output=out, log=quiet, progress=False)
    assert summary.skipped == 3 and summary.done + summary.failed == 8
    assert by_path(read_jsonl(out)) == by_path(read_jsonl(reference))


def test_cli_resumes_a_partial_output_to_the_same_content(data, tmp_path, capsys):
    root, weights, images = data
    args = ["classify", str(root / "images"), "--weights", str(weights), "--driver", DRIVER,
            "--top-k", "2"]
    full = tmp_path / "full.csv"
    assert main([*args, "-o", str(full)]) == 1  # one bad image: status 1, still recorded
    err = capsys.readouterr().err
    assert "11 image(s), 11 to classify" in err and "10 done, 1 failed, 0 skipped" in err
    lines = full.read_text().splitlines(keepends=True)
    partial = tmp_path / "partial.csv"
    partial.write_text("".join(lines[:6]) + lines[6][:10])  # header, 5 rows, a cut row
    assert main([*args, "-o", str(partial)]) == 0  # the bad image was among the first five
    err = capsys.readouterr().err
    assert "5 already in" in err and "6 to classify" in err
    assert sorted(partial.read_text().splitlines()) == sorted(full.read_text().splitlines())
    assert main([*args, "-o", str(partial)]) == 0  # nothing left: nothing fails
    assert "0 done, 0 failed, 11 skipped" in capsys.readouterr().err


def test_cli_refuses_to_write_over_an_input(data, capsys):
    root, weights, images = data
    code = main(["classify", str(images[0]), "--weights", str(weights), "-o", str(images[0])])
    assert code == 2 and "is one of the inputs" in capsys.readouterr().err


def test_manifest_and_json_to_stdout(data, tmp_path, capsys):
    root, weights, images = data
    manifest = tmp_path / "m.txt"
    manifest.write_text(f"{images[1]}\n{images[2]}\n")
    code = main(["classify", "--manifest", str(manifest), "--weights", str(weights),
                 "--driver", DRIVER, "--json", "--top-k", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [json.loads(line)["path"] for line in out.splitlines()] == [str(images[1]),
                                                                       str(images[2])]


def test_cluster_options_need_dask(data, monkeypatch, capsys):
    root, weights, images = data
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    code = main(["classify", str(images[0]), "--weights", str(weights), "--driver", DRIVER,
                 "--workers", "2"])
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "vggjit[cluster]"' in err and "Traceback" not in err
    with pytest.raises(InputError, match="not both"):
        Where(workers=2, scheduler="tcp://127.0.0.1:1")


def test_unknown_driver_fails_before_any_work(data, capsys):
    root, weights, images = data
    code = main(["classify", str(root / "images"), "--weights", str(weights),
                 "--driver", "no-such-driver"])
    assert code == 2 and "no-such-driver" in capsys.readouterr().err
    with pytest.raises(VggjitError):
        classify_batch(Inputs([str(root / "images")]), spec(weights, driver="nope"), log=quiet)
