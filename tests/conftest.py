"""Fixtures of the integration tests (helpers live in integration_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One packed-corpus cache for the whole session (packing Shakespeare takes a couple of seconds)."""
    return tmp_path_factory.mktemp("data_cache")
