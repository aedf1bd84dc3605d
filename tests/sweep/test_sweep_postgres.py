"""The PostgreSQL study storage, against a real PostgreSQL server this module starts (initdb into a temporary
directory, a free port, a fresh database) and stops again.

Checks: `open_storage` with a postgresql+psycopg:// URL gives an RDBStorage with heartbeats that creates and
reloads a study; two processes enqueueing and asking at once lose and duplicate no trial; a process SIGKILLed
while it holds a RUNNING trial stops heart-beating, so after the grace period another worker fails it and finds
the retried clone WAITING (optuna's RetryHeartbeatStaleTrialCallback via the sweep's max_retries).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from integration_helpers import free_port

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize"),
]

INSTALL = ("install them with `apt-get install -y postgresql` (Debian/Ubuntu; .ci/run does this) or your system's "
           "package manager, and `pip install -e '.[postgres]'` for the psycopg driver")


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg", reason=f"the psycopg driver is not installed; {INSTALL}")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip(f"PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or on "
                    f"PATH; {INSTALL}")
    as_root = os.geteuid() == 0
    user = {"user": "postgres", "group": "postgres"} if as_root else {}
    if as_root:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(f"running as root and there is no 'postgres' user to run the server as; {INSTALL}")
    # not pytest's tmp_path: its parents are private to root, and the server runs as the postgres user
    home = Path(tempfile.mkdtemp(prefix="mta-pg-"))
    if as_root:
        shutil.chown(home, "postgres", "postgres")
    data, log, port = home / "data", home / "server.log", free_port()

    def run(*cmd: str) -> None:
        subprocess.run([str(bin_dir / cmd[0]), *cmd[1:]], check=True, capture_output=True, cwd=home, **user)

    run("initdb", "-D", str(data), "-U", "mta", "--auth=trust", "--no-sync", "-E", "UTF8")
    run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
        f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50", "start")
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "mta", "sweeps")
        yield f"postgresql+psycopg://mta@127.0.0.1:{port}/sweeps"
    finally:
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, cwd=home, **user)
        shutil.rmtree(home, ignore_errors=True)


def _spec(url: str, name: str, max_retries: int = 1):
    from mta_lab.sweep.spec import SweepSpec

    return SweepSpec.from_dict({"name": name, "kind": "ablation", "storage": url, "max_retries": max_retries,
                                "ablation": {"variants": {"a": ["attention=transformer"]}}})


def _child(tmp_path: Path, name: str, body: str) -> Path:
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent("""
        import sys, time, optuna
        from mta_lab.sweep.spec import SweepSpec
        from mta_lab.sweep.storage import open_storage
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        url, name = sys.argv[1], sys.argv[2]
        spec = SweepSpec.from_dict({"name": name, "kind": "ablation", "storage": url, "max_retries": 1,
                                    "ablation": {"variants": {"a": ["attention=transformer"]}}})
        storage = open_storage(spec, ".", heartbeat_interval=1, grace_period=3)
        study = optuna.load_study(study_name=name, storage=storage)
    """) + textwrap.dedent(body))
    return script


def test_open_storage_creates_and_reloads_a_study(postgres_url, tmp_path):
    import optuna

    from mta_lab.sweep.storage import open_storage

    spec = _spec(postgres_url, "pg_create")
    storage = open_storage(spec, tmp_path, heartbeat_interval=1, grace_period=3)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.get_heartbeat_interval() == 1
    study = optuna.create_study(study_name="pg_create", storage=storage, direction="minimize")
    study.set_user_attr("spec", {"name": "pg_create"})
    study.enqueue_trial({"x": 1.0})
    again = optuna.load_study(study_name="pg_create", storage=open_storage(spec, tmp_path))
    assert again.user_attrs == {"spec": {"name": "pg_create"}}
    assert [t.state for t in again.get_trials()] == [optuna.trial.TrialState.WAITING]
    assert not (tmp_path / "optuna.journal").exists()  # a URL means no journal file


def test_two_processes_enqueue_and_ask_without_losing_trials(postgres_url, tmp_path):
    import optuna

    from mta_lab.sweep.storage import open_storage

    name = "pg_concurrent"
    optuna.create_study(study_name=name, storage=open_storage(_spec(postgres_url, name), tmp_path))
    script = _child(tmp_path, "enqueue_ask", """
        offset, out = int(sys.argv[3]), sys.argv[4]
        for i in range(10):
            study.enqueue_trial({"x": float(offset + i)})
        got = []
        for _ in range(10):
            trial = study.ask()
            x = trial.suggest_float("x", 0, 100)
            study.tell(trial, x)
            got.append((trial.number, x))
        open(out, "w").write(repr(got))
    """)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, str(script), postgres_url, name, str(off), str(tmp_path / f"{off}.out")],
                              env=env, cwd=tmp_path) for off in (0, 10)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    got = [n for off in (0, 10) for n in eval((tmp_path / f"{off}.out").read_text())]  # noqa: S307 - our own repr

    trials = optuna.load_study(study_name=name, storage=open_storage(_spec(postgres_url, name), tmp_path)).trials
    assert len(trials) == 20 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.params["x"] for t in trials) == [float(i) for i in range(20)]  # every enqueued trial, once
    assert sorted(n for n, _ in got) == list(range(20))  # no trial handed to both processes


def test_a_killed_worker_trial_is_failed_by_heartbeat_and_retried(postgres_url, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from mta_lab.sweep.storage import open_storage

    name = "pg_heartbeat"
    spec = _spec(postgres_url, name, max_retries=1)
    storage = open_storage(spec, tmp_path, heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(study_name=name, storage=storage)
    study.enqueue_trial({"x": 7.0}, user_attrs={"variant": "a", "seed": 0})
    ready = tmp_path / "running"
    script = _child(tmp_path, "hold_trial", f"""
        from optuna.storages._heartbeat import get_heartbeat_thread
        trial = study.ask()
        trial.suggest_float("x", 0, 100)
        with get_heartbeat_thread(trial._trial_id, storage):  # what Study.optimize does around every trial
            open({str(ready)!r}, "w").write(str(trial.number))
            time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, str(script), postgres_url, name], cwd=tmp_path,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None, "the child died before it held its trial"
            assert time.monotonic() < deadline, "the child never started its trial"
            time.sleep(0.1)
        time.sleep(1.5)  # a heartbeat or two on record
        optuna.storages.fail_stale_trials(study)
        assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]  # alive: not stale
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)

    killed_at = time.monotonic()
    other = optuna.load_study(study_name=name, storage=open_storage(spec, tmp_path, heartbeat_interval=1,
                                                                    grace_period=3))  # "another worker"
    optuna.storages.fail_stale_trials(other)
    assert other.get_trials()[0].state == TrialState.RUNNING  # still within the grace period
    while time.monotonic() - killed_at < 4.5:
        time.sleep(0.2)
    optuna.storages.fail_stale_trials(other)  # what every worker runs before it asks
    states = [t.state for t in other.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    clone = other.get_trials()[1]
    assert clone.params == {"x": 7.0} and clone.user_attrs == {"variant": "a", "seed": 0}
    assert clone.system_attrs["failed_trial"] == 0
    retried = other.ask()  # the next worker picks the retried clone up
    assert retried.number == 1 and retried.suggest_float("x", 0, 100) == 7.0
    other.tell(retried, 7.0)
    # a second death would exceed max_retries=1: no clone of the clone is made
    assert [t.state for t in other.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE]
