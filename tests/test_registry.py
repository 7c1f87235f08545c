"""Driver discovery through entry points: third-party plugins, selection, broken and
duplicate plugins, capability requests."""
from __future__ import annotations

import json
import warnings

import pytest
from plugin_tools import activate, deactivate, write_distribution

import vggjit
from vggjit import registry
from vggjit.cli import main
from vggjit.errors import DriverNotFoundError, DriverUnavailableError, DuplicateDriverError

GOOD = '''
from vggjit import DriverRecord, hookimpl, FORWARD
from vggjit_naive.driver import NaiveDriver

class EchoDriver(NaiveDriver):
    name = "thirdparty-echo"
    capabilities = frozenset({FORWARD})

@hookimpl
def vggjit_drivers():
    yield DriverRecord(name="thirdparty-echo", description="test plugin", priority=-5,
                       factory=EchoDriver, capabilities=frozenset({FORWARD}))
    yield DriverRecord(name="thirdparty-missing", description="needs a library", priority=500,
                       factory=EchoDriver, unavailable_reason="libfoo is not installed")
'''
BROKEN_IMPORT = "raise ImportError('libbar.so: cannot open shared object file')\n"
BROKEN_HOOK = '''
from vggjit import hookimpl

@hookimpl
def vggjit_drivers():
    raise RuntimeError("device probe crashed")
'''
DUPLICATE = '''
from vggjit import DriverRecord, hookimpl
from vggjit_naive.driver import NaiveDriver

@hookimpl
def vggjit_drivers():
    return [DriverRecord(name="naive", description="impostor", priority=1, factory=NaiveDriver)]
'''


@pytest.fixture
def plugin(tmp_path):
    """Install plugin modules as distributions on sys.path for one test."""
    made = []

    def install(dist, source, driver_name=None):
        root = write_distribution(tmp_path / dist, dist, {driver_name or dist: dist},
                                  modules={dist: source})
        made.append((root, dist))
        activate(root)

    yield install
    for root, dist in made:
        deactivate(root, dist)


def names():
    return [r.name for r in vggjit.list_drivers()]


def test_third_party_plugin_is_found_selected_and_explained(plugin, monkeypatch):
    plugin("tp_good", GOOD)
    records = {r.name: r for r in vggjit.list_drivers()}
    assert records["thirdparty-echo"].available
    assert "tp_good" in records["thirdparty-echo"].origin
    assert records["thirdparty-missing"].unavailable_reason == "libfoo is not installed"
    assert vggjit.get_driver("thirdparty-echo").name == "thirdparty-echo"
    monkeypatch.setenv("VGGJIT_DRIVER", "thirdparty-echo")
    assert vggjit.get_driver().name == "thirdparty-echo"
    # An unavailable driver is never the default, however high its priority.
    monkeypatch.delenv("VGGJIT_DRIVER")
    assert vggjit.get_driver().name != "thirdparty-missing"
    with pytest.raises(DriverUnavailableError, match="libfoo is not installed"):
        vggjit.get_driver("thirdparty-missing")


def test_capability_request(plugin):
    plugin("tp_good", GOOD)
    with pytest.raises(DriverUnavailableError, match="lacks the backward capability.*naive"):
        vggjit.get_driver("thirdparty-echo", require={"backward"})
    driver = vggjit.get_driver("thirdparty-echo")
    with pytest.raises(DriverUnavailableError, match="'backward' capability"):
        driver.relu_backward([[1.0]], [[1.0]])
    assert "backward" in vggjit.get_driver(require={"backward"}).capabilities


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(DriverNotFoundError) as info:
        vggjit.get_driver("no-such-driver")
    message = str(info.value)
    assert "no-such-driver" in message and "naive" in message and "example-numpy" in message


def test_unknown_name_from_environment(monkeypatch):
    monkeypatch.setenv("VGGJIT_DRIVER", "typo-driver")
    with pytest.raises(DriverNotFoundError, match="typo-driver.*valid names"):
        vggjit.get_driver()


@pytest.mark.parametrize("source,words", [(BROKEN_IMPORT, "libbar.so"),
                                          (BROKEN_HOOK, "device probe crashed")])
def test_broken_plugin_is_skipped_with_a_warning(plugin, source, words):
    plugin("tp_broken", source)
    with pytest.warns(registry.PluginWarning, match=f"tp_broken.*{words}"):
        found = names()
    assert "naive" in found and "example-numpy" in found


def test_duplicate_name_is_an_error_naming_both_origins(plugin):
    plugin("tp_dup", DUPLICATE, "impostor")
    with pytest.raises(DuplicateDriverError) as info:
        vggjit.get_driver("naive")
    assert "tp_dup" in str(info.value) and "vggjit_naive" in str(info.value)
    naive_records = [r for r in vggjit.list_drivers() if r.name == "naive"]
    assert len(naive_records) == 2 and not any(r.available for r in naive_records)


def test_drivers_command_table_and_json(capsys, plugin):
    plugin("tp_good", GOOD)
    assert main(["drivers"]) == 0
    out = capsys.readouterr().out
    assert "thirdparty-missing" in out and "no: libfoo is not installed" in out
    assert main(["drivers", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {row["name"]: row for row in rows}
    assert by_name["naive"]["capabilities"] == ["backward", "forward"]
    assert by_name["thirdparty-echo"]["priority"] == -5


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and vggjit.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "drivers" in capsys.readouterr().out


def test_core_never_imports_a_concrete_driver():
    import subprocess
    import sys
    code = ("import sys, vggjit, vggjit.cli, vggjit.network; "
            "print([m for m in sys.modules if m.startswith('vggjit_')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_warmup_command_runs_every_op(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["warmup", "--driver", "naive"]) == 0
    assert "naive: warm-up took" in capsys.readouterr().out
