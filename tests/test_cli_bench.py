"""`vggjit bench`: the sub-command's help (the suites themselves: tests/test_bench_report.py)."""
from __future__ import annotations

import pytest

from vggjit.cli import main


def test_vggjit_bench_help_names_the_suites(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert all(suite in out for suite in ("kernels", "network", "style", "dlp"))
