"""Tests of the attention nn.Modules that `build_attention` builds (docs/mta-spec.md §2 steps 9-11, §3, §4).

Every reference below is written out in this file from the spec's formulas (einsum / matmul on float64),
reading the module's own weights; only RoPE is shared with the library (`mta_lab.attention.rope`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import mta_lab.attention.layers as layers_mod
from mta_lab.attention import (
    AttentionSpec,
    DiffAttention,
    MultiTokenAttention,
    SoftmaxAttention,
    build_attention,
    expected_extra_parameters,
    load_preset,
    preset_names,
)
from mta_lab.attention.rope import apply_rope, rope_tables

F64 = torch.float64
TIGHT = 1e-12
NORM_EPS = 1e-5
ROPE_THETA = 10_000.0  # build_attention's default
DIM, HEADS, T = 32, 4, 13
PAD_KEYS = ("both", "left", "right")


# ----------------------------------------------------------------------------------------------------
# Helpers: construction, random weights, and the reference pieces
# ----------------------------------------------------------------------------------------------------


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build(spec, *, dim=DIM, n_heads=HEADS, layer_idx=0, n_layers=4, dtype=F64):
    return build_attention(spec, dim=dim, n_heads=n_heads, layer_idx=layer_idx, n_layers=n_layers).to(dtype)


def lambda_init(layer: int) -> float:
    return 0.8 - 0.6 * math.exp(-0.3 * layer)


def randn(*shape, g, scale=1.0, dtype=F64):
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


@torch.no_grad()
def randomize_projections_(mod, seed: int, scale: float = 1.5) -> None:
    """Random q/k/v/o weights, large enough that the softmax is far from uniform."""
    g = gen(seed)
    for lin in (mod.wq, mod.wk, mod.wv, mod.wo):
        d_out, d_in = lin.weight.shape
        lin.weight.copy_(randn(d_out, d_in, g=g, scale=scale / math.sqrt(d_in)))


@torch.no_grad()
def copy_projections_(src, dst) -> None:
    for name in ("wq", "wk", "wv", "wo"):
        getattr(dst, name).weight.copy_(getattr(src, name).weight)


def ref_heads(x, weight, n_heads):
    """x (B, T, D) @ W^T split into (B, n_heads, T, D / n_heads)."""
    b, t, _ = x.shape
    return (x @ weight.T).view(b, t, n_heads, -1).transpose(1, 2)


def ref_rope(x):
    cos, sin = rope_tables(x.shape[-2], x.shape[-1], ROPE_THETA)
    return apply_rope(x, cos, sin)


def ref_causal_softmax(s):
    t = s.shape[-1]
    visible = torch.ones(t, t, dtype=torch.bool).tril()
    return torch.softmax(s.masked_fill(~visible, float("-inf")), dim=-1)


def ref_logits(q, k):
    return torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.shape[-1])


def ref_merge(o, wo):
    """Concatenate heads (B, H, T, d) -> (B, T, H·d), then the output projection."""
    b, h, t, d = o.shape
    return o.transpose(1, 2).reshape(b, t, h * d) @ wo.T


def ref_rms(o, weight):
    return o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + NORM_EPS) * weight


def assert_tight(actual, expected, msg="", atol=TIGHT):
    err = (actual - expected).abs().max().item()
    assert err <= atol, f"{msg}: max abs error {err:.3e} > {atol:.0e}"


# ----------------------------------------------------------------------------------------------------
# 1. Identity invariant: MTA with identity init and no norm/gate == SoftmaxAttention
# ----------------------------------------------------------------------------------------------------

# Kernel sizes per padding mode: "both" needs an odd c_k; the largest is the paper's 6×11 (> some T below).
KERNELS = {
    "both": [(1, 1), (2, 3), (6, 11)],
    "left": [(1, 2), (3, 4), (6, 11)],
    "right": [(2, 1), (3, 4), (6, 11)],
}
HEAD_POST = {  # name -> (head_post, head_post_group)
    "none": ("none", None),
    "grouped1": ("grouped", 1),
    "grouped2": ("grouped", 2),
    "full": ("full", None),
}


@pytest.mark.parametrize("head_post", list(HEAD_POST))
@pytest.mark.parametrize("head_pre", [False, True])
@pytest.mark.parametrize("pad_key", PAD_KEYS)
def test_identity_init_equals_softmax_attention(pad_key, head_pre, head_post):
    torch.manual_seed(0)
    base = build(AttentionSpec(), layer_idx=1)
    randomize_projections_(base, seed=1)
    assert isinstance(base, SoftmaxAttention)
    g = gen(2)
    inputs = [randn(2, T, DIM, g=g), randn(1, 4, DIM, g=g)]  # T=4 is shorter than the 6×11 kernel
    expected = [base(x) for x in inputs]
    post, group = HEAD_POST[head_post]
    sizes = KERNELS[pad_key]
    # Each size alone pre and alone post, every pair of distinct sizes pre+post, and neither.
    combos = [(None, None), *((s, None) for s in sizes), *((None, s) for s in sizes),
              *zip(sizes, sizes[1:] + sizes[:1], strict=True), *zip(sizes[1:] + sizes[:1], sizes, strict=True)]
    for kq_pre, kq_post in combos:
        spec = AttentionSpec(kind="mta", kq_pre=kq_pre, kq_post=kq_post, pad_key=pad_key, head_pre=head_pre,
                             head_post=post, head_post_group=group, kq_layers="all")
        mod = build(spec, layer_idx=1)
        assert isinstance(mod, MultiTokenAttention)
        assert (mod.kq_pre is not None) == (kq_pre is not None)
        assert (mod.kq_post is not None) == (kq_post is not None)
        assert mod.mixes_scores == spec.mixes_scores
        copy_projections_(base, mod)
        for x, ref in zip(inputs, expected, strict=True):
            assert_tight(mod(x), ref, f"{spec} T={x.shape[1]}")


@pytest.mark.parametrize("layer_idx", [0, 3])
def test_talking_heads_preset_identity_init_equals_softmax_attention(layer_idx):
    base = build(AttentionSpec(), layer_idx=layer_idx)
    randomize_projections_(base, seed=3)
    mod = build(load_preset("talking_heads"), layer_idx=layer_idx)
    assert mod.mixes_scores
    assert mod.head_pre.shape == (HEADS, HEADS) and mod.head_post.shape == (1, HEADS, HEADS)
    copy_projections_(base, mod)
    x = randn(2, T, DIM, g=gen(4))
    assert_tight(mod(x), base(x), "talking_heads preset at identity init")


# ----------------------------------------------------------------------------------------------------
# 2. Talking heads with random mixing matrices vs Shazeer et al.'s definition
# ----------------------------------------------------------------------------------------------------


def ref_talking_heads(mod, x, w_pre, u_post):
    h = mod.n_heads
    q, k, v = (ref_heads(x, lin.weight, h) for lin in (mod.wq, mod.wk, mod.wv))
    q, k = ref_rope(q), ref_rope(k)
    logits = ref_logits(q, k)
    mixed = torch.einsum("oi,bitj->botj", w_pre, logits)  # head_pre indexed [out, in]
    probs = ref_causal_softmax(mixed)
    probs = torch.einsum("io,bitj->botj", u_post, probs)  # post matrix indexed [in, out]
    return ref_merge(probs @ v, mod.wo.weight)


@pytest.mark.parametrize("layer_idx", [0, 3])
def test_talking_heads_matches_definition_with_random_mixing(layer_idx):
    mod = build(load_preset("talking_heads"), layer_idx=layer_idx)
    randomize_projections_(mod, seed=10 + layer_idx)
    g = gen(20 + layer_idx)
    w_pre = torch.eye(HEADS, dtype=F64) + randn(HEADS, HEADS, g=g, scale=0.5)
    u_post = torch.eye(HEADS, dtype=F64) + randn(HEADS, HEADS, g=g, scale=0.5)
    with torch.no_grad():
        mod.head_pre.copy_(w_pre)
        mod.head_post.copy_(u_post.unsqueeze(0))
    x = randn(2, T, DIM, g=g)
    out = mod(x)
    assert_tight(out, ref_talking_heads(mod, x, w_pre, u_post), "talking heads vs definition")
    # The reference discriminates the index conventions: transposing either matrix changes the result.
    assert (out - ref_talking_heads(mod, x, w_pre.T, u_post)).abs().max() > 1e-3
    assert (out - ref_talking_heads(mod, x, w_pre, u_post.T)).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------------------
# 3. DIFF Transformer vs spec §3
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def randomize_diff_(mod: DiffAttention, seed: int) -> None:
    randomize_projections_(mod, seed)
    g = gen(seed + 100)
    d = mod.head_dim
    for p in (mod.lambda_q1, mod.lambda_k1, mod.lambda_q2, mod.lambda_k2):
        p.copy_(randn(d, g=g, scale=0.3))
    mod.norm_weight.copy_(1.0 + randn(2 * d, g=g, scale=0.3))


def ref_diff(mod: DiffAttention, x, layer: int):
    h2, d = mod.n_heads // 2, mod.head_dim
    q, k, v = (ref_heads(x, lin.weight, h2) for lin in (mod.wq, mod.wk, mod.wv))  # (B, H/2, T, 2d)
    assert q.shape[-1] == 2 * d
    q1, q2 = ref_rope(q[..., :d]), ref_rope(q[..., d:])
    k1, k2 = ref_rope(k[..., :d]), ref_rope(k[..., d:])
    lam_init = lambda_init(layer)
    lam = (torch.exp((mod.lambda_q1 * mod.lambda_k1).sum()) - torch.exp((mod.lambda_q2 * mod.lambda_k2).sum())
           + lam_init)
    a = ref_causal_softmax(ref_logits(q1, k1)) - lam * ref_causal_softmax(ref_logits(q2, k2))
    o = ref_rms(a @ v, mod.norm_weight) * (1.0 - lam_init)  # RMSNorm over 2d, weight shared by heads
    return ref_merge(o, mod.wo.weight)


@pytest.mark.parametrize("layer_idx", [0, 1, 5, 23])
def test_diff_matches_definition(layer_idx):
    mod = build(load_preset("diff"), layer_idx=layer_idx, n_layers=24)
    assert isinstance(mod, DiffAttention)
    d = DIM // HEADS
    assert mod.lambda_q1.shape == (d,) and mod.norm_weight.shape == (2 * d,)
    randomize_diff_(mod, seed=30 + layer_idx)
    mod.eval()
    x = randn(2, T, DIM, g=gen(40 + layer_idx))
    with torch.no_grad():
        assert_tight(mod(x), ref_diff(mod, x, layer_idx), f"DIFF layer {layer_idx}")


def test_diff_dropout_path_equals_sdpa_path(monkeypatch):
    spec = replace(load_preset("diff"), dropout=0.25)
    mod = build(spec, layer_idx=3, n_layers=8)
    randomize_diff_(mod, seed=50)
    x = randn(2, T, DIM, g=gen(51))
    mod.eval()  # dropout_p == 0: the two fused SDPA calls
    with torch.no_grad():
        sdpa_out = mod(x)
    calls = []
    real = layers_mod.diff_attention

    def materialised_without_dropout(q1, k1, q2, k2, v, lam, dropout_p=0.0):
        calls.append(dropout_p)
        return real(q1, k1, q2, k2, v, lam, 0.0)

    monkeypatch.setattr(layers_mod, "diff_attention", materialised_without_dropout)
    mod.train()  # dropout_p > 0: the materialised path (with its dropout switched off here)
    with torch.no_grad():
        materialised_out = mod(x)
    assert calls == [0.25], "train mode with dropout > 0 must take the materialised diff_attention path"
    assert_tight(materialised_out, sdpa_out, "DIFF materialised path vs SDPA path")


def test_diff_dropout_random_in_train_deterministic_in_eval():
    mod = build(replace(load_preset("diff"), dropout=0.3), layer_idx=2, n_layers=8)
    randomize_diff_(mod, seed=60)
    x = randn(2, T, DIM, g=gen(61))
    torch.manual_seed(0)
    with torch.no_grad():
        mod.train()
        a, b = mod(x), mod(x)
        mod.eval()
        c, e = mod(x), mod(x)
    assert (a - b).abs().max() > 1e-3, "train-mode dropout should make two calls differ"
    assert torch.equal(c, e)
    assert (a - c).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------------------
# 4. MTA group norm and gates vs formulas; their initialisation
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head_pre", [False, True])
@pytest.mark.parametrize("gate", ["none", "scalar", "full"])
@pytest.mark.parametrize("group_norm", ["none", "rms", "rms_depth"])
def test_mta_group_norm_and_gate_match_formulas(group_norm, gate, head_pre):
    layer = 5
    spec = AttentionSpec(kind="mta", head_pre=head_pre, group_norm=group_norm, gate=gate)
    mod = build(spec, layer_idx=layer, n_layers=8)
    randomize_projections_(mod, seed=70)
    d = DIM // HEADS
    g = gen(71)
    with torch.no_grad():
        if head_pre:
            mod.head_pre.copy_(torch.eye(HEADS, dtype=F64) + randn(HEADS, HEADS, g=g, scale=0.5))
        if group_norm != "none":
            assert mod.norm_weight.shape == (d,)  # one weight shared by all heads
            mod.norm_weight.copy_(1.0 + randn(d, g=g, scale=0.3))
        if gate != "none":
            assert mod.gate.weight.shape == ((1, d) if gate == "scalar" else (d, d))
            assert mod.gate.bias.shape == ((1,) if gate == "scalar" else (d,))
            mod.gate.weight.copy_(randn(*mod.gate.weight.shape, g=g, scale=1.0 / math.sqrt(d)))
            mod.gate.bias.copy_(randn(*mod.gate.bias.shape, g=g, scale=0.5))  # nonzero: b must be used
    x = randn(2, T, DIM, g=g)

    with torch.no_grad():
        q, k, v = (ref_heads(x, lin.weight, HEADS) for lin in (mod.wq, mod.wk, mod.wv))
        logits = ref_logits(ref_rope(q), ref_rope(k))
        if head_pre:
            logits = torch.einsum("oi,bitj->botj", mod.head_pre, logits)
        o = ref_causal_softmax(logits) @ v  # (B, H, T, d)
        if group_norm != "none":
            o = ref_rms(o, mod.norm_weight)
            if group_norm == "rms_depth":
                o = o * (1.0 - lambda_init(layer))
        if gate == "scalar":
            w, b = mod.gate.weight[0], mod.gate.bias[0]  # the same w and b for every head
            o = o * torch.sigmoid(torch.einsum("bhtd,d->bht", o, w) + b).unsqueeze(-1)
        elif gate == "full":
            o = o * torch.sigmoid(torch.einsum("bhtd,ed->bhte", o, mod.gate.weight) + mod.gate.bias)
        expected = ref_merge(o, mod.wo.weight)
        assert_tight(mod(x), expected, f"{spec}")


def test_gate_and_norm_initialisation():
    dim, heads = 1024, 4  # D^-0.5 = 1/32, while d^-0.5 = 1/16: the test tells them apart
    d, std = dim // heads, dim ** -0.5
    torch.manual_seed(0)
    full = build_attention(AttentionSpec(kind="mta", group_norm="rms", gate="full"), dim=dim, n_heads=heads,
                           layer_idx=0, n_layers=1)
    scalar = build_attention(AttentionSpec(kind="mta", group_norm="rms_depth", gate="scalar"), dim=dim,
                             n_heads=heads, layer_idx=3, n_layers=4)
    for mod in (full, scalar):
        w = mod.gate.weight.detach()
        assert w.abs().max() <= 3 * std * (1 + 1e-6), "truncated at 3 std"
        assert torch.equal(mod.gate.bias.detach(), torch.zeros_like(mod.gate.bias)), "bias exactly zero"
        assert torch.equal(mod.norm_weight.detach(), torch.ones(d))
    w = full.gate.weight.detach()  # 65,536 samples
    assert w.abs().max() > 2.5 * std
    truncated_std = std * math.sqrt(1 - 6 * math.exp(-4.5) / math.sqrt(2 * math.pi) / math.erf(3 / math.sqrt(2)))
    assert abs(w.std().item() / truncated_std - 1) < 0.03
    assert abs(w.mean().item()) < 0.05 * std
    assert scalar.depth_scale == pytest.approx(1 - lambda_init(3), abs=1e-15)
    assert full.depth_scale == 1.0
    # Re-initialisation really writes the bias and norm weight (not whatever memory held).
    with torch.no_grad():
        scalar.gate.bias.fill_(float("nan"))
        scalar.norm_weight.fill_(float("nan"))
    scalar.reset_parameters()
    assert torch.equal(scalar.gate.bias.detach(), torch.zeros(1))
    assert torch.equal(scalar.norm_weight.detach(), torch.ones(d))


# ----------------------------------------------------------------------------------------------------
# 5. Kernel initialisations
# ----------------------------------------------------------------------------------------------------

INIT_SHAPES = {"both": [(6, 11), (4, 9), (2, 3), (3, 1)], "left": [(6, 11), (2, 4), (3, 1)],
               "right": [(6, 11), (2, 4), (3, 1)]}


def key_centre(c_k: int, pad_key: str) -> int:
    return {"both": (c_k - 1) // 2, "left": c_k - 1, "right": 0}[pad_key]


def expected_kernel(kind: str, c_q: int, c_k: int, pad_key: str, value: float) -> torch.Tensor:
    k = torch.zeros(c_q, c_k)
    if kind == "const":
        k.fill_(value)
    elif kind == "identity":
        k[c_q - 1, key_centre(c_k, pad_key)] = 1.0
    elif kind == "diagonal":
        for a in range(c_q):
            for b in range(c_k):
                if pad_key == "both":
                    on = b - a == (c_k + 1) // 2 - c_q  # the spec's rule for the centred kernel
                else:
                    on = b - key_centre(c_k, pad_key) == a - (c_q - 1)  # diagonal through the identity tap
                k[a, b] = float(on)
    return k


@pytest.mark.parametrize("kernel_init", ["identity", "zero", "const", "uniform", "diagonal"])
@pytest.mark.parametrize("pad_key", PAD_KEYS)
def test_kernel_init(pad_key, kernel_init):
    shapes = INIT_SHAPES[pad_key]
    torch.manual_seed(0)
    for value in (0.3, -0.7):
        for pre, post in zip(shapes, shapes[1:] + shapes[:1], strict=True):
            spec = AttentionSpec(kind="mta", kq_pre=pre, kq_post=post, pad_key=pad_key, kernel_init=kernel_init,
                                 kernel_init_value=value)
            mod = build(spec, dtype=torch.float32)
            for kernel, (c_q, c_k) in ((mod.kq_pre, pre), (mod.kq_post, post)):
                kernel = kernel.detach()
                assert kernel.shape == (HEADS, c_q, c_k)
                if kernel_init == "uniform":
                    assert kernel.min() >= -1.0 and kernel.max() <= 1.0
                    if c_q * c_k >= 20:
                        assert kernel.min() < -0.5 and kernel.max() > 0.5
                        assert not torch.equal(kernel[0], kernel[1]), "independent draws per head"
                        assert abs(kernel.mean().item()) < 0.2
                else:
                    want = expected_kernel(kernel_init, c_q, c_k, pad_key, value).expand(HEADS, c_q, c_k)
                    assert torch.equal(kernel, want), f"{kernel_init} {pad_key} {(c_q, c_k)}:\n{kernel[0]}"


def test_diagonal_init_6x11_is_the_main_diagonal():
    mod = build(AttentionSpec(kind="mta", kq_pre=(6, 11), kernel_init="diagonal"), dtype=torch.float32)
    assert torch.equal(mod.kq_pre.detach(), torch.eye(6, 11).expand(HEADS, 6, 11))


# ----------------------------------------------------------------------------------------------------
# 6. Layer placement
# ----------------------------------------------------------------------------------------------------


def test_kq_kernels_only_on_selected_layers():
    spec = load_preset("mta")
    assert spec.kq_layers == "every:4:2"
    owners = []
    for layer in range(24):
        mod = build(spec, layer_idx=layer, n_layers=24, dtype=torch.float32)
        names = {n for n, _ in mod.named_parameters()}
        has_kq = mod.kq_pre is not None
        assert (mod.kq_post is not None) == has_kq
        assert ({"kq_pre", "kq_post"} <= names) == has_kq and not ({"kq_pre", "kq_post"} & names and not has_kq)
        if has_kq:
            owners.append(layer)
        # head mixing, group norm and gate on every layer
        assert {"head_pre", "head_post", "norm_weight", "gate.weight", "gate.bias"} <= names
        assert mod.mixes_scores
    assert owners == [2, 6, 10, 14, 18, 22]


def test_layer_with_nothing_to_mix_uses_sdpa(monkeypatch):
    spec = AttentionSpec(kind="mta", kq_pre=(2, 3), kq_post=(2, 3), kq_layers="every:4:2")
    calls = {"sdpa": 0, "op": 0}
    real_sdpa = layers_mod.F.scaled_dot_product_attention
    real_resolve = layers_mod.resolve

    def sdpa(*args, **kwargs):
        calls["sdpa"] += 1
        return real_sdpa(*args, **kwargs)

    def resolve(*args, **kwargs):
        calls["op"] += 1
        return real_resolve(*args, **kwargs)

    monkeypatch.setattr(layers_mod.F, "scaled_dot_product_attention", sdpa)
    monkeypatch.setattr(layers_mod, "resolve", resolve)
    x = randn(2, T, DIM, g=gen(80))
    base = build(AttentionSpec(), layer_idx=0, n_layers=8)
    randomize_projections_(base, seed=81)
    with torch.no_grad():
        expected = base(x)
    for layer, mixes in ((0, False), (1, False), (2, True), (6, True), (7, False)):
        mod = build(spec, layer_idx=layer, n_layers=8)
        assert mod.mixes_scores == mixes
        assert (mod.kq_pre is None) == (not mixes)
        copy_projections_(base, mod)
        calls.update(sdpa=0, op=0)
        with torch.no_grad():
            out = mod(x)
        assert calls == ({"sdpa": 0, "op": 1} if mixes else {"sdpa": 1, "op": 0}), f"layer {layer}: {calls}"
        assert_tight(out, expected, f"layer {layer}")


# ----------------------------------------------------------------------------------------------------
# 7. Parameter accounting against the paper's Table 8 (spec §4)
# ----------------------------------------------------------------------------------------------------

VOCAB = 128_256
# (preset, D, L, H, paper's total of the Transformer, paper's total of the variant)
TABLE8 = [
    ("mta", 1536, 24, 16, 876_553_728, 876_583_320),
    ("talking_heads", 1536, 24, 16, 876_553_728, 876_566_016),
    ("diff", 1536, 24, 16, 876_553_728, 876_567_552),
    ("transformer", 1536, 24, 16, 876_553_728, 876_553_728),
    ("mta", 1024, 20, 16, 388_277_248, 388_300_628),
    ("mta", 1280, 24, 10, 651_818_240, 651_837_128),
    ("mta", 2048, 24, 16, 1_495_894_016, 1_495_925_144),
]


@pytest.mark.parametrize(("preset", "dim", "n_layers", "n_heads", "transformer_total", "variant_total"), TABLE8)
def test_extra_parameters_match_table8(preset, dim, n_layers, n_heads, transformer_total, variant_total):
    spec = load_preset(preset)
    with torch.device("meta"):
        layers = [build_attention(spec, dim=dim, n_heads=n_heads, layer_idx=i, n_layers=n_layers)
                  for i in range(n_layers)]
    assert all(p.is_meta for m in layers for p in m.parameters())
    extras = [m.extra_parameters() for m in layers]
    for m, extra in zip(layers, extras, strict=True):  # extra = everything beyond the four D×D projections
        assert sum(p.numel() for p in m.parameters()) == 4 * dim * dim + extra
    if preset == "transformer":
        assert extras == [0] * n_layers
    expected = variant_total - transformer_total
    assert sum(extras) == expected
    assert expected_extra_parameters(spec, dim=dim, n_heads=n_heads, n_layers=n_layers) == expected
    # And the whole LLaMA model of spec §4 built around these layers has the paper's exact total.
    ffn = 256 * -(-8 * dim // (3 * 256))  # 256·ceil((2/3·4D)/256)
    attention = sum(sum(p.numel() for p in m.parameters()) for m in layers)
    model = VOCAB * dim + attention + n_layers * (3 * dim * ffn + 2 * dim) + dim
    assert model == variant_total


# ----------------------------------------------------------------------------------------------------
# 8. Every preset: forward + backward in float32 and bfloat16; dropout behaviour
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", preset_names())
def test_preset_forward_backward(name, dtype):
    spec = load_preset(name)
    n_layers = 4
    g = gen(90)
    seen_kq = False
    for layer in range(n_layers):
        torch.manual_seed(layer)
        mod = build(spec, layer_idx=layer, n_layers=n_layers, dtype=dtype).eval()
        seen_kq |= getattr(mod, "kq_pre", None) is not None or getattr(mod, "kq_post", None) is not None
        x = randn(2, T, DIM, g=g, dtype=torch.float32).to(dtype).requires_grad_()
        out = mod(x)
        assert out.shape == (2, T, DIM) and out.dtype == dtype
        assert torch.isfinite(out).all()
        (out.float() * randn(2, T, DIM, g=g, dtype=torch.float32)).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        for pname, p in mod.named_parameters():
            assert p.grad is not None, f"{name} layer {layer}: {pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} layer {layer}: {pname} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{name} layer {layer}: {pname} has an all-zero gradient"
    assert seen_kq == spec.has_kq_conv  # the kq kernels were among the parameters checked


@pytest.mark.parametrize("name", preset_names())
def test_preset_dropout_train_vs_eval(name):
    spec = load_preset(name)
    if spec.dropout == 0.0:
        spec = replace(spec, dropout=0.2)
    g = gen(95)
    for layer in range(4):
        mod = build(spec, layer_idx=layer, n_layers=4, dtype=torch.float32)
        x = randn(2, T, DIM, g=g, dtype=torch.float32)
        torch.manual_seed(layer)
        with torch.no_grad():
            mod.eval()
            assert torch.equal(mod(x), mod(x)), f"{name} layer {layer}: eval mode must be deterministic"
            mod.train()
            a, b = mod(x), mod(x)
        assert (a - b).abs().max() > 1e-4, f"{name} layer {layer}: train-mode dropout had no effect"


@pytest.mark.parametrize("name", preset_names())
def test_preset_is_causal_with_random_mixing(name):
    """With random kernels and head mixing, outputs before position t0 ignore every input from t0 on."""
    spec = load_preset(name)
    if spec.has_kq_conv:
        spec = replace(spec, kernel_init="uniform")
    g = gen(97)
    t0 = 7
    for layer in range(4):
        torch.manual_seed(layer)
        mod = build(spec, layer_idx=layer, n_layers=4).eval()
        randomize_projections_(mod, seed=98 + layer)
        with torch.no_grad():
            for pname in ("head_pre", "head_post"):
                p = getattr(mod, pname, None)
                if p is not None:
                    p.add_(randn(*p.shape, g=g, scale=0.5))
            x = randn(2, T, DIM, g=g)
            y = x.clone()
            y[:, t0:] += randn(2, T - t0, DIM, g=g)
            out_x, out_y = mod(x), mod(y)
        assert_tight(out_y[:, :t0], out_x[:, :t0], f"{name} layer {layer}: future inputs leak into the past")
        assert (out_y[:, t0:] - out_x[:, t0:]).abs().max() > 1e-3
