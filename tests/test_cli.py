"""The `vggjit` command itself (vggjit/cli/__init__.py): --version and --help."""
from __future__ import annotations

import pytest

import vggjit
from vggjit.cli import main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and vggjit.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "drivers" in capsys.readouterr().out
