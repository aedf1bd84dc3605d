"""Every trial of a sweep composed before its study exists: the base and each fixed trial (ablation variant,
scaling size x attention x budget) into a validated RunConfig, so a typo in the last variant fails at `create`,
naming that variant, instead of after the first variants have trained."""

from __future__ import annotations

from mta_lab.errors import UserError
from mta_lab.sweep.spec import SweepSpec, SweepSpecError


def _compose(spec: SweepSpec, where: str, overrides: list[str], shown: tuple[str, ...] | list[str],
             stamp: str = "check"):
    from mta_lab.conf import load_run_config

    try:
        return load_run_config(overrides, stamp=stamp)
    except UserError as err:
        text = str(err).removeprefix(f"config overrides {' '.join(overrides)}: ")  # the variant is named instead
        raise SweepSpecError(f"{spec.source or spec.name}: sweep.{where} [{', '.join(shown)}]: {text}; fix it in "
                             "the sweep file (nothing was created)") from None


def eval_metric_problem(config, metric: str) -> str | None:
    """Why a run of `config` would not log the eval metric `metric` (eval/<task>/...), None when it would (or when
    only the run can tell: zeroshot settings, harness)."""
    from mta_lab.eval.options import metric_names

    task = metric.split("/")[1] if metric.count("/") >= 2 else ""
    if task not in config.train.evals:
        return (f"{metric} is an eval metric of task {task or '?'}, which train.evals ({list(config.train.evals)}) "
                f"does not run; add train.evals=[{task or 'TASK'}] to the sweep's base")
    names = metric_names(task, config.train.checked_eval_options(task))
    if names is not None and metric not in names:
        close = sorted(names)[:6]
        return f"{task} with these train.eval_options logs no {metric} (it logs e.g. {', '.join(close)})"
    return None


def _check_metrics(spec: SweepSpec, where: str, config, shown) -> None:
    """The objective and the recorded metrics that are eval metrics are produced by this trial's train.evals."""
    for field, metric in (("objective.metric", spec.objective.metric), *(("record", m) for m in spec.record)):
        if metric.startswith("eval/") and (problem := eval_metric_problem(config, metric)):
            raise SweepSpecError(f"{spec.source or spec.name}: sweep.{field}={metric}: in {where} "
                                 f"[{', '.join(shown)}]: {problem}; fix it in the sweep file (nothing was created)")


def check_trials(spec: SweepSpec) -> dict:
    """Compose the base and every fixed trial (once per variant: seeds do not change what composes); an eval
    metric named as objective or recorded must come from each trial's train.evals. Returns the base's RunConfig
    as plain data (stored on the study)."""
    from mta_lab.fields import plain

    base = _compose(spec, "base", list(spec.base), spec.base, stamp="base")
    seen: set[str] = set()
    for plan in spec.fixed_trials():
        if plan.variant in seen:
            continue
        seen.add(plan.variant)
        where = f"ablation.variants.{plan.variant}" if spec.ablation is not None else f"scaling variant {plan.variant}"
        config = _compose(spec, where, [*spec.base, *plan.overrides, f"train.seed={plan.seed}"], plan.overrides)
        _check_metrics(spec, where, config, plan.overrides)
    if not seen:  # HPO: the base (its space samples optimiser and model knobs, not train.evals)
        _check_metrics(spec, "base", base, spec.base)
    return plain(base.to_dict())
