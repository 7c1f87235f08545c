"""The benchmark runner's report: JSON, markdown and charts from the suites' result dicts.

No timing here (figures live in bench/); this only checks that `vggjit bench` turns results
into files, merges a partial run into the day's report, and rejects unknown suites.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.__main__ import parse, write_report  # noqa: E402


def _stat(value):
    return {"median": value, "min": value, "max": value, "runs": 1}


RESULTS = {
    "kernels": {"markdown": "| kernels |", "vgg_layers": {"shapes": [
        {"layers": ["conv1_2"], "cin": 64, "cout": 64, "side": 224,
         **{k: {"pct_of_sgemm": _stat(70.0)} for k in ("forward", "backward_dx", "backward_full")}},
    ]}},
    "network": {"markdown": "| network |", "torch": {"ratio_b1": 1.2, "ratio_b4": 0.9}},
    "style": {"markdown": "| style |", "sizes": [256], "results": [
        {"impl": "vggjit", "size": 256, "seconds": _stat(1.0), "peak_rss_mb": 400.0},
        {"impl": "torch", "size": 256, "seconds": _stat(0.8), "peak_rss_mb": 600.0}]},
}


def test_report_writes_json_markdown_and_every_chart(tmp_path):
    stem = tmp_path / "2026-01-01-host"
    write_report(RESULTS, stem, quick=True)
    payload = json.loads(Path(f"{stem}.json").read_text())
    assert payload["quick"] is True and set(payload["suites"]) == set(RESULTS)
    assert payload["machine"]["cpus"] >= 1
    markdown = Path(f"{stem}.md").read_text()
    assert "| kernels |" in markdown and "| style |" in markdown
    for chart in ("conv-layers", "vs-pytorch", "style"):
        png = Path(f"{stem}-{chart}.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.name in markdown


def test_a_missing_suite_leaves_its_chart_out(tmp_path):
    stem = tmp_path / "partial"
    write_report({"network": RESULTS["network"]}, stem, quick=False)
    assert Path(f"{stem}-vs-pytorch.png").exists()
    assert not Path(f"{stem}-conv-layers.png").exists()


def test_unknown_suite_is_refused(capsys):
    with pytest.raises(SystemExit) as info:
        parse(["kernels", "warp-drive"])
    assert info.value.code == 2 and "warp-drive" in capsys.readouterr().err
