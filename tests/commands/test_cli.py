"""The `mta-lab` command: help lists the subcommands; bad input is one clear error with exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mta_lab.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mta_lab.cli", *args], capture_output=True, text=True)


def test_help_lists_the_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "attention" in result.stdout


def test_attention_list_names_every_preset(capsys):
    from mta_lab.attention.presets import preset_names

    assert main(["attention", "list"]) == 0
    out = capsys.readouterr().out
    for name in preset_names():
        assert name in out


def test_show_reproduces_the_paper_extra_parameters(capsys):
    # 880M: MTA 876,583,320 - Transformer 876,553,728 = 29,592 (paper Table 8).
    assert main(["attention", "show", "mta"]) == 0
    out = capsys.readouterr().out
    assert "29,592 (counted) / 29,592" in out
    assert "[2, 6, 10, 14, 18, 22]" in out


def test_show_applies_overrides(capsys):
    assert main(["attention", "show", "mta", "--set", "kq_pre=[4,9]", "--set", "kq_layers=[0]"]) == 0
    out = capsys.readouterr().out
    assert "[4, 9]" in out and "kq-conv layers: [0]" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attention", "show", "nope"], "preset 'nope' is unknown"),
        (["attention", "show", "mta", "--set", "kq_pre=[6,10]"], "c_k=10 is even"),
        (["attention", "show", "mta", "--set", "kq_pre"], "expected FIELD=VALUE"),
        (["attention", "show", "mta", "--set", "colour=red"], "unknown field(s) colour"),
        (["attention", "show", "mta", "--heads", "10", "--dim", "1280", "--set", "head_post=grouped",
          "--set", "head_post_group=4"], "c_h must divide n_heads=10"),
        (["attention", "show", "diff", "--heads", "15", "--dim", "1530"], "even number of heads"),
        # Bracketed optional arguments in a usage line are text, not console markup.
        (["eval", "toy"], "ckpt= is required; usage: mta-lab eval toy ckpt=<run dir | final/model.pt | "
                          "checkpoints/*.ckpt | final/hf> [samples=1000] [data_seed=1] [batch_size=250] [device=auto]"),
    ],
)
def test_bad_input_is_one_clear_error(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "error:" in result.stderr and message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
