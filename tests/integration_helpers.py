"""Helpers of the integration tests: a session data cache, tiny-run overrides, the CLI in a subprocess,
MLflow queries against the real backend (sqlite file or server).

Every training here is tiny (the `tiny` model, a few dozen steps of small batches) so the folder runs in a few
minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Env vars a parent process (Lightning in-process runs, a SLURM job, a torchrun) may have set that would change how a
# `mta-lab train` subprocess behaves; the subprocesses here start clean of them.
_LEAKY_PREFIXES = ("PL_", "SLURM_", "TORCHELASTIC_", "MLFLOW_")
_LEAKY_NAMES = {"LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES) and k not in _LEAKY_NAMES}
    env.update({"COLUMNS": "200", "TERM": "dumb", "PYTHONUNBUFFERED": "1"}, **extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mta_lab.cli", "train", *args]


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`mta-lab train ARGS --no-progress`, to completion."""
    return subprocess.run([*cli_command(*args), "--no-progress"], capture_output=True, text=True, cwd=REPO,
                          env=clean_env(), timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny(root: Path, name: str, cache: Path, trainer: str = "cpu", **train: object) -> list[str]:
    """Overrides of a tiny CPU run: batch 4 x 64 tokens, a metric point every step, no validation unless asked."""
    settings = {"max_steps": 30, "batch_size": 4, "seq_len": 64, "log_every": 1, "val_every": 1000,
                "val_batches": 2, "ckpt_every": 10} | train
    return [f"name={name}", f"root={root}", f"data.cache_dir={cache}", f"trainer={trainer}",
            *(f"train.{k}={v}" for k, v in settings.items())]


def sqlite_uri(root: Path) -> str:
    return f"sqlite:///{Path(root).resolve()}/mlflow.db"


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_in(uri: str, experiment: str = "mta-lab", filter_string: str = "") -> list:
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=1000)


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) points of a metric, ordered by step."""
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def steps_of(points: list[tuple[int, float]]) -> list[int]:
    return [s for s, _ in points]


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, stderr is one `error: ...` message (no traceback) naming each fragment; returns the message."""
    assert result.returncode == 2, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.stderr.startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    message = " ".join(result.stderr.split())
    for fragment in fragments:
        assert fragment in message, message
    return message
