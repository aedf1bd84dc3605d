"""Tokenise a domain and pack it into one flat token file on disk, cached; read back through np.memmap.

Each document is encoded and followed by EOS; documents follow each other in file order (`sources.py`). The
result is one array per domain: ``<cache_dir>/<domain>-<key>.bin`` (raw uint16 when the vocabulary fits in
16 bits, else uint32) plus ``<domain>-<key>.json`` (token and document counts, a hash of the tokens). It is
written in a streaming way, batch by batch, so a corpus larger than memory packs in constant memory.

The cache key hashes every file's (absolute path, size, mtime, format), the text field, the tokenizer's
fingerprint and the packing version: change any of them and the domain is re-tokenised; otherwise a second
load is a cache hit that reads nothing but the small JSON file. The train/validation split is not part of the
key: it is an offset into this array (`split_point`), so changing ``val_fraction`` reuses the cache.

Split rule: the **last** ``round(val_fraction * tokens)`` tokens of each domain's token stream are its
validation split; everything before is training data. Deterministic (file order is sorted), exact in size
for small corpora (a domain of four plays still gets 5 %), and documents never move between splits unless the
files change. The document that straddles the cut contributes its start to training and its end to
validation. Both files are written under a temporary name and renamed, so concurrent builders (several ranks)
are safe: they produce the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from mta_lab.data.errors import DataConfigError
from mta_lab.data.sources import SourceFile
from mta_lab.data.text import read_documents
from mta_lab.data.tokenizers import Tokenizer

PACKING_VERSION = "1"
log = logging.getLogger(__name__)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def cache_key(files: Sequence[SourceFile], tokenizer: Tokenizer, text_field: str) -> str:
    h = hashlib.sha256(f"packing-v{PACKING_VERSION}\0{tokenizer.fingerprint}\0{text_field}\0".encode())
    for file in files:
        stat = os.stat(file.path)
        h.update(f"{file.path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{file.format}\0".encode())
    return h.hexdigest()[:16]


def split_point(num_tokens: int, val_fraction: float) -> int:
    """Index of the first validation token: the last round(val_fraction * num_tokens) tokens are validation."""
    return num_tokens - round(val_fraction * num_tokens)


@dataclass(frozen=True)
class PackedDomain:
    """One domain's packed tokens on disk."""

    name: str
    path: str
    dtype: str
    num_tokens: int
    num_documents: int
    content_hash: str  # hash of the token bytes: equal tokens, equal hash, wherever the files live
    cache_hit: bool = False

    def tokens(self) -> np.memmap:
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.num_tokens,))


def _encode(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    encode_batch = getattr(tokenizer, "encode_batch", None)  # optional, faster (HF, tiktoken encode in threads)
    return encode_batch(texts) if encode_batch is not None else [tokenizer.encode(t) for t in texts]


def _load_meta(meta_path: Path, bin_path: Path) -> PackedDomain | None:
    try:
        meta = json.loads(meta_path.read_text())
        known = {f.name for f in fields(PackedDomain)} - {"path", "cache_hit"}
        packed = PackedDomain(**{k: meta[k] for k in known}, path=str(bin_path), cache_hit=True)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    expected = packed.num_tokens * np.dtype(packed.dtype).itemsize
    return packed if bin_path.is_file() and bin_path.stat().st_size == expected else None


def pack_domain(
    name: str, files: Sequence[SourceFile], tokenizer: Tokenizer, *, text_field: str, cache_dir: Path
) -> PackedDomain:
    """The packed tokens of one domain: from the cache, or tokenised now and cached."""
    stem = f"{re.sub(r'[^A-Za-z0-9_-]', '_', name)}-{cache_key(files, tokenizer, text_field)}"
    bin_path, meta_path = cache_dir / f"{stem}.bin", cache_dir / f"{stem}.json"
    cached = _load_meta(meta_path, bin_path)
    if cached is not None:
        return cached

    cache_dir.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    eos = np.array([tokenizer.eos_id], dtype=dtype)
    tmp = Path(f"{bin_path}.tmp-{os.getpid()}")
    hasher = hashlib.blake2b(digest_size=8)
    num_tokens = num_documents = 0
    log.info("tokenising domain %s (%d files) into %s", name, len(files), bin_path)
    try:
        with open(tmp, "wb") as out:
            for file in files:
                for texts in read_documents(file, text_field):
                    parts = [part for ids in _encode(tokenizer, texts) for part in (np.asarray(ids, dtype), eos)]
                    chunk = np.concatenate(parts).tobytes()
                    out.write(chunk)
                    hasher.update(chunk)
                    num_tokens += len(chunk) // dtype.itemsize
                    num_documents += len(texts)
        if num_documents == 0:
            shown = ", ".join(f.path for f in files[:3]) + (", ..." if len(files) > 3 else "")
            raise DataConfigError(
                f"data domain {name!r}: no text in its files ({shown}); check them and data.text_field"
            )
        os.replace(tmp, bin_path)
    finally:
        tmp.unlink(missing_ok=True)
    packed = PackedDomain(name, str(bin_path), dtype.name, num_tokens, num_documents, hasher.hexdigest())
    meta = {k: v for k, v in asdict(packed).items() if k not in ("path", "cache_hit")}
    tmp_meta = Path(f"{meta_path}.tmp-{os.getpid()}")
    tmp_meta.write_text(json.dumps({**meta, "files": [f.path for f in files]}, indent=1))
    os.replace(tmp_meta, meta_path)
    return packed
