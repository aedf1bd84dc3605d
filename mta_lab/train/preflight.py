"""Filesystem checks of a run before any work: every folder it will write (the run root, the run directory, its
`checkpoints/` and `final/`, the sqlite tracking database's folder) is a directory, or can be created, and can be
written. A fault is one PathError naming the path and the fix; nothing is created here."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from mta_lab.errors import UserError


class PathError(UserError, OSError):
    """A path a run must write is not a writable directory; the message names it and what to do."""


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe(directory: Path) -> OSError | None:
    """Create and remove a file in `directory` (the only test that also holds for root on a read-only mount)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".mta-write-check-", dir=directory)
    except OSError as err:
        return err
    os.close(fd)
    os.unlink(name)
    return None


def check_writable_dir(path: Path, what: str, fix: str) -> None:
    """`path` is a directory that can be written, or could be created as one. `what` names it in the message
    (e.g. `root=runs`), `fix` says what to change."""
    path = Path(os.path.abspath(path))
    existing = _first_existing(path)
    if not existing.is_dir():
        raise PathError(f"{what}: {existing} is a file, not a directory; remove or move it, or {fix}")
    err = _probe(existing)
    if err is None:
        return
    if err.errno == errno.EROFS:
        problem = "is on a read-only filesystem"
    elif err.errno in (errno.EACCES, errno.EPERM):
        problem = "is not writable (permission denied)"
    else:
        problem = f"cannot be written ({os.strerror(err.errno) if err.errno else err})"
    below = "" if existing == path else f" (the folder {path} would be created in it)"
    raise PathError(f"{what}: {existing} {problem}{below}; {fix}")


def check_run_paths(root: str, run_dir: str, tracking_uri: str) -> None:
    """Every folder a training run writes, and the sqlite database's folder, before any run or record exists."""
    check_writable_dir(Path(root), f"root={root}", "choose a writable root=DIR")
    run, fix = Path(run_dir), "choose another name=... (or a writable root=DIR)"
    for path in (run, run / "checkpoints", run / "final"):
        check_writable_dir(path, f"run directory {run_dir}", fix)
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        fix = "point tracking.uri to a writable folder (sqlite:///DIR/mlflow.db) or drop it to use <root>/mlflow.db"
        check_writable_dir(db.parent, f"tracking.uri={tracking_uri}", fix)
        if db.exists() and (not db.is_file() or not os.access(db, os.R_OK | os.W_OK)):
            kind = "not a file" if not db.is_file() else "not readable and writable"
            raise PathError(f"tracking.uri={tracking_uri}: {db} is {kind}; {fix}")
