"""`mta-lab sweep ... --storage URL` replaces the sweep file's storage (cluster sweeps keep theirs in a profile)."""

from __future__ import annotations

from pathlib import Path

import optuna

from mta_lab.cli import main

TABLE5_CPU = str(Path(__file__).resolve().parents[2] / "sweeps" / "tiny" / "table5_cpu.yaml")


def test_storage_option_points_every_action_at_that_database(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    args = [TABLE5_CPU, "--dir", str(tmp_path / "sweep"), "--storage", url]
    assert main(["sweep", "create", *args]) == 0
    study = optuna.load_study(study_name="table5_cpu", storage=url)  # in the given database, not a journal file
    assert len(study.trials) == 10
    assert not (tmp_path / "sweep" / "optuna.journal").exists()
    assert main(["sweep", "status", *args]) == 0
    assert "10" in capsys.readouterr().out  # ten waiting trials


def test_a_bad_storage_url_is_one_clear_error(tmp_path, capsys):
    assert main(["sweep", "status", TABLE5_CPU, "--storage", "bad-url"]) == 2
    assert "must be null (a journal file) or an SQLAlchemy URL" in " ".join(capsys.readouterr().err.split())


def test_gpu_ids_are_parsed_and_bad_ones_rejected_before_any_work(tmp_path, capsys):
    from mta_lab.sweep.local import parse_gpu_ids

    assert parse_gpu_ids("0, 1,2") == ["0", "1", "2"]
    assert parse_gpu_ids(None) is None
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "run", TABLE5_CPU, "--dir", str(sweep_dir), "--workers", "2", "--gpus", "0,x"]) == 2
    assert "expected a comma list of GPU ids" in capsys.readouterr().err
    assert not sweep_dir.exists()  # nothing created
