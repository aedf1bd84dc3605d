"""`mta-lab demo` end to end on a two-trial ablation (the real demo file is composed by test_sweep_files)."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser

import pytest
import yaml
from integration_helpers import REPO, clean_env


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src", ""))


@pytest.mark.slow
def test_demo_runs_an_ablation_and_writes_its_report(tmp_path, data_cache):
    demo = yaml.safe_load((REPO / "sweeps" / "tiny" / "demo.yaml").read_text())
    demo["base"] = ["experiment=tiny", "train.max_steps=4", "train.val_every=4", "train.ckpt_every=4",
                    "train.batch_size=2", "train.seq_len=32", "train.val_batches=2", f"data.cache_dir={data_cache}"]
    demo["ablation"]["variants"] = {"transformer": ["attention=transformer"], "mta": ["attention=mta"]}
    sweep_file = tmp_path / "demo_small.yaml"
    sweep_file.write_text(yaml.safe_dump(demo, sort_keys=False))  # variant order: the baseline first

    result = subprocess.run([sys.executable, "-m", "mta_lab.cli", "demo", "--sweep", str(sweep_file), "--dir",
                             str(tmp_path / "sweep"), "--out", str(tmp_path / "reports"), "--workers", "2"],
                            capture_output=True, text=True, cwd=REPO, env=clean_env(), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "4/4 trials" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    assert "/#/experiments/" in out and "?workflowType=machine_learning" in out  # opens on the runs, not GenAI

    report = tmp_path / "reports" / "demo"
    markdown = (report / "report.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| transformer") or line.startswith("| mta")]
    assert len(rows) == 2 and rows[0].startswith("| transformer")  # the baseline first
    assert "seed-to-seed noise" in markdown  # the demo says what it cannot show
    meta = json.loads((report / "meta.json").read_text())
    assert len(meta["run_ids"]) == 4
    images = _Images()
    images.feed((report / "report.html").read_text())
    assert images.sources and all(src.startswith("data:image/png;base64,") for src in images.sources)

    again = subprocess.run([sys.executable, "-m", "mta_lab.cli", "demo", "--sweep", str(sweep_file), "--dir",
                            str(tmp_path / "sweep"), "--out", str(tmp_path / "reports")],
                           capture_output=True, text=True, cwd=REPO, env=clean_env(COLUMNS="80"), timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr  # a rerun keeps the finished trials
    text = again.stdout
    closing = text[text.index("Ablation: final/val_loss vs transformer"):text.index("\nreport: ")]
    assert "…" not in closing and max(map(len, closing.splitlines())) <= 80  # readable in 80 columns, uncut
    assert "transformer" in closing.split() and "mta" in closing.split()
    assert json.loads((report / "meta.json").read_text())["run_ids"] == meta["run_ids"]
