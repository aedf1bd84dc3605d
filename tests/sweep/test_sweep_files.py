"""Every sweep file under sweeps/ loads into a SweepSpec and every trial it will run composes into a valid RunConfig.

Ablation and scaling files: each fixed trial's overrides (base + variant) compose with Hydra and validate (the
attention variant also against the model's heads and layers). HPO files: each space entry parses with Hydra's
override grammar as a sweep (interval / tag(log, ...) / choice / range) and the space's end points compose.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

from mta_lab.conf import load_run_config
from mta_lab.sweep.spec import SweepSpec, SweepSpecError

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
FILES = sorted(SWEEPS.rglob("*.yaml")) + sorted(SWEEPS.rglob("*.yml"))
IDS = [str(p.relative_to(SWEEPS)) for p in FILES]

# The trial counts each shipped file promises in its header comment (and the reports rely on).
EXPECTED_TRIALS = {
    "paper/table5.yaml": 9,
    "paper/kq_layers.yaml": 4,
    "paper/head_kernel.yaml": 5,
    "paper/kernel_init.yaml": 3,
    "paper/kernel_size.yaml": 4,
    "paper/toy_table1.yaml": 36,
    "paper/toy_table1_h200.yaml": 36,
    "paper/toy_table1_h200_long.yaml": 12,
    "paper/scaling.yaml": 48,
    "paper/hpo_lr_warmup.yaml": 30,
    "tiny/table5_cpu.yaml": 10,
    "tiny/hpo_cpu.yaml": 6,
    "tiny/scaling_cpu.yaml": 24,
    "tiny/toy_cpu.yaml": 12,
    "tiny/demo.yaml": 6,
    "paper/context_extension.yaml": 3,
    "paper/retrofit.yaml": 3,
    "tiny/retrofit_cpu.yaml": 3,
    "tiny/context_extension_cpu.yaml": 2,
    "tiny/niah_cpu.yaml": 4,
}
SAMPLER_CLASSES = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                   "cmaes": optuna.samplers.CmaEsSampler, "qmc": optuna.samplers.QMCSampler,
                   "grid": optuna.samplers.GridSampler}
PRUNER_CLASSES = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
                  "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
                  "percentile": optuna.pruners.PercentilePruner}


def test_the_sweep_tree_ships_every_kind_for_the_paper_and_for_the_cpu():
    assert set(EXPECTED_TRIALS) == set(IDS), "a sweep file was added or removed: update EXPECTED_TRIALS"
    for folder in ("paper", "tiny"):
        kinds = {SweepSpec.load(p).kind for p in FILES if p.parent.name == folder}
        assert kinds == {"ablation", "hpo", "scaling"}, folder
    names = [SweepSpec.load(p).name for p in FILES]
    assert len(set(names)) == len(names), "two sweep files share a name (a study name must be unique)"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_sweep_file_loads_and_is_documented(path):
    spec = SweepSpec.load(path)
    assert spec.source == str(path)
    assert path.read_text().startswith("#"), "each sweep file starts with a comment naming what it reproduces"
    count = spec.hpo.n_trials if spec.kind == "hpo" else len(spec.fixed_trials())
    assert count == EXPECTED_TRIALS[str(path.relative_to(SWEEPS))]
    if spec.kind != "hpo":
        plans = spec.fixed_trials()
        assert len({(p.variant, p.seed) for p in plans}) == len(plans)


def _check(config) -> None:
    config.attention.check_model(n_heads=config.model.n_heads, n_layers=config.model.n_layers)


@pytest.mark.parametrize("path", [p for p in FILES if SweepSpec.load(p).kind != "hpo"],
                         ids=[i for p, i in zip(FILES, IDS, strict=True) if SweepSpec.load(p).kind != "hpo"])
def test_every_fixed_trial_composes(path):
    spec = SweepSpec.load(path)
    seen: dict[str, object] = {}
    for plan in spec.fixed_trials():
        if plan.variant in seen:  # seeds differ only in the seed; one composition per variant
            continue
        config = load_run_config([*spec.base, *plan.overrides, f"train.seed={plan.seed}"], stamp="test")
        _check(config)
        seen[plan.variant] = config
    # the variants really differ from each other (an override that silently does nothing would not)
    configs = list(seen.values())
    fingerprints = {repr((c.model, c.attention, c.data, c.train, c.optim)) for c in configs}
    assert len(fingerprints) == len(configs)


@pytest.mark.parametrize("path", [p for p in FILES if SweepSpec.load(p).kind == "hpo"],
                         ids=[i for p, i in zip(FILES, IDS, strict=True) if SweepSpec.load(p).kind == "hpo"])
def test_hpo_space_parses_with_hydra_and_composes(path):
    spec = SweepSpec.load(path)
    parser = OverridesParser.create()
    low: list[str] = []
    high: list[str] = []
    for key, expression in spec.hpo.space.items():
        override = parser.parse_override(f"{key}={expression}")
        assert override.is_sweep_override(), f"{key}: {expression!r} is not a sweep expression"
        sweep = override.value()
        if isinstance(sweep, IntervalSweep):
            assert sweep.start < sweep.end
            ends = (sweep.start, sweep.end)
        elif isinstance(sweep, RangeSweep):
            values = list(override.sweep_iterator())
            assert values, f"{key}: empty range"
            ends = (values[0], values[-1])
        else:
            assert isinstance(sweep, ChoiceSweep)
            values = list(override.sweep_iterator())
            assert len(values) >= 2
            ends = (values[0], values[-1])
        low.append(f"{key}={ends[0]}")
        high.append(f"{key}={ends[1]}")
    for point in (low, high):
        config = load_run_config([*spec.base, *point], stamp="test")
        _check(config)
    # sampler and pruner options are real keyword arguments of the Optuna classes they name
    sampler = inspect.signature(SAMPLER_CLASSES[spec.hpo.sampler.name]).parameters
    assert set(spec.hpo.sampler.options) <= set(sampler), spec.hpo.sampler.options
    if spec.hpo.pruner.name != "none":
        pruner = inspect.signature(PRUNER_CLASSES[spec.hpo.pruner.name]).parameters
        assert set(spec.hpo.pruner.options) <= set(pruner), spec.hpo.pruner.options
        PRUNER_CLASSES[spec.hpo.pruner.name](**spec.hpo.pruner.options)
    SAMPLER_CLASSES[spec.hpo.sampler.name](seed=spec.hpo.sampler.seed, **spec.hpo.sampler.options)


def test_paper_table5_covers_every_table5_preset():
    from mta_lab.attention.presets import PRESETS

    spec = SweepSpec.load(SWEEPS / "paper" / "table5.yaml")
    used = {o.split("=", 1)[1] for v in spec.ablation.variants.values() for o in v if o.startswith("attention=")}
    assert used == {name for name in PRESETS if name.startswith("t5_")} | {"transformer"}
    assert spec.baseline == "transformer"


def test_paper_toy_sweep_runs_all_twelve_cells_with_three_seeds():
    spec = SweepSpec.load(SWEEPS / "paper" / "toy_table1.yaml")
    assert spec.base == ("experiment=toy",)
    cells = {}
    for variant, overrides in spec.ablation.variants.items():
        config = load_run_config([*spec.base, *overrides], stamp="test")
        cells[variant] = (config.data.toy_n, config.data.toy_variant, config.attention_name)
        assert config.name == f"toy_{variant}"  # the toy recipe names the run after its Table 1 cell
    assert cells == {f"n{n}_{a}_{m}": (n, a, f"toy_mta_n{n}" if m == "mta" else "toy_transformer")
                     for n in (5, 8) for a in ("all", "first", "last") for m in ("transformer", "mta")}
    assert spec.seeds == (0, 1, 2)
    h200 = SweepSpec.load(SWEEPS / "paper" / "toy_table1_h200.yaml")  # the same trials, fewer steps
    assert h200.ablation.variants == spec.ablation.variants and h200.seeds == spec.seeds
    config = load_run_config([*h200.base, *h200.ablation.variants["n8_first_mta"]], stamp="test")
    assert (config.train.max_steps, config.train.batch_size, config.optim.lr) == (3000, 64, 1e-4)
    assert (config.attention.kq_pre, config.data.toy_n, config.data.toy_variant) == ((2, 15), 8, "first")
    long = SweepSpec.load(SWEEPS / "paper" / "toy_table1_h200_long.yaml")  # the same variants, one seed, longer
    assert long.ablation.variants == spec.ablation.variants and long.seeds == (0,)
    config = load_run_config([*long.base, *long.ablation.variants["n5_last_mta"]], stamp="test")
    assert (config.train.max_steps, config.train.batch_size, config.optim.lr) == (12000, 64, 1e-4)
    assert (config.attention.kq_pre, config.data.toy_n, config.data.toy_variant) == ((2, 9), 5, "last")
    cpu = SweepSpec.load(SWEEPS / "tiny" / "toy_cpu.yaml")
    assert cpu.ablation.variants == spec.ablation.variants and cpu.seeds == (0,)
    assert cpu.tracking.experiment is None  # its own MLflow experiment, not the paper sweep's
    config = load_run_config([*cpu.base, *cpu.ablation.variants["n8_last_mta"]], stamp="test")
    assert (config.data.toy_n, config.data.toy_variant, config.data.toy_train_samples) == (8, "last", 2000)


def test_the_niah_sweep_ranks_by_an_eval_metric_its_trials_produce():
    from mta_lab.eval.options import metric_names
    from mta_lab.sweep.validate import check_trials

    spec = SweepSpec.load(SWEEPS / "tiny" / "niah_cpu.yaml")
    assert (spec.objective.metric, spec.objective.direction) == ("eval/niah/acc", "maximize")
    check_trials(spec)  # what `sweep create` checks: the objective and recorded eval metrics come from train.evals
    for overrides in spec.ablation.variants.values():
        config = load_run_config([*spec.base, *overrides], stamp="test")
        assert config.train.evals == ("niah",)
        options = config.train.checked_eval_options("niah")
        assert (options["contexts"], options["needles"], options["samples"]) == ([200], [1, 2], 4)
        produced = metric_names("niah", options)
        assert {spec.objective.metric, *(m for m in spec.record if m.startswith("eval/"))} <= produced
        assert options["contexts"][0] + 20 <= config.model.max_seq_len  # the prompt and its answer fit


def test_the_toy_variants_are_written_once():
    texts = {p: p.read_text() for p in FILES}
    assert [p.name for p, t in texts.items() if "toy_mta_n8" in t] == ["toy_table1.yaml"]
    extending = sorted(str(p.relative_to(SWEEPS)) for p, t in texts.items() if "\nextends:" in t)
    assert extending == ["paper/toy_table1_h200.yaml", "paper/toy_table1_h200_long.yaml", "tiny/toy_cpu.yaml"]


# ------------------------------------------------------------------------------------------------ extends
def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


BASE = """name: parent
kind: ablation
description: the parent
base: [experiment=tiny, train.max_steps=10]
objective: {metric: final/val_loss, direction: minimize}
seeds: [0, 1]
tracking: {experiment: parent_exp, uri: "sqlite:///p.db"}
ablation:
  variants:
    transformer: [attention=transformer]
    mta: [attention=mta]
