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

Implementation: SWAR on int32 words (each field move of the diagram is one mask+shift applied to four
lanes at once) plus a 4x4 byte transpose, in cache-sized slabs; ~7x a plain ``clone()`` on CPU for the
GPT-OSS-120b fc1 tensor (``mxfp4lab bench layout``). :func:`permute_word_bits` is a second,
table-driven implementation of the same bit permutation, used by the tests and the explain module.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import torch

from ..formats import MXFormatError, check_dtype, check_multiple

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


# ---------------------------------------------------------------------------------------------
# The transform itself: SWAR (SIMD within a register) on int32 words. A source int32 word holds the
# 4 bytes l = 0..3 of one (row, m, c4) run, i.e. the byte "j" of FOUR lanes at once; every field move
# of the bit diagram is then one (mask, shift) on the whole word, confined to its byte lane. A final
# 4x4 byte transpose turns "output byte j of lanes 0..3" into "the 4 output bytes of lane l".
#
# int32 word views (per chunk of T 16-row tiles; P = K/64 partitions):
#   source       [T, h, r, p, m2, mh, c4]   word = bytes l=0..3 of row 16t+8h+r, col 32p+8(2m2+mh)+4c4
#   destination  [T, mh, r, p, m2, l]       word = lane l's output word at row 16t+8mh+r, col 32p+16m2+4l
# word byte j = 2*c4 + h:  A = (h0,c4 0), B = (h1,c4 0), C = (h0,c4 1), D = (h1,c4 1).
# ---------------------------------------------------------------------------------------------
def _i32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= (1 << 31) else v


def _rep(byte_mask: int) -> int:
    """Replicate an 8-bit mask into the 4 byte lanes of an int32 word."""
    return _i32(byte_mask * 0x01010101)


def _field_groups():
    """Bit diagram -> (mask, shift) groups. Forward: output byte k (0/1 of a half-word) is the OR of
    ``shift(X_j & mask, delta)`` over groups (j, mask, delta); inverse: nibble j is the OR of
    ``shift(O_k & mask', -delta)``."""
    fwd = {0: {}, 1: {}}
    inv = {j: {} for j in range(4)}
    for (j, b), d in _HALF_WORD_FIELDS.items():
        k, delta = d // 8, d % 8 - b
        fwd[k][(j, delta)] = fwd[k].get((j, delta), 0) | (1 << b)
        inv[j][(k, delta)] = inv[j].get((k, delta), 0) | (1 << (d % 8))
    fwd = {k: [(j, _rep(m), dl) for (j, dl), m in g.items()] for k, g in fwd.items()}
    inv = {j: [(k, _rep(m), dl) for (k, dl), m in g.items()] for j, g in inv.items()}
    return fwd, inv


_FWD_GROUPS, _INV_GROUPS = _field_groups()
_NIBBLE = _rep(0x0F)


def _move(x: torch.Tensor, mask: int, n: int) -> torch.Tensor:
    """Bits of ``x`` under ``mask`` moved by ``n`` (left if > 0). Right moves shift first and mask
    after, so the arithmetic shift's sign fill never survives."""
    if n >= 0:
        return (x & mask) << n
    return (x >> -n) & _i32((mask & 0xFFFFFFFF) >> -n)


def _transpose4x4(w0, w1, w2, w3):
    """4x4 byte transpose of four int32 words (rows) -> four words (columns); an involution."""
    lo16, hi16 = 0x0000FFFF, _i32(0xFFFF0000)
    t0, t1 = (w0 & lo16) | (w2 << 16), (w1 & lo16) | (w3 << 16)
    t2, t3 = ((w0 >> 16) & lo16) | (w2 & hi16), ((w1 >> 16) & lo16) | (w3 & hi16)
    ev, od = 0x00FF00FF, _i32(0xFF00FF00)
    return ((t0 & ev) | ((t1 & ev) << 8), ((t0 >> 8) & ev) | (t1 & od),
            (t2 & ev) | ((t3 & ev) << 8), ((t2 >> 8) & ev) | (t3 & od))


