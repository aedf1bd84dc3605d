"""Study storage: a journal file under the sweep directory (no server) or any SQLAlchemy URL (PostgreSQL on a
cluster) with heartbeats and automatic retry of trials whose worker died."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from mta_lab.errors import UserError
from mta_lab.sweep.spec import SweepSpec

HEARTBEAT_S = 60  # a worker records a heartbeat this often (RDB + file); env MTA_SWEEP_HEARTBEAT_S overrides
GRACE_S = 180  # a trial without a heartbeat for this long is failed and retried; env MTA_SWEEP_GRACE_S overrides


class SweepStorageError(UserError, ValueError):
    """The study storage cannot be opened; the message names the URL and the fix."""


def journal_path(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / "optuna.journal"


def repair_command(spec: SweepSpec, sweep_dir: str | Path) -> str:
    """The command that repairs the sweep's journal (named in the message of a damaged one)."""
    return f"mta-lab sweep repair {spec.source or 'SWEEP_FILE'} --dir {Path(sweep_dir).resolve()}"


def heartbeat_s() -> float:
    return float(os.environ.get("MTA_SWEEP_HEARTBEAT_S", HEARTBEAT_S))


def grace_s() -> float:
    return float(os.environ.get("MTA_SWEEP_GRACE_S", max(GRACE_S, 3 * heartbeat_s())))


def heartbeat_file(sweep_dir: str | Path, trial_number: int) -> Path:
    """Touched by the worker of a running trial every heartbeat_s(), whatever the storage: on a shared file system
    any host sees when a worker stopped (kill -9, a lost node), also with the journal file, which has no heartbeat."""
    return Path(sweep_dir) / "heartbeats" / f"trial-{trial_number}"


def heartbeat_age_s(path: Path) -> float | None:
    """Seconds since `path` was last touched, in the file system's own clock (a fresh probe file beside it gives
    "now", so clock skew between hosts does not matter); None when there is no such file."""
    try:
        beat = path.stat().st_mtime
    except FileNotFoundError:
        return None
    probe = path.with_name(f".now-{os.getpid()}")
    probe.touch()
    try:
        return probe.stat().st_mtime - beat
    finally:
        probe.unlink(missing_ok=True)


STORAGE_FILE = "storage.url"  # the study storage a cluster profile gave the sweep (`submit`), read by every command


def remember_storage(sweep_dir: str | Path, url: str) -> None:
    """Keep `url` in <sweep_dir>/storage.url (mode 0600: it may hold a password) so that status, best, reap,
    report and later workers open the same study without the profile."""
    path = Path(sweep_dir) / STORAGE_FILE
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(url + "\n")
    os.replace(tmp, path)


def with_remembered_storage(spec: SweepSpec, sweep_dir: str | Path) -> SweepSpec:
    """`spec` with the storage `submit` remembered for this sweep directory, when the spec names none."""
    path = Path(sweep_dir) / STORAGE_FILE
    if spec.storage is not None or not path.is_file():
        return spec
    return dataclasses.replace(spec, storage=path.read_text().strip())


def redacted(url: str | None) -> str:
    """The storage URL as printed: the password hidden."""
    return "the journal file" if url is None else _redact(url)


def _redact(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for messages
        return url


def open_storage(spec: SweepSpec, sweep_dir: str | Path, *, heartbeat_interval: int | None = None,
                 grace_period: int | None = None) -> BaseStorage:
    """Journal file <sweep_dir>/optuna.journal when spec.storage is null (scanned first: a damaged one is a
    JournalDamaged naming the line and `mta-lab sweep repair`; never appended to after a partial line), else
    RDBStorage(spec.storage) with a heartbeat and RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retries).
    Fails before any work when the URL is invalid or the database does not answer."""
    if spec.storage is None:
        from optuna.storages.journal import JournalStorage

        from mta_lab.sweep.journal import GuardedJournalBackend, check_journal

        path = journal_path(sweep_dir)
        repair = repair_command(spec, sweep_dir)
        if path.exists():
            check_journal(path, repair)  # a partial or corrupt record: one message, before Optuna reads or appends
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(GuardedJournalBackend(str(path), repair))

    url = spec.storage
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url)
    except (ArgumentError, ValueError) as err:
        raise SweepStorageError(f"sweep.storage: {url!r} is not an SQLAlchemy URL ({err}); use e.g. "
                                "postgresql+psycopg://user:pass@host:5432/db, or null for a journal file") from None
    heartbeat = heartbeat_interval or int(os.environ.get("MTA_SWEEP_HEARTBEAT_S", HEARTBEAT_S))
    grace = grace_period or int(os.environ.get("MTA_SWEEP_GRACE_S", max(GRACE_S, 3 * heartbeat)))
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat, grace_period=grace, engine_kwargs={"pool_pre_ping": True},
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=spec.max_retries))
    except (ImportError, NoSuchModuleError) as err:
        raise SweepStorageError(f"sweep.storage {_redact(url)}: unknown database dialect or missing driver ({err}); "
                                "use a dialect SQLAlchemy knows and install its driver, e.g. pip install "
                                "'psycopg[binary]' for postgresql+psycopg://") from None
    except Exception as err:  # noqa: BLE001 - SQLAlchemy raises many kinds; all mean the same to the user
        message = " ".join(str(err).split())[:500]
        raise SweepStorageError(f"sweep.storage {_redact(url)}: cannot open the database ({type(err).__name__}: "
                                f"{message}); check that the server runs and the URL, user and password are "
                                "right") from None

