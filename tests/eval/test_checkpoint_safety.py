"""Checkpoints and exports load with `weights_only=True`: the ones training writes still work in eval, generate and
resume; a file carrying a pickled callable is refused with one message, and its code never runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from integration_helpers import REPO, assert_one_line_error, clean_env, run_cli, runs_in, sqlite_uri

from mta_lab.conf import load_run_config
from mta_lab.train.entry import train


class RunsCode:
    """Unpickling it calls exec: what a malicious shared checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mta_lab.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env=clean_env(), timeout=180)


def _toy(root: Path, name: str, cache: Path, *extra: str) -> list[str]:
    return ["experiment=toy", f"name={name}", f"root={root}", f"data.cache_dir={cache}", "trainer=cpu",
            "data.toy_train_samples=2000", "data.toy_test_samples=32", "train.max_steps=6", "train.batch_size=8",
            "train.val_every=6", "train.ckpt_every=5", *extra]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, data_cache) -> Path:
    root = tmp_path_factory.mktemp("safe")
    train(load_run_config(_toy(root, "toy", data_cache)), progress=False)
    return root / "toy"


def test_the_files_training_writes_load_with_weights_only(toy_run):
    for path in (toy_run / "final" / "model.pt", *sorted((toy_run / "checkpoints").iterdir())):
        payload = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(payload["state_dict"], dict), path
    evaluated = cli("eval", "toy", f"ckpt={toy_run}", "samples=20")
    assert evaluated.returncode == 0 and "samples wrong" in evaluated.stdout, evaluated.stderr
    generated = cli("generate", f"ckpt={toy_run / 'checkpoints' / 'step-000005.ckpt'}", "prompt=abcde.fghij#ab",
                    "max_new_tokens=4")
    assert generated.returncode == 0 and "tokens in" in generated.stdout, generated.stderr


def _poisoned(source: Path, target: Path, marker: Path) -> Path:
    payload = torch.load(source, map_location="cpu", weights_only=True)
    payload["extra"] = RunsCode(marker)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, target)
    return target


@pytest.mark.parametrize(("command", "kind"), [(["eval", "toy"], "final/model.pt"),
                                               (["generate"], "checkpoints/step-000005.ckpt")])
def test_a_checkpoint_carrying_a_pickled_callable_is_refused_and_runs_nothing(toy_run, tmp_path, command, kind):
    marker = tmp_path / "marker"
    evil = _poisoned(toy_run / kind, tmp_path / "shared" / Path(kind).name, marker)
    result = cli(*command, f"ckpt={evil}", "prompt=ab") if command == ["generate"] else cli(*command, f"ckpt={evil}")
    assert_one_line_error(result, str(evil), "carries the object exec,", "weights_only=True")
    assert not marker.exists()


def test_resume_from_a_checkpoint_carrying_a_pickled_callable_is_refused_before_any_record(toy_run, tmp_path,
                                                                                          data_cache):
    marker = tmp_path / "marker"
    evil = _poisoned(toy_run / "checkpoints" / "step-000005.ckpt", tmp_path / "shared" / "step-000005.ckpt", marker)
    root = tmp_path / "runs"
    result = run_cli(*_toy(root, "resumed", data_cache, f"resume={evil}"))
    assert_one_line_error(result, str(evil), "carries the object exec,", "weights_only=True")
    assert not marker.exists()
    assert runs_in(sqlite_uri(root)) == []
