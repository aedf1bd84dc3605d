"""The sweep's Optuna journal file (<sweep dir>/optuna.journal): scanned before it is opened, guarded on every
append, repaired on request.

A journal is one JSON record per line, each ending with a line end; Optuna replays them in order (a trial's id
is the count of CREATE_TRIAL records before it, so a record can only be read after every record before it).
A crash during a write leaves a last line without its line end; a damaged disk or an edit leaves a line that is
not JSON or not UTF-8. Optuna skips the first silently and then appends onto it (every later read fails), and
fails on the others with a bare decode error. Here the first bad line stops the scan: the lines before it are
the valid prefix, and `repair_journal` keeps exactly that prefix (the original is kept beside it as
<journal>.damaged-<stamp>).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.storages.journal._file import LOCK_FILE_SUFFIX, get_lock_file

from mta_lab.errors import UserError

CREATE_TRIAL = 4  # optuna.storages.journal._storage.JournalOperation.CREATE_TRIAL
WRITER_WAIT_S = 5.0  # a last line without its line end, while a writer holds the lock: wait this long for it


class JournalDamaged(UserError, RuntimeError):
    """The journal has a partial or corrupt record; the message names the file, the line and the repair."""


@dataclass(frozen=True)
class JournalScan:
    """What a journal holds: its valid prefix and, when damaged, the first bad line."""

    path: Path
    lines: int  # lines in the file (a last line without its line end counts)
    records: int  # valid records before the first bad line (all of them when intact)
    trials: int  # CREATE_TRIAL records among them
    valid_bytes: int  # length of the valid prefix
    line: int | None = None  # the first bad line (1-based), None when intact
    damage: str | None = None  # what is wrong with it
    keeps_bad_line: bool = False  # the bad line is a complete record missing only its line end (repair keeps it)

    @property
    def dropped_lines(self) -> int:
        """Lines a repair drops: the bad one and every one after it (they may refer to trials it created)."""
        if self.line is None:
            return 0
        return self.lines - self.line + 1 - int(self.keeps_bad_line)


def _problem(line: bytes, is_last: bool) -> tuple[str | None, bool]:
    """(what is wrong with this line or None, whether it is a complete record missing only its line end)."""
    ended = line.endswith(b"\n")
    body = line.rstrip(b"\r\n") if ended else line
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"byte 0x{body[err.start]:02x} at column {err.start + 1} is not UTF-8 text", False
    try:
        record: Any = json.loads(text)
    except json.JSONDecodeError as err:
        if not ended and is_last:
            return f"the last record is cut off ({len(body)} bytes without a line end: a write was interrupted)", False
        return f"not a JSON record ({err.msg}, column {err.colno})" if text.strip() else "an empty line", False
    if not isinstance(record, dict) or "op_code" not in record:
        return "not an Optuna journal record (no op_code)", False
    if not ended:
        return "the last record has no line end (a write was interrupted after it)", True
    return None, False


def _scan_once(path: Path) -> JournalScan:
    records = trials = valid = lines = 0
    bad: tuple[int, str, bool] | None = None
    with open(path, "rb") as handle:
        content = handle.readlines()
    for number, line in enumerate(content, start=1):
        lines = number
        if bad is not None:
            continue
        problem, keep = _problem(line, number == len(content))
        if problem is not None:
            bad = (number, problem, keep)
            if not keep:
                continue
        records += 1
        valid += len(line)
        if json.loads(line)["op_code"] == CREATE_TRIAL:
            trials += 1
    if bad is None:
        return JournalScan(path, lines, records, trials, valid)
    return JournalScan(path, lines, records, trials, valid, line=bad[0], damage=bad[1], keeps_bad_line=bad[2])


def scan_journal(path: str | Path) -> JournalScan:
    """Scan every line. A last line without its line end while another process holds the journal's lock is a
    write in progress: it is scanned again until that writer is done (at most WRITER_WAIT_S)."""
    path = Path(path)
    deadline = time.monotonic() + WRITER_WAIT_S
    while True:
        scan = _scan_once(path)
        in_progress = scan.line is not None and scan.line == scan.lines and os.path.exists(f"{path}{LOCK_FILE_SUFFIX}")
        if not in_progress or time.monotonic() > deadline:
            return scan
        time.sleep(0.05)


def damage_message(scan: JournalScan, repair: str) -> str:
    kept = scan.line - 1 + int(scan.keeps_bad_line)
    prefix = f"lines 1-{kept}, {scan.records} records" if kept else "no line"
    if scan.keeps_bad_line:
        fate = "a repair keeps it and adds the line end"
    else:
        after = scan.lines - scan.line
        fate = (f"line {scan.line}{f' and the {after} line(s) after it' if after else ''} cannot be replayed (a "
                "repair drops " + ("them" if after else "it") + ")")
    return (f"sweep journal {scan.path} is damaged at line {scan.line} of {scan.lines}: {scan.damage}. Its valid "
            f"prefix ({prefix}) holds {scan.trials} trial(s); {fate}. Nothing was written to it. Repair it with "
            f"`{repair}` (the original is kept as {scan.path.name}.damaged-<time>), then run the command again")


def check_journal(path: str | Path, repair: str) -> JournalScan:
    """The journal's scan; JournalDamaged (naming `repair`, the command that fixes it) when it is damaged."""
    scan = scan_journal(path)
    if scan.line is not None:
        raise JournalDamaged(damage_message(scan, repair))
    return scan


