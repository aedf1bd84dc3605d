"""Submit sweep workers as a SLURM job array through submitit, with a cluster profile from conf/cluster/.

`submit(spec, sweep_dir, cluster="example_slurm", workers=8)` writes one sbatch script holding a job array of
`workers` jobs; every array job runs `mta_lab.sweep.worker.run_worker(spec, sweep_dir=...)`, i.e. the same
ask -> compose -> train -> tell loop as `mta-lab sweep worker`, against the study storage named by the profile
(`storage:`, normally PostgreSQL; it replaces the sweep file's `storage`) or by the sweep file (a journal file
under the sweep directory, which must then sit on a shared file system). `executor="local"` runs the very same
pickled function with submitit's LocalExecutor (one subprocess per worker, no sbatch): that is what the tests and
laptops use.

Multi-GPU trials (DDP). A profile with `gpus_per_node: G` sets `tasks_per_node: G` (the default; any other value is
refused): submitit writes `#SBATCH --ntasks-per-node=G` and launches the job's command through `srun`, so SLURM
starts G copies of the worker on each node, one per GPU, and sets SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS /
SLURM_NODELIST for each. Lightning's SLURMEnvironment reads those, so every copy becomes one DDP rank of the same
trial: ranks never come from Lightning re-launching a command line. `run_worker` is entered on every rank of an
array job: rank 0 asks the study and hands each trial to the other ranks (mta_lab/sweep/ranks.py), so all ranks
of one job train the same trial. The sweep's base must ask for the same devices (`trainer=ddp
trainer.devices=G`, and `trainer.num_nodes` for several nodes).

The profile's `env` is exported in the sbatch script and set again inside the job before the worker starts (the
local executor has no script), e.g. MLFLOW_TRACKING_URI of a shared MLflow server; `setup` lines (module load,
venv activation) run in the sbatch script before srun.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from mta_lab.errors import UsageError, UserError
from mta_lab.sweep.spec import SweepSpec

EXECUTORS = ("slurm", "local")


class ClusterProfileError(UserError, ValueError):
    """A bad cluster profile: the message names the file, the field, the bad value and the fix."""


def _fail(where: str, field_name: str, problem: str) -> None:
    raise ClusterProfileError(f"cluster profile {where}: {field_name}: {problem}")


@dataclass(frozen=True)
class ClusterProfile:
    """Where and how sweep workers run. Field names follow SLURM's (partition, account, qos, ...)."""

    name: str
    executor: str = "slurm"  # slurm (sbatch job array) | local (submitit LocalExecutor: tests, laptops)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None  # None: max(1, gpus_per_node); one DDP rank per GPU, started by srun
    cpus_per_task: int = 4
    mem_gb: float | None = None
    timeout_min: int = 60
    constraint: str | None = None
    array_parallelism: int | None = None  # at most this many array jobs at once (None: all)
    python: str | None = None  # the interpreter on the compute nodes (None: the submitting one)
    setup: tuple[str, ...] = ()  # shell lines before srun: module load ..., source .venv/bin/activate
    env: dict[str, str] = field(default_factory=dict)  # exported for the worker, e.g. MLFLOW_TRACKING_URI
    storage: str | None = None  # SQLAlchemy URL of the study storage (PostgreSQL); None: the sweep file's
    additional: dict[str, Any] = field(default_factory=dict)  # more #SBATCH flags, e.g. {exclusive: true}
    description: str = ""
    source: str | None = None

    def __post_init__(self) -> None:
        where = self.source or self.name

        def check(cond: bool, name: str, problem: str) -> None:
            if not cond:
                _fail(where, name, f"{getattr(self, name)!r} {problem}")

        check(isinstance(self.name, str) and bool(self.name), "name", "must be a non-empty string")
        check(self.executor in EXECUTORS, "executor", f"must be one of {', '.join(EXECUTORS)}")
        for name in ("partition", "account", "qos", "constraint", "python", "storage"):
            check(getattr(self, name) is None or (isinstance(getattr(self, name), str) and getattr(self, name)),
                  name, "must be a non-empty string or null")
        for name, low in (("nodes", 1), ("gpus_per_node", 0), ("cpus_per_task", 1), ("timeout_min", 1)):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= low, name,
                  f"must be an integer >= {low}")
        if self.tasks_per_node is None:
            object.__setattr__(self, "tasks_per_node", max(1, self.gpus_per_node))
        tasks = self.tasks_per_node
        check(isinstance(tasks, int) and not isinstance(tasks, bool) and tasks >= 1, "tasks_per_node",
              "must be an integer >= 1")
        if self.gpus_per_node and tasks != self.gpus_per_node:
            _fail(where, "tasks_per_node", f"{tasks} != gpus_per_node={self.gpus_per_node}: srun starts one DDP "
                  "rank per task and each rank drives one GPU; set tasks_per_node equal to gpus_per_node (or drop it)")
        if self.array_parallelism is not None:
            check(isinstance(self.array_parallelism, int) and self.array_parallelism >= 1, "array_parallelism",
                  "must be an integer >= 1 or null")
        if self.mem_gb is not None:
            check(isinstance(self.mem_gb, int | float) and not isinstance(self.mem_gb, bool) and self.mem_gb > 0,
                  "mem_gb", "must be a positive number of GB or null")
        setup = [self.setup] if isinstance(self.setup, str) else self.setup
        check(isinstance(setup, list | tuple) and all(isinstance(s, str) for s in setup), "setup",
              "must be a list of shell lines")
        object.__setattr__(self, "setup", tuple(setup))
        check(isinstance(self.env, Mapping) and all(isinstance(k, str) and k.isidentifier() for k in self.env),
              "env", "must map environment variable names to values")
        object.__setattr__(self, "env", {k: str(v) for k, v in self.env.items()})
        check(isinstance(self.additional, Mapping), "additional", "must map #SBATCH flag names to values")
        if self.storage is not None and "://" not in self.storage:
            _fail(where, "storage", f"{self.storage!r} must be an SQLAlchemy URL such as "
                  "postgresql+psycopg://user:pass@dbhost:5432/sweeps, or null for the sweep file's storage")
        if self.executor == "slurm":
            reserved = sorted({"array", "output", "error", "job_name", "job-name"} & set(self.additional))
            if reserved:
                _fail(where, "additional", f"{', '.join(reserved)} are set by submit itself; remove them")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> ClusterProfile:
        where = source or "(dict)"
        if not isinstance(data, Mapping):
            raise ClusterProfileError(f"cluster profile {where}: must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"source"}
        unknown = sorted(set(data) - known)
        if unknown:
            _fail(where, ", ".join(unknown), f"unknown key(s); allowed: {', '.join(sorted(known))}")
        if "name" not in data:
            _fail(where, "name", "is required")
        try:
            return cls(**dict(data), source=source)
        except TypeError as err:
            raise ClusterProfileError(f"cluster profile {where}: {err}") from None

    @classmethod
    def load(cls, name_or_path: str | Path) -> ClusterProfile:
        """A profile by name (conf/cluster/<name>.yaml) or by path to a YAML file."""
        path = Path(name_or_path)
        if not path.is_file():
            from mta_lab.conf import conf_dir

            folder = conf_dir() / "cluster"
            path = folder / f"{name_or_path}.yaml"
            if not path.is_file():
                known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
                raise ClusterProfileError(f"cluster profile {name_or_path!r}: not found (looked for {path}); "
                                          f"available: {known}; or pass a path to a YAML file")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ClusterProfileError(f"cluster profile {path}: not valid YAML ({' '.join(str(err).split())})") \
                from None
        return cls.from_dict(data or {}, source=str(path))


def _worker_job(spec: SweepSpec, sweep_dir: str, env: dict[str, str], max_trials: int | None) -> Any:
    """What every array job (and every srun task of it) runs. The worker's signal handlers go in first, before
    the heavy imports and the study: submitit's own SIGTERM handler only logs "Bypassing signal SIGTERM", so a
    `scancel` in the job's first seconds would be lost and the worker would claim a trial, to be SIGKILLed with it
    at KillWait. Caught here, the signal stops the worker before it claims anything."""
    from mta_lab.sweep.signals import WorkerSignals

    with WorkerSignals() as signals:
        os.environ.update(env)
        from mta_lab.sweep.worker import run_worker

        return run_worker(spec, sweep_dir=sweep_dir, max_trials=max_trials, signals=signals)


def _slurm_parameters(profile: ClusterProfile, spec: SweepSpec) -> dict[str, Any]:
    params: dict[str, Any] = {
        "job_name": f"mta-sweep-{spec.name}",
        "nodes": profile.nodes,
        "ntasks_per_node": profile.tasks_per_node,
        "cpus_per_task": profile.cpus_per_task,
        "time": profile.timeout_min,
        "setup": [*profile.setup, *(f"export {k}={shlex.quote(v)}" for k, v in profile.env.items())],
        "additional_parameters": dict(profile.additional),
    }
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    for name in ("partition", "account", "qos", "constraint"):
        if getattr(profile, name) is not None:
            params[name] = getattr(profile, name)
    if profile.mem_gb is not None:
        params["mem"] = f"{int(profile.mem_gb)}GB" if float(profile.mem_gb).is_integer() else \
            f"{int(profile.mem_gb * 1024)}MB"
    if profile.array_parallelism is not None:
        params["array_parallelism"] = profile.array_parallelism
    return params


def make_executor(spec: SweepSpec, sweep_dir: str | Path, profile: ClusterProfile, executor: str):
    """The configured submitit executor; jobs' scripts and logs go to <sweep_dir>/submitit/."""
    import submitit

    folder = Path(sweep_dir) / "submitit" / "%j"
    if executor == "slurm":
        ex = submitit.SlurmExecutor(folder=folder, python=profile.python)
        ex.update_parameters(**_slurm_parameters(profile, spec))
    elif executor == "local":
        ex = submitit.LocalExecutor(folder=folder, python=profile.python)
        ex.update_parameters(timeout_min=profile.timeout_min, tasks_per_node=profile.tasks_per_node,
                             gpus_per_node=profile.gpus_per_node, nodes=1)
    else:
        raise ClusterProfileError(f"executor {executor!r}: must be one of {', '.join(EXECUTORS)}")
    return ex


def sbatch_script(spec: SweepSpec, sweep_dir: str | Path, profile: ClusterProfile, workers: int) -> str:
    """The sbatch script `submit` hands to sbatch for a job array of `workers` jobs (built exactly as submitit's
    SlurmExecutor builds an array submission), for dry runs and review."""
    import sys

    from submitit.slurm.slurm import _make_sbatch_string

    # SlurmExecutor refuses to exist where there is no srun; build its script the way it does (submitit 1.5:
    # SlurmExecutor._make_submission_file_text with map_count set by _internal_process_submissions for arrays).
    folder = Path(sweep_dir) / "submitit" / "%j"
    python = profile.python or shlex.quote(sys.executable)
    command = " ".join([python, "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=workers, **_slurm_parameters(profile, spec))


def _resolve(spec: SweepSpec | str | Path, profile: ClusterProfile) -> SweepSpec:
    spec = spec if isinstance(spec, SweepSpec) else SweepSpec.load(spec)
    return replace(spec, storage=profile.storage) if profile.storage is not None else spec


class SweepFinished(UserError, ValueError):
    """`submit` of a sweep with nothing left to run."""


def submit(spec: SweepSpec | str | Path, sweep_dir: str | Path, *, cluster: str | Path | ClusterProfile,
           workers: int, executor: str | None = None, max_trials: int | None = None, force: bool = False) -> list[str]:
    """Submit `workers` sweep workers as one job array; returns the job ids (SLURM: '<array>_<index>', local:
    process ids). `executor` defaults to the profile's (conf/cluster/local.yaml: local)."""
    jobs = submit_jobs(spec, sweep_dir, cluster=cluster, workers=workers, executor=executor, max_trials=max_trials,
                       force=force)
    return [str(job.job_id) for job in jobs]


def submit_jobs(spec: SweepSpec | str | Path, sweep_dir: str | Path, *, cluster: str | Path | ClusterProfile,
                workers: int, executor: str | None = None, max_trials: int | None = None,
                force: bool = False) -> list[Any]:
    """`submit`, returning submitit's Job objects (job.result() waits for a worker and returns what it returned).
    A sweep with no trial left is refused (SweepFinished) unless `force`: its jobs would find nothing to do."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise UsageError(f"workers={workers!r}: must be a positive integer")
    profile = cluster if isinstance(cluster, ClusterProfile) else ClusterProfile.load(cluster)
    executor = executor or profile.executor
    spec = _resolve(spec, profile)
    sweep_dir = str(Path(sweep_dir).resolve())
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    # Create the study (and enqueue its fixed trials) once, here, before any job starts: jobs on several nodes
    # calling `create` at the same time could otherwise enqueue a trial twice.
    from mta_lab.sweep.status import counts, work_left
    from mta_lab.sweep.storage import remember_storage
    from mta_lab.sweep.study import create

    sweep = create(spec, sweep_dir)
    if profile.storage is not None:
        remember_storage(sweep_dir, profile.storage)
    if not force and work_left(sweep) == 0:
        done = counts(sweep)
        raise SweepFinished(f"sweep {spec.name} has nothing left to run ({done['complete']} complete, "
                            f"{done['failed']} failed, {done['pruned']} pruned; none waiting or running): no job "
                            "submitted; see `mta-lab sweep status`, or pass --force to submit anyway")
    ex = make_executor(spec, sweep_dir, profile, executor)
    args = [(spec, sweep_dir, dict(profile.env), max_trials)] * workers
    with ex.batch():  # one submission: a SLURM job array of `workers` jobs
        jobs = [ex.submit(_worker_job, *a) for a in args]
    return jobs