def _forward_words(a, b, c, d):
    """Source words A, B, C, D (4 lanes each) -> the 4 output words of lanes l = 0..3."""
    outs = []
    for planes in ((a & _NIBBLE, b & _NIBBLE, c & _NIBBLE, d & _NIBBLE),  # low nibbles -> half 0
                   tuple((x >> 4) & _NIBBLE for x in (a, b, c, d))):     # high nibbles -> half 1
        for k in (0, 1):
            acc = None
            for j, mask, delta in _FWD_GROUPS[k]:
                term = _move(planes[j], mask, delta)
                acc = term if acc is None else acc | term
            outs.append(acc)
    return _transpose4x4(*outs)  # outs = output bytes 0, 1, 2, 3 of each lane


def _inverse_words(r0, r1, r2, r3):
    """Exact inverse of :func:`_forward_words`."""
    o = _transpose4x4(r0, r1, r2, r3)
    src = []
    for j in range(4):
        nib = []
        for half in (0, 1):
            acc = None
            for k, mask, delta in _INV_GROUPS[j]:
                term = _move(o[2 * half + k], mask, -delta)
                acc = term if acc is None else acc | term
            nib.append(acc)
        src.append(nib[0] | (nib[1] << 4))
    return src  # A, B, C, D


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


def _chunks(e: int, rows: int, kb: int, target_bytes: int):
    """Split (expert, 16-row tile) work into cache-sized slabs: a loop over slabs, not elements."""
    tiles = rows // TILE_ROWS
    step = max(1, target_bytes // (TILE_ROWS * kb))
    for ex in range(e):
        for t0 in range(0, tiles, step):
            yield ex, t0, min(tiles, t0 + step)


def _apply(w: torch.Tensor, name: str, inverse: bool) -> torch.Tensor:
    e, rows, kb = _check_weight(w, name)
    w = w.contiguous()
    out = torch.empty_like(w)
    p = kb // TILE_BYTES
    # CPU: L2-sized slabs; GPU: large slabs (temporaries are a few times the slab)
    target = (1 << 20) if w.device.type == "cpu" else (1 << 27)
    for ex, t0, t1 in _chunks(e, rows, kb, target):
        n = (t1 - t0) * TILE_ROWS
        src = w[ex, t0 * TILE_ROWS : t1 * TILE_ROWS].view(torch.int32)
        dst = out[ex, t0 * TILE_ROWS : t1 * TILE_ROWS].view(torch.int32)
        if not inverse:
            v = src.reshape(n // TILE_ROWS, 2, 8, p, 2, 2, 2)  # [T, h, r, p, m2, mh, c4]
            lanes = _forward_words(v[:, 0, ..., 0], v[:, 1, ..., 0], v[:, 0, ..., 1], v[:, 1, ..., 1])
            dv = dst.view(n // TILE_ROWS, 2, 8, p, 2, 4)  # [T, mh, r, p, m2, l]
            for lane, word in enumerate(lanes):  # word: [T, r, p, m2, mh] -> [T, mh, r, p, m2]
                dv[..., lane].copy_(word.permute(0, 4, 1, 2, 3))
        else:
            v = src.reshape(n // TILE_ROWS, 2, 8, p, 2, 4)  # [T, mh, r, p, m2, l]
            lanes = [v[..., lane].permute(0, 2, 3, 4, 1) for lane in range(4)]  # [T, r, p, m2, mh]
            a, b, c, d = _inverse_words(*lanes)
            dv = dst.view(n // TILE_ROWS, 2, 8, p, 2, 2, 2)  # [T, h, r, p, m2, mh, c4]
            for (h, c4), word in zip(((0, 0), (1, 0), (0, 1), (1, 1)), (a, b, c, d)):
                dv[:, h, ..., c4].copy_(word)
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
