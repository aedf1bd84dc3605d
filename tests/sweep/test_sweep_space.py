"""Search spaces in Hydra's sweep grammar -> Optuna distributions; samplers and pruners from the sweep file."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from mta_lab.sweep.space import build_pruner, build_sampler, parse_space, parse_value, to_override
from mta_lab.sweep.spec import Hpo, Pruner, Sampler, SweepSpec, SweepSpecError


@pytest.mark.parametrize(("expr", "expected"), [
    ("tag(log, interval(1e-4, 1e-2))", FloatDistribution(1e-4, 1e-2, log=True)),
    ("interval(0.0, 0.3)", FloatDistribution(0.0, 0.3)),
    ("tag(int, interval(2, 8))", IntDistribution(2, 8)),
    ("range(1, 10, 2)", IntDistribution(1, 9, step=2)),
    ("range(2, 5)", IntDistribution(2, 4)),
    ("tag(log, range(1, 9))", IntDistribution(1, 8, log=True)),
    ("range(0.1, 0.4, 0.1)", CategoricalDistribution([0.1, 0.2, 0.3])),
    ("choice(transformer, mta, 3, true)", CategoricalDistribution(["transformer", "mta", 3, True])),
])
def test_grammar_to_distribution(expr, expected):
    assert parse_value("k", expr) == expected


@pytest.mark.parametrize(("expr", "message"), [
    ("interval(1e-4", "cannot parse"),
    ("0.01", "single value, not a search space"),
    ("tag(exp, interval(1, 2))", "unknown tag(s) exp"),
    ("tag(log, choice(a, b))", "does not apply to choice"),
    ("range(5, 1)", "is empty"),
    ("tag(log, interval(0.0, 1.0))", "optim.lr"),
    ("choice([1, 2], 3)", "plain values"),
])
def test_bad_expressions_name_the_key(expr, message):
    with pytest.raises(SweepSpecError) as err:
        parse_value("optim.lr", expr)
    assert str(err.value).startswith("sweep.hpo.space.optim.lr:")
    assert message in str(err.value)


def test_non_string_value_is_an_error():
    with pytest.raises(SweepSpecError, match="sweep.hpo.space.train.x: True is not a sweep expression"):
        parse_value("train.x", True)


def test_parse_space_keeps_order():
    space = parse_space({"optim.lr": "tag(log, interval(1e-4, 1e-2))", "attention": "choice(transformer, mta)"})
    assert list(space) == ["optim.lr", "attention"]


@pytest.mark.parametrize(("key", "value", "override"), [
    ("optim.lr", 0.001, "optim.lr=0.001"),
    ("model.n_layers", 4, "model.n_layers=4"),
    ("attention", "t5_all_gate", "attention=t5_all_gate"),
    ("train.compile", True, "train.compile=true"),
    ("optim.grad_clip", None, "optim.grad_clip=null"),
    ("tracking.run_name", "a b", "tracking.run_name='a b'"),
])
def test_to_override_round_trips_through_hydra(key, value, override):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert to_override(key, value) == override
    assert OverridesParser.create().parse_overrides([override])[0].value() == value


def test_samplers_and_pruners():
    space = parse_space({"x": "choice(1, 2)", "y": "range(0, 3)"})
    assert isinstance(build_sampler(Hpo(space={"x": "choice(1, 2)"}, sampler=Sampler("random", seed=3)), space),
                      optuna.samplers.RandomSampler)
    grid = build_sampler(Hpo(space={"x": "choice(1, 2)"}, sampler=Sampler("grid")), space)
    assert isinstance(grid, optuna.samplers.GridSampler)
    assert isinstance(build_pruner(Hpo(space={"x": "1"}, pruner=Pruner("median", {"n_startup_trials": 1}))),
                      optuna.pruners.MedianPruner)
    assert isinstance(build_pruner(Hpo(space={"x": "1"})), optuna.pruners.NopPruner)


def test_sampler_and_pruner_errors():
    with pytest.raises(SweepSpecError, match="grid sampler needs choice"):
        build_sampler(Hpo(space={"x": "interval(0, 1)"}, sampler=Sampler("grid")),
                      parse_space({"x": "interval(0, 1)"}))
    with pytest.raises(SweepSpecError, match=r"hpo.sampler.options: \{'bogus': 1\} do not fit the tpe sampler"):
        build_sampler(Hpo(space={"x": "choice(1, 2)"}, sampler=Sampler("tpe", options={"bogus": 1})), {})
    with pytest.raises(SweepSpecError, match="percentile pruner needs"):
        build_pruner(Hpo(space={"x": "1"}, pruner=Pruner("percentile")))


def test_bad_space_fails_at_create(tmp_path):
    from mta_lab.sweep.study import create

    spec = SweepSpec.from_dict({"name": "bad", "kind": "hpo", "hpo": {"space": {"optim.lr": "interval(1"}}})
    with pytest.raises(SweepSpecError, match="sweep.hpo.space.optim.lr"):
        create(spec, tmp_path / "s")
    assert not (tmp_path / "s" / "mlflow.db").exists()