"""


def test_extends_merges_mappings_and_replaces_other_values(tmp_path):
    _write(tmp_path, "parent.yaml", BASE)
    child = _write(tmp_path, "sub/child.yaml", """extends: ../parent.yaml
name: child
base: [experiment=tiny, train.max_steps=20]
seeds: [3]
tracking: {experiment: null}
ablation:
  variants:
    mta: [attention=mta, attention.gate=none]
    diff: [attention=diff]
""")
    spec = SweepSpec.load(child)
    assert (spec.name, spec.kind, spec.description, spec.source) == ("child", "ablation", "the parent", str(child))
    assert spec.base == ("experiment=tiny", "train.max_steps=20") and spec.seeds == (3,)  # lists replaced
    assert (spec.tracking.experiment, spec.tracking.uri) == (None, "sqlite:///p.db")  # mapping merged key by key
    assert spec.ablation.variants == {"transformer": ("attention=transformer",),  # inherited first, order kept
                                      "mta": ("attention=mta", "attention.gate=none"), "diff": ("attention=diff",)}
    assert spec.baseline == "transformer"


def test_extends_chains_and_a_null_drops_an_inherited_section(tmp_path):
    _write(tmp_path, "parent.yaml", BASE)
    _write(tmp_path, "middle.yaml", "extends: parent.yaml\nname: middle\nseeds: [5]\n")
    child = _write(tmp_path, "child.yaml", """extends: middle.yaml
