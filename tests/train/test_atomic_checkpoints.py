"""Checkpoints are written atomically and verified when `resume=auto` lists them: a damaged newest checkpoint is
skipped with one warning (the previous one used), a partial temporary file of a killed write is never picked."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from integration_helpers import REPO, clean_env, client_for, history, runs_in, steps_of, tiny

from mta_lab.conf import load_run_config
from mta_lab.train.entry import train

STEPS = 30

# SIGKILLs its own process at the start of batch `KILL_AT` + 1, right after checkpoint KILL_AT was written.
_SELF_KILL = textwrap.dedent("""
    import os, signal, sys
    from lightning.pytorch.callbacks import Callback
    from mta_lab.conf import load_run_config
    from mta_lab.train.entry import train

    class KillAfterCheckpoint(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == int(os.environ["KILL_AT"]):
                os.kill(os.getpid(), signal.SIGKILL)

    train(load_run_config(sys.argv[1:]), progress=False, extra_callbacks=[KillAfterCheckpoint()])
""")


def _killed_run(tmp_path, data_cache, name: str, kill_at: int) -> list[str]:
    args = tiny(tmp_path, name, data_cache, max_steps=STEPS, keep_checkpoints=3)
    killed = subprocess.run([sys.executable, "-c", _SELF_KILL, *args], capture_output=True, text=True, cwd=REPO,
                            env=clean_env(KILL_AT=str(kill_at)), timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    return args


def _assert_one_finished_run_without_gaps(result) -> None:
    client = client_for(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and len(runs_in(result.tracking_uri)) == 1
    steps = steps_of(history(client, result.run_id, "train/loss"))
    assert steps == list(range(STEPS))  # every step exactly once


def test_a_truncated_newest_checkpoint_is_skipped_and_the_previous_one_resumed(tmp_path, data_cache, capsys):
    args = _killed_run(tmp_path, data_cache, "trunc", kill_at=20)
    checkpoints = tmp_path / "trunc" / "checkpoints"
    newest = checkpoints / "step-000020.ckpt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 3])  # what a kill during a non-atomic copy leaves

    result = train(load_run_config([*args, "resume=auto"]), progress=False)
    assert result.resumed_from.endswith("step-000010.ckpt")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "step-000020.ckpt" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning:") and "step-000010.ckpt" in warnings[0], warnings
    _assert_one_finished_run_without_gaps(result)
    assert (tmp_path / "trunc" / "final" / "model.pt").is_file()


def test_a_partial_temporary_file_of_a_killed_write_is_never_resumed_and_is_removed(tmp_path, data_cache):
    args = _killed_run(tmp_path, data_cache, "partial", kill_at=20)
    checkpoints = tmp_path / "partial" / "checkpoints"
    good = (checkpoints / "step-000020.ckpt").read_bytes()
    # A kill while checkpoint 30 (and the export) was being written: partial files beside the targets.
    partial = checkpoints / "step-000030.ckpt.tmp"
    partial.write_bytes(good[:4096])
    (tmp_path / "partial" / "final").mkdir()
    partial_export = tmp_path / "partial" / "final" / "model.pt.tmp"
    partial_export.write_bytes(good[:4096])

    result = train(load_run_config([*args, "resume=auto"]), progress=False)
    assert result.resumed_from.endswith("step-000020.ckpt")
    _assert_one_finished_run_without_gaps(result)
    leftovers = [p.name for p in (tmp_path / "partial").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000010.ckpt", "step-000020.ckpt",
                                                           "step-000030.ckpt"]


# The real CLI under an audit hook that records every rename and copy of a file (Python's own audit events).
_RECORD_MOVES = textwrap.dedent("""
    import os, runpy, sys
    log = open(os.environ["MOVES_LOG"], "a")

    def hook(event, args):
        if event in ("os.rename", "shutil.copyfile", "shutil.move"):
            log.write(f"{event}\\t{args[0]}\\t{args[1]}\\n")
            log.flush()

    sys.addaudithook(hook)
    sys.argv = ["mta-lab", "train", *sys.argv[1:]]
    runpy.run_module("mta_lab.cli", run_name="__main__")
""")


def test_checkpoints_and_the_export_are_renamed_from_beside_them_never_moved_from_tmpdir(tmp_path, data_cache):
    """The final move of a checkpoint is a rename in its own directory, not a move (a copy, across filesystems)
    of a file staged in $TMPDIR, which a kill would leave half-copied and orphaned."""
    moves, tmpdir = tmp_path / "moves.log", tmp_path / "tmpdir"
    tmpdir.mkdir()
    args = tiny(tmp_path, "staged", data_cache, max_steps=12, ckpt_every=5)
    done = subprocess.run([sys.executable, "-c", _RECORD_MOVES, *args, "--no-progress"], capture_output=True,
                          text=True, cwd=REPO, env=clean_env(TMPDIR=str(tmpdir), MOVES_LOG=str(moves)), timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = (tmp_path / "staged").resolve()
    targets = {run_dir / "checkpoints" / "step-000010.ckpt", run_dir / "checkpoints" / "step-000012.ckpt",
               run_dir / "final" / "model.pt"}
    records = [line.split("\t") for line in moves.read_text().splitlines()] if moves.exists() else []
    into_targets = [(event, Path(src).resolve(), Path(dst).resolve()) for event, src, dst in records
                    if Path(dst).resolve() in targets]
    assert {dst for _, _, dst in into_targets} == targets, records
    for event, src, dst in into_targets:
        assert event == "os.rename" and src.parent == dst.parent, (event, src, dst)
    assert list(tmpdir.iterdir()) == []
