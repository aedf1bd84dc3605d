"""Every Triton kernel of the project compiles for a Hopper GPU (sm_90), on a machine without one.

Triton's interpreter (the CPU correctness tests) runs kernels as Python and accepts code the compiler rejects (a
global that is not a constexpr, a branch on a tensor, unsupported dot shapes): this compiles each kernel ahead of
time, through PTX, for the launch variants the backends use. Without Triton this skips.
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")

MIX_ARGS = dict(H="i32", T="i32", scale="fp32", stride_sb="i32", stride_sh="i32", stride_pb="i32", stride_ph="i32")


def compile_for_hopper(fn, signature: dict, constexprs: dict, **options):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {**signature, **dict.fromkeys(constexprs, "constexpr")}
    return triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                          target=GPUTarget("cuda", 90, 32), options=options or None)


@pytest.mark.parametrize("has_pre", [True, False])
@pytest.mark.parametrize("has_post", [True, False])
@pytest.mark.parametrize(("io", "precision"), [("bf16", "tf32x3"), ("fp32", "ieee")])
def test_head_mixing_kernels_compile(has_pre, has_post, io, precision):
    import torch

    from mta_lab.attention.backends.triton_mix import _mix_bwd, _mix_fwd, launch_config

    consts = dict(HP=16, BLOCK_N=launch_config(torch.bfloat16)["BLOCK_N"], HAS_PRE=has_pre, HAS_POST=has_post,
                  PRECISION=precision)
    compile_for_hopper(_mix_fwd, dict(S="*fp32", W1="*fp32", W2="*fp32", P=f"*{io}", Lse="*fp32", **MIX_ARGS),
                       consts)
    compile_for_hopper(_mix_bwd, dict(S="*fp32", dPh="*fp32", Lse="*fp32", W1="*fp32", W2="*fp32", dS=f"*{io}",
                                      P=f"*{io}", dW1="*fp32", dW2="*fp32", **MIX_ARGS), consts)


def test_conv_kernel_gradient_compiles():
    from mta_lab.attention.backends.triton_conv import _kernel_grad

    compile_for_hopper(_kernel_grad, dict(G="*fp32", X="*fp32", P="*fp32", T="i32", row_off="i32", col_off="i32",
                                          n_tiles_j="i32"),
                       dict(C_Q=6, C_K=11, BLOCK_I=64, BLOCK_J=32, WIDTH=64, TAPS=128, PRECISION="tf32x3"))


@pytest.mark.parametrize(("io", "precision"), [("fp32", "tf32x3"), ("bf16", "ieee")])
def test_conv_correlation_compiles(io, precision):
    from mta_lab.attention.backends.triton_conv import _correlate

    compile_for_hopper(_correlate, dict(X=f"*{io}", W="*fp32", Y=f"*{io}", T="i32", row_off="i32", col_off="i32"),
                       dict(C_Q=6, C_K=11, N_HEADS=16, BLOCK_I=64, BLOCK_J=32, WIDTH=64, PRECISION=precision))


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize(("io", "dtype_name"), [("bf16", "bfloat16"), ("fp32", "float32")])
def test_band_attention_kernels_compile(backward, io, dtype_name):
    import torch

    from mta_lab.attention.backends.triton import _band_bwd, _band_fwd, tile_config

    consts = {k: v for k, v in tile_config(96, getattr(torch, dtype_name), backward=backward).items()
              if k not in ("num_warps", "num_stages")}
    sizes = dict(T="i32", DK="i32", DV="i32", W="i32", scale="fp32", stride_qb="i32", stride_qt="i32",
                 stride_vb="i32", stride_vt="i32", stride_cb="i32", stride_ct="i32")
    if backward:
        compile_for_hopper(_band_bwd, dict(Q=f"*{io}", K=f"*{io}", V=f"*{io}", C="*fp32", dO=f"*{io}", Lse="*fp32",
                                           Delta="*fp32", dQ="*fp32", dK="*fp32", dV="*fp32", dC="*fp32", **sizes),
                           consts)
    else:
        compile_for_hopper(_band_fwd, dict(Q=f"*{io}", K=f"*{io}", V=f"*{io}", C="*fp32", Out=f"*{io}",
                                           Lse="*fp32", **sizes, stride_ob="i32", stride_ot="i32"), consts)


FLASHMIX_SIZES = dict(H="i32", T="i32", D="i32")


@pytest.mark.parametrize(("has_pre", "has_post", "io"), [(True, True, "bf16"), (False, True, "bf16"),
                                                         (True, False, "fp32")])
def test_flash_mixing_kernels_compile(has_pre, has_post, io):
    import torch

    from mta_lab.attention.backends.triton_flashmix import _delta, _grads, _lse, _probs, _sizes, launch_config

    dtype = torch.bfloat16 if io == "bf16" else torch.float32
    config = launch_config(dtype)
    q = torch.empty(1, 16, 1, 96, dtype=dtype)  # the 880M model's heads: width 96, padded to 128
    sizes = _sizes(q, q, config["D_CHUNK"])
    prec = {k: config[k] for k in ("QK_PRECISION", "PRE_PRECISION", "POST_PRECISION")}
    tiles = dict(HP=16, BM=config["BM"], BN=config["BN"], DP=sizes["DP"], DCH=sizes["DCH"])
    both = dict(DVP=sizes["DVP"], DVCH=sizes["DVCH"])
    has = dict(HAS_PRE=has_pre, HAS_POST=has_post)
    fwd = dict(num_warps=config["num_warps"], num_stages=config["num_stages"])
    bwd = dict(fwd, num_warps=config["BWD_WARPS"])
    qk = dict(Q=f"*{io}", K=f"*{io}", W1="*fp32")
    grad_in = dict(V=f"*{io}", dO=f"*{io}", W1="*fp32", W2="*fp32", Lse="*fp32", Delta="*fp32")
    chunk = dict(row0="i32", C="i32", kend="i32")
    kernels = [
        compile_for_hopper(_lse, dict(**qk, Lse="*fp32", **FLASHMIX_SIZES, scale="fp32"),
                           dict(tiles, HAS_PRE=has_pre, QK_PRECISION=prec["QK_PRECISION"],
                                PRE_PRECISION=prec["PRE_PRECISION"]), **fwd),
        # float32 wider than 64 computes Δ by chunks instead (`_delta_by_chunks`): _delta runs at width 64 there.
        compile_for_hopper(_delta, dict(Q=f"*{io}", K=f"*{io}", **grad_in, **FLASHMIX_SIZES, DV="i32", scale="fp32"),
                           dict(tiles, **both, **has, **prec) | (dict(DP=64, DVP=64, DCH=64, DVCH=64) if io == "fp32"
                                                                  else {}), **bwd),
        compile_for_hopper(_probs, dict(**qk, W2="*fp32", Lse="*fp32", P=f"*{io}", **FLASHMIX_SIZES, **chunk,
                                        scale="fp32"), dict(tiles, KB=config["KB"], **has, **prec), **fwd),
        compile_for_hopper(_grads, dict(Q=f"*{io}", K=f"*{io}", **grad_in, dS=f"*{io}", P=f"*{io}", dW1="*fp32",
                                        dW2="*fp32", **FLASHMIX_SIZES, DV="i32", **chunk, part0="i32", scale="fp32"),
                           dict(tiles, **both, KB=config["KB"], **has, **prec), **bwd),
    ]
    for kernel in kernels:  # an H200's shared memory per block: a launch that needs more fails (OutOfResources)
        assert kernel.metadata.shared <= 232448, (kernel.name, kernel.metadata.shared)
