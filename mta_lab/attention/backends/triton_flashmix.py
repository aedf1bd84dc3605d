"""Head mixing (Talking heads; the paper config's layers without key-query convolutions) without T × T maps in HBM
beyond one query chunk: backend "triton_flashmix".

The op (as in "triton_mix"): S = scale·q kᵀ; S'' = W₁ S over the head axis (step 3); P = causal softmax of S''
(step 4); P̂ = W₂ P over the head axis (step 6, grouped mixing as a block-diagonal H×H matrix); O = P̂ v.
W₁ and W₂ are [out, in] matrices.

Mixing couples the H heads at each (i, j), so every program holds a tile of BM query rows of *all* heads (H padded
to HP >= 16): its scores are an (HP, BM, BN) tile, q kᵀ as one batched tensor-core product over the heads, and the
mixing one (HP × HP) · (HP × BM·BN) product. The score maps are never read from HBM: every kernel recomputes its
tiles from q and k (and dO and v), flash-style.

- forward: `_lse` streams the keys of each query tile once and keeps the row log-sum-exp of the mixed scores
  (no map written); then, one query chunk at a time, `_probs` writes the chunk's P̂ tiles (one program per
  (query tile, key range)) in v's dtype and cuBLAS multiplies P̂ v.
- backward: `_delta` streams each query tile's keys once for Δ[h, i] = Σⱼ P ⊙ dP, dP = W₂ᵀ dP̂, dP̂ = dO vᵀ; then,
  one query chunk at a time, `_grads` writes the chunk's dS = scale·W₁ᵀ (P ⊙ (dP − Δ)) and P̂ tiles and the
  mixing gradients dW₁ = Σ dS'' Sᵀ, dW₂ = Σ dP̂ Pᵀ (one partial per program, summed after), and cuBLAS computes
  dq = dS k, dk += dSᵀ q, dv += P̂ᵀ dO (float32 accumulation across chunks).

Only q, k, v and the row log-sum-exp are kept between forward and backward; within a call the maps exist for one
query chunk (`CHUNK_MB` of launch options per map), so peak memory is linear in T. The roofline and the measured
times are in reports/bench/README.md. No dropout and no key-query convolutions: such calls go to other backends.
"""

from __future__ import annotations

import json
import math
import os

import torch
import triton
import triton.language as tl

from mta_lab.attention.backends import Backend, register
from mta_lab.attention.backends.policy import mixing_only
from mta_lab.attention.backends.triton_mix import full_post_matrix

NEG: tl.constexpr = tl.constexpr(-1.0e30)  # "minus infinity" that keeps exp() and max() finite for padded rows


@triton.jit
def _load_rows(X, base, offs_h, rows, offs_d, H, T, D):
    """(HP, BM, DP) tile X[b, h, rows, d] of a contiguous (B, H, T, D) tensor; zeros outside."""
    mask = (offs_h < H)[:, None, None] & (rows < T)[None, :, None] & (offs_d < D)[None, None, :]
    ptr = X + base + offs_h.to(tl.int64)[:, None, None] * T * D + rows[None, :, None] * D + offs_d[None, None, :]
    return tl.load(ptr, mask=mask, other=0.0)


@triton.jit
def _load_cols(X, base, offs_h, offs_n, offs_d, H, T, D):
    """(HP, DP, BN) tile X[b, h, offs_n, d] transposed (keys as columns); zeros outside."""
    mask = (offs_h < H)[:, None, None] & (offs_d < D)[None, :, None] & (offs_n < T)[None, None, :]
    ptr = X + base + offs_h.to(tl.int64)[:, None, None] * T * D + offs_n[None, None, :] * D + offs_d[None, :, None]
    return tl.load(ptr, mask=mask, other=0.0)


@triton.jit
def _mix(w, x, HP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, PRECISION: tl.constexpr):
    """W x over the head axis of an (HP, BM, BN) tile: one (HP × HP) · (HP × BM·BN) tensor-core product."""
    y = tl.dot(w, tl.reshape(x, (HP, BM * BN)), input_precision=PRECISION)
    return tl.reshape(y, (HP, BM, BN))


