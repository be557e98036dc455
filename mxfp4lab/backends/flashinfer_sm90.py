"""FlashInfer's SM90 mixed-input (W4A16 MXFP4) fused MoE: ``flashinfer.fused_moe.cutlass_fused_moe``
with ``use_w4_group_scaling=True`` (FlashInfer >= 0.6.11, PR #3084), on H100/H200.

Layout: the logical tensors go to the GPU and through :func:`mxfp4lab.layout.sm90_moe.to_sm90` (weight
interleave, scale fold) once, in ``__init__``. The input is zero-padded from H to H_pad (the weights' K)
and the ``[M, H_pad]`` output is trimmed back to H. SwiGLU alpha/beta/limit go in as fp32 ``[E_local]``
tensors; TP/EP ranks as given by the logical tensors' shard. Before the first call, :func:`mxfp4lab.flashinfer_build.install` makes FlashInfer load the
W4A16-only module (minutes to build once, then cached) instead of the hour-long stock ``fused_moe_90``.

Tactics: FlashInfer's autotuner times every compiled tactic for all of its token buckets on the first call
of a layer shape (~25 s). With ``tactic_cache`` (default) those picks are persisted beside the built library
(:mod:`mxfp4lab.flashinfer_build.tactics`, keyed by GPU, build, layer shape and bucket) and every call passes
its bucket's pair as ``profile_ids``: a new process runs the tuned kernels without tuning again.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..layout.sm90_moe import to_sm90
from .base import MoEBackend


def sm90_available() -> Tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "needs a CUDA GPU with compute capability 9.0 (H100/H200); none is visible"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) != (9, 0):
        return False, f"needs compute capability 9.0 (SM90: H100/H200), this GPU is {major}.{minor}"
    try:
        from ..flashinfer_build.install import flashinfer_core

        flashinfer_core().cutlass_fused_moe  # noqa: B018 - the import is the check
    except Exception as exc:  # noqa: BLE001
        return False, f"flashinfer-python with cutlass_fused_moe is not importable ({exc})"
    return True, ""


def autotuner_choices() -> list:
    """What FlashInfer's autotuner has picked in this process: one ``{"key", "choice"}`` per entry of
    ``flashinfer.autotuner.AutoTuner.get().profiling_cache`` (FlashInfer 0.7.2), both as strings (the
    key holds the op, the runner and the token-count bucket; the choice holds the runner id and the
    tactic, an index into the module's GEMM1 + GEMM2 profile lists, i.e. the patched heuristic's
    candidate order). Empty when FlashInfer is not loaded or the cache has another shape."""
    import sys

    mod = sys.modules.get("flashinfer.autotuner")
    try:
        cache = mod.AutoTuner.get().profiling_cache if mod is not None else {}
        return [{"key": str(k), "choice": str(v)[:300]} for k, v in cache.items()]
    except Exception:  # noqa: BLE001 - best effort: a record, not a result
        return []


class FlashInferSM90(MoEBackend):
    """Options: ``use_fused_finalize`` (FlashInfer's own default when None), ``install_build`` (hook the
    W4A16-only build first), ``tune_max_num_tokens``, ``auto_tune`` (tune each token bucket on first use),
    ``tactic_cache`` (persist the tuned tactics per GPU / build / shape / bucket and reuse them; needs
    ``install_build`` and ``auto_tune``)."""

    name = "flashinfer_sm90"
    gpu_only = True

    def __init__(self, moe, config=None, *, use_fused_finalize: Optional[bool] = None,
                 install_build: bool = True, tune_max_num_tokens: int = 8192, auto_tune: bool = True,
                 tactic_cache: bool = True):
        super().__init__(moe, config)
        spec = None
        if install_build:
            from .. import flashinfer_build as fb

            configs = fb.parse_configs(os.environ.get("MXFP4LAB_BUILD_CONFIGS", fb.DEFAULT_CONFIGS))
            spec = fb.install(configs=configs)
        from ..flashinfer_build.install import flashinfer_core

        self._fn = flashinfer_core().cutlass_fused_moe
        self.p = to_sm90(moe.to("cuda"))
        self.quant_scales = self.p.quant_scales()
        self.kw = {}
        if use_fused_finalize is not None:
            self.kw["use_fused_finalize"] = use_fused_finalize
        self.tune_max_num_tokens = tune_max_num_tokens
        # The untuned default tactic (the candidate list's front) measured 10x slower than the best:
        # tune once per token-count bucket on first use, outside CUDA graph capture.
        self.auto_tune = auto_tune
        self._tuned_buckets: set = set()
        self._tuning = False
        self.tactics = None  # PersistedTactics, when tactic_cache applies
        if tactic_cache and auto_tune and spec is not None:
            from ._sm90_tactics import PersistedTactics

            fused_finalize = self.kw.get("use_fused_finalize", True)  # FlashInfer's default
            self.tactics = PersistedTactics(spec, self.p, tune_max_num_tokens, fused_finalize)

    @classmethod
    def available(cls):
        return sm90_available()

    def tune(self, x, topk_ids, topk_weights):
        """FlashInfer's autotuner profiles every compiled tactic for this token-count bucket (the
        default tactic, the candidate list's front, can be 10x slower than the best). With the tactic
        cache: only when the cache has no table for this GPU, build and layer shape (then it is saved)."""
        if self.tactics is not None:
            self.tactics.ensure(self, x, topk_ids, topk_weights)
            return
        self._autotune_call(x, topk_ids, topk_weights)
        self._tuned_buckets.add(self._bucket(x.shape[0]))

    def _autotune_call(self, x, topk_ids, topk_weights) -> None:
        """One call under FlashInfer's ``autotune(True)``: it profiles every tactic for all its buckets of
        this layer shape (the call itself runs with ``profile_ids=None``)."""
        from flashinfer.autotuner import autotune

        self._tuning = True
        try:
            with autotune(True):
                self(x, topk_ids, topk_weights)
            torch.cuda.synchronize()
        finally:
            self._tuning = False

    def _bucket(self, m: int) -> int:
        return min(1 << max(0, (m - 1).bit_length()), self.tune_max_num_tokens)

    def describe(self, m: int) -> dict:
        if self.tactics is None:
            return {}
        return {"tactics": self.tactics.describe(m)}

    def forward(self, x, topk_ids, topk_weights):
        profile_ids = None
        if self.tactics is not None and not self._tuning:
            profile_ids = self.tactics.profile_ids(self, x, topk_ids, topk_weights)
        elif (self.auto_tune and not self._tuning and self._bucket(x.shape[0]) not in self._tuned_buckets
                and not torch.cuda.is_current_stream_capturing()):
            self.tune(x, topk_ids, topk_weights)
        p = self.p
        h, h_pad = p.hidden_size, p.padded_hidden
        xin = x if h == h_pad else F.pad(x, (0, h_pad - h))
        out = self._fn(
            input=xin.contiguous(),
            token_selected_experts=topk_ids.to(torch.int32).contiguous(),
            token_final_scales=topk_weights.to(torch.float32).contiguous(),
            fc1_expert_weights=p.w13,
            fc2_expert_weights=p.w2,
            output_dtype=torch.bfloat16,
            quant_scales=self.quant_scales,
            fc1_expert_biases=p.w13_bias,
            fc2_expert_biases=p.w2_bias,
            swiglu_alpha=p.swiglu_alpha,
            swiglu_beta=p.swiglu_beta,
            swiglu_limit=p.swiglu_limit,
            tp_size=p.shard.tp_size,
            tp_rank=p.shard.tp_rank,
            ep_size=p.shard.ep_size,
            ep_rank=p.shard.ep_rank,
            use_w4_group_scaling=True,
            tune_max_num_tokens=self.tune_max_num_tokens,
            profile_ids=profile_ids,
            **self.kw,
        )
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out[:, :h]
