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


def check_trials(spec: SweepSpec) -> dict:
    """Compose the base and every fixed trial (once per variant: seeds do not change what composes). Returns the
    base's RunConfig as plain data (stored on the study)."""
    from mta_lab.fields import plain

    base = _compose(spec, "base", list(spec.base), spec.base, stamp="base")
    seen: set[str] = set()
    for plan in spec.fixed_trials():
        if plan.variant in seen:
            continue
        seen.add(plan.variant)
        where = f"ablation.variants.{plan.variant}" if spec.ablation is not None else f"scaling variant {plan.variant}"
        _compose(spec, where, [*spec.base, *plan.overrides, f"train.seed={plan.seed}"], plan.overrides)
    return plain(base.to_dict())
