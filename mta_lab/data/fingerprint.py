"""stable_hash: a short hex digest of strings/bytes, identical across runs, processes and machines."""

from __future__ import annotations

import hashlib


def stable_hash(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]
