"""The lm-evaluation-harness adapter on task YAMLs that read a local JSON file (no hub download)."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("lm_eval")

from mta_lab.attention.presets import load_preset  # noqa: E402
from mta_lab.data.tokenizers import ByteTokenizer  # noqa: E402
from mta_lab.eval.errors import EvalError  # noqa: E402
from mta_lab.eval.harness import harness_lm, run_harness  # noqa: E402
from mta_lab.eval.lm import TorchLM  # noqa: E402
from mta_lab.eval.multiple_choice import run_zeroshot  # noqa: E402
from mta_lab.model import build_model, load_model_preset  # noqa: E402

TOK = ByteTokenizer()
ROWS = [{"question": f"Question {i}: is {i} even?\nAnswer:", "choices": [" yes", " no"], "gold": i % 2}
        for i in range(6)]


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    model = build_model(load_model_preset("tiny", n_layers=3, vocab_size=259, max_seq_len=128), load_preset("mta"))
    return TorchLM(model.eval(), eos_id=TOK.eos_id, batch_size=4)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("harness")
    data = folder / "even.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (folder / "mc.yaml").write_text(
        "task: mta_local_mc\n" + common + "output_type: multiple_choice\ndoc_to_text: \"{{question}}\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: gold\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    (folder / "gen.yaml").write_text(
        "task: mta_local_gen\n" + common + "output_type: generate_until\ndoc_to_text: \"{{question}}\"\n"
        "doc_to_target: \"{{choices[gold]}}\"\ngeneration_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 8\n"
        "metric_list:\n  - metric: exact_match\n")
    return folder


def test_multiple_choice_task_matches_our_own_scorer(lm, tasks, tmp_path):
    result = run_harness(lm, TOK, tasks="mta_local_mc,mta_local_gen", include_path=str(tasks))
    rows = {r["setting"]: r for r in result.settings}
    ours = tmp_path / "even.jsonl"
    ours.write_text("".join(json.dumps({"context": r["question"], "choices": r["choices"], "gold": r["gold"]}) + "\n"
                            for r in ROWS))
    mine = run_zeroshot(lm, TOK, str(ours)).settings[0]
    assert rows["mta_local_mc"]["acc"] == pytest.approx(mine["acc"])
    assert rows["mta_local_mc"]["acc_norm"] == pytest.approx(mine["acc_norm"])
    assert 0.0 <= rows["mta_local_gen"]["exact_match"] <= 1.0
    assert result.metrics()["eval/harness/mta_local_mc/acc"] == pytest.approx(mine["acc"])
    assert len([s for s in result.samples if s["setting"] == "mta_local_mc"]) == len(ROWS)


def test_rolling_loglikelihood_is_the_sum_over_windows(lm):
    class Req:
        def __init__(self, *args):
            self.args = args

    adapter = harness_lm(lm, TOK)
    text = "To be, or not to be, that is the question. " * 8  # 352 bytes: three windows of 128
    (total,) = adapter.loglikelihood_rolling([Req(text)])
    ids = TOK.encode(text)
    want = sum(lm.loglikelihood([(ids[max(0, s - 128):s] or [TOK.eos_id], ids[s:s + 128])])[0][0]
               for s in range(0, len(ids), 128))
    assert math.isfinite(total) and total == pytest.approx(want, rel=1e-6)
    (out,) = adapter.generate_until([Req("Hello", {"until": ["\n"], "max_gen_toks": 5})])
    assert "\n" not in out and len(out) <= 5  # at most 5 bytes decoded (invalid UTF-8 shows as one char each)


def test_unknown_harness_task_is_one_error(lm, tasks):
    with pytest.raises(EvalError, match="knows no task no_such_task"):
        run_harness(lm, TOK, tasks="no_such_task", include_path=str(tasks))


def test_cli_runs_a_local_harness_task(lm, tasks, tmp_path):
    import subprocess
    import sys

    from integration_helpers import REPO, clean_env

    path = tmp_path / "final" / "model.pt"
    path.parent.mkdir()
    model = lm.model
    torch.save({"model": model.config.to_dict(), "attention": load_preset("mta").to_dict(),
                "state_dict": model.state_dict(), "step": 1, "data": {"kind": "text", "tokenizer": "byte"}}, path)
    result = subprocess.run([sys.executable, "-m", "mta_lab.cli", "eval", "harness", f"ckpt={tmp_path}",
                             "tasks=mta_local_mc", f"include_path={tasks}", "limit=4", "--json"],
                            capture_output=True, text=True, cwd=REPO, env=clean_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["settings"][0]["setting"] == "mta_local_mc" and 0 <= out["summary"]["acc"] <= 1
    assert out["mlflow_run_id"] is None  # no run directory with a run: nothing recorded
