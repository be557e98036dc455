"""The data model at the bottom: one MoE layer's weights in LOGICAL form, and how a rank's slice is named.

Everything above this module (preparation, layouts, backends, studies) speaks these types; this module
imports only :mod:`mxfp4lab.formats` and :mod:`mxfp4lab.models`.

:class:`LogicalMoE` -- checkpoint semantics in kernel order, padded, no physical layout (E = local experts,
H_pad / I_pad = hidden / intermediate padded by the preparation)::

    w13        uint8 [E, 2*I_pad, H_pad/2]   packed E2M1, halves [up ; gate]: rows [0, I_pad) = up = w3,
                                             rows [I_pad, 2*I_pad) = gate = w1; byte [e, n, kp] holds K
                                             elements 2*kp (low nibble) and 2*kp+1 (high nibble)
    w13_scale  uint8 [E, 2*I_pad, H_pad/32]  E8M0, one per 32 K elements (value 2**(byte-127))
    w13_bias   bf16  [E, 2*I_pad]  or None   halves like the rows
    w2         uint8 [E, H_pad, I_pad/2]
    w2_scale   uint8 [E, H_pad, I_pad/32]
    w2_bias    bf16  [E, H_pad]    or None   (zero on TP ranks > 0: the bias is added once)
    swiglu_alpha / swiglu_beta / swiglu_limit   fp32 [E] or None (None: 1, 0, no clamp)

Padding is zero bytes in weights, scales and biases. Why ``[up ; gate]``: FlashInfer's gated activation
(``doActivationKernel`` in ``fused_moe/cutlass_backend/cutlass_fused_moe_kernels.cuh``) reads the linear
(up) value at column ``c`` and the gate at ``c + inter_size``; every other backend derives its own order
from this one (e.g. Marlin swaps the halves).

A backend's physical layout (SM90 CUTLASS interleave + scale fold, the Triton transpose, Marlin tiles) is
derived from a :class:`LogicalMoE` inside that backend's layout module, with its exact inverse for tests;
nobody undoes a physical layout to get back here.

The gate/up helpers are written once, here: :func:`split_gate_up_rows` / :func:`merge_gate_up_rows`
(GPT-OSS checkpoints interleave gate and up rows) and :func:`stack_up_gate` / :func:`unstack_up_gate`
(the logical ``[up ; gate]`` halves). :func:`check_tensor` is the public tensor check: a wrong name,
shape or dtype raises :class:`~mxfp4lab.formats.MXFormatError` naming the tensor and the rule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from .formats import MX_BLOCK_SIZE, MXFormatError, check_dtype, check_multiple

__all__ = [
    "LogicalMoE",
    "MoEInfo",
    "ShardSpec",
    "check_tensor",
    "merge_gate_up_rows",
    "packed_rows",
    "split_gate_up_rows",
    "stack_up_gate",
    "unstack_up_gate",
]

#: The LogicalMoE fields that are tensors, in declaration order.
TENSOR_FIELDS = ("w13", "w13_scale", "w13_bias", "w2", "w2_scale", "w2_bias",
                 "swiglu_alpha", "swiglu_beta", "swiglu_limit")


# --------------------------------------------------------------------------------------------
# The public tensor check
# --------------------------------------------------------------------------------------------
def check_tensor(t: Optional[torch.Tensor], name: str, shape: tuple, dtype: torch.dtype) -> None:
    """``t`` must be a ``dtype`` tensor of exactly ``shape``; otherwise :class:`MXFormatError` naming
    ``name``, the rule and what was found (``None`` counts as missing)."""
    if t is None:
        raise MXFormatError(f"{name} is required (expected {dtype} {tuple(shape)})")
    check_dtype(t, dtype, name)
    if tuple(t.shape) != tuple(shape):
        raise MXFormatError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")


# --------------------------------------------------------------------------------------------
# Gate / up rows
# --------------------------------------------------------------------------------------------
def split_gate_up_rows(t: torch.Tensor, name: str = "gate_up") -> tuple[torch.Tensor, torch.Tensor]:
    """GPT-OSS interleaved gate/up rows ``[E, 2I, ...]`` (row 2j = gate_j, 2j+1 = up_j) -> (gate, up)
    ``[E, I, ...]`` (strided views)."""
    if t.dim() < 2 or t.shape[1] % 2:
        raise MXFormatError(f"{name} dim 1 = {t.shape[1] if t.dim() > 1 else None} must be even "
                            "(gate/up rows interleaved)")
    return t[:, 0::2], t[:, 1::2]


def merge_gate_up_rows(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_gate_up_rows`: (gate, up) ``[E, I, ...]`` -> ``[E, 2I, ...]`` interleaved.

    ``stack`` on a new axis 2 gives ``[E, I, 2 (gate, up), ...]``; flattening axes 1-2 puts gate_j at
    row 2j and up_j at row 2j+1."""
    return torch.stack((gate, up), dim=2).flatten(1, 2)