@dataclass(frozen=True)
class Repair:
    scan: JournalScan  # the journal before the repair
    backup: Path | None  # the original, None when nothing needed repair

    @property
    def dropped_lines(self) -> int:
        return self.scan.dropped_lines


def repair_journal(path: str | Path) -> Repair:
    """Keep the valid prefix (a complete last record gets its line end back), the original saved beside it as
    <journal>.damaged-<time>. The rewrite holds the journal's lock and replaces the file atomically, so a reader
    sees either the damaged or the repaired journal. An intact journal is left alone."""
    path = Path(path)
    lock = JournalFileOpenLock(str(path))
    with get_lock_file(lock):
        scan = _scan_once(path)
        if scan.line is None:
            return Repair(scan, None)
        data = path.read_bytes()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = path.with_name(f"{path.name}.damaged-{stamp}")
        n = 1
        while backup.exists():
            n += 1
            backup = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
        shutil.copy2(path, backup)
        kept = data[: scan.valid_bytes] + (b"\n" if scan.keeps_bad_line else b"")
        tmp = path.with_name(f".{path.name}.repair-{os.getpid()}")
        with open(tmp, "wb") as handle:
            handle.write(kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return Repair(scan, backup)


class GuardedJournalBackend(JournalFileBackend):
    """Optuna's journal file backend that never appends after a partial line and turns a read of a damaged
    record into JournalDamaged (damage that appears after the journal was opened, e.g. by another writer)."""

    def __init__(self, file_path: str, repair: str) -> None:
        super().__init__(file_path, lock_obj=JournalFileOpenLock(file_path))  # O_EXCL: across processes and NFS
        self._repair = repair

    def _damaged(self) -> JournalDamaged:
        scan = _scan_once(Path(self._file_path))
        if scan.line is None:  # damaged and repaired meanwhile: say so rather than reading a changed file
            return JournalDamaged(f"sweep journal {self._file_path} changed under this process (repaired?); "
                                  "run the command again")
        return JournalDamaged(damage_message(scan, self._repair))

    def read_logs(self, log_number_from: int):
        try:
            yield from super().read_logs(log_number_from)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError, Optuna's "Invalid log format."
            raise self._damaged() from None

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with get_lock_file(self._lock):
            with open(self._file_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell() > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        raise self._damaged()
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            with open(self._file_path, "ab") as handle:
                handle.write(text.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
