"""Style-transfer settings: the lab preset, explicit options over it, unknown presets."""
from __future__ import annotations

import pytest

from vggjit.errors import InputError
from vggjit.style import make_settings


def test_lab_preset_and_explicit_options():
    lab = make_settings("lab")
    assert (lab.content_layers, lab.style_layers) == (
        ("relu4_2",), ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"))
    assert (lab.alpha, lab.beta, lab.optimizer, lab.lr, lab.iterations) == (1, 500, "adam", 1, 100)
    # The lab's raw loss, whatever the defaults are (they normalise and smooth).
    assert (lab.normalize, lab.tv_weight) == (False, 0.0)
    assert make_settings().normalize and make_settings().tv_weight > 0
    assert (lab.height, lab.width, lab.init, lab.noise, lab.pooling) == (192, 320, "noise", 0.5,
                                                                         "max")
    assert make_settings("lab", iterations=7).iterations == 7
    assert lab.scales == 1 and make_settings("lab", scales=3).scales == 3
    assert make_settings().optimizer == "lbfgs" and make_settings().size == 512
    with pytest.raises(InputError, match="unknown preset"):
        make_settings("picasso")
