"""Atomic writes for checkpoints and exports: a temporary name beside the target (same directory, so the same
filesystem), fsync, rename, fsync of the directory. A kill at any moment leaves either the old state or the new
file, never a partial file under the target's name; a leftover temporary is removed at the next start."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

TMP_SUFFIX = ".tmp"


def temporary_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


def fsync_path(path: str | Path) -> None:
    """fsync a file, or every file of a directory tree and the directories themselves."""
    path = Path(path)
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                fsync_path(child)
        _fsync_directory(path)
        return
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: str | Path, path: str | Path) -> None:
    """Move a fully written `tmp` (file or directory) onto `path`, durably (a directory there is replaced)."""
    tmp, path = Path(tmp), Path(path)
    fsync_path(tmp)
    if path.is_dir():
        shutil.rmtree(path)
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def save_file(obj: Any, path: str | Path) -> None:
    """`torch.save` straight into `path`, flushed to disk."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    tmp = temporary_path(path)
    save_file(obj, tmp)
    commit(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = temporary_path(path)
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    commit(tmp, path)


def remove_temporaries(directory: str | Path) -> list[Path]:
    """Remove the leftover temporaries (files or directories) of killed writes in `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for p in directory.iterdir():
        if p.name.endswith(TMP_SUFFIX):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
    return removed


class DirectCheckpointIO(CheckpointIO):
    """Lightning's checkpoint IO without its staging through fsspec (a file in $TMPDIR, then a move that is a copy
    across filesystems): `torch.save` straight into the given path, which the caller makes a temporary."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("DirectCheckpointIO takes no storage_options")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        from mta_lab.eval.checkpoint import load_checkpoint_file

        if weights_only is False:
            raise ValueError("checkpoints are loaded with weights_only=True only")
        return load_checkpoint_file(path, map_location=map_location or "cpu")

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)