@triton.jit
def _outer(a, b, HP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, PRECISION: tl.constexpr):
    """Σ over (i, j) of a[h] b[h'] for two (HP, BM, BN) tiles: the (HP, HP) gradient of a mixing matrix."""
    return tl.dot(tl.reshape(a, (HP, BM * BN)), tl.trans(tl.reshape(b, (HP, BM * BN))), input_precision=PRECISION)


@triton.jit
def _held(X, base, offs_h, rows, H, T, D, DP: tl.constexpr, DCH: tl.constexpr):
    """The (HP, BM, DP) tile of X kept by a program for its whole loop, when the width is not cut into DCH chunks
    (then each product reloads its chunks: less shared memory, more loads)."""
    if DCH == DP:
        return _load_rows(X, base, offs_h, rows, tl.arange(0, DP), H, T, D)
    else:
        return 0.0


@triton.jit
def _rows_cols(x, X, Y, base, offs_h, rows, offs_n, H, T, D, HP: tl.constexpr, BM: tl.constexpr,
               BN: tl.constexpr, DP: tl.constexpr, DCH: tl.constexpr, PRECISION: tl.constexpr):
    """(HP, BM, BN) per-head products x yᵀ of the rows' X (held as x, or reloaded in DCH-wide chunks) and Y's keys."""
    if DCH == DP:
        out = tl.dot(x, _load_cols(Y, base, offs_h, offs_n, tl.arange(0, DP), H, T, D), input_precision=PRECISION)
    else:
        out = tl.zeros([HP, BM, BN], dtype=tl.float32)
        for c in tl.static_range(0, DP, DCH):
            offs_d = c + tl.arange(0, DCH)
            out = tl.dot(_load_rows(X, base, offs_h, rows, offs_d, H, T, D),
                         _load_cols(Y, base, offs_h, offs_n, offs_d, H, T, D), out, input_precision=PRECISION)
    return out


@triton.jit
def _tile_scores(q, Q, K, base, w1, offs_h, rows, offs_n, H, T, D, scale,
                 HP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DP: tl.constexpr, DCH: tl.constexpr,
                 HAS_PRE: tl.constexpr, QK_PRECISION: tl.constexpr, PRE_PRECISION: tl.constexpr):
    """(S, S'') of one tile: S = scale·q kᵀ per head (float32), S'' = W₁ S (S itself without pre-mixing)."""
    s = _rows_cols(q, Q, K, base, offs_h, rows, offs_n, H, T, D, HP, BM, BN, DP, DCH, QK_PRECISION) * scale
    mixed = s
    if HAS_PRE:
        mixed = _mix(w1, s, HP, BM, BN, PRE_PRECISION)
    return s, mixed


@triton.jit
def _visible(offs_h, rows, offs_n, H, T):
    """(HP, BM, BN): key j seen from query i (j <= i), real head, real row."""
    return (offs_h < H)[:, None, None] & (rows < T)[None, :, None] & (offs_n[None, None, :] <= rows[None, :, None])


