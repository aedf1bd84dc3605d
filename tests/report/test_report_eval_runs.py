"""Eval runs written beside their checkpoints' runs (`mta-lab eval ... track=new`: mta.role=eval, mta.eval_of) join
their training runs' rows in the reports: `report ablation --metrics eval/...` and `report evals` show them beside
the training metrics, one row per training run (no extra seed), the value logged last winning; real MLflow sqlite,
tiny checkpoints trained here, the CLI in-process."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pandas as pd
import pytest
from integration_helpers import client_for, sqlite_uri

from mta_lab.cli import main
from mta_lab.conf import load_run_config
from mta_lab.report.collect import RunQuery, collect_runs
from mta_lab.train.entry import train

pytestmark = pytest.mark.slow  # two tiny trainings and six small evals: ~1 min on 2 CPU cores

VARIANTS = ("transformer", "mta")
NIAH = ["contexts=160", "needles=1,2", "depths=0,1", "samples=2", "batch_size=4"]
BABILONG = ["tasks=qa1,qa4", "lengths=0,200", "samples=2", "facts=4"]


@pytest.fixture(scope="module")
def root(tmp_path_factory, data_cache):
    root = tmp_path_factory.mktemp("eval_runs")
    for variant in VARIANTS:
        config = load_run_config([
            f"name={variant}", f"root={root}", f"data.cache_dir={data_cache}", "trainer=cpu", f"attention={variant}",
            "model.n_layers=4", "train.seed=0", "train.max_steps=3", "train.batch_size=2", "train.seq_len=32",
            "train.val_every=3", "train.log_every=1"])
        tags = {"mta.variant": variant, "mta.seed": "0"}
        train(dataclasses.replace(config, tracking=dataclasses.replace(config.tracking, tags=tags)), progress=False)
    return root


def eval_json(capsys, task: str, *args: str) -> dict:
    capsys.readouterr()
    assert main(["eval", task, *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def run_id_of(root, variant: str) -> str:
    return (root / variant / "mlflow_run_id").read_text().strip()


def test_linked_eval_runs_join_their_training_rows_in_ablation_and_evals_reports(root, data_cache, tmp_path,
                                                                                 capsys):
    uri = sqlite_uri(root)
    cache = f"cache_dir={data_cache}"
    # transformer: both tasks in new runs linked to it; mta: niah into its own run, babilong in a linked run
    linked = {
        "transformer": [eval_json(capsys, "niah", f"ckpt={root / 'transformer'}", *NIAH, cache, "track=new"),
                        eval_json(capsys, "babilong", f"ckpt={root / 'transformer'}", *BABILONG, cache, "track=new")],
        "mta": [eval_json(capsys, "babilong", f"ckpt={root / 'mta' / 'final' / 'model.pt'}", *BABILONG, cache,
                          "track=new")],
    }
    own = eval_json(capsys, "niah", f"ckpt={root / 'mta'}", *NIAH, cache)
    assert own["mlflow_run_id"] == run_id_of(root, "mta")
    client = client_for(uri)
    for variant, outs in linked.items():
        for out in outs:
            run = client.get_run(out["mlflow_run_id"])
            assert run.data.tags["mta.eval_of"] == run_id_of(root, variant) and run.data.tags["mta.role"] == "eval"
            assert "final/train_loss" not in run.data.metrics  # the eval run holds only eval/* metrics

    runs = collect_runs(RunQuery(uri))
    assert sorted(runs["run_id"]) == sorted(run_id_of(root, v) for v in VARIANTS)  # no row for an eval run
    by_variant = runs.set_index("variant")
    t, m = by_variant.loc["transformer"], by_variant.loc["mta"]
    assert t["metrics.eval/niah/acc"] == pytest.approx(linked["transformer"][0]["summary"]["acc"])
    assert t["metrics.eval/babilong/qa4_len200/acc"] == pytest.approx(
        next(r["acc"] for r in linked["transformer"][1]["settings"] if r["setting"] == "qa4_len200"))
    assert set(t["eval_runs"].split(",")) == {o["mlflow_run_id"] for o in linked["transformer"]}
    assert m["metrics.eval/niah/acc"] == pytest.approx(own["summary"]["acc"])
    assert m["eval_runs"] == linked["mta"][0]["mlflow_run_id"]
    assert pd.notna(t["metrics.final/train_loss"]) and pd.notna(m["metrics.eval/babilong/acc"])

    out = tmp_path / "reports"
    assert main(["report", "ablation", "--root", str(root), "--metric", "final/train_loss", "--metrics",
                 "eval/niah/acc,eval/babilong/acc", "--baseline", "transformer", "--out", str(out), "--quiet",
                 "--n-boot", "100"]) == 0
    table = pd.read_csv(out / "ablation" / "ablation.csv")
    assert dict(zip(table["variant"], table["n_seeds"], strict=True)) == {"transformer": 1, "mta": 1}
    assert table["diverged"].sum() == 0 and table["failed"].sum() == 0  # an eval run is no seed of its own
    evals = pd.read_csv(out / "ablation" / "eval_columns.csv")
    t_row = evals.set_index("variant").loc["transformer"]
    assert t_row["eval/niah/acc/n"] == 1 and t_row["eval/babilong/acc/n"] == 1
    assert t_row["eval/niah/acc/mean"] == pytest.approx(linked["transformer"][0]["summary"]["acc"])
    md = (out / "ablation" / "report.md").read_text()
    assert "eval/babilong/acc Δ [95% CI]" in md and "3 eval run(s) (mta.role=eval" in md

    assert main(["report", "evals", "--root", str(root), "--out", str(out), "--quiet"]) == 0
    md = (out / "evals" / "report.md").read_text()
    niah = pd.read_csv(out / "evals" / "niah.csv").set_index("variant")
    assert set(niah.index) == set(VARIANTS) and "ctx 160 / 2 needles" in md
    babilong = pd.read_csv(out / "evals" / "babilong.csv")
    assert set(babilong["variant"]) == set(VARIANTS) and set(babilong["qa"]) == {"qa1", "qa4"}


def test_the_value_logged_last_wins_and_an_unselected_runs_evals_stay_out(root, data_cache, capsys):
    uri = sqlite_uri(root)
    client = client_for(uri)
    mta_id = run_id_of(root, "mta")
    client.log_metric(mta_id, "eval/babilong/acc", 0.625, step=3)  # into the training run, after its linked run
    assert collect_runs(RunQuery(uri)).set_index("variant").loc["mta", "metrics.eval/babilong/acc"] == 0.625
    again = eval_json(capsys, "babilong", f"ckpt={root / 'mta'}", *BABILONG, f"cache_dir={data_cache}", "track=new")
    row = collect_runs(RunQuery(uri)).set_index("variant").loc["mta"]
    assert row["metrics.eval/babilong/acc"] == pytest.approx(again["summary"]["acc"])  # the newer linked run
    assert again["mlflow_run_id"] in row["eval_runs"].split(",")

    only_mta = collect_runs(RunQuery(uri, run_ids=(mta_id[:10],)))
    assert list(only_mta["run_id"]) == [mta_id]  # the transformer's eval runs are not rows of their own


def test_an_eval_run_of_a_checkpoint_without_a_training_run_is_a_row_of_its_own(root, data_cache, tmp_path, capsys):
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(root / "transformer" / "final" / "model.pt", loose / "model.pt")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = eval_json(capsys, "niah", f"ckpt={loose / 'model.pt'}", *NIAH, f"cache_dir={data_cache}", "track=new",
                    f"tracking_uri={uri}")
    runs = collect_runs(RunQuery(uri))
    assert list(runs["run_id"]) == [out["mlflow_run_id"]]
    assert runs.loc[0, "metrics.eval/niah/acc"] == pytest.approx(out["summary"]["acc"])
    assert runs.loc[0, "tags.mta.eval_of"] == str((loose / "model.pt").resolve())
