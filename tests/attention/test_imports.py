"""The import graph of `mta_lab/attention`: acyclic, and the backend registry imports no backend module.

Read from the source (`from mta_lab.attention... import ...` statements, module level or inside functions), and
checked by importing each module alone in a fresh interpreter (an import cycle fails there, whatever the order).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mta_lab.attention as package

ROOT = Path(package.__file__).parent
BACKENDS = ("eager", "stacked", "flex", "chunked", "triton", "triton_mix", "triton_conv")


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
