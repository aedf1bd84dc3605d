"""Model presets and their validation (mta_lab/model/config.py)."""

from __future__ import annotations

import pytest

from mta_lab.model import load_model_preset
from mta_lab.model.config import ModelConfigError, swiglu_hidden


@pytest.mark.parametrize(("dim", "hidden"), [(1024, 2816), (1280, 3584), (1536, 4096), (2048, 5632)])
def test_swiglu_hidden_matches_spec(dim, hidden):
    assert swiglu_hidden(dim) == hidden


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_heads": 5}, "model.n_heads=5: must divide model.dim=64"),
        ({"dim": 0}, "model.dim=0: must be a positive integer"),
        ({"dim": 96, "n_heads": 32}, "head_dim=3 must be even"),
        ({"colour": 1}, "unknown field"),
    ],
)
def test_model_config_errors(overrides, message):
    with pytest.raises(ModelConfigError, match=message):
        load_model_preset("tiny", **overrides)
