"""SM90 mixed-input scale fold (``interleave_moe_scales_for_sm90_mixed_gemm``) and its inverse.

FlashInfer's fold (``flashinfer/fused_moe/prepare.py``, pure torch) stores each logical block of
64 rows x 128 K-elements of scales as one 16-byte-contiguous folded block, so that one 16-byte load
brings a warp the scales it needs. For MXFP4 (uint8 E8M0, group 32) a 64 x 128 block holds
64 rows x 4 scale groups = 256 bytes, folded to 16 rows x 16 bytes::

    logical  [E, rows, K/32]           row = 64*b + 16*s + f   (b: 64-row block, s: slice 0..3, f: 0..15)
                                       grp = 4*q + g           (q: 128-K block, g: group 0..3 in it)
    folded   [E, rows/64, K/128, 16, 16]
             index [e, b, q, f, 4*s + g]

so folded row f of a block holds the 4 K-groups of rows f, f+16, f+32, f+48 side by side.
For a scale type of ``bits`` bits and group size ``gs`` (bf16 scales with gs=128 on the W4A8 path):
``physical_cols = 128 / bits``, ``groups_per_k128 = 128 / gs``, ``slices = physical_cols / groups_per_k128``,
``folded_m = 64 / slices``.
"""

from __future__ import annotations

from typing import Tuple

import torch

from ..formats import MXFormatError, check_multiple

SCALE_BLOCK_ROWS = 64
SCALE_BLOCK_K = 128
FOLD_BYTES = 16  # each folded row is one 16-byte vector


def fold_geometry(dtype: torch.dtype, group_size: int) -> Tuple[int, int, int, int]:
    """-> (groups_per_k128, slices_per_m64, folded_m, physical_cols) for a scale dtype and group."""
    if group_size <= 0 or SCALE_BLOCK_K % group_size != 0:
        raise MXFormatError(f"group_size = {group_size} must be positive and divide 128")
    groups = SCALE_BLOCK_K // group_size
    bits = dtype.itemsize * 8
    physical_cols = FOLD_BYTES * 8 // bits
    if physical_cols % groups != 0:
        raise MXFormatError(
            f"scale dtype {dtype} ({bits} bits) with group_size {group_size}: {physical_cols} scales per "
            f"16 bytes is not a multiple of the {groups} groups per 128 K-elements"
        )
    slices = physical_cols // groups
    if SCALE_BLOCK_ROWS % slices != 0:
        raise MXFormatError(f"{slices} folded slices do not divide the 64-row block")
    return groups, slices, SCALE_BLOCK_ROWS // slices, physical_cols


def fold_scales_sm90(scales: torch.Tensor, group_size: int = 32) -> torch.Tensor:
    """Logical scales ``[E, rows, K/group_size]`` -> folded ``[E, rows/64, K/128, folded_m, physical_cols]``.

    For MXFP4 (uint8, group 32): ``[E, rows, K/32] -> [E, rows/64, K/128, 16, 16]``. Bit-for-bit equal
    to ``flashinfer.fused_moe.interleave_moe_scales_for_sm90_mixed_gemm``. The kernel takes the
    result as ``.view(torch.int32)``. Requires rows % 64 == 0 and K % 128 == 0.
    """
    if not isinstance(scales, torch.Tensor):
        raise TypeError("scales must be a torch.Tensor")
    if scales.dim() != 3:
        raise MXFormatError(
            f"scales must be 3-D [experts, rows, K/{group_size}], got shape {tuple(scales.shape)}"
        )
    if scales.is_floating_point() and scales.dtype != torch.bfloat16:
        raise MXFormatError(f"scales dtype {scales.dtype}: expected uint8 E8M0 (or bf16 for W4A8)")
    groups, slices, folded_m, cols = fold_geometry(scales.dtype, group_size)
    e, rows, kg = scales.shape
    check_multiple(rows, SCALE_BLOCK_ROWS, "scales rows (dim 1)", "SM90 scale fold works on 64-row blocks")
    check_multiple(kg * group_size, SCALE_BLOCK_K, f"K = {group_size} * scales dim 2",
                   "SM90 scale fold works on 128-element K blocks")
    # axes: [E, b (64-row block), s (slice), f (row in slice), q (128-K block), g (group in q)]
    v = scales.reshape(e, rows // SCALE_BLOCK_ROWS, slices, folded_m, kg // groups, groups)
    # -> [E, b, q, f, s, g]; (s, g) flatten to the 16-byte physical row
    return v.permute(0, 1, 4, 3, 2, 5).contiguous().reshape(
        e, rows // SCALE_BLOCK_ROWS, kg // groups, folded_m, cols
    )


def unfold_scales_sm90(folded: torch.Tensor, group_size: int = 32) -> torch.Tensor:
    """Exact inverse of :func:`fold_scales_sm90`: ``[E, rows/64, K/128, folded_m, cols]`` -> ``[E, rows, K/gs]``.

    Also accepts the int32 view the kernel consumes (it is viewed back as uint8 first).
    """
    if not isinstance(folded, torch.Tensor):
        raise TypeError("folded must be a torch.Tensor")
    if folded.dtype == torch.int32:
        folded = folded.contiguous().view(torch.uint8)
    if folded.dim() != 5:
        raise MXFormatError(
            f"folded scales must be 5-D [E, rows/64, K/128, folded_m, cols], got {tuple(folded.shape)}"
        )
    groups, slices, folded_m, cols = fold_geometry(folded.dtype, group_size)
    e, nb, nq, fm, c = folded.shape
    if (fm, c) != (folded_m, cols):
        raise MXFormatError(
            f"folded scales trailing dims {(fm, c)} != {(folded_m, cols)} for {folded.dtype}, group {group_size}"
        )
    # axes: [E, b, q, f, s, g] -> [E, b, s, f, q, g]
    v = folded.reshape(e, nb, nq, folded_m, slices, groups).permute(0, 1, 4, 3, 2, 5)
    return v.contiguous().reshape(e, nb * SCALE_BLOCK_ROWS, nq * groups)
