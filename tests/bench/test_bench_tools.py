"""`mta-lab bench tune-triton|conv-parts|profile`: the GPU kernel tools, through the CLI. They need CUDA: on a
machine without it each exits 2 with one message; `--help` works anywhere; they use public functions only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import mta_lab.bench
from mta_lab.cli import main

TOOLS = {"tune-triton": "tune_triton", "conv-parts": "conv_parts", "profile": "profile_step"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("tool", TOOLS)
def test_without_cuda_one_clear_error(tool, capsys):
    assert main(["bench", tool, "--seq-len", "64"] if tool == "profile" else ["bench", tool]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    message = " ".join(captured.err.split())
    assert message == f"error: mta-lab bench {tool} needs a CUDA GPU, and torch sees none here; run it on a GPU machine"


@pytest.mark.parametrize("tool", TOOLS)
def test_help_lists_the_tools_options(tool, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", tool, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mta-lab bench {tool} ")
    assert {"tune-triton": "--seq-lens", "conv-parts": "--kernel", "profile": "--attention"}[tool] in out


@pytest.mark.parametrize("module", TOOLS.values())
def test_tools_import_public_names_only(module):
    tree = ast.parse((Path(mta_lab.bench.__file__).parent / f"{module}.py").read_text())
    imported = [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("mta_lab") for alias in node.names]
    assert imported and not [name for name in imported if name[1].startswith("_")], imported
    attributes = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                  and n.value.id in {m.rsplit(".", 1)[-1] for m, _ in imported}]
    assert not [a for a in attributes if a.startswith("_")]
