"""SM90 mixed-input weight interleave for packed FP4 (the W4A16 / MXFP4 path) and its inverse.

What FlashInfer runs: ``flashinfer.fused_moe.interleave_moe_weights_for_sm90_mixed_gemm(w, "fp4")``,
a CUDA kernel in the installed package at
``flashinfer/data/csrc/nv_internal/tensorrt_llm/kernels/cutlass_kernels/moe_gemm/moe_gemm_mixed_utils.cu``
(``interleave_fp4_weights_for_sm90_mixed_gemm_kernel``), called once per expert by the binding in
``fused_moe/cutlass_backend/flashinfer_cutlass_fused_moe_binding.cu``. This module is an independent,
vectorized torch reading of that kernel (no code copied), checked bit-exactly against bytes the kernel
produced on an H100 (``data/golden/``).

Tile. Per expert, the ``[rows, K/2]`` byte matrix is cut into tiles of 16 rows x 32 bytes (64 FP4
codes). One CUDA lane owns one 32-bit word: it reads 4 bytes of the source tile

    word byte j = 0: (row r,   byte c)        r in 0..7 (tile row), c = 8*m + l, m in 0..3, l in 0..3
    word byte j = 1: (row r+8, byte c)
    word byte j = 2: (row r,   byte c+4)
    word byte j = 3: (row r+8, byte c+4)

permutes the word's 32 bits (below) and stores it, little-endian, at destination row ``r + 8*(m % 2)``,
bytes ``16*(m // 2) + 4*l .. +3`` of the same tile.

Bits. Call the low-nibble codes of the 4 bytes A0 B0 C0 D0 and the high-nibble codes A1 B1 C1 D1
(code = s e1 e0 m0: sign bit 3, magnitude bits 0..2). The low nibbles fill the low half-word and the
high nibbles the high half-word, in the same pattern (n = 0 low, 1 high; "Xn.s" sign, "Xn.2..0" mag)::

    dst bit: 15    14    13    12    11    10    9     8     7     6     5     4     3     2     1     0
    (+16*n)  An.s  Dn.s  Dn.0  Bn.s  Dn.2  Dn.1  Cn.s  An.2  An.1  An.0  Bn.2  Bn.1  Bn.0  Cn.2  Cn.1  Cn.0

i.e. magnitudes of C, B, A packed as 3-bit fields from bit 0 and the signs scattered to bits 9, 12, 15
(with D's fields around them), so the kernel's LUT-based FP4 -> BF16 conversion finds each field where
it wants it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import torch

from ..formats import check_dtype, check_multiple, MXFormatError

TILE_ROWS = 16  # rows per interleave tile (two 8-row halves)
TILE_K = 64  # FP4 codes per tile row (= 32 bytes)
TILE_BYTES = TILE_K // 2

# Source (bit in the 4-byte word) -> destination bit, built from the diagram in the module docstring.
# Field tables: (nibble field: byte j in word, bit within nibble) -> destination bit in the half-word.
_HALF_WORD_FIELDS = {
    # byte j=0 (A): mag bits 0,1,2 -> 6,7,8 ; sign -> 15
    (0, 0): 6, (0, 1): 7, (0, 2): 8, (0, 3): 15,
    # byte j=1 (B): mag -> 3,4,5 ; sign -> 12
    (1, 0): 3, (1, 1): 4, (1, 2): 5, (1, 3): 12,
    # byte j=2 (C): mag -> 0,1,2 ; sign -> 9
    (2, 0): 0, (2, 1): 1, (2, 2): 2, (2, 3): 9,
    # byte j=3 (D): mag bit 0 -> 13, mag bits 1,2 -> 10,11 ; sign -> 14
    (3, 0): 13, (3, 1): 10, (3, 2): 11, (3, 3): 14,
}


def _build_bit_perm() -> Tuple[int, ...]:
    perm = [0] * 32
    for (j, b), dst in _HALF_WORD_FIELDS.items():
        for nib in (0, 1):  # low nibble -> low half-word, high nibble -> high half-word
            perm[8 * j + 4 * nib + b] = dst + 16 * nib
    assert sorted(perm) == list(range(32))
    return tuple(perm)


#: ``SM90_FP4_BIT_PERM[i]`` = destination bit of source word bit ``i`` (word = 4 bytes, little-endian).
SM90_FP4_BIT_PERM: Tuple[int, ...] = _build_bit_perm()
#: Inverse permutation: ``SM90_FP4_BIT_PERM_INV[d]`` = source bit that lands on destination bit ``d``.
SM90_FP4_BIT_PERM_INV: Tuple[int, ...] = tuple(
    SM90_FP4_BIT_PERM.index(d) for d in range(32)
)


@lru_cache(maxsize=None)
def _half_luts(inverse: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two int32 tables of 65536 entries: the word permutation is linear over OR, so
    ``P(w) = T_lo[w & 0xFFFF] | T_hi[w >> 16]``."""
    # perm[i] = where input bit i goes. Forward: source bit -> destination bit; inverse: the
    # destination bit d goes back to source bit SM90_FP4_BIT_PERM_INV[d].
    perm = SM90_FP4_BIT_PERM_INV if inverse else SM90_FP4_BIT_PERM
    v = torch.arange(65536, dtype=torch.int64)
    tables = []
    for half in (0, 1):
        acc = torch.zeros(65536, dtype=torch.int64)
        for bit in range(16):
            acc |= ((v >> bit) & 1) << perm[16 * half + bit]
        # store as int32 bit pattern (bit 31 may be set)
        tables.append(((acc + 2**31) % 2**32 - 2**31).to(torch.int32))
    return tables[0], tables[1]


