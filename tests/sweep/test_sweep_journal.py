"""A damaged Optuna journal (the sweep's optuna.journal): found before it is opened, named with its line and the
trials its valid prefix holds, never appended to, and repaired by `mta-lab sweep repair` (valid prefix kept, the
original backed up).

The journals are real: one tiny sweep (two variants, one seed, 3 training steps each) runs once through
`mta-lab sweep run`; every test damages its own copy of that sweep directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_sweep_engine import cache, finish, sweep_cli, write_sweep  # noqa: F401 - the module fixture `cache`

from mta_lab.cli import main
from mta_lab.sweep.spec import SweepSpec
from mta_lab.sweep.storage import open_storage


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # rich wraps at the width: keep each path in one piece


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache) -> tuple[Path, Path]:  # noqa: F811 - the imported fixture
    """(sweep file, sweep dir) of a real sweep whose two trials completed."""
    root = tmp_path_factory.mktemp("journal_sweep")
    path = write_sweep(root, "journaled", cache,
                       ablation={"variants": {"a": ["attention=transformer"], "b": ["attention=t5_all_gate"]}})
    code, out = finish(sweep_cli("run", str(path), "--dir", str(root / "sweep")), 300)
    assert code == 0, out
    return path, root / "sweep"


def copy_sweep(finished, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A self-contained copy of the finished sweep (its paths rewritten): (sweep file, dir, journal)."""
    path, original = finished
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(original, sweep_dir)
    journal = sweep_dir / "optuna.journal"
    journal.write_bytes(journal.read_bytes().replace(str(original).encode(), str(sweep_dir).encode()))
    return path, sweep_dir, journal


def lines_of(journal: Path) -> list[bytes]:
    data = journal.read_bytes()
    assert data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def trials_in(lines: list[bytes]) -> int:
    return sum(1 for line in lines if json.loads(line)["op_code"] == 4)  # CREATE_TRIAL


def one_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and "Traceback" not in captured.err + captured.out, captured.err
    return " ".join(captured.err.split())


def damage(journal: Path, how: str) -> int:
    """Damage the journal; returns the number (1-based) of the damaged line."""
    lines = lines_of(journal)
    if how == "truncated_tail":  # the last record cut off by a crash during its write: no line end
        journal.write_bytes(b"\n".join(lines[:-1]) + b"\n" + lines[-1][: len(lines[-1]) // 2])
        return len(lines)
    index = len(lines) // 2
    if how == "middle":  # a record cut short inside the file
        lines[index] = lines[index][: len(lines[index]) // 2]
    else:  # "0xff": one byte that is not UTF-8
        line = bytearray(lines[index])
        line[30] = 0xFF
        lines[index] = bytes(line)
    journal.write_bytes(b"\n".join(lines) + b"\n")
    return index + 1


@pytest.mark.timeout(600)
@pytest.mark.parametrize("how", ["truncated_tail", "middle", "0xff"])
def test_damaged_journal_is_one_clear_error_then_repair_keeps_the_valid_prefix(finished, tmp_path, capsys, how):
    path, sweep_dir, journal = copy_sweep(finished, tmp_path)
    total = len(lines_of(journal))
    intact = lines_of(journal)
    line = damage(journal, how)
    damaged = journal.read_bytes()
    kept_trials = trials_in(intact[: line - 1])
    args = [str(path), "--dir", str(sweep_dir)]

    for action in ("status", "run", "best"):
        assert main(["sweep", action, *args]) == 2, action
        message = one_error(capsys)
        assert f"{journal}" in message and f"line {line}" in message, message
        assert f"{kept_trials} trial" in message and f"mta-lab sweep repair {path}" in message, message
        assert journal.read_bytes() == damaged  # nothing appended, not after a partial line either

    assert main(["sweep", "repair", *args]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"kept lines 1-{line - 1}" in out and f"{kept_trials} trial" in out, out
    assert f"dropped {total - line + 1} line" in out, out
    backups = list(sweep_dir.glob("optuna.journal.damaged-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == damaged  # the original, byte for byte
    assert journal.read_bytes() == b"".join(x + b"\n" for x in intact[: line - 1])  # the valid prefix
    assert main(["sweep", "status", *args]) == 0
    study = optuna.load_study(study_name="journaled", storage=open_storage(SweepSpec.load(path), sweep_dir))
    assert len(study.trials) == kept_trials
    if how == "truncated_tail":  # only trial 1's completion was lost: trial 0 stays complete
        assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert main(["sweep", "repair", *args]) == 0  # a second repair finds nothing to do
    assert "is intact" in capsys.readouterr().out
    assert len(list(sweep_dir.glob("optuna.journal.damaged-*"))) == 1


@pytest.mark.timeout(600)
def test_run_after_repair_finishes_the_sweep(finished, tmp_path, capsys):
    path, sweep_dir, journal = copy_sweep(finished, tmp_path)
    damage(journal, "truncated_tail")
    args = [str(path), "--dir", str(sweep_dir)]
    assert main(["sweep", "repair", *args]) == 0
    # the trial whose completion was lost is RUNNING with a dead worker: `run` reaps and retries it
    code, out = finish(sweep_cli("run", *args), 300)
    assert code == 0, out
    study = optuna.load_study(study_name="journaled", storage=open_storage(SweepSpec.load(path), sweep_dir))
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 2 and TrialState.RUNNING not in states
    from mta_lab.sweep.journal import scan_journal

    scan = scan_journal(journal)
    assert scan.damage is None and scan.trials == len(study.trials)


def test_a_complete_last_record_without_its_line_end_is_kept_by_repair(finished, tmp_path):
    from mta_lab.sweep.journal import repair_journal, scan_journal

    _, _, journal = copy_sweep(finished, tmp_path)
    intact = journal.read_bytes()
    journal.write_bytes(intact[:-1])  # only the final newline is missing
    scan = scan_journal(journal)
    assert scan.line == len(lines_of_bytes(intact)) and "line end" in scan.damage
    result = repair_journal(journal)
    assert journal.read_bytes() == intact and result.dropped_lines == 0
    assert scan_journal(journal).damage is None


def lines_of_bytes(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def test_damage_after_opening_is_refused_at_the_next_write(finished, tmp_path):
    from mta_lab.sweep.journal import JournalDamaged

    path, sweep_dir, journal = copy_sweep(finished, tmp_path)
    storage = open_storage(SweepSpec.load(path), sweep_dir)
    study = optuna.load_study(study_name="journaled", storage=storage)
    line = damage(journal, "truncated_tail")  # e.g. another writer killed during its write
    damaged = journal.read_bytes()
    with pytest.raises(JournalDamaged, match=f"line {line}"):
        study.set_user_attr("x", 1)
    assert journal.read_bytes() == damaged


def test_repair_refuses_a_database_storage(tmp_path, capsys, finished):
    path, _ = finished
    assert main(["sweep", "repair", str(path), "--storage", f"sqlite:///{tmp_path}/o.db"]) == 2
    assert "repairs a journal file" in one_error(capsys)
    assert not (tmp_path / "o.db").exists()
