"""`mta-lab sweep create|run|worker|status|reap|best SWEEP_FILE`: ablations, HPO and scaling sweeps with Optuna.

`create` makes the study, the MLflow parent run and the queue of fixed trials (idempotent); `run --workers N`
runs N local workers; `worker` is one worker (anywhere the storage is reachable); `status` / `reap` / `best`
inspect and repair the study; `repair` mends a damaged journal file (a record cut off by a crash).
"""

from __future__ import annotations

import argparse

from rich.console import Console


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("sweep", help="run ablations, HPO studies and scaling sweeps (Optuna + MLflow)",
                            description="Sweeps defined in YAML under sweeps/, run by Optuna workers, tracked in "
                            "MLflow (one parent run per sweep, one child run per trial x seed).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help: str, handler) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help, description=help)
        p.add_argument("sweep_file", metavar="SWEEP_FILE", help="a sweep YAML file, e.g. sweeps/tiny/table5_cpu.yaml")
        p.add_argument("--dir", default=None, help="sweep directory (journal, MLflow db, runs); "
                       "default runs/sweeps/<name>")
        p.add_argument("--storage", default=None, metavar="URL",
                       help="Optuna storage URL replacing the file's (e.g. the PostgreSQL URL of a cluster profile)")
        p.set_defaults(handler=handler)
        return p

    action("create", "create the study, the MLflow parent run and the fixed trials (idempotent)", _create)
    run = action("run", "run N local worker processes until the sweep is done (Ctrl-C stops them cleanly)", _run)
    run.add_argument("--workers", type=int, default=1, help="number of worker processes (default 1)")
    run.add_argument("--gpus", default=None, metavar="IDS",
                     help="comma list of GPU ids shared round-robin by the workers (worker i sees GPU ids[i %% n] "
                     "through CUDA_VISIBLE_DEVICES); e.g. --workers 12 --gpus 0,1,2 runs 4 trainings per GPU")
    worker = action("worker", "run one worker: ask -> compose -> train -> tell until no trial is left", _worker)
    worker.add_argument("--max-trials", type=int, default=None, help="stop after this many trials")
    action("status", "show trial states, best so far, per-variant results and ETA", _status)
    action("reap", "fail trials whose worker process is gone, mark their MLflow runs FAILED, retry them", _reap)
    action("best", "print the best trial (HPO) or variant (ablation/scaling)", _best)
    action("repair", "repair a damaged journal file: keep its valid prefix, back up the original", _repair)
    submit = action("submit", "submit workers as a SLURM job array (submitit) with a cluster profile", _submit)
    submit.add_argument("--cluster", required=True, help="cluster profile: a name under conf/cluster/ "
                        "(e.g. example_slurm, local) or a YAML path")
    submit.add_argument("--workers", type=int, default=1, help="number of array jobs (workers), default 1")
    submit.add_argument("--executor", choices=("slurm", "local"), default=None,
                        help="override the profile's executor (local: submitit's local executor, no sbatch)")
    submit.add_argument("--max-trials", type=int, default=None, help="each worker stops after this many trials")
    submit.add_argument("--force", action="store_true",
                        help="submit even when the sweep has nothing left to run (refused otherwise)")


def _spec(args):
    """The sweep file of the command (every subcommand starts here); library INFO lines are silenced."""
    from mta_lab.quiet import quiet_third_party
    from mta_lab.sweep.spec import SweepSpec

    quiet_third_party()
    spec = SweepSpec.load(args.sweep_file)
    if args.storage:
        from dataclasses import replace

        spec = replace(spec, storage=args.storage)  # validated again
    return spec


def _create(args) -> int:
    from mta_lab.sweep.status import render_status
    from mta_lab.sweep.study import create

    sweep = create(_spec(args), args.dir)
    console = Console()
    console.print(f"sweep {sweep.spec.name}: study and MLflow parent run {sweep.parent_run_id} ready in "
                  f"{sweep.sweep_dir}", highlight=False)
    render_status(sweep, console)
    return 0


def _sweep_failed(err) -> int:
    Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False)
    return 1


