"""Driver discovery through entry points: third-party plugins, selection, broken and
duplicate plugins, capability requests."""
from __future__ import annotations

import pytest
from plugin_tools import GOOD_PLUGIN

import vggjit
from vggjit import registry
from vggjit.errors import DriverNotFoundError, DriverUnavailableError, DuplicateDriverError

BROKEN_IMPORT = "raise ImportError('libbar.so: cannot open shared object file')\n"
BROKEN_HOOK = '''
from vggjit import hookimpl

@hookimpl
def vggjit_drivers():
    raise RuntimeError("device probe crashed")
'''
MISSPELLED_HOOK = '''
from vggjit import DriverRecord, hookimpl
from vggjit_naive.driver import NaiveDriver

@hookimpl
def vggjit_driver():
    return [DriverRecord(name="never-seen", description="typo", priority=1, factory=NaiveDriver)]
'''
DUPLICATE = '''
from vggjit import DriverRecord, hookimpl
from vggjit_naive.driver import NaiveDriver

@hookimpl
def vggjit_drivers():
    return [DriverRecord(name="naive", description="impostor", priority=1, factory=NaiveDriver)]
'''


def names():
    return [r.name for r in vggjit.list_drivers()]


def test_third_party_plugin_is_found_selected_and_explained(plugin, monkeypatch):
    plugin("tp_good", GOOD_PLUGIN)
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
    plugin("tp_good", GOOD_PLUGIN)
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


def test_misspelled_hook_is_an_error_and_the_plugin_is_skipped(plugin):
    plugin("tp_typo", MISSPELLED_HOOK)
    with pytest.warns(registry.PluginWarning, match="tp_typo.*unknown hook 'vggjit_driver'"):
        found = names()
    assert "never-seen" not in found and "naive" in found and "example-numpy" in found


def test_duplicate_name_is_an_error_naming_both_origins(plugin):
    plugin("tp_dup", DUPLICATE, "impostor")
    with pytest.raises(DuplicateDriverError) as info:
        vggjit.get_driver("naive")
    assert "tp_dup" in str(info.value) and "vggjit_naive" in str(info.value)
    naive_records = [r for r in vggjit.list_drivers() if r.name == "naive"]
    assert len(naive_records) == 2 and not any(r.available for r in naive_records)


def test_core_never_imports_a_concrete_driver():
    import subprocess
    import sys
    code = ("import sys, vggjit, vggjit.cli, vggjit.network; "
            "print([m for m in sys.modules if m.startswith('vggjit_')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
