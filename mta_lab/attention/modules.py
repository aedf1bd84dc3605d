"""Attention layers built from an AttentionSpec: softmax (Transformer), MTA / Talking heads, DIFF.

Every layer maps (B, T, D) -> (B, T, D): q/k/v projections (no bias), RoPE, the attention op, then (MTA)
group norm and gate, then the output projection. `build_attention` picks the class from `spec.kind`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mta_lab.attention.backends import resolve_backend
from mta_lab.attention.functional import diff_attention, work_dtype
from mta_lab.attention.rope import apply_rope, rope_tables
from mta_lab.attention.spec import AttentionSpec, depth_lambda_init, key_center

NORM_EPS = 1e-5


@torch.no_grad()
def assign_(param: Tensor, value: Tensor) -> None:
    """param.copy_(value) that also works when param is a sharded DTensor (FSDP2 meta-device init)."""
    if hasattr(param, "device_mesh") and hasattr(param, "placements"):
        from torch.distributed.tensor import distribute_tensor

        value = distribute_tensor(value.to(param.device_mesh.device_type), param.device_mesh, param.placements)
    param.copy_(value)


def rms_norm(x: Tensor, weight: Tensor, eps: float = NORM_EPS) -> Tensor:
    """RMSNorm over the last axis, computed in float32 (at least), returned in x's dtype."""
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (normed * weight.to(xf.dtype)).to(x.dtype)


class AttentionBase(nn.Module):
    """Shared projections and RoPE. Subclasses implement `attend(q, k, v) -> (B, H, T, d_v)`."""

    def __init__(self, spec: AttentionSpec, *, dim: int, n_heads: int, layer_idx: int, n_layers: int,
                 rope_theta: float = 10_000.0) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"model dim {dim} is not divisible by n_heads={n_heads}")
        if not 0 <= layer_idx < n_layers:
            raise ValueError(f"layer_idx={layer_idx} must be in 0..{n_layers - 1}")
        spec.check_model(n_heads=n_heads, n_layers=n_layers)
        self.spec = spec
        self.dim, self.n_heads, self.head_dim = dim, n_heads, dim // n_heads
        self.layer_idx, self.rope_theta = layer_idx, rope_theta
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    # Heads as seen by the attention op: DIFF uses half as many, twice as wide.
    @property
    def op_heads(self) -> int:
        return self.n_heads

    @property
    def rope_dim(self) -> int:
        return self.head_dim

    def extra_parameters(self) -> int:
        """Parameters beyond the four D×D projections of standard attention."""
        projections = {id(p) for m in (self.wq, self.wk, self.wv, self.wo) for p in m.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in projections)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x: (B, T, D); rope: optional precomputed (cos, sin) tables of shape (T, rope_dim)."""
        b, t, _ = x.shape
        h = self.op_heads
        q, k, v = (proj(x).view(b, t, h, -1).transpose(1, 2) for proj in (self.wq, self.wk, self.wv))
        cos, sin = rope if rope is not None else rope_tables(t, self.rope_dim, self.rope_theta, x.device)
        out = self.attend(q, k, v, cos, sin)  # (B, h, T, D / h)
        return self.wo(out.transpose(1, 2).reshape(b, t, self.dim))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def dropout_p(self) -> float:
        return self.spec.dropout if self.training else 0.0


class SoftmaxAttention(AttentionBase):
    """Standard causal multi-head attention through the fused `scaled_dot_product_attention`."""

    def attend(self, q, k, v, cos, sin):
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout_p)


class MultiTokenAttention(AttentionBase):
    """MTA (and Talking heads, which is head mixing alone): spec steps 1-11.

    Key-query kernels exist only on the layers the spec selects; head mixing, group norm and gate on every
    layer. A layer with no score-mixing operation runs the fused SDPA kernel.
    """

    def __init__(self, spec: AttentionSpec, *, dim: int, n_heads: int, layer_idx: int, n_layers: int,
                 rope_theta: float = 10_000.0) -> None:
        super().__init__(spec, dim=dim, n_heads=n_heads, layer_idx=layer_idx, n_layers=n_layers,
                         rope_theta=rope_theta)
        h, d = n_heads, self.head_dim
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

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise the MTA parameters (kernels, mixing, norm, gate); the projections are the model's job."""
        for kernel in (self.kq_pre, self.kq_post):
            if kernel is not None:
                init_kernel_(kernel, self.spec)
        if self.head_pre is not None:
            assign_(self.head_pre, torch.eye(self.n_heads))
        if self.head_post is not None:
            groups, c_h, _ = self.head_post.shape
            assign_(self.head_post, torch.eye(c_h).expand(groups, c_h, c_h))
        if self.norm_weight is not None:
            self.norm_weight.fill_(1.0)
        if self.gate is not None:
            std = self.dim ** -0.5
            nn.init.trunc_normal_(self.gate.weight, std=std, a=-3 * std, b=3 * std)
            nn.init.zeros_(self.gate.bias)  # the release leaves it uninitialised (spec §2.10)

    def attend(self, q, k, v, cos, sin):
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.mixes_scores:
            options = dict(kq_pre=self.kq_pre, head_pre=self.head_pre, kq_post=self.kq_post,
                           head_post=self.head_post, pad_key=self.spec.pad_key, dropout_p=self.dropout_p)
            op = resolve_backend(self.spec.backend, q.device, options).fn
            out = op(q, k, v, **options)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout_p)
        if self.norm_weight is not None:  # step 9: one weight of size d shared by all heads
            out = rms_norm(out, self.norm_weight) * self.depth_scale
        if self.gate is not None:  # step 10: o <- o · sigmoid(w·o + b)
            out = out * torch.sigmoid(self.gate(out))
        return out


