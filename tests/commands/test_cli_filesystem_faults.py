"""Filesystem faults through `mta-lab train` and `mta-lab sweep`: a read-only mount, a file where the run root,
`checkpoints/` or `final/` should be, a sqlite tracking database in a read-only folder, a sweep directory on a
read-only mount. Each is found before any training and before
any MLflow run: exit 2, one `error: ...` message naming the path and the fix, nothing recorded.

Tests run as root here and in CI, and root writes through chmod, so a read-only folder is a real read-only tmpfs
mount (the tests that need one skip, saying why, where `mount` is not allowed)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from integration_helpers import REPO, assert_one_line_error, clean_env, run_cli, tiny


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A real read-only filesystem (tmpfs mounted `ro`)."""
    path = tmp_path / "ro"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_run_root_on_a_read_only_mount(tmp_path, data_cache, read_only_dir):
    root = read_only_dir / "runs"
    result = run_cli(*tiny(root, "ro", data_cache, max_steps=3))
    assert_one_line_error(result, f"{read_only_dir}", "read-only", "root=")
    assert not root.exists()


def test_a_file_where_the_run_root_should_be(tmp_path, data_cache):
    root = tmp_path / "runs"
    root.write_text("not a directory")
    result = run_cli(*tiny(root, "f", data_cache, max_steps=3))
    assert_one_line_error(result, f"{root} is a file, not a directory", "root=")
    assert root.read_text() == "not a directory"


@pytest.mark.parametrize("part", ["checkpoints", "final"])
def test_a_file_where_a_run_subdirectory_should_be(tmp_path, data_cache, part):
    root = tmp_path / "runs"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / part).write_text("in the way")
    started = time.monotonic()
    result = run_cli(*tiny(root, "sub", data_cache, max_steps=3))
    assert_one_line_error(result, f"{root / 'sub' / part} is a file, not a directory", "name=")
    assert not (root / "mlflow.db").exists()  # nothing recorded
    assert sorted(p.name for p in (root / "sub").iterdir()) == [part]  # nothing trained or written
    assert time.monotonic() - started < 120


def test_a_sqlite_tracking_database_in_a_read_only_folder(tmp_path, data_cache, read_only_dir):
    uri = f"sqlite:///{read_only_dir}/mlflow.db"
    started = time.monotonic()
    result = run_cli(*tiny(tmp_path / "runs", "db", data_cache, max_steps=3), f"tracking.uri={uri}")
    assert_one_line_error(result, f"tracking.uri={uri}", f"{read_only_dir}", "read-only", "tracking.uri")
    assert time.monotonic() - started < 60  # no retries
    assert not (tmp_path / "runs" / "db").exists()


@pytest.mark.parametrize("action", ["create", "run"])
def test_a_sweep_directory_on_a_read_only_mount(tmp_path, read_only_dir, action):
    sweep_dir = read_only_dir / "sweep"
    result = subprocess.run([sys.executable, "-m", "mta_lab.cli", "sweep", action, str(REPO / "sweeps/tiny/demo.yaml"),
                             "--dir", str(sweep_dir)], capture_output=True, text=True, cwd=tmp_path, env=clean_env(),
                            timeout=240)
    assert_one_line_error(result, str(read_only_dir), "read-only", "--dir")
    assert not sweep_dir.exists()
