"""End to end: tiny checkpoints trained here, `mta-lab eval niah|babilong|zeroshot` into their MLflow runs, the
eval report and the ablation's eval columns drawn from them; bad input exits 2 and records nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from integration_helpers import REPO, assert_one_line_error, clean_env, client_for, run_cli, sqlite_uri, tiny

NIAH = ["contexts=160,220", "needles=1,2", "depths=0,1", "samples=2", "batch_size=4"]
BABILONG = ["tasks=qa1,qa4", "lengths=0,200", "samples=2", "facts=4"]


def mta_lab(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mta_lab.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env=clean_env(), timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_cache) -> Path:
    root = tmp_path_factory.mktemp("evalruns")
    for attention in ("transformer", "mta"):
        result = run_cli(*tiny(root, attention, data_cache, max_steps=3), f"attention={attention}",
                         "model.n_layers=4")
        assert result.returncode == 0, result.stderr
    return root


def test_niah_and_babilong_go_to_the_checkpoints_mlflow_runs_and_the_report_draws_them(runs, data_cache, tmp_path):
    client = client_for(sqlite_uri(runs))
    for attention in ("transformer", "mta"):
        run_dir = runs / attention
        niah = mta_lab("eval", "niah", f"ckpt={run_dir}", *NIAH, f"cache_dir={data_cache}", "--json",
                       "--export", str(tmp_path / f"{attention}.jsonl"))
        assert niah.returncode == 0, niah.stderr
        out = json.loads(niah.stdout)
        run_id = (run_dir / "mlflow_run_id").read_text().strip()
        assert out["mlflow_run_id"] == run_id and len(out["settings"]) == 8
        samples = [json.loads(line) for line in (tmp_path / f"{attention}.jsonl").read_text().splitlines()]
        assert len(samples) == 16 and all(s["prompt_tokens"] == s["meta"]["context"] for s in samples)
        assert all(s["expected"] in s["prompt"] for s in samples)
        bab = mta_lab("eval", "babilong", f"ckpt={run_dir}/final/model.pt", *BABILONG, f"cache_dir={data_cache}")
        assert bab.returncode == 0, bab.stderr
        assert f"logged to MLflow run {run_id}" in " ".join(bab.stdout.split())
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"  # left as training left it
        metrics = run.data.metrics
        assert {"eval/niah/acc", "eval/niah/c220_n2_d1/acc", "eval/babilong/acc", "eval/babilong/qa4_len200/acc",
                "eval/babilong/acc_len0"} <= set(metrics)
        assert metrics["eval/niah/acc"] == pytest.approx(out["summary"]["acc"])
        artifacts = {a.path for a in client.list_artifacts(run_id, "eval")}
        assert {"eval/niah.json", "eval/niah.csv", "eval/babilong.json", "eval/babilong.csv"} <= artifacts
    report = mta_lab("report", "evals", "--root", str(runs), "--out", str(tmp_path / "reports"), "--quiet")
    assert report.returncode == 0, report.stderr
    folder = tmp_path / "reports" / "evals"
    assert {"niah_heatmaps.png", "niah_needles.png", "babilong.png", "report.md", "report.html"} <= \
        {p.name for p in folder.iterdir()}
    md = (folder / "report.md").read_text()
    assert "ctx 220 / 2 needles" in md and "qa4" in md and "mta" in md and "transformer" in md
    ablation = mta_lab("report", "ablation", "--root", str(runs), "--metric", "final/train_loss", "--metrics",
                       "eval/niah/acc,eval/babilong/acc", "--baseline", "transformer", "--out",
                       str(tmp_path / "reports"), "--quiet", "--n-boot", "200")
    assert ablation.returncode == 0, ablation.stderr
    md = (tmp_path / "reports" / "ablation" / "report.md").read_text()
    assert "eval/niah/acc (n)" in md and "eval/babilong/acc Δ [95% CI]" in md


@pytest.mark.parametrize("args,fragments", [
    (["niah", "contexts=4096"], ["contexts=4096: the checkpoint's context is 256 tokens", "use contexts="]),
    (["niah", "depths=0,2"], ["depths=", "each in [0, 1]"]),
    (["niah", "samples=0"], ["samples=0: must be a positive integer"]),
    (["niah", "colour=red"], ["'colour=red': expected KEY=VALUE"]),
    (["babilong", "tasks=qa9"], ["tasks='qa9': allowed: qa1, qa2, qa3, qa4, qa5"]),
    (["babilong", "lengths=4096"], ["lengths=4096: the checkpoint's context is 256 tokens"]),
    (["zeroshot"], ["data.path= is required"]),
    (["lambada", "data.path=/nonexistent.jsonl"], ["data.path=/nonexistent.jsonl: no such file"]),
    (["niah", "track=maybe"], ["track='maybe': allowed: auto"]),
    (["niah", "dtype=fp8"], ["dtype='fp8': allowed: auto, float32, bfloat16"]),
])
def test_bad_input_is_one_message_exit_2_and_nothing_recorded(runs, data_cache, args, fragments):
    run_id = (runs / "mta" / "mlflow_run_id").read_text().strip()
    client = client_for(sqlite_uri(runs))
    before = client.get_run(run_id).data.metrics
    cache = [f"cache_dir={data_cache}"] if args[0] in ("niah", "babilong") else []
    result = mta_lab("eval", args[0], f"ckpt={runs / 'mta'}", *args[1:], *cache)
    assert_one_line_error(result, *fragments)
    assert client.get_run(run_id).data.metrics == before


def test_unknown_task_exits_2(runs):
    result = mta_lab("eval", "mmlu", f"ckpt={runs / 'mta'}")
    assert result.returncode == 2 and "invalid choice: 'mmlu'" in result.stderr


def test_zeroshot_on_a_local_file_with_a_new_linked_run(runs, tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps({"context": f"Q{i}:", "choices": [" yes", " no"], "gold": i % 2}) + "\n"
                            for i in range(4)))
    result = mta_lab("eval", "zeroshot", f"ckpt={runs / 'transformer'}", f"data.path={path}", "track=new", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    train_id = (runs / "transformer" / "mlflow_run_id").read_text().strip()
    run = client_for(sqlite_uri(runs)).get_run(out["mlflow_run_id"])
    assert out["mlflow_run_id"] != train_id and run.info.status == "FINISHED"
    assert run.data.tags["mta.eval_of"] == train_id and run.data.tags["mta.role"] == "eval"
    assert run.data.metrics["eval/zeroshot/mc/acc"] == out["settings"][0]["acc"]