def _run(args) -> int:
    from mta_lab.sweep.local import parse_gpu_ids, run_local
    from mta_lab.sweep.status import render_status
    from mta_lab.sweep.study import open_sweep

    spec, console = _spec(args), Console()
    summary = run_local(spec, args.dir, workers=args.workers, gpus=parse_gpu_ids(args.gpus), console=console)
    render_status(open_sweep(spec, args.dir), console)
    if summary.interrupted:
        console.print("interrupted; run the same command again to continue the sweep")
        return 130
    if any(code != 0 for code in summary.return_codes):
        from mta_lab.sweep.worker import failed_message, failures

        failed = failures(open_sweep(spec, args.dir).study.get_trials(deepcopy=False))
        if len(failed) > spec.max_failures:
            return _sweep_failed(failed_message(spec, failed))
        return _sweep_failed(f"sweep {spec.name}: worker exit codes {summary.return_codes}; see the logs in "
                             f"{open_sweep(spec, args.dir).sweep_dir / 'logs'} and `mta-lab sweep status`")
    return 0


def _worker(args) -> int:
    from mta_lab.sweep.worker import SweepFailed, run_worker

    console = Console()
    try:
        summary = run_worker(_spec(args), sweep_dir=args.dir, max_trials=args.max_trials, console=console)
    except SweepFailed as err:
        return _sweep_failed(err)
    console.print(f"worker done ({summary.stopped}): {len(summary.completed)} complete, {len(summary.failed)} "
                  f"failed, {len(summary.pruned)} pruned, {len(summary.interrupted)} interrupted")
    return 130 if summary.stopped == "interrupted" else 0


def _status(args) -> int:
    from mta_lab.sweep.status import render_status
    from mta_lab.sweep.study import open_sweep

    render_status(open_sweep(_spec(args), args.dir), Console())
    return 0


def _reap(args) -> int:
    from mta_lab.sweep.status import reap
    from mta_lab.sweep.study import open_sweep

    reaped = reap(open_sweep(_spec(args), args.dir))
    Console().print(f"reaped {len(reaped)} trial(s){': ' + ', '.join(map(str, reaped)) if reaped else ''}")
    return 0


def _best(args) -> int:
    import json

    from mta_lab.sweep.status import best
    from mta_lab.sweep.study import open_sweep

    top = best(open_sweep(_spec(args), args.dir))
    if top is None:
        return _sweep_failed("no trial has completed yet; see `mta-lab sweep status`")
    Console().print_json(json.dumps(top))
    return 0


def _repair(args) -> int:
    from mta_lab.errors import UsageError
    from mta_lab.sweep.journal import repair_journal
    from mta_lab.sweep.storage import journal_path
    from mta_lab.sweep.study import resolve_dir

    spec = _spec(args)
    if spec.storage is not None:
        raise UsageError(f"sweep repair repairs a journal file; sweep {spec.name} keeps its study in the database "
                         f"{spec.storage.split('@')[-1]}, which has no journal (nothing to repair)")
    path = journal_path(resolve_dir(spec, args.dir))
    if not path.is_file():
        raise UsageError(f"sweep {spec.name}: no journal at {path}; pass the sweep's --dir")
    result = repair_journal(path)
    scan, console = result.scan, Console()
    if result.backup is None:
        console.print(f"{path} is intact ({scan.lines} lines, {scan.trials} trial(s)); nothing to repair",
                      highlight=False)
        return 0
    kept = scan.line - 1 + int(scan.keeps_bad_line)
    dropped = f"dropped {result.dropped_lines} line(s) from line {scan.line} on" if result.dropped_lines else \
        "dropped nothing (added the missing line end)"
    console.print(f"repaired {path}: kept lines 1-{kept} ({scan.records} records, {scan.trials} trial(s)); {dropped} "
                  f"(line {scan.line}: {scan.damage}); the original is {result.backup}", highlight=False)
    console.print("trials whose end was dropped show as running until `sweep run` or `sweep reap` retries them; "
                  f"see `mta-lab sweep status {args.sweep_file} --dir {path.parent}`", highlight=False)
    return 0


def _submit(args) -> int:  # the SLURM path lives in mta_lab/sweep/slurm.py
    from mta_lab.sweep import slurm
    from mta_lab.sweep.storage import STORAGE_FILE, redacted, with_remembered_storage
    from mta_lab.sweep.study import resolve_dir

    spec = _spec(args)
    sweep_dir = resolve_dir(spec, args.dir)
    jobs = slurm.submit(spec, sweep_dir, cluster=args.cluster, workers=args.workers, executor=args.executor,
                        max_trials=args.max_trials, force=args.force)
    storage = with_remembered_storage(spec, sweep_dir).storage
    Console().print(f"sweep {spec.name}: submitted {len(jobs)} worker job(s): {', '.join(jobs)}; study in "
                    f"{redacted(storage)}; follow it with `mta-lab sweep status {args.sweep_file} --dir {sweep_dir}`"
                    + (f" (the storage is remembered in {sweep_dir / STORAGE_FILE})" if storage else ""),
                    highlight=False)
    return 0
