"""The learned MTA kernels of a checkpoint: kq convolutions (H, c_q, c_k) per layer and the head-mixing matrices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mta_lab.report.errors import ReportError


@dataclass
class LayerKernels:
    layer: int
    kq_pre: np.ndarray | None  # (H, c_q, c_k)
    kq_post: np.ndarray | None
    head_pre: np.ndarray | None  # (H, H)
    head_post: np.ndarray | None  # (H, H): the (G, c_h, c_h) groups placed block-diagonally


def _numpy(p) -> np.ndarray | None:
    return None if p is None else p.detach().float().cpu().numpy()


def block_diagonal(groups: np.ndarray) -> np.ndarray:
    g, c, _ = groups.shape
    out = np.zeros((g * c, g * c), dtype=groups.dtype)
    for i in range(g):
        out[i * c:(i + 1) * c, i * c:(i + 1) * c] = groups[i]
    return out


def extract_kernels(model) -> list[LayerKernels]:
    layers = []
    for i, block in enumerate(model.layers):
        attn = block.attn
        found = LayerKernels(i, *(_numpy(getattr(attn, k, None)) for k in ("kq_pre", "kq_post", "head_pre")),
                             head_post=None)
        post = _numpy(getattr(attn, "head_post", None))
        found.head_post = block_diagonal(post) if post is not None else None
        if any(x is not None for x in (found.kq_pre, found.kq_post, found.head_pre, found.head_post)):
            layers.append(found)
    if not layers:
        raise ReportError("this checkpoint has no MTA kernels (no kq convolution or head mixing in any layer); "
                          "kernels reports need a model trained with an MTA or talking-heads attention")
    return layers


def kernel_summary(layers: list[LayerKernels], pad_key: str = "both") -> pd.DataFrame:
    """Per layer, kernel and head: the kernel's norm and its distance from the identity initialisation."""
    from mta_lab.attention.spec import key_center

    rows = []
    for lk in layers:
        for name in ("kq_pre", "kq_post"):
            k = getattr(lk, name)
            if k is None:
                continue
            ident = np.zeros(k.shape[1:])
            ident[-1, key_center(k.shape[2], pad_key)] = 1.0  # row c_q - 1 is the current query
            for h in range(k.shape[0]):
                rows.append({"layer": lk.layer, "kernel": name, "head": h, "shape": f"{k.shape[1]}x{k.shape[2]}",
                             "norm": float(np.linalg.norm(k[h])),
                             "dist_from_identity": float(np.linalg.norm(k[h] - ident))})
        for name in ("head_pre", "head_post"):
            m = getattr(lk, name)
            if m is not None:
                rows.append({"layer": lk.layer, "kernel": name, "head": "all", "shape": f"{m.shape[0]}x{m.shape[1]}",
                             "norm": float(np.linalg.norm(m)),
                             "dist_from_identity": float(np.linalg.norm(m - np.eye(m.shape[0])))})
    return pd.DataFrame(rows)
