"""A trial on several srun tasks: rank 0 asks the study and hands the trial over; the ranks train it together.

srun is simulated with two worker processes carrying the SLURM variables srun sets (2 tasks on one node); Lightning's
SLURM environment forms the DDP group (gloo on CPU). One MLflow run per trial, the study complete.
"""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
import yaml
from integration_helpers import REPO, clean_env, free_port

from mta_lab.sweep.ranks import Handoff, TaskGroup


def test_handoff_records_arrive_in_order(tmp_path):
    leader, follower = Handoff(tmp_path, TaskGroup(0, 2, "7")), Handoff(tmp_path, TaskGroup(1, 2, "7"))
    leader.announce(3, 1, {"optim.lr": 0.01})
    leader.finish()
    assert follower.next(timeout_s=1) == {"trial": 3, "seed": 1, "params": {"optim.lr": 0.01}}
    assert follower.next(timeout_s=1) == {"stop": True}
    with pytest.raises(TimeoutError, match="wrote no record 2"):
        follower.next(timeout_s=0.2, poll_s=0.05)


@pytest.mark.slow
def test_two_srun_tasks_train_each_trial_together(tmp_path, data_cache):
    spec = {
        "name": "ranks", "kind": "ablation", "seeds": [0], "max_failures": 0,
        "base": ["experiment=tiny", "trainer=ddp_cpu", "train.max_steps=4", "train.val_every=4",
                 "train.ckpt_every=4", "train.batch_size=2", "train.seq_len=32", "train.val_batches=2",
                 f"data.cache_dir={data_cache}"],
        "ablation": {"variants": {"transformer": ["attention=transformer"], "mta": ["attention=mta"]}},
    }
    sweep_file = tmp_path / "ranks.yaml"
    sweep_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    sweep_dir = tmp_path / "sweep"
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = clean_env(SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2", SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank),
                        SLURM_NODEID="0", SLURM_NNODES="1", SLURM_JOB_ID="4242", SLURM_JOB_NAME="mta-sweep",
                        SLURM_NODELIST="127.0.0.1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-m", "mta_lab.cli", "sweep", "worker", str(sweep_file),
                                       "--dir", str(sweep_dir)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)

    study = optuna.load_study(study_name="ranks", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir / "optuna.journal"))))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2  # asked once each, by rank 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{sweep_dir}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("ranks").experiment_id],
                              filter_string="tags.`mta.sweep` = 'ranks'")
    children = [r for r in runs if r.data.tags.get("mta.role") != "sweep"]  # not the parent run
    assert sorted(r.data.tags["mta.variant"] for r in children) == ["mta", "transformer"]
    for run in children:  # trained as one DDP group of 2: twice the tokens of one rank per step
        assert run.info.status == "FINISHED"
        assert run.data.params["train.tokens_per_step"] == str(2 * 2 * 32)
