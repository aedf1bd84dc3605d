"""NIAH generator (needles once each, at their recorded depth, exact length, seeded) and its scorer."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scripted import ScriptedLM

from mta_lab.data.tokenizers import ByteTokenizer, load_tokenizer
from mta_lab.eval.errors import EvalError
from mta_lab.eval.haystack import Haystack, load_haystack
from mta_lab.eval.niah import make_sample, needle_text, run_niah

TOK = ByteTokenizer()
LINES = [f"line {i} of some distractor text, with words and numbers {i * 7}.\n" for i in range(200)]
HAYSTACK = Haystack([TOK.encode(line) for line in LINES], "test lines")


def _find_all(seq: list[int], sub: list[int]) -> list[int]:
    return [i for i in range(len(seq) - len(sub) + 1) if seq[i:i + len(sub)] == sub]


@pytest.mark.parametrize("context,needles,depth", [(300, 1, 0.0), (600, 4, 0.5), (1000, 6, 1.0), (700, 2, 0.25)])
def test_needles_once_each_at_their_depth_and_exact_length(context, needles, depth):
    for index in range(5):
        s = make_sample(HAYSTACK, TOK, context=context, needles=needles, depth=depth, index=index, seed=3)
        ids = s["prompt_ids"]
        assert len(ids) == context  # exactly the requested length, in the tokenizer's tokens
        needle_tokens = sum(len(TOK.encode(needle_text(m["city"], m["number"]))) for m in s["needle_meta"])
        filler = context - needle_tokens - len(TOK.encode(s["question"]))
        asked = [m for m in s["needle_meta"] if m["asked"]]
        assert len(asked) == 1 and asked[0]["number"] == s["answer"]
        assert len({m["city"] for m in s["needle_meta"]}) == needles
        for m in s["needle_meta"]:
            sub = TOK.encode(needle_text(m["city"], m["number"]))
            assert _find_all(ids, sub) == [m["position"]]  # exactly once, where recorded
            # the recorded depth is the share of haystack tokens before the needle
            before = m["position"] - sum(len(TOK.encode(needle_text(o["city"], o["number"])))
                                         for o in s["needle_meta"] if o["position"] < m["position"])
            assert before == m["filler_before"]
            assert m["depth"] == pytest.approx(before / filler)
        # the asked needle is at the requested depth, up to one haystack line
        longest = max(len(line) for line in HAYSTACK.lines)
        assert abs(asked[0]["filler_before"] - depth * filler) <= longest
        text = TOK.decode(ids)
        assert text.endswith(f"What is the magic number of {asked[0]['city']}? The magic number of "
                             f"{asked[0]['city']} is")
        assert re.findall(rf"magic number of {asked[0]['city']} is (\d+)\.", text) == [s["answer"]]


def test_seeds_reproduce_samples_and_differ_between_seeds():
    a = make_sample(HAYSTACK, TOK, context=500, needles=3, depth=0.5, index=2, seed=1)
    b = make_sample(HAYSTACK, TOK, context=500, needles=3, depth=0.5, index=2, seed=1)
    c = make_sample(HAYSTACK, TOK, context=500, needles=3, depth=0.5, index=2, seed=2)
    assert a == b and a["prompt_ids"] != c["prompt_ids"]


def test_scripted_right_model_scores_100_wrong_scores_0():
    kwargs = dict(contexts=[300, 400], needles=[1, 3], depths=[0, 0.5, 1], samples=4, seed=0)
    items = [make_sample(HAYSTACK, TOK, context=c, needles=n, depth=d, index=i, seed=0)
             for c in kwargs["contexts"] for n in kwargs["needles"] for d in kwargs["depths"] for i in range(4)]
    right = ScriptedLM(TOK, {tuple(s["prompt_ids"]): f" {s['answer']}. The" for s in items})
    result = run_niah(right, TOK, HAYSTACK, **kwargs)
    assert result.summary["acc"] == 1.0 and len(result.settings) == 12
    assert all(row["acc"] == 1.0 and row["n"] == 4 for row in result.settings)
    assert result.metrics()["eval/niah/c300_n3_d0.5/acc"] == 1.0
    # another needle's number (present in the prompt) is wrong, and so is the right number with a digit more
    other = {}
    for s in items:
        others = [m["number"] for m in s["needle_meta"] if not m["asked"]]
        other[tuple(s["prompt_ids"])] = f" {others[0]}" if others else f" {s['answer']}0"
    assert run_niah(ScriptedLM(TOK, other), TOK, HAYSTACK, **kwargs).summary["acc"] == 0.0
    assert run_niah(ScriptedLM(TOK, wrong=" 12"), TOK, HAYSTACK, **kwargs).summary["acc"] == 0.0


def test_a_context_longer_than_the_checkpoint_is_refused_before_any_generation():
    lm = ScriptedLM(TOK, wrong=" 1", max_len=256)
    with pytest.raises(EvalError, match=r"contexts=300: the checkpoint's context is 256 tokens .*use contexts=2"):
        run_niah(lm, TOK, HAYSTACK, contexts=[200, 300], needles=[1], depths=[0.5], samples=1)
    assert lm.calls == 0
    with pytest.raises(EvalError, match="contexts=40: too short for 2 needles"):
        run_niah(ScriptedLM(TOK, wrong=" 1"), TOK, HAYSTACK, contexts=[40], needles=[2], depths=[0.5], samples=1)


def test_default_haystack_is_the_held_out_split_of_the_embedded_corpus(data_cache):
    """The haystack is the validation tail training never reads; the corpus never says "magic number", so a needle
    cannot match training text."""
    from mta_lab.data import DataConfig
    from mta_lab.data.text_data import TextData

    tok = load_tokenizer("byte")
    hay = load_haystack({"kind": "text", "tokenizer": "byte"}, tok, cache_dir=str(data_cache))
    bundle = TextData(DataConfig(cache_dir=str(data_cache)), seq_len=1)
    val_text = "".join(tok.decode(np.asarray(bundle.tokens(n))[bundle.cuts[n]:].tolist()) for n in bundle.names)
    train_text = "".join(tok.decode(np.asarray(bundle.tokens(n))[:bundle.cuts[n]].tolist()) for n in bundle.names)
    assert "validation split" in hay.source
    sample = [tok.decode(line) for line in hay.lines[:: max(1, len(hay.lines) // 50)]]
    assert all(line.rstrip("\n") in val_text for line in sample)
    assert "magic number" not in (train_text + val_text).lower()


def test_a_tokenizer_that_cannot_encode_the_corpus_is_one_error(data_cache):
    from mta_lab.data.tokenizers import CharTokenizer

    with pytest.raises(EvalError, match="cannot be read with the checkpoint's tokenizer.*haystack=FILE"):
        load_haystack({"kind": "toy", "tokenizer": "char"}, CharTokenizer(), cache_dir=str(data_cache))
