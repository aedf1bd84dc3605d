"""Attention layers built from an AttentionSpec: softmax (Transformer), MTA / Talking heads, DIFF.

Every layer maps (B, T, D) -> (B, T, D): q/k/v projections (no bias), RoPE, the attention op, then (MTA)
group norm and gate, then the output projection. `build_attention` picks the class from `spec.kind`. Given a
decoding cache (`mta_lab/attention/decoding.py`), a layer fills it from a prompt or attends new tokens to it.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mta_lab.attention.backends import resolve
from mta_lab.attention.decoding import LayerCache, kq_conv_rows, last_rows, softmax_rows, visible
from mta_lab.attention.reference import diff_attention, mix_heads_post, mix_heads_pre, work_dtype
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

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None, cache: LayerCache | None = None) -> Tensor:
        """x: (B, T, D) -> (B, T, D); rope: optional precomputed (cos, sin) tables (T, rope_dim) of x's positions.

        cache None: the causal op over positions 0 .. T - 1. An empty cache: the same full op over a prompt, which
        also fills the cache. A cache of T0 tokens: x holds new tokens at positions T0 .. T0 + T - 1, attending to
        the cached ones and extending the cache; O(T · (T0 + T)) per head, never a full score map; no dropout
        (decoding is for eval mode).
        """
        b, t, _ = x.shape
        h = self.op_heads
        q, k, v = (proj(x).view(b, t, h, -1).transpose(1, 2) for proj in (self.wq, self.wk, self.wv))
        if rope is None:
            offset = cache.offset if cache is not None else 0
            rope = rope_tables(t, self.rope_dim, self.rope_theta, x.device, offset=offset)
        cos, sin = rope
        if cache is None:
            out = self.attend(q, k, v, cos, sin)  # (B, h, T, D / h)
        elif cache.length == 0:
            out = self.attend(q, k, v, cos, sin)
            self.fill_cache(q, k, v, cos, sin, cache)
        else:
            out = self.attend_cached(q, k, v, cos, sin, cache)
        return self.wo(out.transpose(1, 2).reshape(b, t, self.dim))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ with a decoding cache (eval)
    def fill_cache(self, q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor, cache: LayerCache) -> None:
        """Store what decoding needs after a full forward over positions 0 .. T - 1 (q, k, v before RoPE)."""
        cache.store(apply_rope(k, cos, sin), v)

    def attend_cached(self, q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor,
                      cache: LayerCache) -> Tensor:
        """Like `attend`, for new query rows only: q, k, v (B, h, n, ·) of positions cache.length + 0 .. n - 1."""
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        pos = cache.offset
        keys, values = cache.append(k, v)
        return softmax_rows(q, keys, values, pos)

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
        init_mta_parameters_(self, self.spec, n_heads=self.n_heads, gate_in=self.dim)

    def attend(self, q, k, v, cos, sin):
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.mixes_scores:
            options = dict(kq_pre=self.kq_pre, head_pre=self.head_pre, kq_post=self.kq_post,
                           head_post=self.head_post, pad_key=self.spec.pad_key, dropout_p=self.dropout_p)
            # Hints for "auto": the score-map size (materialising vs linear-memory backends) and whether
            # torch.compile is tracing (it fuses the materialised backends' glue; hand-written kernels break graphs).
            hints = {"score_elements": q.shape[0] * q.shape[1] * q.shape[2] ** 2,
                     "compiling": torch.compiler.is_compiling()}
            backend = resolve(self.spec.backend, q.device, {**options, **hints})
            self.resolved_backend = backend.name  # what ran, for the run's record
            out = backend.fn(q, k, v, **options)
        else:
            self.resolved_backend = "sdpa"
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout_p)
        return self._norm_and_gate(out)

    def _norm_and_gate(self, out: Tensor) -> Tensor:
        """Steps 9-10, per (token, head)."""
        if self.norm_weight is not None:  # step 9: one weight of size d shared by all heads
            out = rms_norm(out, self.norm_weight) * self.depth_scale
        if self.gate is not None:  # step 10: o <- o · sigmoid(w·o + b)
            out = out * torch.sigmoid(self.gate(out))
        return out

    # ------------------------------------------------------------------ with a decoding cache (eval)
    @property
    def _c_pre(self) -> int:
        """Query rows the pre-softmax kq conv reads (1: none)."""
        return self.kq_pre.shape[1] if self.kq_pre is not None else 1

    @property
    def _c_post(self) -> int:
        return self.kq_post.shape[1] if self.kq_post is not None else 1

    def _step4_rows(self, q_win: Tensor, pos: int | Tensor, keys: Tensor) -> Tensor:
        """Softmax probabilities (steps 1-4) of query rows pos .. pos + n - 1 against keys 0 .. T - 1.

        q_win (B, h, c_q - 1 + n, d), work dtype: the query rows pos - (c_q - 1) .. pos + n - 1 after RoPE, rows
        before position 0 zero (zero scores = the convolution's zero padding). keys (B, h, T, d), work dtype.
        Returns (B, h, n, T).
        """
        c_q = self._c_pre
        n, t = q_win.shape[2] - (c_q - 1), keys.shape[2]
        scores = q_win @ keys.transpose(-2, -1) / math.sqrt(q_win.shape[-1])  # step 1
        if self.kq_pre is not None:  # step 2: Mask_0 on every row read, then the conv of the new rows only
            scores = scores.masked_fill(~visible(pos - (c_q - 1), q_win.shape[2], t, q_win.device), 0.0)
            scores = kq_conv_rows(scores, self.kq_pre, self.spec.pad_key)
        if self.head_pre is not None:  # step 3
            scores = mix_heads_pre(scores, self.head_pre)
        return torch.softmax(scores.masked_fill(~visible(pos, n, t, q_win.device), float("-inf")), dim=-1)

    def _cache_dtype(self, dtype: torch.dtype) -> torch.dtype:
        # Score-mixing layers read every cached key and value in the work dtype on each step: keeping them in it
        # (2x the cache of a half-precision model) saves upcasting the whole cache per step; plain rows go
        # through SDPA in the model's dtype.
        return work_dtype(dtype) if self.mixes_scores else dtype

    def fill_cache(self, q, k, v, cos, sin, cache):
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        store = self._cache_dtype(q.dtype)
        cache.store(k.to(store), v.to(store))
        t = q.shape[2]
        c_pre, c_post = self._c_pre, self._c_post
        if c_pre > 1:
            cache.set_window("queries", last_rows(q, c_pre - 1))
        if c_post > 1:  # step-4 rows of the last c_post - 1 positions (at most c_pre + c_post - 2 query rows)
            m = min(c_post - 1, t)
            work = work_dtype(q.dtype)
            q_win = last_rows(q, m + c_pre - 1).to(work)
            probs = self._step4_rows(q_win, t - m, k.to(work))
            cache.set_window("probs", F.pad(probs, (0, 0, c_post - 1 - m, 0)))

    def attend_cached(self, q, k, v, cos, sin, cache):
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        pos = cache.offset  # an int, or a static cache's device tensor
        store = self._cache_dtype(q.dtype)
        keys, values = cache.append(k.to(store), v.to(store))
        n, t = q.shape[2], keys.shape[2]  # t: the cached keys (a static cache's capacity; later keys are masked)
        if not self.mixes_scores:  # plain causal attention (the full path's SDPA)
            return self._norm_and_gate(softmax_rows(q, keys, values, pos))
        work = work_dtype(q.dtype)
        c_pre, c_post = self._c_pre, self._c_post
        q_win = q
        if c_pre > 1:  # the c_pre - 1 query rows above the new ones
            q_win = torch.cat((cache.queries, q), dim=2)
            cache.set_window("queries", q_win[:, :, -(c_pre - 1):])
        probs = self._step4_rows(q_win.to(work), pos, keys.to(work))  # (B, h, n, T)
        if self.kq_post is not None:  # step 5: rows pos - (c_post - 1) .. pos + n - 1 of A, conv, re-zero
            win = probs
            if c_post > 1:
                win = torch.cat((F.pad(cache.probs, (0, t - cache.probs.shape[-1])), probs), dim=2)
                cache.set_window("probs", win[:, :, -(c_post - 1):])
            probs = kq_conv_rows(win, self.kq_post, self.spec.pad_key)
            probs = probs.masked_fill(~visible(pos, n, t, q.device), 0.0)
        if self.head_post is not None:  # step 6
            probs = mix_heads_post(probs, self.head_post)
        return self._norm_and_gate((probs @ values.to(work)).to(q.dtype))  # steps 8-10


@torch.no_grad()
def init_mta_parameters_(owner: nn.Module, spec: AttentionSpec, *, n_heads: int, gate_in: int) -> None:
    """The spec's initialisation of `owner`'s MTA tensors (`kq_pre`, `kq_post`, `head_pre`, `head_post`,
    `norm_weight`, `gate`; each may be None): identity kernels and mixing (softmax attention, up to norm and gate),
    unit norm weight, a truncated-normal gate of fan-in `gate_in` with zero bias."""
    for kernel in (owner.kq_pre, owner.kq_post):
        if kernel is not None:
            init_kernel_(kernel, spec)
    if owner.head_pre is not None:
        assign_(owner.head_pre, torch.eye(n_heads))
    if owner.head_post is not None:
        groups, c_h, _ = owner.head_post.shape
        assign_(owner.head_post, torch.eye(c_h).expand(groups, c_h, c_h))
    if owner.norm_weight is not None:
        owner.norm_weight.fill_(1.0)
    if owner.gate is not None:
        std = gate_in ** -0.5
        nn.init.trunc_normal_(owner.gate.weight, std=std, a=-3 * std, b=3 * std)
        nn.init.zeros_(owner.gate.bias)  # the release leaves it uninitialised (spec §2.10)


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

    def _rope_halves(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        return torch.cat([apply_rope(part, cos, sin) for part in x.split(self.head_dim, dim=-1)], dim=-1)

    def fill_cache(self, q, k, v, cos, sin, cache):
        cache.store(self._rope_halves(k, cos, sin), v)

    def attend_cached(self, q, k, v, cos, sin, cache):
        d = self.head_dim
        pos = cache.offset
        keys, values = cache.append(self._rope_halves(k, cos, sin), v)
        q1, q2 = self._rope_halves(q, cos, sin).split(d, dim=-1)
        k1, k2 = keys.split(d, dim=-1)
        out1 = softmax_rows(q1, k1, values, pos)
        out2 = softmax_rows(q2, k2, values, pos)
        out = out1 - self.lambda_full().to(out2.dtype) * out2
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


def resolved_backends(model: torch.nn.Module) -> str | None:
    """What the attention layers ran, e.g. "triton_mix (18 layers), triton_conv (6 layers)" (most layers first; "sdpa":
    an MTA layer with nothing to mix); None when no layer recorded one (e.g. the softmax Transformer)."""
    counts = Counter(m.resolved_backend for m in model.modules() if getattr(m, "resolved_backend", None))
    return ", ".join(f"{name} ({n} layer{'s' if n != 1 else ''})" for name, n in counts.most_common()) or None