@triton.jit
def _lse(Q, K, W1, Lse, H, T, D, scale,
         HP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DP: tl.constexpr, DCH: tl.constexpr,
         HAS_PRE: tl.constexpr, QK_PRECISION: tl.constexpr, PRE_PRECISION: tl.constexpr):
    """Lse[b, h, i] = log Σ_{j<=i} exp(S''[h, i, j]) for one tile of BM query rows of all heads."""
    tile = tl.num_programs(0) - 1 - tl.program_id(0)  # longest rows first
    b = tl.program_id(1)
    rows = tile * BM + tl.arange(0, BM)
    offs_h = tl.arange(0, HP)
    base = b.to(tl.int64) * H * T * D
    q = _held(Q, base, offs_h, rows, H, T, D, DP, DCH)
    w1 = tl.load(W1 + offs_h[:, None] * HP + offs_h[None, :])
    m = tl.full([HP, BM], NEG, dtype=tl.float32)
    total = tl.zeros([HP, BM], dtype=tl.float32)
    for start in range(0, tl.minimum((tile + 1) * BM, T), BN):
        offs_n = start + tl.arange(0, BN)
        _, s = _tile_scores(q, Q, K, base, w1, offs_h, rows, offs_n, H, T, D, scale, HP, BM, BN, DP, DCH, HAS_PRE,
                            QK_PRECISION, PRE_PRECISION)
        s = tl.where(_visible(offs_h, rows, offs_n, H, T), s, NEG)
        m_new = tl.maximum(m, tl.max(s, 2))
        total = total * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new[:, :, None]), 2)
        m = m_new
    ok = (offs_h < H)[:, None] & (rows < T)[None, :]
    lse = tl.where(ok, m + tl.log(total), 0.0)
    tl.store(Lse + (b * H + offs_h)[:, None].to(tl.int64) * T + rows[None, :], lse, mask=ok)


@triton.jit
def _delta(Q, K, V, dO, W1, W2, Lse, Delta, H, T, D, DV, scale,
           HP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DP: tl.constexpr, DVP: tl.constexpr,
           DCH: tl.constexpr, DVCH: tl.constexpr, HAS_PRE: tl.constexpr, HAS_POST: tl.constexpr,
           QK_PRECISION: tl.constexpr, PRE_PRECISION: tl.constexpr, POST_PRECISION: tl.constexpr):
    """Delta[b, h, i] = Σ_{j<=i} P[h, i, j] dP[h, i, j] with dP = W₂ᵀ dP̂, dP̂ = dO vᵀ, for one query tile."""
    tile = tl.num_programs(0) - 1 - tl.program_id(0)
    b = tl.program_id(1)
    rows = tile * BM + tl.arange(0, BM)
    offs_h = tl.arange(0, HP)
    base, base_v = b.to(tl.int64) * H * T * D, b.to(tl.int64) * H * T * DV
    q = _held(Q, base, offs_h, rows, H, T, D, DP, DCH)
    do = _held(dO, base_v, offs_h, rows, H, T, DV, DVP, DVCH)
    w1 = tl.load(W1 + offs_h[:, None] * HP + offs_h[None, :])
    w2t = tl.load(W2 + offs_h[None, :] * HP + offs_h[:, None])  # W₂ᵀ
    ok = (offs_h < H)[:, None] & (rows < T)[None, :]
    lse_ptr = Lse + (b * H + offs_h)[:, None].to(tl.int64) * T + rows[None, :]
    lse = tl.load(lse_ptr, mask=ok, other=0.0)
    delta = tl.zeros([HP, BM], dtype=tl.float32)
    for start in range(0, tl.minimum((tile + 1) * BM, T), BN):
        offs_n = start + tl.arange(0, BN)
        _, s = _tile_scores(q, Q, K, base, w1, offs_h, rows, offs_n, H, T, D, scale, HP, BM, BN, DP, DCH, HAS_PRE,
                            QK_PRECISION, PRE_PRECISION)
        p = tl.where(_visible(offs_h, rows, offs_n, H, T), tl.exp(s - lse[:, :, None]), 0.0)
        dp = _rows_cols(do, dO, V, base_v, offs_h, rows, offs_n, H, T, DV, HP, BM, BN, DVP, DVCH, QK_PRECISION)
        if HAS_POST:
            dp = _mix(w2t, dp, HP, BM, BN, POST_PRECISION)
        delta += tl.sum(p * dp, 2)
    tl.store(Delta + (b * H + offs_h)[:, None].to(tl.int64) * T + rows[None, :], delta, mask=ok)


@triton.jit
def _chunk_offsets(b, offs_h, rows, offs_n, H, T, row0, C):
    """Element offsets (HP, BM, BN) into a (B, H, C, T) chunk buffer whose row 0 is query row0."""
    return ((b.to(tl.int64) * H + offs_h.to(tl.int64)[:, None, None]) * C + (rows - row0)[None, :, None]) * T \
        + offs_n[None, None, :]


