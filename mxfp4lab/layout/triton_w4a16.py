"""Layout of mxfp4lab's own Triton W4A16 MoE kernel (:mod:`mxfp4lab.kernels.triton_moe`) and its inverse.

Same bytes as the logical stage (:class:`mxfp4lab.moe_tensors.LogicalMoE`), transposed so that N (the GEMM
output axis) is the contiguous one. No nibble or bit is moved inside a byte::

    logical (K-major)                          triton (N-major)
    w13        [E, 2*I_pad, H_pad/2]  u8   ->  w13        [E, H_pad/2,  2*I_pad]   index [e, kp, n]
    w13_scale  [E, 2*I_pad, H_pad/32] u8   ->  w13_scale  [E, H_pad/32, 2*I_pad]   index [e, kg, n]
    w2         [E, H_pad,   I_pad/2]  u8   ->  w2         [E, I_pad/2,  H_pad]
    w2_scale   [E, H_pad,   I_pad/32] u8   ->  w2_scale   [E, I_pad/32, H_pad]
    biases     [E, 2*I_pad] / [E, H_pad] bf16 (unchanged)

Axis labels: ``e`` local expert; ``n`` output row of the GEMM (fc1: ``[0, I_pad)`` = up = w3,
``[I_pad, 2*I_pad)`` = gate = w1, the logical ``[up ; gate]`` order; fc2: hidden column);
``kp`` packed K pair: byte ``[e, kp, n]`` holds K elements ``2*kp`` (LOW nibble) and ``2*kp+1``
(HIGH nibble) of row ``n`` (the MXFP4 convention of :mod:`mxfp4lab.formats`); ``kg`` K group of 32
(one E8M0 byte, value ``2**(byte-127)``).

What it is optimized for (versus the SM90 CUTLASS layout of :mod:`mxfp4lab.layout.sm90_weights` /
:mod:`mxfp4lab.layout.sm90_scales`):

* The Triton kernel computes ``acc[BLOCK_M, BLOCK_N] += x[BLOCK_M, BLOCK_K] @ W[BLOCK_K, BLOCK_N]``
  with ``tl.dot`` on bf16 operands. With N contiguous, one weight tile is ``BLOCK_K/2`` rows of
  ``BLOCK_N`` contiguous bytes (BLOCK_N = 64..128 -> 64..128-byte coalesced rows, 16-byte vector loads
  per thread), and the dequantized tile is already the ``[K, N]`` B operand: unpack low/high nibble,
  interleave along K (``tl.join`` + ``reshape``), no transpose in registers.
* Scales are read in the same orientation: one ``[BLOCK_K/32, BLOCK_N]`` tile of contiguous bytes per
  K step, broadcast over the 32 K rows they cover; no fold to undo.
* fc1's up row ``n`` and gate row ``I_pad + n`` are two column windows of the same ``[kp, :]`` rows, so
  one program loads both and fuses the clamped SwiGLU in its epilogue.
* The dequantization is arithmetic in registers (E2M1 magnitude -> fp32 bits, times the E8M0 scale),
  written for Triton; nothing is pre-permuted for a particular instruction.

The SM90 CUTLASS layout instead serves CUTLASS's mixed-input GEMM: within each 16-row x 64-element
tile, bytes of rows r / r+8 and columns c / c+4 are regrouped into 32-bit words whose bits are
permuted so that the lookup-table FP4->bf16 conversion in registers yields the exact fragment order a
``wgmma`` expects (no shuffles); scales are folded so that each 64-row x 128-K block is one 16-byte
row group (one 16-byte load per thread brings the scales a warp needs). That layout is tied to one
instruction shape and warp arrangement; this one is tied only to "N contiguous, K pairs packed", which
any Triton tile shape can read.

The transform is a pure transpose, so :func:`from_triton_layout` is its exact (byte-for-byte) inverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..formats import MX_BLOCK_SIZE, MXFormatError, check_dtype, check_multiple
from ..moe_tensors import LogicalMoE, ShardSpec

__all__ = [
    "TritonW4A16Layout",
    "from_triton_layout",
    "to_triton_layout",
    "weight_from_triton",
    "weight_to_triton",
]


@dataclass
class TritonW4A16Layout:
    """Tensors the Triton kernel reads (shapes in the module docstring)."""

    w13: torch.Tensor
    w13_scale: torch.Tensor
    w13_bias: torch.Tensor | None
    w2: torch.Tensor
    w2_scale: torch.Tensor
    w2_bias: torch.Tensor | None
    hidden_size: int
    intermediate_size: int
    num_experts_total: int
    expert_offset: int = 0

    @property
    def num_local_experts(self) -> int:
        return self.w13.shape[0]

    @property
    def padded_hidden(self) -> int:
        return self.w13.shape[1] * 2

    @property
    def padded_intermediate(self) -> int:
        return self.w13.shape[2] // 2

    def nbytes(self) -> int:
        ts = (self.w13, self.w13_scale, self.w13_bias, self.w2, self.w2_scale, self.w2_bias)
        return sum(t.numel() * t.element_size() for t in ts if t is not None)


def _check_pair(w: torch.Tensor, s: torch.Tensor, name: str, *, triton: bool) -> None:
    check_dtype(w, torch.uint8, name)
    check_dtype(s, torch.uint8, f"{name}_scale")
    if w.dim() != 3 or s.dim() != 3:
        raise MXFormatError(
            f"{name} and {name}_scale must be 3-D [E, ...] (got {tuple(w.shape)} and {tuple(s.shape)})"
        )
    if triton:  # w [E, K/2, N], s [E, K/32, N]
        e, kp, n = w.shape
        want = (e, kp * 2 // MX_BLOCK_SIZE, n)
    else:  # w [E, N, K/2], s [E, N, K/32]
        e, n, kp = w.shape
        want = (e, n, kp * 2 // MX_BLOCK_SIZE)
    check_multiple(kp * 2, MX_BLOCK_SIZE, f"{name}: K (2 x packed bytes)", "one E8M0 scale per 32")
    if tuple(s.shape) != want:
        raise MXFormatError(
            f"{name}_scale has shape {tuple(s.shape)}, expected {want} for {name} {tuple(w.shape)} "
            f"({'triton [E, K/32, N]' if triton else 'logical [E, N, K/32]'})"
        )


def weight_to_triton(w: torch.Tensor, s: torch.Tensor, name: str = "w"):
    """Logical ``w [E, N, K/2]``, ``s [E, N, K/32]`` -> ``([E, K/2, N], [E, K/32, N])`` (contiguous)."""
    _check_pair(w, s, name, triton=False)
    return w.transpose(1, 2).contiguous(), s.transpose(1, 2).contiguous()


def weight_from_triton(w: torch.Tensor, s: torch.Tensor, name: str = "w"):
    """Exact inverse of :func:`weight_to_triton`."""
    _check_pair(w, s, name, triton=True)
    return w.transpose(1, 2).contiguous(), s.transpose(1, 2).contiguous()


def to_triton_layout(logical: LogicalMoE) -> TritonW4A16Layout:
    """:class:`~mxfp4lab.moe_tensors.LogicalMoE` -> :class:`TritonW4A16Layout` (pure torch, any device)."""
    # (a LogicalMoE is checked when made: shapes, dtypes, biases)
    w13, s13 = weight_to_triton(logical.w13, logical.w13_scale, "w13")
    w2, s2 = weight_to_triton(logical.w2, logical.w2_scale, "w2")
    return TritonW4A16Layout(
        w13, s13, None if logical.w13_bias is None else logical.w13_bias.contiguous(),
        w2, s2, None if logical.w2_bias is None else logical.w2_bias.contiguous(),
        logical.hidden_size, logical.intermediate_size, logical.num_experts_total, logical.expert_offset,
    )


def from_triton_layout(layout: TritonW4A16Layout, shard: ShardSpec | None = None) -> LogicalMoE:
    """Exact inverse of :func:`to_triton_layout` for the tensors it moves: -> :class:`~mxfp4lab.moe_tensors.LogicalMoE`
    (without SwiGLU parameters: the Triton backend passes those to the kernel itself)."""
    w13, s13 = weight_from_triton(layout.w13, layout.w13_scale, "w13")
    w2, s2 = weight_from_triton(layout.w2, layout.w2_scale, "w2")
    return LogicalMoE(w13, s13, layout.w13_bias, w2, s2, layout.w2_bias, hidden_size=layout.hidden_size,
                      intermediate_size=layout.intermediate_size, num_experts_total=layout.num_experts_total,
                      expert_offset=layout.expert_offset, shard=shard or ShardSpec())

