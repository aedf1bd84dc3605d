"""One training per run directory: an exclusive `fcntl.flock` on `<run dir>/run.lock`, held for the whole run.

The kernel drops the lock when the holder exits, however it ends (a SIGKILL too), so a stale lock file is never an
obstacle; the file keeps the last holder's PID and host, which a second start names in its error.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from mta_lab.errors import UserError

LOCK_NAME = "run.lock"


class RunDirectoryBusy(UserError, RuntimeError):
    """Another process trains into this run directory."""


class RunLock:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> RunLock:
        self._created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "a process that has not written its PID yet"
            os.close(fd)
            raise RunDirectoryBusy(
                f"run directory {self.run_dir} is in use by another training ({holder}); wait for it to end, "
                "or choose another name=..."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on host {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
            # A run that stopped before writing anything leaves no directory behind (only the lock was there).
            if self._created and [p.name for p in self.run_dir.iterdir()] == [LOCK_NAME]:
                try:
                    self.path.unlink()
                    self.run_dir.rmdir()
                except OSError:  # another start got there in between: its run, its directory
                    pass

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
