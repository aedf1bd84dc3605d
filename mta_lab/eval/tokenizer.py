"""The tokenizer a checkpoint trained with, rebuilt from its data config (the eval tasks measure lengths in it)."""

from __future__ import annotations

from mta_lab.data.tokenizers import TOY_ALPHABET, CharTokenizer, Tokenizer, load_tokenizer
from mta_lab.eval.errors import EvalError


def checkpoint_tokenizer(payload: dict, ckpt: str, vocab_size: int) -> Tokenizer:
    """The run's tokenizer (toy task: its character tokenizer; text: `data.tokenizer`). An EvalError when it cannot
    be rebuilt here or its vocabulary exceeds the model's."""
    data = payload.get("data") or {}
    if data.get("kind") == "toy":
        tok: Tokenizer = CharTokenizer(TOY_ALPHABET)
    else:
        spec = data.get("tokenizer", "byte")
        try:
            tok = load_tokenizer(spec)
        except (ValueError, ImportError) as err:
            raise EvalError(f"ckpt={ckpt}: its tokenizer {spec!r} cannot be rebuilt here ({err}); put the "
                            "tokenizer file back at that path") from None
    if tok.vocab_size > vocab_size:
        raise EvalError(f"ckpt={ckpt}: its tokenizer has {tok.vocab_size} ids but the model only {vocab_size}; "
                        "this checkpoint was not trained with the tokenizer its data config names")
    return tok
