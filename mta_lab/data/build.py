"""build_data: a DataConfig and the model's sequence length -> the DataBundle the trainer reads."""

from __future__ import annotations

from mta_lab.data.bundle import DataBundle
from mta_lab.data.config import DataConfig
from mta_lab.data.errors import DataConfigError


def build_data(config: DataConfig, *, seq_len: int) -> DataBundle:
    """Text corpora are packed (or read from the cache) now. The toy task decides its own length: seq_len is
    ignored there; read `bundle.seq_len`. Call it on one rank first to build the cache, or on all at once (safe)."""
    if config.kind == "toy":
        from mta_lab.data.toy_data import ToyData

        return ToyData(config)
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
        raise DataConfigError(f"seq_len={seq_len!r}: must be a positive integer")
    from mta_lab.data.text_data import TextData

    return TextData(config, seq_len=seq_len)
