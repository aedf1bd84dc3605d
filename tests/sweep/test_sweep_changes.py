"""Every variant of a sweep is composed at `create` (a typo fails before the study exists, naming the variant),
and a sweep file changed after its study was created is reported by run/status/submit, with what changed and
what to do. No training runs here: `create` and the checks are enough (and `run` must stop before training)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_sweep_engine import cache, tiny_base  # noqa: F401 - the module fixture `cache`

from mta_lab.cli import main

VARIANTS = {"a": ["attention=transformer"], "b": ["attention=t5_all_gate"], "c": ["attention=mta"]}


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # rich wraps at the width: keep each path in one piece


def write(path: Path, cache: Path, variants: dict, **fields) -> Path:  # noqa: F811 - the imported fixture name
    data = {"name": "changing", "kind": "ablation", "base": tiny_base(cache), "seeds": [0],
            "ablation": {"variants": variants}, **fields}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def one_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and "Traceback" not in captured.err + captured.out, captured.err
    return " ".join(captured.err.split())


@pytest.mark.parametrize(("bad", "fragment"), [
    (["trainr.max_steps=5"], "trainr.max_steps"),
    (["attention=no_such_preset"], "no_such_preset"),
    (["train.batch_size=0"], "batch_size"),
])
def test_a_bad_third_variant_fails_create_and_run_before_the_study_exists(tmp_path, cache, capsys, bad, fragment):  # noqa: F811
    path = write(tmp_path / "s.yaml", cache, {**VARIANTS, "c": bad})
    sweep_dir = tmp_path / "sweep"
    for action in ("create", "run"):
        assert main(["sweep", action, str(path), "--dir", str(sweep_dir)]) == 2, action
        message = one_error(capsys)
        assert "ablation.variants.c" in message and fragment in message, message
        assert "variants.a" not in message and "variants.b" not in message, message
        assert not sweep_dir.exists()  # no study, no journal, no MLflow parent run, nothing trained


def test_a_bad_scaling_variant_is_named(tmp_path, cache, capsys):  # noqa: F811
    data = {"name": "scal", "kind": "scaling", "base": tiny_base(cache), "seeds": [0],
            "scaling": {"sizes": ["tiny", "no_such_size"], "attentions": ["transformer"],
                        "budgets": {"kind": "steps", "values": [3]}}}
    path = tmp_path / "scal.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["sweep", "create", str(path), "--dir", str(tmp_path / "sweep")]) == 2
    message = one_error(capsys)
    assert "no_such_size-transformer-steps3" in message and "no_such_size" in message, message
    assert not (tmp_path / "sweep").exists()


def test_a_changed_sweep_file_is_reported_by_run_status_and_submit(tmp_path, cache, capsys):  # noqa: F811
    path = write(tmp_path / "s.yaml", cache, VARIANTS)
    sweep_dir = tmp_path / "sweep"
    args = [str(path), "--dir", str(sweep_dir)]
    assert main(["sweep", "create", *args]) == 0
    capsys.readouterr()
    journal = (sweep_dir / "optuna.journal").read_bytes()

    # b's overrides change, c is removed, d is added, and a second seed appears
    write(path, cache, {"a": VARIANTS["a"], "b": ["attention=t5_kq_6x11"], "d": ["attention=diff"]}, seeds=[0, 1])
    for command in (["sweep", "run", *args], ["sweep", "status", *args], ["sweep", "best", *args],
                    ["sweep", "worker", *args], ["sweep", "submit", *args, "--cluster", "local"]):
        assert main(command) == 2, command
        message = one_error(capsys)
        assert f"{path} changed since the study in {sweep_dir.resolve()} was created" in message, message
        assert "variant d added" in message and "variant c removed" in message, message
        assert "variant b changed ([attention=t5_all_gate] -> [attention=t5_kq_6x11])" in message, message
        assert "seeds [0] -> [0, 1]" in message and "variant a" not in message, message
        assert "--dir" in message and "restore" in message, message  # what to do
    assert (sweep_dir / "optuna.journal").read_bytes() == journal  # nothing written to the study
    assert not (sweep_dir / "runs").exists()  # nothing trained

    write(path, cache, VARIANTS)  # restored: the study opens again
    assert main(["sweep", "status", *args]) == 0


def test_run_policy_may_change_after_create(tmp_path, cache, capsys):  # noqa: F811
    path = write(tmp_path / "s.yaml", cache, VARIANTS)
    args = [str(path), "--dir", str(tmp_path / "sweep")]
    assert main(["sweep", "create", *args]) == 0
    # raising max_failures is what a stopped sweep's message tells the user to do; a description is a note
    write(path, cache, VARIANTS, max_failures=9, max_retries=2, description="now with a note")
    assert main(["sweep", "status", *args]) == 0
    assert main(["sweep", "create", *args]) == 0
    from mta_lab.sweep.spec import SweepSpec
    from mta_lab.sweep.study import open_sweep

    attrs = open_sweep(SweepSpec.load(path), tmp_path / "sweep").study.user_attrs
    assert attrs["mta.spec"]["max_retries"] == 2 and attrs["mta.spec_hash"]  # requeue reads the current policy
