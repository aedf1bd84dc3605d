"""Two real trainings started at once: on a fresh root both set up the MLflow database safely and finish; with the
same name=, one trains and the other stops at once (exit 2, the holder's PID and host named, nothing recorded)."""

from __future__ import annotations

import socket
import subprocess

from integration_helpers import REPO, assert_one_line_error, clean_env, cli_command, runs_in, sqlite_uri, tiny


def _start_together(*arg_lists: list[str]) -> list[tuple[subprocess.Popen, subprocess.CompletedProcess]]:
    procs = [subprocess.Popen([*cli_command(*args), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=REPO, env=clean_env()) for args in arg_lists]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append((proc, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)))
    return done


def test_two_trainings_started_at_once_on_a_fresh_root_both_finish(tmp_path, data_cache):
    root = tmp_path / "runs"
    results = _start_together(tiny(root, "first", data_cache, max_steps=3),
                              tiny(root, "second", data_cache, max_steps=3))
    for _, result in results:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
    runs = runs_in(sqlite_uri(root))
    assert sorted(r.info.run_name for r in runs) == ["first", "second"]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_the_same_name_started_twice_at_once_trains_once_and_the_other_stops_naming_the_holder(tmp_path, data_cache):
    root = tmp_path / "runs"
    (root / "same").mkdir(parents=True)  # the database exists: this is the run lock, not the database setup
    subprocess.run([*cli_command(*tiny(root, "warmup", data_cache, max_steps=1)), "--no-progress"], cwd=REPO,
                   env=clean_env(), check=True, capture_output=True, timeout=240)
    args = tiny(root, "same", data_cache, max_steps=60)
    results = _start_together(args, args)
    winners = [(p, r) for p, r in results if r.returncode == 0]
    losers = [(p, r) for p, r in results if r.returncode != 0]
    assert len(winners) == 1 and len(losers) == 1, [(r.returncode, r.stderr[-2000:]) for _, r in results]
    (holder, _), (_, lost) = winners[0], losers[0]
    assert_one_line_error(lost, str(root / "same"), f"PID {holder.pid}", socket.gethostname())
    runs = runs_in(sqlite_uri(root), filter_string="attributes.run_name = 'same'")
    assert [r.info.status for r in runs] == ["FINISHED"]  # the second start recorded nothing