def stack_up_gate(up: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """(up, gate) ``[E, I, ...]`` -> ``[E, 2I, ...]`` with halves ``[up ; gate]`` (the logical fc1 order)."""
    if up.shape != gate.shape:
        raise MXFormatError(f"up {tuple(up.shape)} and gate {tuple(gate.shape)} must have the same shape")
    return torch.cat((up, gate), dim=1)


def unstack_up_gate(w13: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`stack_up_gate`: ``[E, 2I, ...]`` halves ``[up ; gate]`` -> (up, gate) (views)."""
    i = w13.shape[1] // 2
    return w13[:, :i], w13[:, i:]


def packed_rows(blocks: torch.Tensor) -> torch.Tensor:
    """GPT-OSS ``*_blocks [E, rows, K/32, 16]`` -> packed rows ``[E, rows, K/2]`` (a view: 16 bytes = 32
    codes = one scale block, concatenated along K); a 3-D tensor passes unchanged."""
    return blocks.flatten(2) if blocks.dim() == 4 else blocks


# --------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardSpec:
    """Which slice of the layer a rank holds (frozen: validated once, when made).

    Tensor parallel: rank ``r`` of ``tp_size`` holds intermediate columns ``[r*I/tp, (r+1)*I/tp)`` of up,
    gate and fc2's K. Expert parallel: rank ``r`` of ``ep_size`` holds experts ``[r*E/ep, (r+1)*E/ep)``.
    """

    tp_size: int = 1
    tp_rank: int = 0
    ep_size: int = 1
    ep_rank: int = 0

    def __post_init__(self):
        for n, size, rank in (("tp", self.tp_size, self.tp_rank), ("ep", self.ep_size, self.ep_rank)):
            if not isinstance(size, int) or not isinstance(rank, int):
                raise TypeError(f"{n}_size and {n}_rank must be ints (got {size!r}, {rank!r})")
            if size < 1 or not 0 <= rank < size:
                raise ValueError(f"{n}_rank = {rank} must be in [0, {n}_size = {size})")


@dataclass(kw_only=True)
class MoEInfo:
    """What a layer's tensors are, whatever their layout (keyword-only fields, shared by :class:`LogicalMoE`
    and the physical layouts derived from it).

    ``hidden_size`` / ``intermediate_size``: the unpadded H and the per-TP-rank unpadded I.
    ``num_experts_total``: experts of the whole layer; this rank holds
    ``[expert_offset, expert_offset + num_local_experts)``. ``swiglu_*``: fp32 ``[E_local]`` or None.
    """

    hidden_size: int
    intermediate_size: int
    num_experts_total: int
    expert_offset: int = 0
    shard: ShardSpec = dataclasses.field(default_factory=ShardSpec)
    swiglu_alpha: Optional[torch.Tensor] = None
    swiglu_beta: Optional[torch.Tensor] = None
    swiglu_limit: Optional[torch.Tensor] = None

    def swiglu_kwargs(self) -> dict:
        """``swiglu_alpha / swiglu_beta / swiglu_limit`` for the references and kernels: the per-expert
        tensors, or the neutral values (alpha 1, beta 0, no clamp) where a field is None."""
        return dict(swiglu_alpha=1.0 if self.swiglu_alpha is None else self.swiglu_alpha,
                    swiglu_beta=0.0 if self.swiglu_beta is None else self.swiglu_beta,
                    swiglu_limit=self.swiglu_limit)

    def info(self) -> dict:
        """The :class:`MoEInfo` fields as keyword arguments (to make another layout of the same layer)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(MoEInfo)}


