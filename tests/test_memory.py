"""Memory budgets: work that cannot fit is refused up front with a message, never allocated.

The budget is faked with $VGGJIT_MEMORY_LIMIT; nothing here allocates more than a few KiB.
"""
from __future__ import annotations

import numpy as np
import pytest

from vggjit import get_driver
from vggjit.errors import InputError
from vggjit.memory import ENV_LIMIT, available_bytes, check_fits, format_bytes, parse_size


@pytest.mark.parametrize("text,expected", [("123", 123), ("4K", 4096), ("1.5M", 3 * 2**19),
                                           ("2g", 2 * 2**30), ("1TiB", 2**40), ("8 GB", 8 * 2**30)])
def test_sizes_parse(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "4X", "1e9"])
def test_bad_size_names_the_variable(text):
    with pytest.raises(InputError, match=ENV_LIMIT):
        parse_size(text)


def test_the_limit_caps_the_budget(monkeypatch):
    monkeypatch.setenv(ENV_LIMIT, "1M")
    assert available_bytes() == 2**20
    check_fits(2**20, "this")
    with pytest.raises(InputError, match=r"this needs about 2\.0 MiB .* 1\.0 MiB \$VGGJIT_MEMORY"
                                         r"_LIMIT; try less"):
        check_fits(2**21, "this", "try less")


def test_a_machine_sized_request_is_refused_without_a_limit(monkeypatch):
    monkeypatch.delenv(ENV_LIMIT, raising=False)
    with pytest.raises(InputError, match="available"):
        check_fits(2**70, "a zettabyte")
    check_fits(1024, "a kilobyte")


def test_format_bytes():
    assert format_bytes(512) == "512 bytes"
    assert format_bytes(3 * 2**30) == "3.0 GiB"


@pytest.mark.parametrize("name", ["naive", "numba-cpu"])
def test_driver_ops_check_their_outputs_against_the_budget(monkeypatch, name):
    driver = get_driver(name)
    x = np.zeros((1, 1, 4, 4), np.float32)
    w, b = np.zeros((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)
    monkeypatch.setenv(ENV_LIMIT, "64K")
    driver.conv2d(x, w, b, 1, 2)                           # 8x8 output: fits
    with pytest.raises(InputError, match=r"conv2d on these shapes \(\(1, 1, 204, 204\)"):
        driver.conv2d(x, w, b, 1, 100)                     # 204x204 output and padded input: 325 KiB
    with pytest.raises(InputError, match="max_pool2d_backward"):
        driver.max_pool2d_backward(np.zeros((1, 1, 2, 2), np.float32),
                                   driver.max_pool2d(x, 2, 2)[1], (1, 1, 400, 400))