@triton.jit
def _probs(Q, K, W1, W2, Lse, P, H, T, D, row0, C, kend, scale,
           HP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DP: tl.constexpr, DCH: tl.constexpr,
           KB: tl.constexpr, HAS_PRE: tl.constexpr, HAS_POST: tl.constexpr, QK_PRECISION: tl.constexpr,
           PRE_PRECISION: tl.constexpr, POST_PRECISION: tl.constexpr):
    """P̂ = W₂ P for one query tile of the chunk [row0, kend) and KB key blocks; zeros above the diagonal, up to
    column kend."""
    b = tl.program_id(2)
    rows = row0 + tl.program_id(0) * BM + tl.arange(0, BM)
    lo = tl.program_id(1) * (KB * BN)
    hi = tl.minimum(lo + KB * BN, kend)
    seen = tl.minimum(hi, tl.minimum(row0 + (tl.program_id(0) + 1) * BM, T))  # keys any of these rows sees
    offs_h = tl.arange(0, HP)
    base = b.to(tl.int64) * H * T * D
    ok = (offs_h < H)[:, None] & (rows < kend)[None, :]
    store_ok = ok[:, :, None]
    q = _held(Q, base, offs_h, rows, H, T, D, DP, DCH)
    lse = tl.load(Lse + (b * H + offs_h)[:, None].to(tl.int64) * T + rows[None, :], mask=ok, other=0.0)
    w1 = tl.load(W1 + offs_h[:, None] * HP + offs_h[None, :])
    w2 = tl.load(W2 + offs_h[:, None] * HP + offs_h[None, :])
    for start in range(lo, seen, BN):
        offs_n = start + tl.arange(0, BN)
        _, s = _tile_scores(q, Q, K, base, w1, offs_h, rows, offs_n, H, T, D, scale, HP, BM, BN, DP, DCH, HAS_PRE,
                            QK_PRECISION, PRE_PRECISION)
        p = tl.where(_visible(offs_h, rows, offs_n, H, T), tl.exp(s - lse[:, :, None]), 0.0)
        if HAS_POST:
            p = _mix(w2, p, HP, BM, BN, POST_PRECISION)
        tl.store(P + _chunk_offsets(b, offs_h, rows, offs_n, H, T, row0, C), p.to(P.dtype.element_ty),
                 mask=store_ok & (offs_n < kend)[None, None, :])
    for start in range(lo + tl.cdiv(tl.maximum(seen - lo, 0), BN) * BN, hi, BN):
        offs_n = start + tl.arange(0, BN)
        tl.store(P + _chunk_offsets(b, offs_h, rows, offs_n, H, T, row0, C),
                 tl.zeros([HP, BM, BN], dtype=P.dtype.element_ty), mask=store_ok & (offs_n < kend)[None, None, :])


