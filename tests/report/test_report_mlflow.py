"""Reports from real MLflow runs made here (2 variants x 2 seeds of tiny CPU trainings): content, files, HTML with
embedded plots, and a clear message for each kind of bad input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from html.parser import HTMLParser

import pandas as pd
import pytest
from integration_helpers import REPO, clean_env, sqlite_uri

from mta_lab.conf import load_run_config
from mta_lab.report import ReportError
from mta_lab.report.build import ablation_report, curves_report, kernels_report, scaling_report
from mta_lab.report.collect import RunQuery
from mta_lab.report.render import write_report
from mta_lab.train.entry import train

pytestmark = pytest.mark.slow  # four tiny trainings: ~20 s on 2 CPU cores

VARIANTS = ("transformer", "mta")


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, data_cache):
    root = tmp_path_factory.mktemp("report_runs")
    trial = 0
    for variant in VARIANTS:  # the baseline first, as a sweep queues it
        for seed in (0, 1):
            config = load_run_config([
                f"name={variant}-s{seed}", f"root={root}", f"data.cache_dir={data_cache}", "trainer=cpu",
                f"attention={variant}", f"train.seed={seed}", "train.max_steps=3", "train.batch_size=2",
                "train.seq_len=32", "train.val_every=3", "train.log_every=1"])
            tags = {"mta.sweep": "s1", "mta.trial": str(trial), "mta.variant": variant, "mta.seed": str(seed)}
            train(dataclasses.replace(config, tracking=dataclasses.replace(config.tracking, tags=tags)),
                  progress=False)
            trial += 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_uri(root))
    exp = client.get_experiment_by_name("mta-lab")
    dead = client.create_run(exp.experiment_id, tags={"mta.sweep": "dead", "mta.variant": "mta", "mta.seed": "0"},
                             run_name="dead-run")
    client.set_terminated(dead.info.run_id, status="FAILED")
    return root


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
        self._in_cell = tag in ("td", "b") or (self._in_cell and tag == "b")

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells.append(data)


def _query(root, **kw) -> RunQuery:
    return RunQuery(sqlite_uri(root), **{"sweep": "s1", **kw})


def test_ablation_report_from_mlflow_runs(runs_root, tmp_path):
    report = ablation_report(_query(runs_root), "final/val_loss", n_boot=2000, seed=0)
    table = report.tables[0]
    data = table.data
    assert list(data["variant"]) == ["transformer", "mta"]  # baseline (first trial) first
    assert list(data["n_seeds"]) == [2, 2] and list(data["failed"]) == [0, 0]
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(sqlite_uri(runs_root)).search_runs(
        [MlflowClient(sqlite_uri(runs_root)).get_experiment_by_name("mta-lab").experiment_id],
        filter_string="tags.`mta.sweep` = 's1'")
    loss = {(r.data.tags["mta.variant"], r.data.tags["mta.seed"]): r.data.metrics["final/val_loss"] for r in runs}
    delta = ((loss["mta", "0"] - loss["transformer", "0"]) + (loss["mta", "1"] - loss["transformer", "1"])) / 2
    mta = data.iloc[1]
    assert mta["mean"] == pytest.approx((loss["mta", "0"] + loss["mta", "1"]) / 2)
    assert mta["delta"] == pytest.approx(delta)
    assert mta["ci_lo"] <= mta["delta"] <= mta["ci_hi"]
    assert mta["ci_crosses_zero"] == (mta["ci_lo"] <= 0 <= mta["ci_hi"])
    assert ("†" in table.display.iloc[1]["Δ [95% CI]"]) == mta["ci_crosses_zero"]
    assert mta["params_delta_pct"] > 0 and mta["flops_per_token_delta_pct"] > 0  # MTA adds kernels and FLOPs
    assert table.display.iloc[0]["kq pre"] == "×" and table.display.iloc[1]["kq pre"] == "✓"  # Table 5 layout
    best = int(data["mean"].idxmin())
    assert table.bold == {(best, "final/val_loss")}

    out = write_report(report, tmp_path)
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.html", "report.tex", "ablation.csv",
                                                "ablation.png", "meta.json"}
    meta = json.loads((out / "meta.json").read_text())
    assert sorted(meta["run_ids"]) == sorted(r.info.run_id for r in runs) and meta["query"]["sweep"] == "s1"
    assert meta["git_sha"] and meta["created"]
    csv = pd.read_csv(out / "ablation.csv")
    assert list(csv["variant"]) == ["transformer", "mta"]
    parser = _Images()
    parser.feed((out / "report.html").read_text())
    assert parser.srcs and all(s.startswith("data:image/png;base64,iVBOR") for s in parser.srcs)
    assert "transformer" in parser.cells and "mta" in parser.cells
    assert "**" in (out / "report.md").read_text() and "\\checkmark" in (out / "report.tex").read_text()


def test_scaling_report_says_too_few_points(runs_root):
    report = scaling_report(_query(runs_root), n_boot=20)
    fits = report.tables[0]
    assert set(fits.data["family"]) == {"transformer", "mta"} and (fits.data["α"] == "—").all()
    assert any("too few points" in n for n in fits.notes)
    assert set(report.figures) == {"scaling_compute", "scaling_params"}


def test_curves_and_kernels_reports(runs_root, tmp_path):
    report = curves_report(_query(runs_root, tags={"mta.variant": "mta"}), ["train/loss", "val/loss"])
    history = report.tables[0].data
    assert history["run_id"].nunique() == 2 and set(history["key"]) == {"train/loss", "val/loss"}
    assert len(history[history["key"] == "train/loss"]) == 6  # 3 steps x 2 runs
    kernels = kernels_report(str(runs_root / "mta-s0"))
    assert {"kq_pre", "kq_post", "head_mixing"} <= set(kernels.figures)
    summary = kernels.tables[0].data
    assert set(summary["kernel"]) == {"kq_pre", "kq_post", "head_pre", "head_post"}
    out = write_report(kernels, tmp_path)
    parser = _Images()
    parser.feed((out / "report.html").read_text())
    assert len(parser.srcs) == 3
    with pytest.raises(ReportError, match="no MTA kernels"):
        kernels_report(str(runs_root / "transformer-s0"))


def test_bad_input_each_has_a_clear_message(runs_root):
    with pytest.raises(ReportError, match=r"experiment 'nope' does not exist.*'mta-lab'"):
        ablation_report(_query(runs_root, experiment="nope"))
    with pytest.raises(ReportError, match=r"no FINISHED runs for .*sweep 'dead' \(1 FAILED\)"):
        ablation_report(_query(runs_root, sweep="dead"))
    with pytest.raises(ReportError, match=r"4 of 4 runs lack the metric 'final/val_error_rate': .*transformer-s0 \("):
        ablation_report(_query(runs_root), "final/val_error_rate")
    with pytest.raises(ReportError, match=r"no training runs match .*sweep 'other'.*sweeps in this experiment: dead"):
        ablation_report(_query(runs_root, sweep="other"))


def test_cli_writes_the_report_and_fails_cleanly(runs_root, tmp_path):
    base = [sys.executable, "-m", "mta_lab.cli", "report"]
    ok = subprocess.run([*base, "ablation", "--root", str(runs_root), "--sweep", "s1", "--out", str(tmp_path),
                         "--n-boot", "500"], capture_output=True, text=True, cwd=REPO, env=clean_env(), timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "transformer" in ok.stdout and (tmp_path / "ablation-s1" / "report.html").is_file()
    bad = subprocess.run([*base, "ablation", "--root", str(runs_root), "--experiment", "nope"],
                         capture_output=True, text=True, cwd=REPO, env=clean_env(), timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    assert "does not exist" in bad.stderr
