"""CPU emulation of FlashInfer's SM90 W4A16 path: the kernel-faithful reference
(:func:`mxfp4lab.reference.moe_reference`, ``mode="kernel"``: bf16 stores where the kernel rounds) on the
dequantized logical tensors. That the SM90 physical layout loses nothing is proven separately, byte for
byte (:func:`mxfp4lab.layout.sm90_moe.from_sm90` o :func:`~mxfp4lab.layout.sm90_moe.to_sm90` = identity,
and the interleave against golden bytes FlashInfer wrote on an H100)."""

from __future__ import annotations

import torch

from ..reference import expert_weights_from_logical, moe_reference
from .base import MoEBackend

#: ``mode`` option: "kernel" rounds like FlashInfer's kernel; "fp32" is the semantic truth.
MODES = ("kernel", "fp32")


class EmulatedSM90(MoEBackend):
    """Options: ``mode`` (:data:`MODES`, default ``"kernel"``), ``dtype`` (compute dtype, fp32)."""

    name = "emulated_sm90"

    def __init__(self, moe, config=None, *, mode: str = "kernel", dtype=torch.float32):
        if mode not in MODES:
            raise ValueError(f"emulated_sm90: mode must be one of {MODES}, got {mode!r}")
        super().__init__(moe, config)
        self.mode, self.dtype = mode, dtype
        self.weights = expert_weights_from_logical(moe, dtype)

    def forward(self, x, topk_ids, topk_weights):
        y = moe_reference(x, topk_ids, topk_weights, self.weights, mode=self.mode, dtype=self.dtype, check=False,
                          **self.swiglu)  # __call__ checked the inputs, __init__ the SwiGLU tensors
        return y.to(torch.bfloat16)