@triton.jit
def _grads(Q, K, V, dO, W1, W2, Lse, Delta, dS, P, dW1, dW2, H, T, D, DV, row0, C, kend, part0, scale,
           HP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DP: tl.constexpr, DVP: tl.constexpr,
           DCH: tl.constexpr, DVCH: tl.constexpr, KB: tl.constexpr, HAS_PRE: tl.constexpr, HAS_POST: tl.constexpr,
           QK_PRECISION: tl.constexpr,
           PRE_PRECISION: tl.constexpr, POST_PRECISION: tl.constexpr):
    """For one query tile of the chunk and KB key blocks: dS = scale·W₁ᵀ (P ⊙ (dP − Δ)) (the gradient of q kᵀ)
    and P̂, zeros above the diagonal up to column kend; this program's partial sums of dW₁ and dW₂."""
    b = tl.program_id(2)
    rows = row0 + tl.program_id(0) * BM + tl.arange(0, BM)
    lo = tl.program_id(1) * (KB * BN)
    hi = tl.minimum(lo + KB * BN, kend)
    seen = tl.minimum(hi, tl.minimum(row0 + (tl.program_id(0) + 1) * BM, T))
    offs_h = tl.arange(0, HP)
    base, base_v = b.to(tl.int64) * H * T * D, b.to(tl.int64) * H * T * DV
    ok = (offs_h < H)[:, None] & (rows < kend)[None, :]
    store_ok = ok[:, :, None]
    q = _held(Q, base, offs_h, rows, H, T, D, DP, DCH)
    do = _held(dO, base_v, offs_h, rows, H, T, DV, DVP, DVCH)
    stat = (b * H + offs_h)[:, None].to(tl.int64) * T + rows[None, :]
    lse = tl.load(Lse + stat, mask=ok, other=0.0)
    delta = tl.load(Delta + stat, mask=ok, other=0.0)
    square = offs_h[:, None] * HP + offs_h[None, :]
    transposed = offs_h[None, :] * HP + offs_h[:, None]
    w1 = tl.load(W1 + square)
    w1t = tl.load(W1 + transposed)
    w2 = tl.load(W2 + square)
    w2t = tl.load(W2 + transposed)
    dw1 = tl.zeros([HP, HP], dtype=tl.float32)
    dw2 = tl.zeros([HP, HP], dtype=tl.float32)
    for start in range(lo, seen, BN):
        offs_n = start + tl.arange(0, BN)
        s, mixed = _tile_scores(q, Q, K, base, w1, offs_h, rows, offs_n, H, T, D, scale, HP, BM, BN, DP, DCH, HAS_PRE,
                                QK_PRECISION, PRE_PRECISION)
        p = tl.where(_visible(offs_h, rows, offs_n, H, T), tl.exp(mixed - lse[:, :, None]), 0.0)
        dph = _rows_cols(do, dO, V, base_v, offs_h, rows, offs_n, H, T, DV, HP, BM, BN, DVP, DVCH, QK_PRECISION)
        where = _chunk_offsets(b, offs_h, rows, offs_n, H, T, row0, C)
        keep = store_ok & (offs_n < kend)[None, None, :]
        if HAS_POST:
            dp = _mix(w2t, dph, HP, BM, BN, POST_PRECISION)
            dw2 += _outer(dph, p, HP, BM, BN, POST_PRECISION)
            tl.store(P + where, _mix(w2, p, HP, BM, BN, POST_PRECISION).to(P.dtype.element_ty), mask=keep)
        else:
            dp = dph
            tl.store(P + where, p.to(P.dtype.element_ty), mask=keep)
        ds = p * (dp - delta[:, :, None])  # gradient of the mixed scores S''
        if HAS_PRE:
            dw1 += _outer(ds, s, HP, BM, BN, POST_PRECISION)
            ds = _mix(w1t, ds, HP, BM, BN, POST_PRECISION)
        tl.store(dS + where, (ds * scale).to(dS.dtype.element_ty), mask=keep)
    for start in range(lo + tl.cdiv(tl.maximum(seen - lo, 0), BN) * BN, hi, BN):
        offs_n = start + tl.arange(0, BN)
        where = _chunk_offsets(b, offs_h, rows, offs_n, H, T, row0, C)
        keep = store_ok & (offs_n < kend)[None, None, :]
        tl.store(P + where, tl.zeros([HP, BM, BN], dtype=P.dtype.element_ty), mask=keep)
        tl.store(dS + where, tl.zeros([HP, BM, BN], dtype=dS.dtype.element_ty), mask=keep)
    program = part0 + (b * tl.num_programs(0) + tl.program_id(0)) * tl.num_programs(1) + tl.program_id(1)
    partial = program.to(tl.int64) * HP * HP + square
    if HAS_PRE:
        tl.store(dW1 + partial, dw1)
    if HAS_POST:
        tl.store(dW2 + partial, dw2)


