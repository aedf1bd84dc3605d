"""Running Triton kernels on a CPU: Triton's interpreter (TRITON_INTERPRET=1), in a subprocess because the variable
must be set before Triton is imported. Shared by the kernel tests; on a GPU the kernels run compiled in
the GPU cases of each backend's test file."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np


def _skip_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    if tuple(int(x) for x in np.__version__.split(".")[:2]) >= (2, 3):
        return "Triton's interpreter needs numpy < 2.3 (it converts 1-element arrays with int())"
    return None


SKIP = _skip_reason()


def run_interpreted(code: str) -> dict:
    """Run `code` (which prints a JSON object as its last line) under the interpreter; that object."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
