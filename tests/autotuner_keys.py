"""FlashInfer's autotuner keys for the W4A16 MoE runner, as ``cutlass_fused_moe`` makes them (FlashInfer
0.7.2, fused_moe/core.py MoERunner): the tuning config and the cache-key extras. Used by the tactic
tests."""

from __future__ import annotations

import torch
from flashinfer import autotuner
from flashinfer.fused_moe.utils import get_hybrid_num_tokens_buckets, make_hybrid_bucket_mapper


def moe_tuning_config(max_tokens: int = 8192):
    """MoERunner.tuning_config after ``refine_tuning_config(max_tokens)``: one dynamic dim, input 0 dim 0."""
    return autotuner.TuningConfig(
        dynamic_tensor_specs=(
            autotuner.DynamicTensorSpec(
                (0,), (0,), get_hybrid_num_tokens_buckets(max_tokens), make_hybrid_bucket_mapper(max_tokens)
            ),
        )
    )


def moe_extras(top_k: int, tp_size: int = 1, ep_size: int = 1, fused_finalize: bool = True) -> tuple:
    """MoERunner.get_cache_key_extras for bf16 x uint8 (MXFP4) -> bf16 with W4 group scaling, SwiGLU."""
    return (
        torch.bfloat16,
        torch.uint8,
        torch.bfloat16,
        top_k,
        tp_size,
        ep_size,
        1,
        False,
        False,
        True,
        False,
        False,
        False,
        True,
        3,
        False,
        fused_finalize,
    )
