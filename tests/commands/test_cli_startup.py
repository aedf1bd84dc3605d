"""`mta-lab --help` and every `mta-lab COMMAND [ACTION] --help` start without torch; the command table is complete."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

import mta_lab.commands
from mta_lab.cli import COMMANDS, build_parser

HEAVY = ("torch", "triton", "lightning", "mlflow", "optuna", "hydra", "matplotlib", "pandas")

# Run in a fresh interpreter: `--help` for argv, then for each of the command's actions; prints the heavy modules
# that got imported.
PROBE = """
import argparse, json, sys
from mta_lab.cli import build_parser, main

def show_help(argv):
    try:
        main([*argv, "--help"])
    except SystemExit as exit:
        assert exit.code == 0, (argv, exit.code)

command = sys.argv[1:]
show_help(command)
if command:
    parser = build_parser(command[0])
    (top,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for sub in [a for a in top.choices[command[0]]._actions if isinstance(a, argparse._SubParsersAction)]:
        for action in sub.choices:
            show_help([*command, action])
print(json.dumps([name for name in HEAVY if name in sys.modules]), file=sys.stderr)
"""


def heavy_modules_after_help(*command: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{PROBE}", *command], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: mta-lab" in result.stdout
    return json.loads(result.stderr.strip().splitlines()[-1])


def test_top_level_help_imports_nothing_heavy():
    assert heavy_modules_after_help() == []


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_help_imports_nothing_heavy(command):
    assert heavy_modules_after_help(command) == []


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub


def test_the_table_lists_exactly_the_command_modules():
    modules = {f"mta_lab.commands.{m.name}" for m in pkgutil.iter_modules(mta_lab.commands.__path__)}
    commands = {m for m in modules if hasattr(importlib.import_module(m), "add_parser")}
    assert {entry.module for entry in COMMANDS.values()} == commands


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_module_adds_its_command_with_the_table_help(command):
    sub = _subparsers(build_parser(command))
    assert list(sub.choices) == list(COMMANDS)  # the module added its own name, nothing else
    helps = {action.dest: action.help for action in sub._choices_actions}
    assert helps[command] == COMMANDS[command].help


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mta_lab.cli", *args], capture_output=True, text=True, timeout=120)


def test_top_level_help_lists_every_command_with_its_help():
    result = run_cli("--help")
    assert result.returncode == 0
    listing = " ".join(result.stdout.split())
    for name, entry in COMMANDS.items():
        assert f"{name} {entry.help.replace('%%', '%')}" in listing


def test_command_help_is_the_full_help_of_its_module():
    result = run_cli("count", "--help")
    assert result.returncode == 0
    assert "Builds the model on the meta device" in " ".join(result.stdout.split())  # count.py's description
