"""Real process kills: `mta-lab train` is SIGKILLed after a checkpoint, rerun with resume=auto, and must end as one
FINISHED MLflow run whose loss history equals an uninterrupted run's."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from integration_helpers import (
    REPO,
    clean_env,
    cli_command,
    client_for,
    history,
    run_cli,
    runs_in,
    sqlite_uri,
    steps_of,
)

from mta_lab.conf import load_run_config
from mta_lab.train.entry import train

STEPS = 60
# Batch 16 x 128 tokens: ~60 ms a step on 2 cores, so the run is still going well after checkpoint 30 appears.
TRAIN = {"max_steps": STEPS, "ckpt_every": 10, "log_every": 1, "batch_size": 16, "seq_len": 128, "val_every": 1000}


def _overrides(root: Path, name: str, cache: Path, **train_settings: object) -> list[str]:
    return [f"name={name}", f"root={root}", f"data.cache_dir={cache}", "trainer=cpu",
            *(f"train.{k}={v}" for k, v in (TRAIN | train_settings).items())]


def _checkpoint_steps(run_dir: Path) -> list[int]:
    directory = run_dir / "checkpoints"
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := re.fullmatch(r"step-(\d+)\.ckpt", p.name)))


def _kill_after_checkpoint(args: list[str], root: Path, run_dir: Path, min_step: int, log: Path,
                           timeout: float = 180) -> int:
    """Start the CLI; as soon as checkpoint `min_step` exists, SIGKILL it. Returns the newest checkpoint step."""
    with open(log, "w") as out:
        proc = subprocess.Popen([*cli_command(*args), "--no-progress"], stdout=out, stderr=subprocess.STDOUT,
                                cwd=REPO, env=clean_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the run ended (exit {proc.returncode}) before it could be killed:\n{log.read_text()}")
            steps = _checkpoint_steps(run_dir)
            if steps and steps[-1] >= min_step:
                break  # kill at once: any moment must be safe (a checkpoint is written after its step's metrics)
            time.sleep(0.02)
        else:
            pytest.fail(f"no checkpoint >= {min_step} after {timeout} s:\n{log.read_text()}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        return _checkpoint_steps(run_dir)[-1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_sigkill_then_resume_auto_gives_one_finished_run_with_the_uninterrupted_history(tmp_path, data_cache):
    root = tmp_path / "runs"
    run_dir = root / "killed"
    args = _overrides(root, "killed", data_cache)
    uri = sqlite_uri(root)

    killed_at = _kill_after_checkpoint(args, root, run_dir, 30, tmp_path / "first.log")
    assert 30 <= killed_at < STEPS
    assert not (run_dir / "final" / "model.pt").exists()
    [interrupted] = runs_in(uri)
    assert interrupted.info.status == "RUNNING"  # a SIGKILLed run cannot close itself
    client = client_for(uri)
    # Checkpoint k is written after step k's metrics (logged at Lightning's 0-based index k - 1).
    assert max(steps_of(history(client, interrupted.info.run_id, "train/loss"))) >= killed_at - 1

    resumed = run_cli(*args, "resume=auto")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"step-{killed_at:06d}.ckpt" in "".join(resumed.stdout.split())  # "resumed from <that checkpoint>"

    assert len(runs_in(uri, filter_string="attributes.run_name = 'killed'")) == 1
    by_dir = runs_in(uri, filter_string=f"tags.`mta.run_dir` = '{run_dir.resolve()}'")
    assert [r.info.run_id for r in by_dir] == [interrupted.info.run_id]
    run = client.get_run(interrupted.info.run_id)
    assert run.info.status == "FINISHED"
    assert "mta.failure_reason" not in run.data.tags
    assert run.data.metrics["final/steps"] == STEPS
    assert (run_dir / "final" / "model.pt").exists()
    assert _checkpoint_steps(run_dir)[-1] == STEPS

    loss = history(client, run.info.run_id, "train/loss")
    steps = steps_of(loss)
    assert len(steps) == len(set(steps)) == STEPS  # no duplicates
    assert steps == list(range(steps[0], steps[0] + STEPS))  # no gaps
    for key in ("lr", "tokens_seen"):
        assert steps_of(history(client, run.info.run_id, key)) == steps, key

    # The same run, uninterrupted (in-process, same overrides, another name).
    reference = train(load_run_config(_overrides(root, "uninterrupted", data_cache)), progress=False)
    expected = history(client, reference.run_id, "train/loss")
    assert steps_of(expected) == steps
    assert [v for _, v in loss] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert len(runs_in(uri)) == 2


# A callback that SIGKILLs its own process right after checkpoint `step` is written: Lightning runs Checkpoint
# callbacks last and logs the step's metrics after every callback, so this is the window between the two writes.
_SELF_KILL = textwrap.dedent("""
    import os, signal, sys
    from lightning.pytorch.callbacks import Callback
    from mta_lab.conf import load_run_config
    from mta_lab.train.entry import train

    class KillAfterCheckpoint(Callback):  # runs after StepCheckpoint, which saves step k at batch k + 1's start
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == int(os.environ["KILL_AT"]):
                os.kill(os.getpid(), signal.SIGKILL)

    train(load_run_config(sys.argv[1:]), progress=False, extra_callbacks=[KillAfterCheckpoint()])
""")


def test_a_kill_right_after_a_checkpoint_leaves_no_gap_in_the_history(tmp_path, data_cache):
    args = _overrides(tmp_path, "window", data_cache, max_steps=30, batch_size=4, seq_len=64)
    killed = subprocess.run([sys.executable, "-c", _SELF_KILL, *args], capture_output=True, text=True, cwd=REPO,
                            env=clean_env(KILL_AT="20"), timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _checkpoint_steps(tmp_path / "window")[-1] == 20

    result = train(load_run_config([*args, "resume=auto"]), progress=False)
    assert result.resumed_from.endswith("step-000020.ckpt")
    run = client_for(result.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and len(runs_in(result.tracking_uri)) == 1
    steps = steps_of(history(client_for(result.tracking_uri), result.run_id, "train/loss"))
    assert len(steps) == len(set(steps))
    assert steps == list(range(steps[0], steps[0] + 30))


def test_resume_from_an_early_checkpoint_trains_on_the_uninterrupted_batches(tmp_path, data_cache):
    args = _overrides(tmp_path, "full", data_cache, max_steps=40, batch_size=4, seq_len=64, keep_checkpoints=10)
    full = train(load_run_config(args), progress=False)
    early = tmp_path / "full" / "checkpoints" / "step-000010.ckpt"
    resumed = train(load_run_config([*args, "name=from10", f"resume='{early}'"]), progress=False)
    client = client_for(full.tracking_uri)
    expected = dict(history(client, full.run_id, "train/loss"))
    got = history(client, resumed.run_id, "train/loss")
    assert steps_of(got) == list(range(10, 40))
    # the batches of the uninterrupted run, step for step (no epoch restart after the resume)
    assert [v for _, v in got] == pytest.approx([expected[s] for s, _ in got], rel=1e-6)
