"""Every shipped cluster profile validates; bad profiles are one clear error; the sbatch script says what it must."""

from __future__ import annotations

import pytest

from mta_lab.conf import CONF_DIR
from mta_lab.sweep.slurm import ClusterProfile, ClusterProfileError, sbatch_script
from mta_lab.sweep.spec import SweepSpec

PROFILES = sorted(p.stem for p in (CONF_DIR / "cluster").glob("*.yaml"))


@pytest.mark.parametrize("name", PROFILES)
def test_every_cluster_profile_validates(name):
    profile = ClusterProfile.load(name)
    assert profile.name == name and profile.source.endswith(f"{name}.yaml")
    assert profile.tasks_per_node == max(1, profile.gpus_per_node)


def test_shipped_profiles_are_the_local_one_and_a_slurm_example():
    assert {"local", "example_slurm"} <= set(PROFILES)
    assert ClusterProfile.load("local").executor == "local"
    example = ClusterProfile.load("example_slurm")
    assert example.executor == "slurm" and example.storage.startswith("postgresql+psycopg://")
    assert example.env["MLFLOW_TRACKING_URI"].startswith("http")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "partiton": "gpu"}, "partiton: unknown key"),
        ({"partition": "gpu"}, "name: is required"),
        ({"name": "x", "executor": "pbs"}, "executor: 'pbs' must be one of slurm, local"),
        ({"name": "x", "gpus_per_node": 8, "tasks_per_node": 1}, "tasks_per_node: 1 != gpus_per_node=8"),
        ({"name": "x", "nodes": 0}, "nodes: 0 must be an integer >= 1"),
        ({"name": "x", "timeout_min": "1h"}, "timeout_min: '1h' must be an integer >= 1"),
        ({"name": "x", "mem_gb": -1}, "mem_gb: -1 must be a positive number"),
        ({"name": "x", "storage": "db.internal/sweeps"}, "must be an SQLAlchemy URL"),
        ({"name": "x", "env": {"BAD-NAME": "1"}}, "env:"),
        ({"name": "x", "setup": [1, 2]}, "setup: [1, 2] must be a list of shell lines"),
        ({"name": "x", "additional": {"array": "0-3"}}, "array are set by submit itself"),
    ],
)
def test_bad_profiles_are_clear_errors(data, message):
    with pytest.raises(ClusterProfileError, match="cluster profile") as err:
        ClusterProfile.from_dict(data, source="bad.yaml")
    assert message in str(err.value)


def test_unknown_profile_names_the_available_ones():
    with pytest.raises(ClusterProfileError, match="available: .*example_slurm.*local"):
        ClusterProfile.load("no_such_cluster")


def test_example_slurm_sbatch_script(tmp_path):
    spec = SweepSpec.load(CONF_DIR.parent / "sweeps" / "tiny" / "table5_cpu.yaml")
    script = sbatch_script(spec, tmp_path, ClusterProfile.load("example_slurm"), workers=6)
    lines = script.splitlines()
    for flag in ("--partition=gpu", "--account=my_project", "--qos=normal", "--gpus-per-node=1",
                 "--ntasks-per-node=1", "--cpus-per-task=12", "--mem=64GB", "--time=2880", "--constraint=h100",
                 "--nodes=1", "--array=0-5%6", "--mail-type=FAIL", "--job-name=mta-sweep-table5_cpu"):
        assert f"#SBATCH {flag}" in lines, flag
    setup = lines.index("# setup")
    assert lines[setup + 1:setup + 5] == ["module load cuda/12.4", "source $HOME/mta-lab/.venv/bin/activate",
                                         "export MLFLOW_TRACKING_URI=http://mlflow.internal:5000",
                                         "export NCCL_ASYNC_ERROR_HANDLING=1"]
    srun = [line for line in lines if line.startswith("srun ")]
    assert len(srun) == 1 and "-m submitit.core._submit" in srun[0] and str(tmp_path / "submitit") in srun[0]
    assert lines.index(srun[0]) > setup  # ranks come from srun, after the setup lines
