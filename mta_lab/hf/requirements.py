"""Whether the optional `hf` extra (transformers, safetensors) is installed: one message naming the fix.

Imports neither library, so the training config can check before anything is created.
"""

from __future__ import annotations

import importlib.util

from mta_lab.errors import UserError

INSTALL_HINT = "pip install 'mta-lab[hf]'"


class HFError(UserError, ValueError):
    """A Hugging Face model that cannot be used as asked: the message names the problem and the fix."""


def require_transformers(what: str = "model=hf") -> None:
    """HFError naming `what` (the setting or checkpoint that needs the extra) and the install command."""
    missing = [name for name in ("transformers", "safetensors") if importlib.util.find_spec(name) is None]
    if missing:
        raise HFError(f"{what} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                      f"installed: {INSTALL_HINT} (the optional extra `hf`)")
