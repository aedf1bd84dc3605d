"""`mta-lab bench attention`: the op benchmark on CPU with tiny shapes; report files, rows, ratios, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mta_lab.attention import backends as registry
from mta_lab.attention import reference
from mta_lab.cli import main

TINY = ["seq_lens=16,32", "heads=2", "head_dim=8", "dtype=fp32", "device=cpu", "warmup=1", "iters=2", "plot=false"]
CONFIGS = ("kq_pre", "talking_heads", "paper")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mta_lab.cli", "bench", "attention", *args], capture_output=True,
                          text=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = run_cli(*TINY, f"out={out}", "tag=tiny")
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "tiny.json").read_text()), (out / "tiny.md").read_text(), result.stdout


def test_files_and_metadata_are_written(report):
    out, payload, markdown, stdout = report
    assert (out / "tiny.md").exists() and (out / "tiny.json").exists()
    assert payload["command"].startswith("mta-lab bench attention seq_lens=16,32")
    assert payload["environment"]["torch"] == torch.__version__ and payload["environment"]["device"]
    assert payload["settings"]["seq_lens"] == [16, 32] and payload["settings"]["configs"] == list(CONFIGS)
    assert "written:" in stdout and "| T | backend | fwd ms |" in stdout


def test_every_config_has_sdpa_and_eager_rows_at_every_length(report):
    _, payload, markdown, _ = report
    rows = payload["results"]
    for config in CONFIGS:
        assert f"### {config}:" in markdown
        for seq_len in (16, 32):
            for backend in ("sdpa", "eager"):
                [row] = [r for r in rows if (r["config"], r["seq_len"], r["backend"]) == (config, seq_len, backend)]
                assert row["status"] == "ok"
                assert row["total_ms"] > 0 and row["fwd_ms"] > 0 and row["bwd_ms"] > 0
                assert len(row["fwd_samples_ms"]) == 2
                assert f"| {seq_len} | {backend} |" in markdown
    # Any other registered backend that runs on CPU and accepts the config is in the table too (or recorded).
    cpu_backends = {b.name for b in registry.backends() if b.runs_on("cpu")}
    assert {r["backend"] for r in rows} <= cpu_backends | {"sdpa"}


def test_ratios_are_recomputed_from_the_recorded_times(report):
    _, payload, markdown, _ = report
    rows = payload["results"]
    for row in rows:
        base = next(r for r in rows if (r["config"], r["seq_len"], r["backend"]) == (row["config"], row["seq_len"],
                                                                                     "sdpa"))
        if row["total_ms"] is None:
            continue
        assert row["x_sdpa_total"] == pytest.approx(row["total_ms"] / base["total_ms"])
        assert f"| {row['seq_len']} | {row['backend']} | {row['fwd_ms']:.3f} | {row['bwd_ms']:.3f} | " \
               f"{row['total_ms']:.3f} | {row['x_sdpa_total']:.2f}x |" in markdown
        assert row["peak_gib"] is None and row["x_sdpa_mem"] is None  # no memory measurement on CPU


def test_errors_against_eager(report):
    _, payload, _, _ = report
    for row in payload["results"]:
        if row["backend"] == "eager":
            assert row["rel_err"] == 0 and row["grad_rel_err"] == 0
        elif row["backend"] == "sdpa":
            assert row["rel_err"] is None  # a different function: no error against MTA
        elif row["status"] == "ok":
            assert row["rel_err"] < 1e-4 and row["grad_rel_err"] < 1e-4  # fp32 fused backends match eager


def test_goals_are_listed(report):
    _, payload, markdown, _ = report
    goals = {(g["config"], g["goal"]) for g in payload["goals"]}
    assert ("kq_pre", "time within 4x SDPA at T=4096") in goals
    assert ("talking_heads", "time within 3x SDPA at T=4096") in goals
    assert ("paper", "time within 8x SDPA at T=4096") in goals
    assert "goal (paper): fwd+bwd within 8x SDPA at T=4096: not measured" in markdown
    assert "goal (kq_pre): memory linear in T" in markdown


def test_registered_backends_are_picked_up_and_filtered_by_accepts(tmp_path, monkeypatch, capsys):
    def off_by_a_little(q, k, v, **options):
        return reference.multi_token_attention(q, k, v, **options) * 1.001

    monkeypatch.setitem(registry._REGISTRY, "test_fake", registry.Backend(
        "test_fake", off_by_a_little, "test", implements=lambda options: options["kq_post"] is None))
    assert main(["bench", "attention", *TINY, "configs=kq_pre,paper", "backends=all", f"out={tmp_path}",
                 "tag=fake"]) == 0
    rows = json.loads((tmp_path / "fake.json").read_text())["results"]
    fake = [r for r in rows if r["backend"] == "test_fake"]
    assert {r["config"] for r in fake} == {"kq_pre"}  # the paper config has kq_post: not accepted, not run
    assert all(r["rel_err"] == pytest.approx(1e-3, rel=1e-3) for r in fake)
    # Named explicitly, a backend that does not accept the config gets a row saying so.
    assert main(["bench", "attention", *TINY, "configs=paper", "backends=sdpa,test_fake", f"out={tmp_path}",
                 "tag=named"]) == 0
    rows = json.loads((tmp_path / "named.json").read_text())["results"]
    assert [r["status"] for r in rows if r["backend"] == "test_fake"] == ["skipped: does not accept this config"] * 2


def test_a_failing_backend_is_recorded_not_fatal(tmp_path, monkeypatch):
    def broken(q, k, v, **options):
        raise RuntimeError("kernel exploded")

    monkeypatch.setitem(registry._REGISTRY, "test_broken", registry.Backend(
        "test_broken", broken, "test"))
    assert main(["bench", "attention", *TINY, "configs=kq_pre", "backends=sdpa,eager,test_broken",
                 f"out={tmp_path}", "tag=broken"]) == 0
    rows = json.loads((tmp_path / "broken.json").read_text())["results"]
    assert {r["status"] for r in rows if r["backend"] == "test_broken"} == {"error: RuntimeError: kernel exploded"}
    assert all(r["status"] == "ok" for r in rows if r["backend"] != "test_broken")


def test_plot_is_written_when_asked(tmp_path):
    pytest.importorskip("matplotlib")
    assert main(["bench", "attention", *TINY[:-1], "configs=kq_pre", "backends=sdpa,eager", "seq_lens=16,32",
                 f"out={tmp_path}", "tag=plot"]) == 0
    assert (tmp_path / "plot.png").stat().st_size > 0
    assert "![time vs T](plot.png)" in (tmp_path / "plot.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["configs=kq_pre,nope"], "configs: unknown 'nope'"),
        (["seq_lens=1024,abc"], "'abc' is not a positive integer"),
        (["seq_lens=0"], "'0' is not a positive integer"),
        (["heads=-2"], "heads=-2: expected a positive integer"),
        (["iters=0"], "iters=0: expected a positive integer"),
        (["dtype=int8"], "dtype='int8': expected one of bf16, fp16, fp32"),
        (["backends=sdpa,nope"], "backends: unknown 'nope'"),
        (["colour=red"], "expected KEY=VALUE with KEY one of"),
        (["device=tpu"], "device='tpu'"),
    ],
)
def test_bad_options_are_one_clear_error(args, message, tmp_path):
    result = run_cli(*args, f"out={tmp_path}")
    assert result.returncode == 2
    assert "error:" in result.stderr and message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_suffixed_lengths_are_read():
    from mta_lab.commands.bench import parse_attention_options

    assert parse_attention_options(["seq_lens=1K,2k,4096"])["seq_lens"] == [1024, 2048, 4096]


def test_rewrite_rebuilds_the_report_and_plot_from_the_json(report, tmp_path):
    pytest.importorskip("matplotlib")
    out, payload, markdown, _ = report
    saved = tmp_path / "tiny.json"
    saved.write_text(json.dumps(payload))
    assert main(["bench", "rewrite", str(saved)]) == 0
    rewritten = (tmp_path / "tiny.md").read_text()
    assert rewritten.split("## Goals")[0] == markdown.split("## Goals")[0]  # the same tables from the same numbers
    assert (tmp_path / "tiny.png").stat().st_size > 0 and "![time vs T](tiny.png)" in rewritten
    assert json.loads(saved.read_text())["results"] == payload["results"]


def test_rewrite_of_a_file_that_is_not_a_bench_json_is_one_clear_error(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}')
    result = subprocess.run([sys.executable, "-m", "mta_lab.cli", "bench", "rewrite", str(bad)], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot be read as a `mta-lab bench attention` JSON" in " ".join(result.stderr.split())
    assert not (tmp_path / "notes.md").exists()


def test_memory_goal_judges_streaming_backends_only():
    from mta_lab.bench.attention_bench import AttentionBenchResult, goals

    def row(backend, t, gib):
        return AttentionBenchResult("kq_pre", backend, 1, 16, 96, t, "bf16", 1.0, 1.0, 2.0, gib)

    # eager and stacked hold T x T maps by design (quadratic); the linear-memory goal is about the others.
    rows = [row(b, t, g) for t in (1024, 4096) for b, g in
            (("sdpa", t / 1e4), ("eager", (t / 1e3) ** 2), ("stacked", (t / 1e3) ** 2), ("flex", t / 1e3))]

    def memory_goal(rows):
        [goal] = [g for g in goals(rows, device_name="H200", dtype_name="bf16") if g["goal"].startswith("memory")]
        return goal

    memory = memory_goal(rows)
    assert memory["status"] == "met" and "flex T^1.00" in memory["text"] and "stacked T^2.00" in memory["text"]
    rows += [row("chunked", t, (t / 1e3) ** 1.5) for t in (1024, 4096)]
    assert memory_goal(rows)["status"] == "not met"


def test_materialising_backends_come_from_the_registry():
    from mta_lab.bench.attention_bench import materialises

    assert materialises("eager") and materialises("stacked")
    assert not materialises("chunked") and not materialises("sdpa") and not materialises("no_such_backend")