def permute_word_bits(words: torch.Tensor, *, inverse: bool = False) -> torch.Tensor:
    """Apply the SM90 FP4 bit permutation (or its inverse) to int32 words of any shape."""
    check_dtype(words, torch.int32, "words")
    t_lo, t_hi = _half_luts(inverse)
    t_lo, t_hi = t_lo.to(words.device), t_hi.to(words.device)
    flat = words.reshape(-1)
    lo = flat & 0xFFFF
    hi = (flat >> 16) & 0xFFFF  # arithmetic shift, then mask: the unsigned high half-word
    out = torch.index_select(t_lo, 0, lo) | torch.index_select(t_hi, 0, hi)
    return out.reshape(words.shape)


def _check_weight(w: torch.Tensor, name: str) -> Tuple[int, int, int]:
    check_dtype(w, torch.uint8, name)
    if w.dim() != 3:
        raise MXFormatError(
            f"{name} must be 3-D [experts, rows, K/2] packed FP4 bytes, got shape {tuple(w.shape)}"
        )
    e, rows, kb = w.shape
    check_multiple(rows, TILE_ROWS, f"{name} rows (dim 1)", "SM90 interleave tiles are 16 rows")
    check_multiple(kb * 2, TILE_K, f"{name} K = 2 * dim 2", "SM90 interleave tiles are 64 FP4 codes")
    return e, rows, kb


# Axis names of the 9-D tile view used by both directions (per expert e, per 16-row tile t):
#   source      [E, T, h, r, p, m2, mh, c4, l]   byte = (row 16t + 8h + r, col 32p + 8(2 m2 + mh) + 4 c4 + l)
#   destination [E, T, mh, r, p, m2, l, c4, h]  byte = (row 16t + 8mh + r, col 32p + 16 m2 + 4 l + (2 c4 + h))
# h: which 8-row half the byte came from; r: row within the half; p: 32-byte partition;
# m = 2 m2 + mh: the lane's "mma id"; c4: byte c or c+4; l: lane % 4.
_SRC_TO_DST = (0, 1, 6, 3, 4, 5, 8, 7, 2)  # permute source view -> destination view
_DST_TO_SRC = tuple(_SRC_TO_DST.index(i) for i in range(9))


def _tile_view(w: torch.Tensor, e: int, rows: int, kb: int) -> torch.Tensor:
    return w.reshape(e, rows // TILE_ROWS, 2, 8, kb // TILE_BYTES, 2, 2, 2, 4)


def _chunks(e: int, rows: int, kb: int, target_bytes: int = 1 << 21):
    """Split (expert, 16-row tile) work into cache-sized slabs: a loop over slabs, not elements."""
    tiles = rows // TILE_ROWS
    per_tile = TILE_ROWS * kb
    step = max(1, target_bytes // per_tile)
    for ex in range(e):
        for t0 in range(0, tiles, step):
            yield ex, t0, min(tiles, t0 + step)


def _apply(w: torch.Tensor, name: str, inverse: bool) -> torch.Tensor:
    e, rows, kb = _check_weight(w, name)
    w = w.contiguous()
    out = torch.empty_like(w)
    # CPU: L2-sized slabs; GPU: large slabs (temporaries are ~8x the slab)
    target = (1 << 21) if w.device.type == "cpu" else (1 << 27)
    for ex, t0, t1 in _chunks(e, rows, kb, target):
        src = w[ex, t0 * TILE_ROWS : t1 * TILE_ROWS]
        dst = out[ex, t0 * TILE_ROWS : t1 * TILE_ROWS]
        n = (t1 - t0) * TILE_ROWS
        if not inverse:
            moved = _tile_view(src, 1, n, kb).permute(_SRC_TO_DST).reshape(n, kb)  # bytes regrouped
            words = permute_word_bits(moved.view(torch.int32))  # last 4 bytes (c4, h) = one word
            dst.copy_(words.view(torch.uint8).reshape(n, kb))
        else:
            words = permute_word_bits(src.contiguous().view(torch.int32), inverse=True)
            bytes_dst_view = words.view(torch.uint8).reshape(1, n // TILE_ROWS, 2, 8, kb // TILE_BYTES, 2, 4, 2, 2)
            dst.copy_(bytes_dst_view.permute(_DST_TO_SRC).reshape(n, kb))
    return out


def interleave_weights_sm90(w: torch.Tensor) -> torch.Tensor:
    """Logical packed FP4 ``[E, rows, K/2]`` uint8 -> SM90 physical layout, same shape and dtype.

    Bit-for-bit what ``flashinfer.fused_moe.interleave_moe_weights_for_sm90_mixed_gemm(w, "fp4")``
    writes (see module docstring). Requires rows % 16 == 0 and K % 64 == 0. Runs on any device.
    """
    return _apply(w, "w", inverse=False)


def deinterleave_weights_sm90(w: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`interleave_weights_sm90`: SM90 physical ``[E, rows, K/2]`` -> logical."""
    return _apply(w, "w_interleaved", inverse=True)
