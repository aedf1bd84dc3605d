"""The attention package is the bottom layer: it imports nothing from the model or anything above it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import mta_lab.attention

PACKAGE = Path(mta_lab.attention.__file__).parent
ROOT = PACKAGE.parent.parent
# Every mta_lab package above attention (design.md: attention < model < train < sweep/report < commands/cli).
HIGHER = ("model", "data", "train", "eval", "sweep", "tracking", "report", "bench", "commands", "cli")


def _imports(source: str, package: str) -> set[str]:
    """Absolute names of every module (and imported name) the source imports, anywhere in it: at the top, in
    functions and in TYPE_CHECKING blocks; relative imports resolved against `package`."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")
                module = ".".join(parts[: len(parts) - node.level + 1] + ([module] if module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _higher(name: str) -> bool:
    return any(name == f"mta_lab.{layer}" or name.startswith(f"mta_lab.{layer}.") for layer in HIGHER)


def test_no_attention_module_imports_a_higher_layer():
    files = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "layers.py" in files and PACKAGE / "decoding.py" in files
    offending = {}
    for path in files:
        package = ".".join(path.relative_to(ROOT).parent.parts)
        if names := sorted(n for n in _imports(path.read_text(), package) if _higher(n)):
            offending[str(path.relative_to(PACKAGE))] = names
    assert offending == {}


def test_the_scan_catches_lazy_type_checking_and_relative_imports():
    """Negative control for the scan above."""
    source = ("from typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    from mta_lab.model.config import ModelConfig\n"
              "def f():\n    import mta_lab.train.module\n    from ...model import transformer\n"
              "from .. import rope\n")
    found = {n for n in _imports(source, "mta_lab.attention.backends") if n.startswith("mta_lab.")}
    assert found == {"mta_lab.model.config", "mta_lab.model.config.ModelConfig", "mta_lab.train.module",
                     "mta_lab.model", "mta_lab.model.transformer", "mta_lab.attention", "mta_lab.attention.rope"}
    assert {n for n in found if _higher(n)} == found - {"mta_lab.attention", "mta_lab.attention.rope"}


def test_using_the_attention_layers_loads_no_model_module():
    """In a fresh interpreter: build a layer, run it with and without a cache; no higher mta_lab module is loaded."""
    code = (
        "import sys, torch\n"
        "from mta_lab.attention import LayerCache, build_attention, load_preset\n"
        "layer = build_attention(load_preset('mta', kq_layers='all'), dim=32, n_heads=4, layer_idx=0, n_layers=2)\n"
        "layer.eval()\n"
        "x = torch.randn(1, 5, 32)\n"
        "layer(x); cache = LayerCache(); layer(x, cache=cache); layer(x[:, :1], cache=cache)\n"
        "assert cache.length == 6\n"
        "print(sorted(m for m in sys.modules if m.startswith('mta_lab')))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    loaded = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert "mta_lab.attention.layers" in loaded and "mta_lab.attention.decoding" in loaded
    assert [m for m in loaded if _higher(m)] == []
