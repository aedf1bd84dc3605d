"""`mta-lab report` on what it cannot report: a tracking URI that names no database (the report creates
nothing, it only reads), and a sweep none of whose runs has finished (it says so rather than echo the name)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from mta_lab.cli import main


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # rich wraps at the width: keep each path in one piece


def one_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and "Traceback" not in captured.err + captured.out, captured.err
    return " ".join(captured.err.split())


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*"))


@pytest.mark.parametrize("kind", ["ablation", "curves"])
@pytest.mark.parametrize(("uri", "missing"), [
    ("sqlite:///mistyped/path.db", "mistyped/path.db"),  # relative to the working directory
    ("sqlite:///{tmp}/mistyped.db", "{tmp}/mistyped.db"),  # the folder exists, the database does not
    ("file://{tmp}/no_mlruns", "{tmp}/no_mlruns"),
    ("{tmp}/no_mlruns", "{tmp}/no_mlruns"),
])
def test_report_uri_naming_no_database_creates_nothing(tmp_path, monkeypatch, capsys, kind, uri, missing):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    uri, missing = uri.format(tmp=work), missing.format(tmp=work)
    assert main(["report", kind, "--uri", uri, "--out", str(tmp_path / "reports")]) == 2
    message = one_error(capsys)
    assert f"no MLflow tracking store at {(work / missing).resolve()}" in message, message
    assert "creates nothing" in message and "--root" in message, message
    assert files_under(work) == [] and not (tmp_path / "reports").exists()


def test_report_uri_to_a_sqlite_file_that_is_not_mlflow_leaves_it_alone(tmp_path, capsys):
    path = tmp_path / "optuna.db"
    with sqlite3.connect(path) as db:
        db.execute("create table studies (id integer)")
    before = path.read_bytes()
    assert main(["report", "ablation", "--uri", f"sqlite:///{path}", "--out", str(tmp_path / "reports")]) == 2
    assert f"{path} is not an MLflow tracking database" in one_error(capsys)
    assert path.read_bytes() == before


def test_report_of_a_sweep_with_no_finished_run_says_no_run_finished(tmp_path, capsys):
    sweep = {"name": "fresh", "kind": "ablation", "base": ["experiment=tiny", "trainer=cpu"],
             "ablation": {"variants": {"a": ["attention=transformer"], "b": ["attention=mta"]}}}
    path = tmp_path / "fresh.yaml"
    path.write_text(yaml.safe_dump(sweep))
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "create", str(path), "--dir", str(sweep_dir)]) == 0  # the MLflow parent run, no trial
    capsys.readouterr()
    assert main(["report", "ablation", "--root", str(sweep_dir), "--experiment", "fresh", "--sweep", "fresh",
                 "--out", str(tmp_path / "reports")]) == 2
    message = one_error(capsys)
    assert "no run of sweep 'fresh' has finished" in message and "no training run yet" in message, message
    assert "mta-lab sweep run" in message and "sweeps in this experiment" not in message, message
