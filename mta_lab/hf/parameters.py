"""The MTA parameters of one Hugging Face attention module (`module.mta`): kernels, mixing, group norm, gate.

The same tensors, shapes and initialisation as `mta_lab.attention.layers.MultiTokenAttention` has beside its
projections: kq kernels only on the layers the spec's `kq_layers` selects, head mixing / norm / gate on every layer.
Heads are the model's query heads (grouped-query keys and values are repeated to them before the op). Being
submodules of the attention module, they are saved by `save_pretrained` (`...self_attn.mta.kq_pre`, ...).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mta_lab.attention.layers import init_mta_parameters_, rms_norm
from mta_lab.attention.spec import AttentionSpec, depth_lambda_init


class MTAParameters(nn.Module):
    def __init__(self, spec: AttentionSpec, *, n_heads: int, head_dim: int, hidden_size: int, layer_idx: int,
                 n_layers: int) -> None:
        super().__init__()
        spec.check_model(n_heads=n_heads, n_layers=n_layers)
        self.spec, self.n_heads, self.hidden_size = spec, n_heads, hidden_size
        h, d = n_heads, head_dim
        kq_layer = spec.uses_kq_conv(layer_idx, n_layers)
        self.kq_pre = nn.Parameter(torch.empty(h, *spec.kq_pre)) if kq_layer and spec.kq_pre else None
        self.kq_post = nn.Parameter(torch.empty(h, *spec.kq_post)) if kq_layer and spec.kq_post else None
        self.head_pre = nn.Parameter(torch.empty(h, h)) if spec.head_pre else None
        c_h = spec.head_group_size(h)
        self.head_post = nn.Parameter(torch.empty(h // c_h, c_h, c_h)) if c_h else None
        self.norm_weight = nn.Parameter(torch.empty(d)) if spec.group_norm != "none" else None
        self.depth_scale = 1.0 - depth_lambda_init(layer_idx) if spec.group_norm == "rms_depth" else 1.0
        gate_out = {"none": 0, "scalar": 1, "full": d}[spec.gate]
        self.gate = nn.Linear(d, gate_out, bias=True) if gate_out else None
        self.reset_parameters()

    @property
    def mixes_scores(self) -> bool:
        return any(p is not None for p in (self.kq_pre, self.kq_post, self.head_pre, self.head_post))

    @property
    def query_window(self) -> int:
        """The most query rows a kq kernel reads (1: each row of scores depends on its own query only)."""
        return max([k.shape[1] for k in (self.kq_pre, self.kq_post) if k is not None], default=1)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The spec's initialisation (identity kernels and mixing: softmax attention, up to norm and gate)."""
        init_mta_parameters_(self, self.spec, n_heads=self.n_heads, gate_in=self.hidden_size)

    def norm_and_gate(self, out: Tensor) -> Tensor:
        """Spec steps 9-10 on the per-head outputs (B, H, T, d)."""
        if self.norm_weight is not None:
            out = rms_norm(out, self.norm_weight) * self.depth_scale
        if self.gate is not None:
            out = out * torch.sigmoid(self.gate(out))
        return out
