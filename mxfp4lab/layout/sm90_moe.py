"""The SM90 CUTLASS physical layout of a whole MoE layer (what FlashInfer's ``cutlass_fused_moe`` reads,
``use_w4_group_scaling=True``), derived from a :class:`~mxfp4lab.moe_tensors.LogicalMoE`; with its exact
inverse.

    logical (mxfp4lab.moe_tensors)                  SM90 physical (Sm90MoE)
    w13        [E, 2*I_pad, H_pad/2]   u8   ->   w13        [E, 2*I_pad, H_pad/2]            interleaved
    w13_scale  [E, 2*I_pad, H_pad/32]  u8   ->   w13_scale  [E, 2*I_pad/64, H_pad/128, 16, 16] folded
    w2         [E, H_pad, I_pad/2]     u8   ->   w2         [E, H_pad, I_pad/2]              interleaved
    w2_scale   [E, H_pad, I_pad/32]    u8   ->   w2_scale   [E, H_pad/64, I_pad/128, 16, 16]   folded
    biases, SwiGLU tensors, sizes, shard: unchanged

The weight interleave is :func:`~mxfp4lab.layout.sm90_weights.interleave_weights_sm90` (16x64 tiles,
32-bit lane words, bit permutation); the scale fold is :func:`~mxfp4lab.layout.sm90_scales.fold_scales_sm90`
(64 rows x 128 K -> 16 rows of 16 bytes; the kernel takes ``.view(torch.int32)``:
:meth:`Sm90MoE.quant_scales`).
Both need rows % 64 == 0 and K % 128 == 0, which the preparation's padding to 128 guarantees.

Only the FlashInfer backend builds an :class:`Sm90MoE`; :func:`from_sm90` exists for the tests (it proves
:func:`to_sm90` loses nothing) and is never on a backend's path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from ..moe_tensors import LogicalMoE, MoEInfo
from .sm90_scales import fold_scales_sm90, unfold_scales_sm90
from .sm90_weights import deinterleave_weights_sm90, interleave_weights_sm90

__all__ = ["Sm90MoE", "from_sm90", "to_sm90"]

@dataclass
class Sm90MoE(MoEInfo):
    """The tensors ``cutlass_fused_moe`` takes (shapes in the module docstring; biases as in the logical
    layout) plus the layer's :class:`~mxfp4lab.moe_tensors.MoEInfo` (keywords)."""

    w13: torch.Tensor  # interleaved
    w13_scale: torch.Tensor  # folded
    w13_bias: Optional[torch.Tensor]
    w2: torch.Tensor  # interleaved
    w2_scale: torch.Tensor  # folded
    w2_bias: Optional[torch.Tensor]

    @property
    def padded_hidden(self) -> int:
        return self.w13.shape[2] * 2

    def quant_scales(self) -> list:
        """``[w13_scale, w2_scale]`` as the int32 views the kernel's ``quant_scales`` expects
        (``[E, rows/64, K/128, 16, 4]`` int32: 16 scale bytes = 4 words per folded row)."""
        return [self.w13_scale.view(torch.int32), self.w2_scale.view(torch.int32)]

    def to(self, device) -> "Sm90MoE":
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v.to(device) for k, v in moved.items() if isinstance(v, torch.Tensor)})


def to_sm90(logical: LogicalMoE) -> Sm90MoE:
    """:class:`LogicalMoE` -> :class:`Sm90MoE`: interleave ``w13``/``w2``, fold their scales (same device)."""
    return Sm90MoE(
        interleave_weights_sm90(logical.w13), fold_scales_sm90(logical.w13_scale), logical.w13_bias,
        interleave_weights_sm90(logical.w2), fold_scales_sm90(logical.w2_scale), logical.w2_bias, **logical.info(),
    )


def from_sm90(sm90: Sm90MoE) -> LogicalMoE:
    """Exact inverse of :func:`to_sm90` (byte for byte; for tests)."""
    return LogicalMoE(
        deinterleave_weights_sm90(sm90.w13), unfold_scales_sm90(sm90.w13_scale), sm90.w13_bias,
        deinterleave_weights_sm90(sm90.w2), unfold_scales_sm90(sm90.w2_scale), sm90.w2_bias, **sm90.info(),
    )
