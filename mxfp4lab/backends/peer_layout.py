"""The peers' layouts (triton_kernels, Humming), before their libraries take over: one transform from the
logical MoE, parametrised by what differs, with its exact inverse.

Both libraries read, per GEMM, packed FP4 weights ``[E, N, K/2]`` (byte ``[e, n, j]`` = elements 2j (low
nibble) and 2j+1 of row n), E8M0 scales ``[E, N, G]`` (``G >= K/32``; zero bytes past K/32) and an optional
bias ``[E, N]`` (:class:`GemmWeights`). What differs:

* the order of fc1's 2I rows -- triton_kernels interleaves them (``gate_0, up_0, gate_1, ...``: its fused
  SwiGLU splits the accumulator's columns in pairs), Humming's data flow uses halves ``[gate ; up]``;
* the scale groups -- triton_kernels pads them to a multiple of 4 on SM90;
* the bias dtype -- fp32 for triton_kernels (added to its fp32 accumulator), bf16 for Humming.

Common to both (vLLM's padding rule for these backends, ``mxfp4_round_up_hidden_size_and_intermediate_size``
in ``vllm/model_executor/layers/fused_moe/oracle/mxfp4.py``): the hidden size stays unpadded, the
intermediate size is rounded up to a multiple of 64. The logical layer's zero padding to 128 is trimmed to
that (and restored by the inverse).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..models import round_up
from ..moe_tensors import LogicalMoE, unstack_up_gate
from ..prepare import round_up as round_up_128

#: vLLM pads the intermediate size of the TRITON and HUMMING backends to this (the hidden size not at all)
INTERMEDIATE_MULTIPLE = 64


@dataclass
class GemmWeights:
    """One GEMM's weights: ``weight`` uint8 ``[E, N, K/2]``, ``scale`` uint8 ``[E, N, G]``, ``bias`` ``[E, N]``."""

    weight: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None


@dataclass
class PeerLayout:
    """``fc1``: N = 2I rows (order: the library's), K = H; ``fc2``: N = H, K = I. H unpadded, I a multiple of 64."""

    fc1: GemmWeights
    fc2: GemmWeights
    hidden_size: int
    intermediate_size: int
    num_experts_total: int
    expert_offset: int

    @property
    def num_local_experts(self) -> int:
        return self.fc1.weight.shape[0]


RowOrder = tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], Callable[[torch.Tensor], tuple]]


def interleave_rows(up: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """(up, gate) ``[E, I, ...]`` -> ``[E, 2I, ...]``, row ``2j`` = gate_j, ``2j+1`` = up_j (stack axis 2 =
    {gate, up}, flattened into the row axis)."""
    return torch.stack((gate, up), dim=2).flatten(1, 2)


def deinterleave_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`interleave_rows`: -> (up, gate)."""
    return t[:, 1::2], t[:, 0::2]


#: fc1 row orders: (make from (up, gate), split back into (up, gate))
INTERLEAVED: RowOrder = (interleave_rows, deinterleave_rows)
GATE_UP_HALVES: RowOrder = (lambda up, gate: torch.cat((gate, up), dim=1),
                            lambda t: (t[:, t.shape[1] // 2:], t[:, : t.shape[1] // 2]))


def peer_layout_from_logical(logical: LogicalMoE, rows: RowOrder, *, scale_group_multiple: int = 1,
                             bias_dtype: torch.dtype | None = None) -> PeerLayout:
    """Logical (fc1 halves ``[up ; gate]``, H and I zero-padded to 128) -> :class:`PeerLayout` (module
    docstring): trim the padding, order fc1's rows with ``rows[0]``, zero-pad the scale groups to
    ``scale_group_multiple``, cast the biases to ``bias_dtype`` (None: keep). Exact inverse:
    :func:`logical_from_peer_layout`."""
    h = logical.hidden_size
    if h % 32:
        raise ValueError(f"hidden_size = {h} must be a multiple of 32 (one E8M0 scale per 32 elements of K)")
    i = round_up(logical.intermediate_size, INTERMEDIATE_MULTIPLE)
    if i > logical.padded_intermediate:
        raise ValueError(f"intermediate {logical.intermediate_size} -> {i} exceeds the padded {logical.padded_intermediate}")
    make = rows[0]

    def fc1(t, cols=None):  # [E, 2*I_pad, (c)] [up ; gate] -> [E, 2i, cols] in the library's order
        up, gate = unstack_up_gate(t)
        if cols is None:
            return make(up[:, :i], gate[:, :i]).contiguous()
        return make(up[:, :i, :cols], gate[:, :i, :cols]).contiguous()

    def groups(s):
        g = round_up(s.shape[-1], scale_group_multiple)
        return torch.nn.functional.pad(s, (0, g - s.shape[-1])).contiguous()

    def bias(b):
        return None if b is None else (b if bias_dtype is None else b.to(bias_dtype)).contiguous()

    return PeerLayout(
        fc1=GemmWeights(fc1(logical.w13, h // 2), groups(fc1(logical.w13_scale, h // 32)),
                        bias(None if logical.w13_bias is None else fc1(logical.w13_bias))),
        fc2=GemmWeights(logical.w2[:, :h, : i // 2].contiguous(), groups(logical.w2_scale[:, :h, : i // 32]),
                        bias(None if logical.w2_bias is None else logical.w2_bias[:, :h])),
        hidden_size=h, intermediate_size=i,
        num_experts_total=logical.num_experts_total, expert_offset=logical.expert_offset,
    )


def logical_from_peer_layout(layout: PeerLayout, rows: RowOrder, intermediate_size: int,
                             bias_dtype: torch.dtype = torch.bfloat16) -> dict:
    """Inverse of :func:`peer_layout_from_logical` (tests): the logical tensors, zero-padded again to
    multiples of 128, as a dict of :class:`~mxfp4lab.moe_tensors.LogicalMoE` fields (``intermediate_size``:
    the unpadded one the logical layer had)."""
    h, i = layout.hidden_size, layout.intermediate_size
    h_pad, i_pad = round_up_128(h), round_up_128(intermediate_size)
    split, pad = rows[1], torch.nn.functional.pad

    def fc1(t, cols=None, cols_pad=None):  # library order -> [E, 2*I_pad, cols_pad] [up ; gate]
        up, gate = split(t if cols is None else t[..., :cols])
        widths = (0, i_pad - i) if cols is None else (0, cols_pad - cols, 0, i_pad - i)
        return torch.cat((pad(up, widths), pad(gate, widths)), dim=1)

    b1, b2 = layout.fc1.bias, layout.fc2.bias
    return {
        "w13": fc1(layout.fc1.weight, h // 2, h_pad // 2),
        "w13_scale": fc1(layout.fc1.scale, h // 32, h_pad // 32),
        "w13_bias": None if b1 is None else fc1(b1).to(bias_dtype),
        "w2": pad(layout.fc2.weight, (0, (i_pad - i) // 2, 0, h_pad - h)),
        "w2_scale": pad(layout.fc2.scale[..., : i // 32], (0, (i_pad - i) // 32, 0, h_pad - h)),
        "w2_bias": None if b2 is None else pad(b2, (0, h_pad - h)).to(bias_dtype),
    }