@torch.no_grad()
def init_kernel_(kernel: Tensor, spec: AttentionSpec) -> None:
    """Initialise a (H, c_q, c_k) kq kernel in place as `spec.kernel_init` says."""
    n_heads, c_q, c_k = kernel.shape
    center = key_center(c_k, spec.pad_key)
    kind = spec.kernel_init
    if kind == "uniform":
        kernel.uniform_(-1.0, 1.0)
        return
    value = torch.full((n_heads, c_q, c_k), spec.kernel_init_value if kind == "const" else 0.0)
    if kind == "identity":
        value[:, c_q - 1, center] = 1.0
    elif kind == "diagonal":
        # Ones where a query row a and key column b are shifted alike: b - center == a - (c_q - 1)
        # (for pad_key="both": b - a = (c_k + 1)//2 - c_q, the release's sequence-matching init).
        for a in range(c_q):
            b = center - (c_q - 1) + a
            if 0 <= b < c_k:
                value[:, a, b] = 1.0
    assign_(kernel, value)


class DiffAttention(AttentionBase):
    """DIFF Transformer: H/2 heads of width 2d, A = softmax(Q1K1ᵀ/√d) - λ·softmax(Q2K2ᵀ/√d).

    λ = exp(λq1·λk1) - exp(λq2·λk2) + λ_init(l); output RMSNorm per head (weight of size 2d shared by the
    heads) times (1 - λ_init(l)).
    """

    def __init__(self, spec: AttentionSpec, *, dim: int, n_heads: int, layer_idx: int, n_layers: int,
                 rope_theta: float = 10_000.0) -> None:
        super().__init__(spec, dim=dim, n_heads=n_heads, layer_idx=layer_idx, n_layers=n_layers,
                         rope_theta=rope_theta)
        d = self.head_dim
        self.lambda_init = depth_lambda_init(layer_idx)
        self.lambda_q1 = nn.Parameter(torch.empty(d))
        self.lambda_k1 = nn.Parameter(torch.empty(d))
        self.lambda_q2 = nn.Parameter(torch.empty(d))
        self.lambda_k2 = nn.Parameter(torch.empty(d))
        self.norm_weight = nn.Parameter(torch.empty(2 * d))
        self.reset_parameters()

    @property
    def op_heads(self) -> int:
        return self.n_heads // 2

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.normal_(p, mean=0.0, std=0.1)
        self.norm_weight.fill_(1.0)

    def lambda_full(self) -> Tensor:
        """λ, computed in float32 at least (float64 parameters stay float64)."""
        q1, k1, q2, k2 = (p.to(work_dtype(p.dtype)) for p in
                          (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2))
        return torch.exp((q1 * k1).sum()) - torch.exp((q2 * k2).sum()) + self.lambda_init

    def attend(self, q, k, v, cos, sin):
        d = self.head_dim
        q1, q2 = (apply_rope(x, cos, sin) for x in q.split(d, dim=-1))
        k1, k2 = (apply_rope(x, cos, sin) for x in k.split(d, dim=-1))
        lam = self.lambda_full()
        if self.dropout_p > 0.0:  # dropout acts on the combined weights: materialise them
            out = diff_attention(q1, k1, q2, k2, v, lam, self.dropout_p)
        else:  # by linearity, two fused attentions over the same values
            out1 = F.scaled_dot_product_attention(q1, k1, v, is_causal=True)
            out2 = F.scaled_dot_product_attention(q2, k2, v, is_causal=True)
            out = out1 - lam.to(out2.dtype) * out2
        return rms_norm(out, self.norm_weight) * (1.0 - self.lambda_init)


_KINDS: dict[str, type[AttentionBase]] = {
    "softmax": SoftmaxAttention,
    "mta": MultiTokenAttention,
    "talking_heads": MultiTokenAttention,
    "diff": DiffAttention,
}


def build_attention(spec: AttentionSpec, *, dim: int, n_heads: int, layer_idx: int, n_layers: int,
                    rope_theta: float = 10_000.0) -> AttentionBase:
    """The attention layer `spec` describes for layer `layer_idx` of an n_layers model."""
    return _KINDS[spec.kind](spec, dim=dim, n_heads=n_heads, layer_idx=layer_idx, n_layers=n_layers,
                             rope_theta=rope_theta)


def expected_extra_parameters(spec: AttentionSpec, *, dim: int, n_heads: int, n_layers: int) -> int:
    """Spec §3-4's closed-form count of the extra parameters a whole model's attention layers add."""
    h, d = n_heads, dim // n_heads
    if spec.kind == "diff":
        return n_layers * (4 * d + 2 * d)
    total = 0
    for layer in range(n_layers):
        if spec.uses_kq_conv(layer, n_layers):
            total += sum(h * math.prod(kernel) for kernel in (spec.kq_pre, spec.kq_post) if kernel)
        total += h * h if spec.head_pre else 0
        c_h = spec.head_group_size(h)
        total += h * c_h if c_h else 0
        total += d if spec.group_norm != "none" else 0
        total += {"none": 0, "scalar": d + 1, "full": d * d + d}[spec.gate]
    return total
