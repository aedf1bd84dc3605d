"""`mta-lab report ablation|scaling|toy|curves|kernels`: reports from MLflow runs (or a checkpoint) written to
reports/<name>/ as Markdown, HTML, LaTeX, CSV, PNG and meta.json, with a preview in the terminal."""

from __future__ import annotations

import argparse
from pathlib import Path

from mta_lab.errors import UsageError

KINDS = {
    "ablation": "ablation table: one row per variant vs the baseline, paired bootstrap CIs over seeds",
    "scaling": "scaling-law fits L = E + A·C^(-α) vs compute and parameters, compute multipliers",
    "toy": "toy task, the paper's Table 1 layout (error %% per N and variant, Transformer vs MTA)",
    "curves": "training/validation curves of chosen runs on one plot",
    "evals": "NIAH heatmaps and accuracy vs needles, BabiLong accuracy vs distraction, per variant (eval/* metrics)",
    "kernels": "heatmaps of a checkpoint's learned kq kernels and head-mixing matrices (paper Figure 4)",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("report", help="ablation tables, scaling-law fits and plots from MLflow runs")
    kinds = parser.add_subparsers(dest="report", metavar="KIND", required=True)
    for kind, help_text in KINDS.items():
        p = kinds.add_parser(kind, help=help_text, description=help_text)
        if kind != "kernels":
            p.add_argument("--uri", default=None, help="MLflow tracking URI (default: sqlite:///<--root>/mlflow.db)")
            p.add_argument("--root", default="runs", help="run root whose mlflow.db is read when --uri is not given")
            p.add_argument("--experiment", default="mta-lab", help="MLflow experiment (default: mta-lab)")
            p.add_argument("--sweep", default=None, help="only runs tagged mta.sweep=NAME")
            p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                           help="only runs with this tag value (repeatable), e.g. --tag mta.size=tiny")
            p.add_argument("--runs", default=None, help="only these run ids (comma-separated, prefixes allowed)")
        if kind in ("ablation", "scaling"):
            p.add_argument("--metric", default="final/val_loss",
                           help="final metric to compare (default final/val_loss)")
            p.add_argument("--baseline", default=None, help="baseline variant (ablation) or attention family (scaling)")
            p.add_argument("--n-boot", type=int, default=10000 if kind == "ablation" else 300,
                           help="bootstrap resamples")
            p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap RNG")
        if kind == "ablation":
            p.add_argument("--metrics", default=None, metavar="M1,M2",
                           help="eval metrics shown beside --metric with the same paired CIs, e.g. "
                           "eval/niah/acc,eval/babilong/acc")
        if kind == "toy":
            p.add_argument("--at-step", type=int, default=None, metavar="STEP",
                           help="error rates from every run's validation at this step (finished or not) instead of "
                           "the finished runs' final/val_error_rate: compares an interrupted sweep at a common step")
        if kind == "curves":
            p.add_argument("--metric", action="append", default=None,
                           help="metric history to plot (repeatable; default train/loss and val/loss)")
        if kind == "kernels":
            p.add_argument("--ckpt", required=True, help="run directory, its final/model.pt or a checkpoints/*.ckpt")
        p.add_argument("--out", default="reports", help="folder the report directory goes in (default reports/)")
        p.add_argument("--name", default=None, help="report directory name (default: KIND-SWEEP or KIND)")
        p.add_argument("--quiet", action="store_true", help="no table preview in the terminal")
        p.set_defaults(handler=run)


def query_from_args(args: argparse.Namespace):
    from mta_lab.report.collect import RunQuery

    tags = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {item!r}: expected KEY=VALUE, e.g. --tag mta.size=tiny")
        tags[key] = value
    uri = args.uri or f"sqlite:///{Path(args.root).resolve()}/mlflow.db"
    if args.uri is None and not (Path(args.root) / "mlflow.db").is_file():
        raise UsageError(f"no MLflow database at {Path(args.root) / 'mlflow.db'}; give --uri or --root")
    run_ids = tuple(r.strip() for r in args.runs.split(",") if r.strip()) if args.runs else ()
    return RunQuery(uri, args.experiment, args.sweep, tags, run_ids)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mta_lab.report import build
    from mta_lab.report.render import preview, write_report

    kind = args.report
    if kind == "kernels":
        report = build.kernels_report(args.ckpt, name=args.name)
    else:
        query = query_from_args(args)
        if kind == "ablation":
            metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
            report = build.ablation_report(query, args.metric, args.baseline, n_boot=args.n_boot, seed=args.seed,
                                           name=args.name, metrics=metrics)
        elif kind == "scaling":
            report = build.scaling_report(query, args.metric, args.baseline, n_boot=args.n_boot, seed=args.seed,
                                          name=args.name)
        elif kind == "evals":
            from mta_lab.report.evals import evals_report

            report = evals_report(query, name=args.name)
        elif kind == "toy":
            report = build.toy_report(query, name=args.name, at_step=args.at_step)
        else:
            report = build.curves_report(query, args.metric or ["train/loss", "val/loss"], name=args.name)
    out = write_report(report, args.out)
    console = Console()
    if not args.quiet:
        preview(report, console)
    console.print(f"report written to [bold]{out}[/] (report.md, report.html, report.tex, CSV, PNG, meta.json)",
                  highlight=False)
    return 0
