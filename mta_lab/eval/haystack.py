"""Distractor text for the long-context tasks, as lines of the checkpoint's own tokens.

Default: the embedded corpus' **validation split** (the last `val_fraction` of each domain's token stream, the
split training never reads: `mta_lab/data/packing.py`), encoded with the checkpoint's tokenizer, so a haystack is
held-out text by construction when the checkpoint trained on the embedded corpus. `haystack=PATH` (a file, glob or
directory of text/JSONL/Parquet, `data.text_field` for JSONL) uses all of that text instead. Either way the text
is cut into non-empty lines, each encoded on its own with its newline: prompts are concatenations of these token
lists, so lengths and insert positions are exact in tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mta_lab.data.config import DataConfig
from mta_lab.data.errors import DataConfigError
from mta_lab.data.tokenizers import Tokenizer
from mta_lab.eval.errors import EvalError


@dataclass(frozen=True)
class Haystack:
    lines: list[list[int]]  # token ids of each line, newline included
    source: str  # what it was read from, for the record

    @property
    def num_tokens(self) -> int:
        return sum(len(line) for line in self.lines)

    def filler(self, n_tokens: int, rng: np.random.Generator) -> list[list[int]]:
        """Consecutive lines from a random start (wrapping around) totalling exactly n_tokens: the last line is
        cut to fit."""
        if n_tokens <= 0:
            return []
        out, total, i = [], 0, int(rng.integers(len(self.lines)))
        while total < n_tokens:
            line = self.lines[i % len(self.lines)][: n_tokens - total]
            out.append(line)
            total += len(line)
            i += 1
        return out


def _text_config(data: dict | None, haystack: str | None, cache_dir: str | None) -> DataConfig:
    base = {k: v for k, v in (data or {}).items() if k in ("tokenizer", "val_fraction", "text_field")}
    if (data or {}).get("kind") == "toy":
        base = {"tokenizer": "char"}
    if haystack is not None:
        base |= {"corpus": "files", "domains": {"haystack": [haystack]}}
    return DataConfig.from_dict({**base, "kind": "text", "cache_dir": cache_dir})


def load_haystack(data: dict | None, tokenizer: Tokenizer, *, haystack: str | None = None,
                  cache_dir: str | None = None) -> Haystack:
    """The distractor lines (see the module docstring). `data`: the checkpoint's data config."""
    from mta_lab.data.text_data import TextData

    what = f"haystack={haystack}" if haystack else "the embedded corpus (its validation split)"
    try:
        config = _text_config(data, haystack, cache_dir)
        bundle = TextData(config, seq_len=1)
    except DataConfigError as err:
        hint = (" (a toy-task checkpoint only knows the letters a-z . #: give haystack=FILE in that alphabet)"
                if (data or {}).get("kind") == "toy" else "")
        raise EvalError(f"{what}: cannot be read with the checkpoint's tokenizer: {err}{hint}") from None
    texts = []
    for name in bundle.names:
        tokens = np.asarray(bundle.tokens(name))
        part = tokens if haystack else tokens[bundle.cuts[name]:]
        texts.append(tokenizer.decode(part.tolist()))
    lines = [line + "\n" for text in texts for line in text.splitlines() if line.strip()]
    encoded = [ids for ids in (tokenizer.encode(line) for line in lines) if ids]
    if not encoded:
        raise EvalError(f"{what}: holds no text; give haystack= a file with text")
    return Haystack(encoded, haystack or f"embedded corpus, validation split (val_fraction {config.val_fraction})")
