"""CPU emulation of the SM90 path: take the PREPARED (interleaved, folded, padded) tensors, undo the
layout with the exact inverses, dequantize, run the reference, trim. Equal to the reference on the
original checkpoint tensors bit-for-bit; that equality is how a CPU machine proves the preparation."""

from __future__ import annotations

import torch

from ..reference import expert_weights_from_prepared, moe_reference
from .base import MoEBackend, register


@register
class EmulatedSM90(MoEBackend):
    """``mode="kernel"`` (default) rounds like FlashInfer's kernel; ``mode="fp32"`` is the semantic truth."""

    name = "emulated_sm90"

    def __init__(self, prepared, config=None, *, mode: str = "kernel", dtype=torch.float32):
        super().__init__(prepared, config)
        self.mode, self.dtype = mode, dtype
        self.weights = expert_weights_from_prepared(prepared, dtype)

    def forward(self, x, topk_ids, topk_weights):
        y = moe_reference(x, topk_ids, topk_weights, self.weights, mode=self.mode, dtype=self.dtype, **self.swiglu)
        return y.to(torch.bfloat16)
