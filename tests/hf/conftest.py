"""Fixtures: the saved tiny Llamas of `hf_models.py`."""

from __future__ import annotations

import pytest
from hf_models import save_byte_llama, tiny_llama


@pytest.fixture
def llama_dir(tmp_path):
    """The directory of a saved tiny grouped-query Llama (float32 weights)."""
    pytest.importorskip("transformers")
    path = tmp_path / "tiny-llama"
    tiny_llama().save_pretrained(path)
    return path


@pytest.fixture
def byte_llama(tmp_path):
    pytest.importorskip("transformers")
    return save_byte_llama(tmp_path / "llama512")
