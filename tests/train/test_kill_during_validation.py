"""A real run SIGKILLed in the middle of a validation resumes with `resume=auto` and re-runs that validation: the
metrics have every validation step exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from integration_helpers import REPO, clean_env, client_for, history, runs_in, steps_of, tiny

from mta_lab.conf import load_run_config
from mta_lab.train.entry import train

# SIGKILLs its own process inside the validation after optimizer step KILL_AT, at its second batch (the first
# batch's work done, nothing of this validation logged yet).
_KILL_IN_VALIDATION = textwrap.dedent("""
    import os, signal, sys
    from lightning.pytorch.callbacks import Callback
    from mta_lab.conf import load_run_config
    from mta_lab.train.entry import train

    class KillInValidation(Callback):
        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            if trainer.global_step == int(os.environ["KILL_AT"]) and batch_idx == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    train(load_run_config(sys.argv[1:]), progress=False, extra_callbacks=[KillInValidation()])
""")


def test_a_kill_during_validation_is_followed_by_that_validation_after_the_resume(tmp_path, data_cache):
    args = tiny(tmp_path, "val", data_cache, max_steps=30, val_every=10, val_batches=2, ckpt_every=5)
    killed = subprocess.run([sys.executable, "-c", _KILL_IN_VALIDATION, *args], capture_output=True, text=True,
                            cwd=REPO, env=clean_env(KILL_AT="20"), timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    uri = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    [interrupted] = runs_in(uri)
    client = client_for(uri)
    # Validation of step k is logged at Lightning's 0-based step index k - 1; the one of step 20 was cut short.
    assert steps_of(history(client, interrupted.info.run_id, "val/loss")) == [9]
    assert max(steps_of(history(client, interrupted.info.run_id, "train/loss"))) == 19

    result = train(load_run_config([*args, "resume=auto"]), progress=False)
    assert result.resumed_from.endswith("step-000015.ckpt")
    assert result.run_id == interrupted.info.run_id
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for key in ("val/loss", "val/ppl"):
        assert steps_of(history(client, result.run_id, key)) == [9, 19, 29], key
    assert steps_of(history(client, result.run_id, "train/loss")) == list(range(30))
