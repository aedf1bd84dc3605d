"""`mta-lab demo`: the one-command tour. A small real ablation (sweeps/tiny/demo.yaml: Transformer vs MTA x 2 seeds
on the tiny model and the embedded corpus), run by local Optuna workers with a journal file, tracked in a local
MLflow database, turned into the ablation report. No GPU, server or download; about 6-8 minutes on 2 CPU cores.
Rerunning continues (finished trials are kept) and rewrites the report.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from mta_lab.errors import UsageError

DEMO_SWEEP = Path(__file__).resolve().parents[2] / "sweeps" / "tiny" / "demo.yaml"

SCOPE_NOTE = (
    "What this demo can and cannot show: each run is a 0.25M-parameter model trained for 1.2M byte tokens of "
    "Shakespeare on a CPU, two seeds per variant. It exercises the whole platform (Hydra configs, Optuna workers, "
    "Lightning training, MLflow tracking, this report) and measures the cost of MTA's extra operations on a CPU, "
    "but differences in validation loss at this scale are of the order of the seed-to-seed noise: they say nothing "
    "about the paper's claims, which need 880M models and 105B tokens (sweeps/paper/table5.yaml) or the toy task "
    "(sweeps/paper/toy_table1.yaml). With two seeds a paired bootstrap interval is little more than the spread of "
    "two differences: treat it as a sanity check, not as significance."
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="run a small real ablation end to end and write its report (CPU, ~7 min)",
                            description=__doc__)
    parser.add_argument("--dir", default="runs/demo", help="sweep directory: journal, MLflow db, runs (runs/demo)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    parser.add_argument("--out", default="reports", help="report root: the report goes to <out>/demo/")
    parser.add_argument("--sweep", default=str(DEMO_SWEEP), help="the ablation to run (default: sweeps/tiny/demo.yaml)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mta_lab.quiet import quiet_third_party
    from mta_lab.report.build import ablation_report
    from mta_lab.report.collect import RunQuery
    from mta_lab.report.console import print_summary
    from mta_lab.report.render import write_report
    from mta_lab.sweep.local import run_local
    from mta_lab.sweep.spec import SweepSpec
    from mta_lab.sweep.status import counts
    from mta_lab.sweep.study import create, tracking_of
    from mta_lab.tracking.experiments import experiment_page

    quiet_third_party()
    console = Console()
    spec = SweepSpec.load(args.sweep)
    if spec.kind != "ablation":
        raise UsageError(f"--sweep {args.sweep}: the demo runs an ablation, this file is a {spec.kind} sweep")
    sweep = create(spec, args.dir)
    total = len(spec.fixed_trials())
    console.print(f"[bold]mta-lab demo[/]: {spec.description}; {total} trials "
                  f"({len(spec.ablation.variants)} variants x {len(spec.seeds)} seeds), {args.workers} workers, "
                  f"sweep directory {sweep.sweep_dir}", highlight=False)

    done = threading.Event()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} trials"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("training", total=total)

        def watch() -> None:
            while not done.wait(2.0):
                n = counts(sweep)
                progress.update(task, completed=n["complete"] + n["failed"],
                                description=f"training ({n['running']} running, {n['failed']} failed)")

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            summary = run_local(spec, sweep.sweep_dir, workers=args.workers, console=console)
        finally:
            done.set()
            watcher.join()
        n = counts(sweep)
        progress.update(task, completed=n["complete"] + n["failed"], description="training")
    if summary.interrupted:
        console.print("interrupted: rerun `mta-lab demo` to continue where it stopped")
        return 130
    if n["complete"] < total:
        console.print(f"[red]only {n['complete']} of {total} trials completed[/]; see `mta-lab sweep status "
                      f"{args.sweep} --dir {sweep.sweep_dir}` and the worker logs in {sweep.sweep_dir / 'logs'}")
        return 1

    uri, experiment = tracking_of(spec, sweep.sweep_dir)
    report = ablation_report(RunQuery(uri=uri, experiment=experiment, sweep=spec.name), baseline=spec.baseline,
                             name="demo")
    report.notes.append(SCOPE_NOTE)
    path = write_report(report, args.out)
    print_summary(report, console, full_report=f"{path}/report.md")  # 80 columns; the full table is in the file
    console.print(f"\nreport: {path}/ (report.md, report.html with the plots, report.tex, CSV, PNG, meta.json)")
    # Commands and links on one line each (soft wrap), so that they copy whole from a narrow terminal or a log.
    console.print(f"MLflow: mlflow ui --backend-store-uri {uri}", highlight=False, soft_wrap=True)
    console.print(f"        then open {experiment_page(uri, experiment)} (experiment '{experiment}', its runs)",
                  highlight=False, soft_wrap=True)
    console.print(f"sweep:  mta-lab sweep status {args.sweep} --dir {sweep.sweep_dir}")
    return 0
