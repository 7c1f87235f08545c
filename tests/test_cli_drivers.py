"""`vggjit drivers`: the table and the JSON, with a third-party plugin installed."""
from __future__ import annotations

import json

from vggjit.cli import main

from plugin_tools import GOOD_PLUGIN


def test_drivers_command_table_and_json(capsys, plugin):
    plugin("tp_good", GOOD_PLUGIN)
    assert main(["drivers"]) == 0
    out = capsys.readouterr().out
    assert "thirdparty-missing" in out and "no: libfoo is not installed" in out
    assert main(["drivers", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {row["name"]: row for row in rows}
    assert by_name["naive"]["capabilities"] == ["backward", "forward"]
    assert by_name["thirdparty-echo"]["priority"] == -5
