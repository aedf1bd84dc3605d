"""TorchLM against a direct computation on a tiny model; LAMBADA and zero-shot scoring; their file errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mta_lab.attention.presets import load_preset
from mta_lab.data.tokenizers import ByteTokenizer
from mta_lab.eval.errors import EvalError
from mta_lab.eval.lm import TorchLM
from mta_lab.eval.multiple_choice import run_lambada, run_zeroshot
from mta_lab.model import build_model, load_model_preset

TOK = ByteTokenizer()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(load_model_preset("tiny", n_layers=3, vocab_size=259, max_seq_len=64), load_preset("mta")).eval()


def _direct(model, context, continuation):
    full = torch.tensor([context + continuation])
    with torch.no_grad():
        logp = torch.log_softmax(model(full[:, :-1]).float(), -1)[0]
    rows = range(len(context) - 1, len(full[0]) - 1)
    total = sum(float(logp[r, full[0, r + 1]]) for r in rows)
    greedy = all(int(logp[r].argmax()) == int(full[0, r + 1]) for r in rows)
    return total, greedy


def test_loglikelihood_matches_a_direct_computation_in_any_batch(model):
    pairs = [(TOK.encode("To be, or not"), TOK.encode(" to be")), (TOK.encode("A"), TOK.encode("BCD")),
             (TOK.encode("The quick brown fox jumps"), TOK.encode(" over"))]
    for batch in (1, 2, 8):
        got = TorchLM(model, batch_size=batch).loglikelihood(pairs)
        for (ctx, cont), (ll, greedy) in zip(pairs, got, strict=True):
            want = _direct(model, ctx, cont)
            assert ll == pytest.approx(want[0], rel=1e-5, abs=1e-5) and greedy == want[1]
    # the model's own greedy continuation is "greedy"; a long pair keeps its last max_len + 1 tokens
    lm = TorchLM(model, eos_id=None, batch_size=4)
    ctx = TOK.encode("Hello there")
    out = lm.greedy([ctx], 3)[0]
    assert lm.loglikelihood([(ctx, out)])[0][1] is True
    long_ctx = list(range(100, 200))
    assert lm.loglikelihood([(long_ctx, [5])])[0][0] == pytest.approx(_direct(model, long_ctx[-64:], [5])[0], rel=1e-5)


def test_greedy_batched_equals_one_by_one(model):
    lm = TorchLM(model, batch_size=3)
    prompts = [TOK.encode(t) for t in ("abc", "xyz", "hello", "abd", "world")]
    assert lm.greedy(prompts, 5) == [TorchLM(model, batch_size=1).greedy([p], 5)[0] for p in prompts]


def test_lambada_ppl_and_acc(model, tmp_path):
    texts = ["the cat sat on the mat", "to be or not to be"]
    path = tmp_path / "lambada.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    result = run_lambada(TorchLM(model), TOK, str(path))
    lls = [_direct(model, TOK.encode(t.rpartition(" ")[0]), TOK.encode(" " + t.rpartition(" ")[2]))[0] for t in texts]
    assert result.summary["ppl"] == pytest.approx(math.exp(-sum(lls) / 2), rel=1e-5)
    assert result.metrics()["eval/lambada/ppl"] == pytest.approx(result.summary["ppl"])
    (tmp_path / "bad.jsonl").write_text('{"passage": "a b"}\n')
    with pytest.raises(EvalError, match='line 1 has no "text" string field'):
        run_lambada(TorchLM(model), TOK, str(tmp_path / "bad.jsonl"))


def test_zeroshot_acc_and_acc_norm_from_log_likelihoods(model, tmp_path):
    rows = [{"context": "Q: sky? A:", "choices": [" blue", " a very long green answer"], "gold": 0},
            {"context": "2+2=", "choices": ["4", "5", "22"], "gold": 2, "fewshot": "1+1=2\n"}]
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "mini.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_zeroshot(TorchLM(model), TOK, str(tmp_path / "tasks"))
    acc = acc_norm = 0
    for r in rows:
        ctx = TOK.encode(r.get("fewshot", "") + r["context"])
        ll = [_direct(model, ctx, TOK.encode(c))[0] for c in r["choices"]]
        acc += max(range(len(ll)), key=ll.__getitem__) == r["gold"]
        norm = [v / len(c) for v, c in zip(ll, r["choices"], strict=True)]
        acc_norm += max(range(len(ll)), key=norm.__getitem__) == r["gold"]
    assert result.settings[0]["setting"] == "mini"
    assert result.summary == {"acc": acc / 2, "acc_norm": acc_norm / 2}
    (tmp_path / "missing.jsonl").write_text('{"context": "x", "choices": ["a", "b"]}\n')
    with pytest.raises(EvalError, match="line 1 lacks the field 'gold'"):
        run_zeroshot(TorchLM(model), TOK, str(tmp_path / "missing.jsonl"))


def test_a_bfloat16_eval_casts_the_weights_and_stays_close_to_float32():
    torch.manual_seed(0)
    net = build_model(load_model_preset("tiny", n_layers=3, vocab_size=259, max_seq_len=64), load_preset("mta"))
    requests = [(TOK.encode("The cat sat on the"), TOK.encode(" mat")), (TOK.encode("Hello"), TOK.encode(" world"))]
    full = TorchLM(net, dtype="float32").loglikelihood(requests)
    assert TorchLM(net, dtype="auto").dtype == torch.float32  # auto on the CPU
    half = TorchLM(net, dtype="bfloat16")
    assert half.dtype == torch.bfloat16 and next(net.parameters()).dtype == torch.bfloat16
    for (a, _), (b, _) in zip(full, half.loglikelihood(requests), strict=True):
        assert b == pytest.approx(a, rel=2e-2)
    assert len(half.greedy([TOK.encode("Once upon")], 4)[0]) <= 4