@dataclass
class LogicalMoE(MoEInfo):
    """One rank's MoE layer in logical form (shapes and rules in the module docstring): the six weight tensors
    (positional) and the :class:`MoEInfo` fields (keywords). Checked when made (:meth:`check`)."""

    w13: torch.Tensor
    w13_scale: torch.Tensor
    w13_bias: Optional[torch.Tensor]
    w2: torch.Tensor
    w2_scale: torch.Tensor
    w2_bias: Optional[torch.Tensor]

    def __post_init__(self):
        self.check()

    # ---------------------------------------------------------------- shape
    @property
    def num_local_experts(self) -> int:
        return self.w13.shape[0]

    @property
    def padded_hidden(self) -> int:
        return self.w13.shape[2] * 2

    @property
    def padded_intermediate(self) -> int:
        return self.w2.shape[2] * 2

    def check(self) -> None:
        """Every tensor against the shapes of the module docstring (:class:`MXFormatError` naming it)."""
        for n in ("w13", "w2"):
            w = getattr(self, n)
            check_dtype(w, torch.uint8, n)
            if w.dim() != 3:
                raise MXFormatError(f"{n} must be 3-D [E, rows, K/2] packed E2M1, got {tuple(w.shape)}")
        e, rows13, hb = self.w13.shape
        h_pad, i_pad = hb * 2, self.w2.shape[2] * 2
        check_multiple(h_pad, MX_BLOCK_SIZE, "w13: H_pad (2 x packed bytes)", "one E8M0 scale per 32")
        check_multiple(i_pad, MX_BLOCK_SIZE, "w2: I_pad (2 x packed bytes)", "one E8M0 scale per 32")
        if rows13 != 2 * i_pad:
            raise MXFormatError(f"w13 has {rows13} rows, expected 2 * I_pad = {2 * i_pad} "
                                f"(halves [up ; gate], I_pad from w2 {tuple(self.w2.shape)})")
        check_tensor(self.w13_scale, "w13_scale", (e, 2 * i_pad, h_pad // MX_BLOCK_SIZE), torch.uint8)
        check_tensor(self.w2, "w2", (e, h_pad, i_pad // 2), torch.uint8)
        check_tensor(self.w2_scale, "w2_scale", (e, h_pad, i_pad // MX_BLOCK_SIZE), torch.uint8)
        if self.w13_bias is not None:
            check_tensor(self.w13_bias, "w13_bias", (e, 2 * i_pad), torch.bfloat16)
        if self.w2_bias is not None:
            check_tensor(self.w2_bias, "w2_bias", (e, h_pad), torch.bfloat16)
        for n in ("swiglu_alpha", "swiglu_beta", "swiglu_limit"):
            if getattr(self, n) is not None:
                check_tensor(getattr(self, n), n, (e,), torch.float32)
        if not 0 < self.hidden_size <= h_pad or not 0 < self.intermediate_size <= i_pad:
            raise MXFormatError(f"hidden_size = {self.hidden_size} / intermediate_size = "
                                f"{self.intermediate_size} must be in (0, H_pad = {h_pad}] / (0, I_pad = {i_pad}]")
        if not 0 <= self.expert_offset <= self.num_experts_total - e:
            raise MXFormatError(f"experts [{self.expert_offset}, {self.expert_offset + e}) are not inside "
                                f"the layer's {self.num_experts_total} experts")
        if not isinstance(self.shard, ShardSpec):
            raise TypeError(f"shard must be a ShardSpec, got {type(self.shard).__name__}")

    # ---------------------------------------------------------------- convenience
    def to(self, device) -> "LogicalMoE":
        """A copy with every tensor on ``device`` (no copy of tensors already there)."""
        return dataclasses.replace(self, **{n: getattr(self, n).to(device) for n in TENSOR_FIELDS
                                            if getattr(self, n) is not None})

    def nbytes(self) -> int:
        """Bytes of all tensors (weights, scales, biases, SwiGLU parameters)."""
        ts = (getattr(self, n) for n in TENSOR_FIELDS)
        return sum(t.numel() * t.element_size() for t in ts if t is not None)
