"""Study storage: journal file by default, an SQLAlchemy URL with heartbeat and retry; bad URLs fail first."""

from __future__ import annotations

import time

import optuna
import pytest

from mta_lab.sweep.spec import SweepSpec
from mta_lab.sweep.storage import SweepStorageError, open_storage


def spec(storage=None, **kw) -> SweepSpec:
    return SweepSpec.from_dict({"name": "s", "kind": "ablation", "storage": storage,
                                "ablation": {"variants": {"a": ["attention=transformer"]}}, **kw})


def test_journal_file_by_default(tmp_path):
    storage = open_storage(spec(), tmp_path / "d")
    assert isinstance(storage, optuna.storages.JournalStorage)
    optuna.create_study(study_name="s", storage=storage)
    assert (tmp_path / "d" / "optuna.journal").stat().st_size > 0


def test_sqlalchemy_url_gets_heartbeat_and_retry(tmp_path):
    storage = open_storage(spec(f"sqlite:///{tmp_path}/o.db", max_retries=2), tmp_path)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.get_heartbeat_interval() == 60 and storage.grace_period == 180
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback) and callback._max_retry == 2


@pytest.mark.parametrize(("url", "message"), [
    ("nosuchdialect://host/db", "unknown database dialect or missing driver"),
    ("postgresql+psycopg://user:secret@127.0.0.1:1/db", "sweep.storage postgresql+psycopg://user:***@127.0.0.1:1/db"),
    ("sqlite:////nonexistent-dir/sub/o.db", "cannot open the database"),
])
def test_bad_or_unreachable_url_is_one_clear_error(tmp_path, url, message):
    started = time.monotonic()
    with pytest.raises(SweepStorageError) as err:
        open_storage(spec(url), tmp_path)
    assert message in str(err.value) and "secret" not in str(err.value)
    assert time.monotonic() - started < 30
