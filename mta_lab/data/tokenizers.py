"""Tokenizers: byte-level (default), character, an HF `tokenizers` JSON file, a tiktoken BPE file.

All of them work offline: nothing is ever downloaded. `load_tokenizer(spec)` takes
- ``"byte"``: UTF-8 bytes 0..255, then BOS 256, EOS 257, PAD 258 (vocab 259);
- ``"char"``: the toy task's alphabet ``a-z . #`` as ids 0..27, then BOS 28, EOS 29, PAD 30 (vocab 31);
- a path to an HF ``tokenizer.json`` (a JSON object): special tokens are looked up by their usual names
  (EOS: ``<|endoftext|>``, ``</s>``, ``<|end_of_text|>``, ``<eos>``, ``[SEP]``; BOS and PAD likewise, falling
  back to EOS when absent). Text is encoded without the tokenizer's own post-processing specials;
- a path to a tiktoken BPE file (lines ``<base64 token> <rank>``, as ``cl100k_base.tiktoken``), read with
  ``tiktoken.load.load_tiktoken_bpe`` and split with ``CL100K_PAT`` (cl100k_base's pre-tokenisation
  pattern). Special tokens follow the ranks: ``<|endoftext|>`` (EOS) = n, ``<|startoftext|>`` (BOS) = n + 1,
  ``<|pad|>`` = n + 2, n = highest rank + 1. Special-token text inside documents is encoded as plain text.

`fingerprint` is a stable hash of the tokenizer's definition (kind and alphabet, or the file's content), so a
cache of tokenised data is reused exactly when the tokenizer is the same.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from mta_lab.data.errors import DataConfigError, fail
from mta_lab.data.fingerprint import stable_hash

TOY_ALPHABET = "abcdefghijklmnopqrstuvwxyz.#"

# cl100k_base's pre-tokenisation pattern (tiktoken_ext/openai_public.py), used for every tiktoken file.
CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)

HF_EOS_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "[SEP]")
HF_BOS_NAMES = ("<|begin_of_text|>", "<s>", "<|startoftext|>", "<bos>", "[CLS]")
HF_PAD_NAMES = ("<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>")


@runtime_checkable
class Tokenizer(Protocol):
    """What the data layer needs from a tokenizer. Implementations may add `encode_batch(texts)`."""

    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    fingerprint: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes; any text round-trips."""

    vocab_size = 259
    bos_id, eos_id, pad_id = 256, 257, 258
    fingerprint = stable_hash("byte", "v1")

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class CharTokenizer:
    """One id per character of an explicit alphabet, then BOS, EOS, PAD."""

    def __init__(self, alphabet: str = TOY_ALPHABET) -> None:
        if not alphabet or len(set(alphabet)) != len(alphabet):
            raise DataConfigError(f"character tokenizer: alphabet {alphabet!r} must be non-empty without repeats")
        self.alphabet = alphabet
        self._ids = {c: i for i, c in enumerate(alphabet)}
        n = len(alphabet)
        self.bos_id, self.eos_id, self.pad_id = n, n + 1, n + 2
        self.vocab_size = n + 3
        self.fingerprint = stable_hash("char", alphabet)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError as err:
            raise DataConfigError(
                f"character tokenizer: {err.args[0]!r} is not in its alphabet {self.alphabet!r}; "
                "use tokenizer=byte (or a BPE file) for general text"
            ) from None

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.alphabet[i] for i in ids if i < len(self.alphabet))


class HFTokenizer:
    """A `tokenizers` JSON file (e.g. a trained BPE, or Llama-3's tokenizer.json)."""

    def __init__(self, path: str, content: bytes) -> None:
        from tokenizers import Tokenizer as _HF

        try:
            self._tok = _HF.from_str(content.decode("utf-8"))
        except Exception as err:  # tokenizers raises plain Exception on bad JSON
            raise fail("tokenizer", path, f"not a valid HF tokenizers JSON file ({err}); {_FIX}") from None
        self.path = path
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        eos = self._find(HF_EOS_NAMES)
        if eos is None:
            raise fail("tokenizer", path, f"no end-of-text token (looked for {', '.join(HF_EOS_NAMES)}); "
                       "add one of these as a special token when training the tokenizer")
        self.eos_id = eos
        self.bos_id = self._find(HF_BOS_NAMES, default=eos)
        self.pad_id = self._find(HF_PAD_NAMES, default=eos)
        self.fingerprint = stable_hash("hf", content)

    def _find(self, names: Sequence[str], default: int | None = None) -> int | None:
        for name in names:
            token_id = self._tok.token_to_id(name)
            if token_id is not None:
                return token_id
        return default

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)


class TiktokenTokenizer:
    """A tiktoken BPE ranks file, split with cl100k's pattern; specials appended after the ranks."""

    def __init__(self, path: str, content: bytes) -> None:
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        try:
            # expected_hash: tiktoken caches files by path; the hash makes it re-read a file that changed.
            ranks = load_tiktoken_bpe(path, expected_hash=hashlib.sha256(content).hexdigest())
            if not ranks:
                raise ValueError("no tokens")
            n = max(ranks.values()) + 1
            specials = {"<|endoftext|>": n, "<|startoftext|>": n + 1, "<|pad|>": n + 2}
            self._enc = tiktoken.Encoding(
                name=f"file:{os.path.basename(path)}", pat_str=CL100K_PAT, mergeable_ranks=ranks,
                special_tokens=specials,
            )
        except Exception as err:
            raise fail("tokenizer", path, f"not a valid tiktoken BPE file ({err}); {_FIX}") from None
        self.path = path
        self._n_ranks = n
        self.eos_id, self.bos_id, self.pad_id = n, n + 1, n + 2
        self.vocab_size = n + 3
        self.fingerprint = stable_hash("tiktoken", CL100K_PAT, content)

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        return self._enc.decode([i for i in ids if i < self._n_ranks])


_FIX = f"data.tokenizer allows {'byte'!r}, {'char'!r}, an HF tokenizer.json or a tiktoken BPE file"


def load_tokenizer(spec: str) -> Tokenizer:
    """"byte", "char", or a path to an HF tokenizer.json / a tiktoken BPE file (told apart by content)."""
    if spec == "byte":
        return ByteTokenizer()
    if spec == "char":
        return CharTokenizer(TOY_ALPHABET)
    path = os.path.expanduser(spec)
    if not os.path.isfile(path):
        raise fail("tokenizer", spec, f"no such file; {_FIX}")
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as err:
        raise fail("tokenizer", spec, f"cannot read the file ({err.strerror}); check its permissions") from None
    if content.lstrip()[:1] == b"{":
        return HFTokenizer(path, content)
    return TiktokenTokenizer(path, content)
