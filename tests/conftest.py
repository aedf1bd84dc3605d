"""Fixtures of the integration tests (helpers live in integration_helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One packed-corpus cache for the whole session (packing Shakespeare takes a couple of seconds)."""
    return tmp_path_factory.mktemp("data_cache")


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist each worker (and each process its tests start, through the environment) uses one CPU
    # thread: two workers of two threads each on CI's two cores would fight over them.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
