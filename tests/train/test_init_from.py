"""init_from: a new run from a trained model's weights (context extension, MTA retrofitted into a Transformer).

Unit part: parents saved as `final/model.pt`-style files, planned and loaded without training (float64 logits).
Integration part: a real tiny parent run, then children trained from it, checked in MLflow and on disk.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from integration_helpers import client_for, tiny

from mta_lab.attention.presets import load_preset
from mta_lab.attention.spec import AttentionSpec
from mta_lab.conf import load_run_config
from mta_lab.errors import UserError
from mta_lab.model.config import load_model_preset
from mta_lab.model.transformer import build_model
from mta_lab.train.config import ConfigError
from mta_lab.train.entry import train
from mta_lab.train.init_from import InitFromError, plan_init, read_source

MODEL = load_model_preset("tiny")


def _save_parent(folder: Path, spec: AttentionSpec, *, seed: int = 0, extra: dict | None = None,
                 model=MODEL) -> tuple[Path, torch.nn.Module]:
    """A trained-looking parent (random weights, kernels/mixing moved off identity) saved as <folder>/final/model.pt."""
    torch.manual_seed(seed)
    parent = build_model(model, spec).double()
    with torch.no_grad():
        for name, p in parent.named_parameters():
            if ".attn." in name and not name.split(".")[-2].startswith("w"):
                p.add_(0.05 * torch.randn_like(p))
    state = {k: v.clone() for k, v in parent.state_dict().items()} | (extra or {})
    path = folder / "final" / "model.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": model.to_dict(), "attention": spec.to_dict(), "state_dict": state, "step": 7,
                "data": {"tokenizer": "byte"}}, path)
    (folder / "mlflow_run_id").write_text("parent-run-id\n")
    return path, parent.eval()


def _child(plan, spec: AttentionSpec, model=MODEL) -> torch.nn.Module:
    torch.manual_seed(123)
    child = build_model(model, spec).double()
    plan.load_into(child)
    return child.eval()


TOKENS = torch.randint(0, MODEL.vocab_size, (2, 48), generator=torch.Generator().manual_seed(0))


def test_identity_retrofit_into_a_transformer_gives_the_parents_logits(tmp_path):
    parent_path, parent = _save_parent(tmp_path / "parent", AttentionSpec())
    spec = replace(load_preset("mta"), group_norm="none", gate="none", backend="eager")
    source = read_source(str(tmp_path / "parent"))  # a run directory means its final/model.pt
    assert (source.path, source.parent_run_id, source.step) == (parent_path.resolve(), "parent-run-id", 7)
    plan = plan_init(source, MODEL, spec, {"tokenizer": "byte"}, None)
    assert plan.kind == "retrofit" and plan.exact and plan.dropped == ()
    assert set(plan.copied) == set(parent.state_dict())  # every shared tensor ...
    # ... and the MTA tensors are new: kq kernels on layer 2 only (every:4:2 of 4 layers), mixing on every layer
    assert sorted(plan.created) == sorted(
        ["layers.2.attn.kq_pre", "layers.2.attn.kq_post"]
        + [f"layers.{i}.attn.{n}" for i in range(4) for n in ("head_pre", "head_post")])
    child = _child(plan, spec)
    for key, value in parent.state_dict().items():  # copied exactly
        assert torch.equal(child.state_dict()[key], value), key
    assert torch.equal(child.layers[2].attn.kq_pre, build_model(MODEL, spec).layers[2].attn.kq_pre.double())
    with torch.no_grad():
        torch.testing.assert_close(child(TOKENS), parent(TOKENS), rtol=0, atol=1e-10)


def test_exact_turns_group_norm_and_gate_off_and_equals_the_parent(tmp_path):
    _save_parent(tmp_path / "parent", AttentionSpec())
    overrides = [f"init_from={tmp_path / 'parent'}", "attention=mta", "init_retrofit=exact"]
    config = load_run_config(overrides)
    assert (config.attention.group_norm, config.attention.gate) == ("none", "none")
    assert config.attention.kq_pre == (6, 11) and config.attention.head_pre  # the rest of the spec as given
    spec = replace(config.attention, backend="eager")
    plan = plan_init(read_source(config.init_from), MODEL, spec, {}, config.init_retrofit)
    _, parent = _save_parent(tmp_path / "again", AttentionSpec())
    with torch.no_grad():
        torch.testing.assert_close(_child(plan, spec)(TOKENS), parent(TOKENS), rtol=0, atol=1e-10)


def test_the_papers_group_norm_and_gate_change_the_parent_and_need_a_choice(tmp_path):
    _, parent = _save_parent(tmp_path / "parent", AttentionSpec())
    spec = replace(load_preset("mta"), backend="eager")
    source = read_source(str(tmp_path / "parent" / "final" / "model.pt"))
    with pytest.raises(InitFromError, match="init_retrofit=spec .* or init_retrofit=exact"):
        plan_init(source, MODEL, spec, {}, None)
    plan = plan_init(source, MODEL, spec, {}, "spec")
    assert not plan.exact and any(k.endswith("attn.gate.weight") for k in plan.created)
    with torch.no_grad():
        assert not torch.allclose(_child(plan, spec)(TOKENS), parent(TOKENS), atol=1e-3)


def test_mta_back_to_a_transformer_drops_the_mta_tensors(tmp_path):
    _save_parent(tmp_path / "parent", load_preset("mta"))
    plan = plan_init(read_source(str(tmp_path / "parent")), MODEL, AttentionSpec(), {}, None)
    assert plan.created == () and len(plan.dropped) == 2 + 4 * 5  # kq pre/post + (mix pre/post, norm, gate w/b)
    assert not plan.exact


@pytest.mark.parametrize(("parent_spec", "child_model", "child_spec", "extra", "message"), [
    (AttentionSpec(), load_model_preset("tiny2"), AttentionSpec(), None,
     r"different model size \(model.dim: parent 64, this run 96\)"),
    (AttentionSpec(), replace(MODEL, ffn_hidden=128), AttentionSpec(), None, r"model.ffn_hidden: parent 192"),
    (AttentionSpec(kind="mta", kq_pre=(6, 11)), MODEL, AttentionSpec(kind="mta", kq_pre=(4, 9)), None,
     r"tensor layers.0.attn.kq_pre has shape \[4, 6, 11\] in the parent and \[4, 4, 9\]"),
    (AttentionSpec(), MODEL, AttentionSpec(), {"extra.weight": torch.zeros(3)},
     r"the parent's tensor extra.weight \[3\] has no place in this model"),
])
def test_mismatches_are_one_error_naming_the_tensor(tmp_path, parent_spec, child_model, child_spec, extra, message):
    _save_parent(tmp_path / "parent", parent_spec, extra=extra)
    with pytest.raises(InitFromError, match=message):
        plan_init(read_source(str(tmp_path / "parent")), child_model, child_spec, {}, "spec")


def test_a_parent_missing_a_core_tensor_or_with_another_tokenizer_is_refused(tmp_path):
    path, _ = _save_parent(tmp_path / "parent", AttentionSpec())
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["norm.weight"]
    torch.save(payload, path)
    source = read_source(str(path))
    with pytest.raises(InitFromError, match=r"this run's tensor norm.weight \[64\] is not in the parent"):
        plan_init(source, MODEL, AttentionSpec(), {}, None)
    with pytest.raises(InitFromError, match="data.tokenizer=byte"):
        plan_init(source, MODEL, AttentionSpec(), {"tokenizer": "char"}, None)


@pytest.mark.parametrize(("target", "message"), [
    ("nothing-here", "no such file or directory"),
    ("empty-dir", "holds no final/model.pt and no checkpoint"),
    ("junk.pt", "cannot be read as a checkpoint"),
])
def test_bad_init_from_paths(tmp_path, target, message):
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(InitFromError, match=message):
        read_source(str(tmp_path / target))


@pytest.mark.parametrize(("overrides", "message"), [
    (["init_retrofit=exact"], "applies only with init_from"),
    (["init_from=x", "init_retrofit=maybe"], "must be one of spec, exact"),
    (["init_from=x", "init_retrofit=exact", "attention=diff"], "DIFF's output norm"),
    (["init_from=x", "init_retrofit=exact", "attention=mta", "attention.kernel_init=zero"], "identity kq kernels"),
])
def test_bad_init_options_fail_when_composed(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config(overrides)


# ------------------------------------------------------------------------------------------ real runs
@pytest.fixture(scope="module")
def parent_run(tmp_path_factory, data_cache):
    root = tmp_path_factory.mktemp("init")
    config = load_run_config(tiny(root, "parent", data_cache, max_steps=20))
    return root, train(config, progress=False)


def _child_config(root, data_cache, name, *extra, **train_settings):
    return load_run_config([*tiny(root, name, data_cache, **({"max_steps": 5} | train_settings)),
                            f"init_from={root / 'parent'}", *extra])


def test_context_extension_changes_only_rope_and_length_trains_and_links_its_parent(parent_run, data_cache):
    root, parent = parent_run
    config = _child_config(root, data_cache, "extended", "model.rope_theta=5e5", "model.max_seq_len=512",
                           seq_len=128)
    parent_config = load_run_config(tiny(root, "parent", data_cache, max_steps=20))
    assert config.model == replace(parent_config.model, rope_theta=5e5, max_seq_len=512)
    assert config.attention == parent_config.attention and config.train.seq_len == 128
    result = train(config, progress=False)
    client = client_for(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and result.run_id != parent.run_id
    tags = run.data.tags
    assert tags["mta.init_parent_run_id"] == parent.run_id
    assert tags["mta.init_from"] == str((root / "parent" / "final" / "model.pt").resolve())
    assert (tags["mta.init_kind"], tags["mta.init_parent_step"]) == ("context_extension", "20")
    params = run.data.params
    assert (params["init.copied"], params["init.created"], params["init.dropped"]) == ("38", "0", "0")
    metrics = run.data.metrics
    assert metrics["init/parent_val_loss"] > 0 and metrics["init/val_loss"] > 0
    assert metrics["final/steps"] == 5  # a new schedule: 5 steps of its own, not the parent's 25
    # the exported child keeps the config change; its weights moved on from the parent's
    child = torch.load(Path(result.run_dir) / "final" / "model.pt", weights_only=True)
    assert (child["model"]["rope_theta"], child["model"]["max_seq_len"]) == (5e5, 512)


def test_retrofit_run_logs_the_step0_losses_before_and_after_insertion(parent_run, data_cache):
    root, parent = parent_run
    spec_run = train(_child_config(root, data_cache, "plus_mta", "attention=mta", "init_retrofit=spec",
                                   max_steps=3), progress=False)
    exact_run = train(_child_config(root, data_cache, "plus_mta_exact", "attention=mta", "init_retrofit=exact",
                                    max_steps=3), progress=False)
    client = client_for(spec_run.tracking_uri)
    spec_m, exact_m = (client.get_run(r.run_id).data.metrics for r in (spec_run, exact_run))
    assert spec_m["init/parent_val_loss"] == pytest.approx(exact_m["init/parent_val_loss"], rel=1e-6)
    assert exact_m["init/val_loss"] == pytest.approx(exact_m["init/parent_val_loss"], rel=1e-5)  # float32 here
    assert abs(spec_m["init/val_loss"] - spec_m["init/parent_val_loss"]) > 1e-3  # norm + gate change it
    params = client.get_run(spec_run.run_id).data.params
    assert (params["init.copied"], params["init.created"], params["init.exact_at_step0"]) == ("38", "22", "False")
    assert client.get_run(exact_run.run_id).data.tags["mta.init_kind"] == "retrofit"


def test_bad_init_from_records_nothing(parent_run, data_cache):
    root, _ = parent_run
    before = {p.name for p in root.iterdir()}
    for extra in (["model=tiny2"], ["attention=mta"], ["init_from=/nonexistent/run"]):
        config = _child_config(root, data_cache, "refused", *extra)
        with pytest.raises(UserError):
            train(config, progress=False)
    assert {p.name for p in root.iterdir()} == before  # no run directory
    client = client_for(f"sqlite:///{root.resolve()}/mlflow.db")
    names = {r.info.run_name for r in client.search_runs([client.get_experiment_by_name("mta-lab").experiment_id])}
    assert "refused" not in names