def launch_config(dtype: torch.dtype) -> dict:
    """Tiles and precisions; MTA_TRITON_FLASHMIX_BLOCKS (a JSON object, e.g. '{"BN": 16, "num_warps": 4}') overrides
    them for tuning. BM query rows × BN keys per tile (of all heads), KB key blocks per map program, CHUNK_MB the
    size of one chunk map in MiB, BWD_WARPS the backward kernels' warps, D_CHUNK the width of the q kᵀ and dO vᵀ
    product chunks (0: the program holds its rows' q and dO whole; float32 tiles of width 128 would not fit).
    Float32 inputs compute in full precision; 16-bit ones multiply q kᵀ and dO vᵀ in their dtype,
    mix the logits in 3×TF32 and the probabilities and gradients in TF32 (below their own rounding)."""
    full = dtype == torch.float32
    blocks = {"BM": 16, "BN": 16, "KB": 4, "num_warps": 16, "num_stages": 1, "CHUNK_MB": 64, "BWD_WARPS": 8,
              "D_CHUNK": 32 if full else 0,
              "QK_PRECISION": "ieee" if full else "tf32", "PRE_PRECISION": "ieee" if full else "tf32x3",
              "POST_PRECISION": "ieee" if full else "tf32"}
    if "MTA_TRITON_FLASHMIX_BLOCKS" in os.environ:
        blocks |= json.loads(os.environ["MTA_TRITON_FLASHMIX_BLOCKS"])
    return blocks


def _split(config: dict, backward: bool = False) -> tuple[dict, dict, dict, int]:
    """(row-kernel options, map-kernel options, precisions, chunk MiB) of a launch config."""
    precisions = {k: config[k] for k in ("QK_PRECISION", "PRE_PRECISION", "POST_PRECISION")}
    rows = {k: config[k] for k in ("BM", "BN", "num_warps", "num_stages")}
    if backward:
        rows["num_warps"] = config["BWD_WARPS"]
    return rows, rows | {"KB": config["KB"]}, precisions, config["CHUNK_MB"]


