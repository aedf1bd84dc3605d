"""A local sqlite tracking database, created and migrated once, safely when several processes start at once.

MLflow creates the tables and runs its alembic migrations the first time a client touches a new database; two
processes doing it together race (one dies in alembic). Here the first use happens under an exclusive
`fcntl.flock` on `<db>.lock` beside the database: one process creates it, the others wait and then find it ready.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix(SQLITE_PREFIX)) if uri.startswith(SQLITE_PREFIX) else None


def initialise_sqlite(uri: str) -> None:
    """Create (or migrate) the database at a sqlite URI once; other processes wait for it. No-op for servers."""
    path = sqlite_path(uri)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # creates the tables, runs migrations