name: hpo_child
kind: hpo
ablation: null
hpo: {space: {optim.lr: "interval(1e-4, 1e-2)"}, n_trials: 2}
""")
    spec = SweepSpec.load(child)
    assert (spec.kind, spec.ablation, spec.seeds, spec.hpo.n_trials) == ("hpo", None, (5,), 2)


@pytest.mark.parametrize(("files", "message"), [
    ({"a.yaml": "extends: b.yaml\nname: a\n", "b.yaml": "extends: a.yaml\nname: b\n"}, "extends form a cycle"),
    ({"a.yaml": "extends: a.yaml\nname: a\n"}, "extends form a cycle"),
    ({"a.yaml": "extends: nope.yaml\nname: a\n"}, "extends 'nope.yaml', but"),
    ({"a.yaml": "extends: [b.yaml]\nname: a\n"}, "must be the path of another sweep file"),
    ({"a.yaml": "extends: b.yaml\nkind: ablation\n", "b.yaml": BASE}, "must set its own name"),
    ({"a.yaml": "extends: b.yaml\nname: a\n", "b.yaml": "- just a list\n"}, "must be a mapping of sweep keys"),
])
def test_bad_extends_is_one_clear_error(tmp_path, files, message):
    for name, text in files.items():
        _write(tmp_path, name, text)
    with pytest.raises(SweepSpecError) as info:
        SweepSpec.load(tmp_path / "a.yaml")
    assert message in str(info.value) and str(tmp_path / "a.yaml") in str(info.value)


def test_extends_only_in_a_file():
    with pytest.raises(SweepSpecError, match="load the file with SweepSpec.load"):
        SweepSpec.from_dict({"extends": "x.yaml", "name": "a", "kind": "ablation"})


def test_paper_knob_sweeps_change_what_they_claim():
    def attention(file: str, variant: str):
        spec = SweepSpec.load(SWEEPS / "paper" / file)
        return load_run_config([*spec.base, *spec.ablation.variants[variant]], stamp="test").attention

    assert [attention("kq_layers.yaml", f"kq_{n}_layers").kq_layers for n in (2, 4, 6)] == [
        (6, 18), (2, 8, 14, 20), (2, 6, 10, 14, 18, 22)]
    assert [attention("head_kernel.yaml", f"c_h_{c}").head_post_group for c in (2, 4, 8, 16)] == [2, 4, 8, 16]
    assert [attention("kernel_init.yaml", v).kernel_init for v in ("identity", "zero", "const")] == [
        "identity", "zero", "const"]
    assert [attention("kernel_size.yaml", f"kq_{k}").kq_pre for k in ("4x9", "6x11", "8x13")] == [
        (4, 9), (6, 11), (8, 13)]


def test_init_from_sweeps_continue_a_parent_and_change_what_they_claim():
    def configs(file: str):
        spec = SweepSpec.load(SWEEPS / file)
        return {v: load_run_config([*spec.base, *o], stamp="test") for v, o in spec.ablation.variants.items()}

    for file in ("paper/retrofit.yaml", "tiny/retrofit_cpu.yaml"):
        runs = configs(file)
        assert len({c.init_from for c in runs.values()}) == 1  # one parent, the same budget
        assert len({c.train for c in runs.values()}) == 1
        assert (runs["continued"].attention.kind, runs["plus_mta"].init_retrofit) == ("softmax", "spec")
        assert (runs["plus_mta_exact"].attention.group_norm, runs["plus_mta_exact"].attention.gate) == ("none", "none")
    for file, length in (("paper/context_extension.yaml", 4096), ("tiny/context_extension_cpu.yaml", 256)):
        runs = configs(file)
        assert len({c.init_from for c in runs.values()}) == len(runs)  # each variant from its own parent
        for c in runs.values():
            assert (c.train.seq_len, c.model.max_seq_len, c.model.rope_theta) == (length, length, 500000)