def chunk_rows(b: int, h: int, t: int, itemsize: int, bm: int, chunk_mb: float) -> int:
    """Query rows per chunk: as many as keep one (B, H, rows, T) map within chunk_mb MiB, a multiple of bm."""
    rows = int(chunk_mb * 2**20 // max(1, b * h * t * itemsize))
    return max(bm, min(triton.cdiv(t, bm) * bm, rows // bm * bm))


def _padded(matrix: torch.Tensor | None, hp: int, device: torch.device) -> torch.Tensor:
    out = torch.zeros(hp, hp, device=device, dtype=torch.float32)
    if matrix is not None:
        out[:matrix.shape[0], :matrix.shape[1]] = matrix.float()
    return out


def _sizes(q: torch.Tensor, v: torch.Tensor, d_chunk: int) -> dict:
    """Padded heads HP, widths DP (q, k) and DVP (v) and their product chunks DCH and DVCH (see launch_config)."""
    h, d, dv = q.shape[1], q.shape[3], v.shape[3]
    dp, dvp = max(16, triton.next_power_of_2(d)), max(16, triton.next_power_of_2(dv))
    return dict(HP=max(16, triton.next_power_of_2(h)), DP=dp, DVP=dvp, DCH=min(dp, d_chunk or dp),
                DVCH=min(dvp, d_chunk or dvp))


def _bmm(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """a b over (B, H, ...) tensors (views allowed), in float32 output when asked (16-bit operands on tensor cores)."""
    lead = a.shape[:-2]
    a3, b3 = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    if out_dtype is None or out_dtype == a.dtype:
        out = torch.bmm(a3, b3)
    elif a.is_cuda:
        out = torch.bmm(a3, b3, out_dtype=out_dtype)
    else:
        out = torch.bmm(a3.to(out_dtype), b3.to(out_dtype))
    return out.view(*lead, *out.shape[-2:])


def _delta_by_chunks(q, k, v, grad_out, w1p, w2p, lse, has, sizes, prec, map_opts, c):
    """Δ[b, h, i] = Σⱼ P ⊙ W₂ᵀ(dO vᵀ) one query chunk at a time, with `_probs` writing the chunk's P (no post-mixing)
    and cuBLAS dO vᵀ: for float32 tiles wider than 64, whose `_delta` needs more shared memory than an H200 has."""
    b, h, t, d = q.shape
    delta = torch.empty_like(lse)
    probs = torch.empty(b, h, c, t, device=q.device, dtype=q.dtype)
    w2 = w2p[:h, :h]
    for row0 in range(0, t, c):
        kend = min(t, row0 + c)
        grid = (triton.cdiv(kend - row0, map_opts["BM"]), triton.cdiv(kend, map_opts["BN"] * map_opts["KB"]), b)
        _probs[grid](q, k, w1p, w2p, lse, probs, h, t, d, row0, c, kend, 1.0 / math.sqrt(d), HP=sizes["HP"],
                     DP=sizes["DP"], DCH=sizes["DCH"], HAS_PRE=has["HAS_PRE"], HAS_POST=False, **prec, **map_opts)
        dp = _bmm(grad_out[:, :, row0:kend], v[:, :, :kend].transpose(-2, -1))  # dP̂
        if has["HAS_POST"]:
            dp = torch.einsum("oh,boij->bhij", w2, dp)
        delta[:, :, row0:kend] = (probs[:, :, :kend - row0, :kend] * dp).sum(-1)
    return delta


class FlashMixAttention(torch.autograd.Function):
    """(q, k, v, W₁ or None, W₂ or None) -> O; q, k (B, H, T, d), v (B, H, T, dv); W₁, W₂ (H, H) [out, in]."""

    @staticmethod
    def forward(ctx, q, k, v, w1, w2):
        b, h, t, d = q.shape
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        config = launch_config(q.dtype)
        sizes = _sizes(q, v, config["D_CHUNK"])
        row_opts, map_opts, prec, chunk_mb = _split(config)
        has = dict(HAS_PRE=w1 is not None, HAS_POST=w2 is not None)
        w1p, w2p = _padded(w1, sizes["HP"], q.device), _padded(w2, sizes["HP"], q.device)
        scale = 1.0 / math.sqrt(d)
        bm, bn = row_opts["BM"], row_opts["BN"]
        lse = torch.empty(b, h, t, device=q.device, dtype=torch.float32)
        _lse[(triton.cdiv(t, bm), b)](q, k, w1p, lse, h, t, d, scale, HP=sizes["HP"], DP=sizes["DP"],
                                      DCH=sizes["DCH"], HAS_PRE=has["HAS_PRE"], QK_PRECISION=prec["QK_PRECISION"],
                                      PRE_PRECISION=prec["PRE_PRECISION"], **row_opts)
        c = chunk_rows(b, h, t, v.element_size(), bm, chunk_mb)
        probs = torch.empty(b, h, c, t, device=q.device, dtype=v.dtype)
        outs = []
        for row0 in range(0, t, c):
            kend = min(t, row0 + c)
            grid = (triton.cdiv(kend - row0, bm), triton.cdiv(kend, bn * map_opts["KB"]), b)
            _probs[grid](q, k, w1p, w2p, lse, probs, h, t, d, row0, c, kend, scale, HP=sizes["HP"], DP=sizes["DP"],
                         DCH=sizes["DCH"], **has, **prec, **map_opts)
            outs.append(_bmm(probs[:, :, :kend - row0, :kend], v[:, :, :kend]))
        ctx.save_for_backward(q, k, v, lse, w1p, w2p)
        ctx.has = has
        return torch.cat(outs, dim=2)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, lse, w1p, w2p = ctx.saved_tensors
        has = ctx.has
        b, h, t, d = q.shape
        dv_dim = v.shape[3]
        config = launch_config(q.dtype)
        sizes = _sizes(q, v, config["D_CHUNK"])
        row_opts, map_opts, prec, chunk_mb = _split(config, backward=True)
        scale = 1.0 / math.sqrt(d)
        bm, bn, kb = row_opts["BM"], row_opts["BN"], map_opts["KB"]
        grad_out = grad_out.contiguous().to(v.dtype)
        c = chunk_rows(b, h, t, q.element_size(), bm, chunk_mb)
        if q.dtype == torch.float32 and max(sizes["DP"], sizes["DVP"]) > 64:
            delta = _delta_by_chunks(q, k, v, grad_out, w1p, w2p, lse, has, sizes, prec, map_opts, c)
        else:
            delta = torch.empty_like(lse)
            _delta[(triton.cdiv(t, bm), b)](q, k, v, grad_out, w1p, w2p, lse, delta, h, t, d, dv_dim, scale,
                                            **sizes, **has, **prec, **row_opts)
        d_scores = torch.empty(b, h, c, t, device=q.device, dtype=q.dtype)
        probs = torch.empty(b, h, c, t, device=q.device, dtype=v.dtype)
        chunks = [(row0, min(t, row0 + c)) for row0 in range(0, t, c)]
        grids = [(triton.cdiv(kend - row0, bm), triton.cdiv(kend, bn * kb), b) for row0, kend in chunks]
        n_parts = sum(g[0] * g[1] * g[2] for g in grids)
        partials = torch.empty(2, n_parts, sizes["HP"], sizes["HP"], device=q.device, dtype=torch.float32)
        dk = torch.zeros(b, h, t, d, device=q.device, dtype=torch.float32)
        dv = torch.zeros(b, h, t, dv_dim, device=q.device, dtype=torch.float32)
        dqs, part0 = [], 0
        for (row0, kend), grid in zip(chunks, grids, strict=True):
            _grads[grid](q, k, v, grad_out, w1p, w2p, lse, delta, d_scores, probs, partials[0], partials[1], h, t, d,
                         dv_dim, row0, c, kend, part0, scale, **sizes, **has, **prec, **map_opts)
            part0 += grid[0] * grid[1] * grid[2]
            ds, ph = d_scores[:, :, :kend - row0, :kend], probs[:, :, :kend - row0, :kend]
            dqs.append(_bmm(ds, k[:, :, :kend]))
            dk[:, :, :kend] += _bmm(ds.transpose(-2, -1), q[:, :, row0:kend], torch.float32)
            dv[:, :, :kend] += _bmm(ph.transpose(-2, -1), grad_out[:, :, row0:kend], torch.float32)
        grads = partials.sum(1)[:, :h, :h]
        return (torch.cat(dqs, dim=2), dk.to(q.dtype), dv.to(v.dtype), grads[0] if has["HAS_PRE"] else None,
                grads[1] if has["HAS_POST"] else None)


@torch.compiler.disable  # a graph break under torch.compile: the kernels launch as they are
def flash_mix_attention(q, k, v, head_pre=None, head_post=None):
    """Steps 1, 3, 4, 6, 8 of the op (no key-query convolutions, no dropout) through the kernels above."""
    w2 = full_post_matrix(head_post) if head_post is not None else None
    return FlashMixAttention.apply(q, k, v, head_pre, w2).to(q.dtype)


def triton_flashmix_op(q, k, v, *, kq_pre=None, head_pre=None, kq_post=None, head_post=None, pad_key="both",
                       dropout_p=0.0):
    """`flash_mix_attention` (a call `policy.mixing_only` admits: the registry checks)."""
    return flash_mix_attention(q, k, v, head_pre, head_post)


register(Backend(
    "triton_flashmix",
    triton_flashmix_op,
    devices=("cuda",),
    calls="calls with head mixing (head_pre and/or head_post) and no kq conv, without dropout",
    implements=mixing_only,
    description="Triton kernels that recompute score tiles of all heads from q and k (flash-style) and mix them "
                "with H×H tensor-core products; cuBLAS P̂·v and gradient products per query chunk",
))
