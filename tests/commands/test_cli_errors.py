"""The CLI's error contract: a UserError is one `error:` message and exit 2; any other exception is a bug and keeps
its traceback (exit 1)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from mta_lab.errors import UserError

DEMO_SWEEP = str(Path(__file__).resolve().parents[2] / "sweeps" / "tiny" / "demo.yaml")

USER_ERRORS = [
    ("mta_lab.errors", "UsageError", ValueError),
    ("mta_lab.errors", "TrackingError", RuntimeError),
    ("mta_lab.errors", "TrainingDiverged", RuntimeError),
    ("mta_lab.attention.spec", "SpecError", ValueError),
    ("mta_lab.model.config", "ModelConfigError", ValueError),
    ("mta_lab.train.config", "ConfigError", ValueError),
    ("mta_lab.data.errors", "DataConfigError", ValueError),
    ("mta_lab.report.errors", "ReportError", ValueError),
    ("mta_lab.sweep.spec", "SweepSpecError", ValueError),
    ("mta_lab.sweep.storage", "SweepStorageError", ValueError),
    ("mta_lab.sweep.study", "SweepNotCreated", ValueError),
    ("mta_lab.sweep.slurm", "ClusterProfileError", ValueError),
    ("mta_lab.sweep.changes", "SweepChanged", ValueError),
    ("mta_lab.sweep.journal", "JournalDamaged", RuntimeError),
    ("mta_lab.train.run_lock", "RunDirectoryBusy", RuntimeError),
    ("mta_lab.train.preflight", "PathError", OSError),
    ("mta_lab.eval.checkpoint", "UnsafeCheckpoint", ValueError),
]


@pytest.mark.parametrize(("module", "name", "builtin"), USER_ERRORS)
def test_every_user_error_is_a_user_error_and_keeps_its_builtin_base(module, name, builtin):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, UserError) and issubclass(cls, builtin)


def run_patched(patch: str, *argv: str) -> subprocess.CompletedProcess:
    """`mta-lab count ...` as the console script runs it, with count's option parser replaced by `patch`."""
    script = (f"import sys\nimport mta_lab.commands.count as count\n{patch}\nfrom mta_lab.cli import main\n"
              f"sys.exit(main(['count', *{list(argv)!r}]))")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_an_internal_error_keeps_its_traceback():
    result = run_patched("def bug(items):\n    raise ValueError('shapes (2, 3) and (3, 2) do not match')\n"
                         "count.parse_overrides = bug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: shapes (2, 3) and (3, 2) do not match" in result.stderr
    assert not result.stderr.startswith("error:")


def test_a_user_error_raised_anywhere_is_one_message():
    result = run_patched("from mta_lab.errors import UserError\ndef bad(items):\n    raise UserError('x=1: fix x')\n"
                         "count.parse_overrides = bad")
    assert result.returncode == 2
    assert result.stderr == "error: x=1: fix x\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["count", "seq_len=abc"], "seq_len='abc': must be a positive integer"),
        (["count", "seq_len=0"], "seq_len='0': must be a positive integer"),
        (["count", "model.dim=[1"], "'model.dim=[1': the value is not valid YAML (expected ',' or ']'"),
        (["attention", "show", "mta", "--set", "kq_pre=[6,10"], "'--set kq_pre=[6,10': the value is not valid YAML"),
        (["eval", "toy", "ckpt=x", "samples=[1"], "'samples=[1': the value is not valid YAML"),
        (["attention", "show", "mta", "--dim", "1000"], "--dim 1000 --heads 16: the number of heads must be positive "
                                                        "and divide the model dim"),
        (["attention", "show", "mta", "--heads", "0"], "the number of heads must be positive"),
        (["sweep", "run", DEMO_SWEEP, "--workers", "0", "--dir", "/nonexistent/never-created"],
         "--workers 0: must be at least 1"),
    ],
)
def test_bad_arguments_are_one_clear_error(args, message):
    result = subprocess.run([sys.executable, "-m", "mta_lab.cli", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr
    assert message in " ".join(result.stderr.split())
