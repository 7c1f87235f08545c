"""`vggjit warmup`: every op of a driver runs once."""
from __future__ import annotations

import warnings

from vggjit.cli import main


def test_warmup_command_runs_every_op(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["warmup", "--driver", "naive"]) == 0
    assert "naive: warm-up took" in capsys.readouterr().out
