"""Where a run keeps its checkpoints, and which one `resume=auto` continues."""

from __future__ import annotations

import re
from pathlib import Path

STEP = re.compile(r"step=(\d+)")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step (a file, or a directory for sharded FSDP checkpoints)."""
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return None
    candidates = [(int(m.group(1)), p) for p in directory.iterdir() if (m := STEP.search(p.name))]
    return max(candidates)[1] if candidates else None
