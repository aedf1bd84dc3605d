"""The import graph of `mta_lab/attention`: acyclic, the backend registry imports no backend module, and the
package (the bottom layer) imports nothing from the model or anything above it.

Read from the source (`from mta_lab.attention... import ...` statements, module level or inside functions), and
checked by importing each module alone in a fresh interpreter (an import cycle fails there, whatever the order).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import mta_lab.attention as package

ROOT = Path(package.__file__).parent
BACKENDS = ("eager", "stacked", "flex", "chunked", "triton", "triton_mix", "triton_flashmix", "triton_conv")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """The mta_lab.attention modules `path` imports (`from mta_lab.attention import x` counts as x when x is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mta_lab.attention"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mta_lab.attention")}
    return found - {module_name(path)}


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def test_the_graph_is_acyclic():
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", "import cycle: " + " -> ".join([*trail, node])
        state[node] = "open"
        for dep in sorted(GRAPH.get(node, ())):
            visit(dep, [*trail, node])
        state[node] = "done"

    for name in GRAPH:
        visit(name, [])


def test_the_registry_imports_no_backend_and_the_spec_no_registry():
    registry = GRAPH["mta_lab.attention.backends"]
    assert not {f"mta_lab.attention.backends.{b}" for b in BACKENDS} & registry, registry
    assert not any(dep.startswith("mta_lab.attention.backends") for dep in GRAPH["mta_lab.attention.spec"])
    assert GRAPH["mta_lab.attention.backends.policy"] == set()  # pure
    for backend in BACKENDS:
        assert f"mta_lab.attention.backends.{backend}" in MODULES  # one module per backend, named after it


def test_each_module_imports_alone_in_a_fresh_interpreter():
    code = ("import importlib, sys\nfor name in sys.argv[1:]:\n"
            "    for m in [m for m in sys.modules if m.startswith('mta_lab')]:\n        del sys.modules[m]\n"
            "    importlib.import_module(name)\n")
    result = subprocess.run([sys.executable, "-c", code, *MODULES], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


PACKAGE = ROOT  # mta_lab/attention
REPO = ROOT.parent.parent
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
        package = ".".join(path.relative_to(REPO).parent.parts)
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    loaded = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert "mta_lab.attention.layers" in loaded and "mta_lab.attention.decoding" in loaded
    assert [m for m in loaded if _higher(m)] == []
