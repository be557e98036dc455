"""An independent, literal (scalar) reading of FlashInfer's CUDA kernel
``interleave_fp4_weights_for_sm90_mixed_gemm_kernel`` (moe_gemm_mixed_utils.cu in the installed
flashinfer package): the same index arithmetic and the same 18 (mask, shift) pairs, one lane at a
time. Slow by design; used only on small shapes to cross-check the vectorized transform, which is
built from a different description (tile view + bit table)."""

import numpy as np
import torch

# (mask, shift): positive = left shift, negative = right shift, in the kernel's order.
KERNEL_MASK_SHIFTS = [
    (0x00000080, 24), (0x00000070, 18), (0x00000008, 12), (0x00000007, 6),
    (0x00008000, 13), (0x00007000, 7), (0x00000800, 1), (0x00000700, -5),
    (0x00800000, 2), (0x00700000, -4), (0x00080000, -10), (0x00070000, -16),
    (0x80000000, -1), (0x10000000, 1), (0x60000000, -3), (0x08000000, -13),
    (0x01000000, -11), (0x06000000, -15),
]


def interleave_like_kernel(w: torch.Tensor) -> torch.Tensor:
    e_count, rows, kb = w.shape
    cols = 2 * kb  # the kernel's `cols` is K in FP4 elements
    src = w.numpy().reshape(e_count, -1)
    out = np.zeros_like(src)
    for e in range(e_count):  # the binding loops over experts
        s, o = src[e], out[e]
        for block_id in range(rows // 2):
            for partition_id in range(cols // 64):
                for lane_id in range(16):
                    row_id = block_id // 8 * 16 + block_id % 8
                    mma_id = lane_id // 4
                    dst_row_id = row_id + (mma_id % 2) * 8
                    interleaved_lane_id = lane_id // 8 * 16 + (lane_id % 4) * 4
                    col_id = partition_id * 32 + mma_id * 8 + lane_id % 4
                    dst_col_id = partition_id * 32 + interleaved_lane_id
                    first = row_id * cols // 2 + col_id
                    second = (row_id + 8) * cols // 2 + col_id
                    raw = (int(s[first]) | int(s[second]) << 8 | int(s[first + 4]) << 16
                           | int(s[second + 4]) << 24)
                    v = 0
                    for mask, sh in KERNEL_MASK_SHIFTS:
                        v |= ((raw & mask) << sh) if sh >= 0 else ((raw & mask) >> -sh)
                    dst = dst_row_id * cols // 2 + dst_col_id
                    for j in range(4):
                        o[dst + j] = (v >> (8 * j)) & 0xFF
    return torch.from_numpy(out.reshape(w.shape))
