"""Where one logical MXFP4 element (or scale) lands in the SM90 physical layout, and the reverse.

All functions are vectorized: pass integer tensors (any matching shapes) and get tensors back.
They are derived from the same tile/bit description as :mod:`.sm90_weights` / :mod:`.sm90_scales`,
and the tests check them against the actual transforms on one-hot inputs.

Weights (per expert; ``k`` is the FP4 element index along K, ``row`` the weight row)::

    logical byte  (row, k // 2), nibble k % 2, code bits 0..3 (bit 3 = sign)
    -> word byte j = 2 * c4 + h   of the lane word (see sm90_weights)
    -> source word bit  i = 8 j + 4 (k % 2) + b            (b = code bit)
    -> destination bit  d = SM90_FP4_BIT_PERM[i]
    -> physical byte (dst_row, dst_col_base + d // 8), bit d % 8
"""

from __future__ import annotations

from typing import Dict

import torch

from ..formats import MXFormatError
from .sm90_scales import SCALE_BLOCK_ROWS, fold_geometry
from .sm90_weights import SM90_FP4_BIT_PERM, SM90_FP4_BIT_PERM_INV, TILE_BYTES, TILE_ROWS

CODE_BIT_NAMES = ("m0", "e0", "e1", "sign")  # E2M1 code bit 0..3


def _as_long(x, name: str = "index") -> torch.Tensor:
    """A non-negative integer position (or a tensor of them) as long; a negative or fractional one is an
    :class:`~mxfp4lab.formats.MXFormatError` (floor division would silently map it elsewhere)."""
    t = torch.as_tensor(x)
    if t.dtype.is_floating_point and not bool((t == t.floor()).all()):
        raise MXFormatError(f"{name} must be an integer position, got {x!r}")
    t = t.to(torch.long)
    if bool((t < 0).any()):
        raise MXFormatError(f"{name} must be >= 0, got {x!r}")
    return t


def weight_element_destination(row, k) -> Dict[str, torch.Tensor]:
    """Logical element (row, k) -> where its 4 code bits land.

    Returns a dict of long tensors, each with shape ``broadcast(row, k)`` (``+ (4,)`` for per-bit):
    ``dst_row``; ``dst_byte`` [..., 4] and ``dst_bit`` [..., 4] for code bits 0..3 (m0, e0, e1, sign);
    plus the lane bookkeeping ``word_byte`` (j), ``src_word_bit`` [..., 4], ``dst_word_bit`` [..., 4].
    """
    row, k = torch.broadcast_tensors(_as_long(row, "row"), _as_long(k, "k"))
    col = k // 2
    nib = k % 2
    t, rin = row // TILE_ROWS, row % TILE_ROWS
    h, r = rin // 8, rin % 8
    p, cc = col // TILE_BYTES, col % TILE_BYTES
    m, c4, lane4 = cc // 8, (cc % 8) // 4, cc % 4
    j = 2 * c4 + h
    dst_row = t * TILE_ROWS + 8 * (m % 2) + r
    base = p * TILE_BYTES + 16 * (m // 2) + 4 * lane4
    perm = torch.tensor(SM90_FP4_BIT_PERM, dtype=torch.long)
    b = torch.arange(4, dtype=torch.long)
    src_bit = (8 * j + 4 * nib).unsqueeze(-1) + b
    dst_word_bit = perm[src_bit]
    return {
        "dst_row": dst_row,
        "dst_byte": base.unsqueeze(-1) + dst_word_bit // 8,
        "dst_bit": dst_word_bit % 8,
        "word_byte": j,
        "src_word_bit": src_bit,
        "dst_word_bit": dst_word_bit,
    }


def weight_bit_source(dst_row, dst_byte, dst_bit) -> Dict[str, torch.Tensor]:
    """Physical bit (dst_row, dst_byte, dst_bit) -> the logical element and code bit it holds.

    Returns long tensors ``row``, ``k``, ``code_bit`` (0..3; 3 = sign) of the broadcast shape.
    """
    dst_row, dst_byte, dst_bit = torch.broadcast_tensors(
        _as_long(dst_row), _as_long(dst_byte), _as_long(dst_bit)
    )
    t, rin = dst_row // TILE_ROWS, dst_row % TILE_ROWS
    mh, r = rin // 8, rin % 8
    p, cc = dst_byte // TILE_BYTES, dst_byte % TILE_BYTES
    m2, lane4, jd = cc // 16, (cc % 16) // 4, cc % 4
    inv = torch.tensor(SM90_FP4_BIT_PERM_INV, dtype=torch.long)
    src_bit = inv[8 * jd + dst_bit]
    j, within = src_bit // 8, src_bit % 8
    c4, h = j // 2, j % 2
    m = 2 * m2 + mh
    row = t * TILE_ROWS + 8 * h + r
    col = p * TILE_BYTES + 8 * m + 4 * c4 + lane4
    return {"row": row, "k": 2 * col + within // 4, "code_bit": within % 4}


def scale_destination(row, group, dtype: torch.dtype = torch.uint8, group_size: int = 32):
    """Logical scale (row, K-group) -> folded index (block b, k128 q, folded row f, column c)."""
    row, group = torch.broadcast_tensors(_as_long(row), _as_long(group))
    groups, _slices, folded_m, _cols = fold_geometry(dtype, group_size)
    b, rin = row // SCALE_BLOCK_ROWS, row % SCALE_BLOCK_ROWS
    s, f = rin // folded_m, rin % folded_m
    q, g = group // groups, group % groups
    return {"block": b, "k128": q, "frow": f, "col": groups * s + g}


def scale_source(block, k128, frow, col, dtype: torch.dtype = torch.uint8, group_size: int = 32):
    """Folded index (b, q, f, c) -> logical scale (row, K-group)."""
    block, k128, frow, col = torch.broadcast_tensors(*map(_as_long, (block, k128, frow, col)))
    groups, _slices, folded_m, _cols = fold_geometry(dtype, group_size)
    s, g = col // groups, col % groups
    return {"row": block * SCALE_BLOCK_ROWS + s * folded_m + frow, "group": k128 * groups + g}
