"""The weight layout of mxfp4lab's decode kernel (``mxfp4lab/kernels/csrc/decode_w4a16*.cu*``) and its inverse.

Made for a kernel that streams each weight byte once with 16-byte copies and feeds ``mma.sync.m16n8k16``
(bf16, fp32 accumulate) with the weights as the A operand (16 output rows) and up to 8 tokens as B:

* one 16-byte load per lane is that lane's A fragments for four MMA steps (64 K elements of a 16-row
  tile), so no byte shuffles, no shared-memory transposes and no ``ldmatrix``;
* inside each 64-element chunk K is permuted so that the same lane's B fragments for the four steps are
  32 contiguous bytes of the activation row (two 16-byte copies);
* a lane's 32 codes of a chunk share one E8M0 scale per row (rows ``g`` and ``g+8``), so the scale is one
  bf16x2 multiply per register;
* the bits of each 32-bit word are placed where one rotation of the word puts a register's fields (two
  rotations for the last register), so 8 codes become four bf16x2 registers with 5 ``LOP3``, 2 funnel
  shifts and 2 plain left shifts (see "Bits").

Fragments (PTX ISA, ``mma.m16n8k16`` with ``.bf16``): lane ``L = 4*g + t`` (``g = L // 4``, ``t = L % 4``)
holds A registers ``a0 = A[g][2t, 2t+1]``, ``a1 = A[g+8][2t, 2t+1]``, ``a2 = A[g][2t+8, 2t+9]``,
``a3 = A[g+8][2t+8, 2t+9]`` and B registers ``b0 = B[2t, 2t+1][g]``, ``b1 = B[2t+8, 2t+9][g]``.

K permutation. In chunk ``c`` (``k0 = 64*c``), MMA step ``s`` (0..3), the logical K index ``2t + i`` of the
fragment (``i`` = 0, 1) is the real element ``k0 + 16*t + 4*s + i``, and ``2t + 8 + i`` is
``k0 + 16*t + 4*s + 2 + i``. So lane ``t`` of every step reads real K ``[k0 + 16t, k0 + 16t + 16)``, and
its B words ``2s, 2s+1`` are activation elements ``k0 + 16t + 4s + (0, 1)`` and ``(2, 3)``. ``16t`` is
inside one 32-element E8M0 block, so the lane's scale for row ``r`` is ``S[r][2c + t // 2]``.

Bits. Word ``s`` of lane ``L`` holds the 8 codes of ``a0..a3``: register ``aj``'s low half-word is the
``i = 0`` element, its high half-word the ``i = 1`` element. A code is ``s e1 e0 m`` (sign bit 3,
magnitude bits 2..0); in the decoded half (a bf16) the fields sit at ``m: 6, e0: 7, e1: 8, s: 15``
(:data:`TARGET_BIT`). Register ``aj``'s field ``f`` is stored where the decode's rotation brings it there:
source bit ``(TARGET_BIT[f] + 16 i - ROTL[j][f]) mod 32`` (:data:`ROTL`, :func:`source_bit`). The 32
bits of the word, register.half.field (``m``, ``0`` = e0, ``1`` = e1, ``s``)::

    bit  31    30    29    28    27    26    25    24    23    22    21    20    19    18    17    16
         a0.1s a3.11 a3.10 a1.11 a1.10 a1.1m a2.1s a0.11 a0.10 a0.1m a3.0s a3.1m a1.0s a2.11 a2.10 a2.1m
    bit  15    14    13    12    11    10    9     8     7     6     5     4     3     2     1     0
         a0.0s a3.01 a3.00 a1.01 a1.00 a1.0m a2.0s a0.01 a0.00 a0.0m a3.1s a3.0m a1.1s a2.01 a2.00 a2.0m

(``a3.11`` at bit 30 is ``a3``'s ``i = 1`` e1, and so on.) Decode, ``K = 0x81C081C0`` (the fields of both
halves), ``M = 0x00400040`` (the two ``m`` bits)::

    r0 = q & K                         r2 = (q << 6) & K
    r1 = rotr(q, 4) & K                r3 = ((q << 2) & M) | (rotr(q, 6) & (K ^ M))

5 ``LOP3``, 2 funnel shifts (``SHF.L.W``, ALU pipe) and 2 left shifts (``IMAD.SHL``, FMA pipe): the ALU
pipe takes two cycles per warp instruction, so its operations are what the bit order minimises. Each half
is then a bf16 with the sign at bit 15 and ``e1 e0 m`` at bits 8..6, i.e. exactly ``2**-126 * v``
(``e = 0`` lands in bf16's subnormal range, so 0 and 0.5 come out right too). One
``mul.bf16x2`` by ``2**(byte - 1)`` (exact for E8M0 bytes 0..128; the preparation rejects larger ones)
gives ``v * 2**(byte - 127)``.

Physical tensors (one contiguous block per (expert, tile group, chunk), what one warp copies per step)::

    step block [n tiles x 512 B weights][n tiles x 32 B scales]           (n * 544 bytes)
      weights of tile t: 32 lanes x 16 B (4 words, word s little-endian)
      scales of tile t:  16 words of 2 B, word j = 2*g + t//2: (S[g][2c + t//2], S[g+8][2c + t//2])
    fc1  [E, I32/32, H64/64, 2176]   n = 4: up rows 32u..32u+31 (2 tiles), then the gate rows of the
                                     same intermediate columns (2 tiles); SwiGLU needs both
    fc2  [E, H32/32, I64/64, 1088]   n = 2: two consecutive 16-row tiles of the output

with ``I32 = round_up(I, 32)``, ``H64 = round_up(H, 64)``, ``H32 = round_up(H, 32)``, ``I64 = round_up(I, 64)``:
unlike the SM90 CUTLASS layout (padded to 128 both ways), GPT-OSS (2880 x 2880) needs no padding at all.
Items are small on purpose (92 KB of GPT-OSS weights in either GEMM): at M = 1 the 4 active experts
give 360 items per GEMM, so 132 SMs stream within 91 % of a perfect balance.
"""

from __future__ import annotations

from typing import Tuple

import torch

from ..formats import MXFormatError, check_dtype, check_multiple

TILE_ROWS = 16
CHUNK_K = 64
FC1_TILES = 4  # kNT1 in the kernel: 2 up + 2 gate tiles per item
FC2_TILES = 2  # kNT2
TILE_BYTES = 32 * 16
SCALE_BYTES = 32


def step_bytes(tiles: int) -> int:
    """Bytes of one (expert, tile group, chunk) block: the tiles' weights, then their scale words."""
    return tiles * (TILE_BYTES + SCALE_BYTES)


FC1_STEP_BYTES = step_bytes(FC1_TILES)
FC2_STEP_BYTES = step_bytes(FC2_TILES)
#: largest E8M0 byte the decode multiplies exactly: 2**(byte-1) must be a finite bf16
MAX_SCALE_BYTE = 128
#: where the decode puts a field of a code inside a bf16 half: m, e0, e1, sign (bf16 mantissa bit 6,
#: exponent bits 7 and 8, sign bit 15)
TARGET_BIT = (6, 7, 8, 15)
#: left-rotation of the 32-bit word that brings register j's field f to its target (the decode's shifts:
#: r1 rotr 4, r2 << 6, r3's m << 2 and its other fields rotr 6)
ROTL = ((0, 0, 0, 0), (28, 28, 28, 28), (6, 6, 6, 6), (2, 26, 26, 26))


def source_bit(j: int, i: int, f: int) -> int:
    """Bit of the 32-bit word that holds field ``f`` (0 = m, 1 = e0, 2 = e1, 3 = sign) of register ``aj``'s
    half ``i``."""
    return (TARGET_BIT[f] + 16 * i - ROTL[j][f]) % 32


#: ``SOURCE_BITS[i][j][f]``: all 32 (half, register, field) -> bit of the word, a permutation of 0..31
SOURCE_BITS = tuple(tuple(tuple(source_bit(j, i, f) for f in range(4)) for j in range(4)) for i in range(2))


def _round_up(v: int, m: int) -> int:
    return (v + m - 1) // m * m


# --------------------------------------------------------------------------------------------
# One matrix: rows x K  <->  tiles of (chunk words, chunk scales)
# --------------------------------------------------------------------------------------------
def tile_words(packed: torch.Tensor, scales: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Packed FP4 rows and their E8M0 scales -> per (tile, chunk) lane words and scale words.

    Args:
        packed: uint8 ``[E, N, K/2]`` (element ``2i`` in the low nibble), ``N % 16 == 0``, ``K % 64 == 0``.
        scales: uint8 ``[E, N, K/32]``.
    Returns:
        ``words`` uint8 ``[E, N/16, K/64, 32 lanes, 16]`` and ``swords`` uint8 ``[E, N/16, K/64, 32]``.
    """
    check_dtype(packed, torch.uint8, "packed")
    check_dtype(scales, torch.uint8, "scales")
    if packed.dim() != 3 or scales.dim() != 3:
        raise MXFormatError(f"packed and scales must be [E, N, K/2] and [E, N, K/32], got {tuple(packed.shape)}, "
                            f"{tuple(scales.shape)}")
    e, n, kb = packed.shape
    k = 2 * kb
    check_multiple(n, TILE_ROWS, "packed rows (N)")
    check_multiple(k, CHUNK_K, "packed K (2 * dim 2)")
    if tuple(scales.shape) != (e, n, k // 32):
        raise MXFormatError(f"scales must be [E, N, K/32] = {(e, n, k // 32)}, got {tuple(scales.shape)}")
    codes = torch.stack((packed & 15, packed >> 4), dim=-1).reshape(e, n, k)  # uint8: one byte per code
    t, cn = n // TILE_ROWS, k // CHUNK_K
    # rows: (tile, hi8, g) ; K: (chunk, t, s, h, i)  with  row = 16*tile + 8*hi8 + g,
    # k = 64*chunk + 16*t + 4*s + 2*h + i ; register j = 2*h + hi8, half-word i
    c = codes.view(e, t, 2, 8, cn, 4, 4, 2, 2)
    #            e  T  hi8 g cn t  s  h  i   ->  e, T, cn, g, t, s, i, h, hi8
    c = c.permute(0, 1, 4, 3, 5, 6, 8, 7, 2).reshape(e, t, cn, 32, 4, 2, 4)
    # one (half, register, field) at a time: the temporaries stay at an eighth of the codes (a whole layer of
    # DeepSeek-V4 at once would need tens of GB with every bit expanded)
    word = torch.zeros(e, t, cn, 32, 4, dtype=torch.int32, device=packed.device)
    for i in range(2):
        for j in range(4):
            cij = c[..., i, j]
            for f in range(4):
                word |= ((cij >> f) & 1).to(torch.int32) << SOURCE_BITS[i][j][f]  # 32 distinct bits
    words = word.view(torch.uint8).view(e, t, cn, 32, 16)
    # scales: (tile, hi8, g) x (chunk, th) -> word j = 2*g + th, byte hi8
    sw = scales.view(e, t, 2, 8, cn, 2).permute(0, 1, 4, 3, 5, 2).reshape(e, t, cn, 32)
    return words, sw.contiguous()


def untile_words(words: torch.Tensor, swords: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact inverse of :func:`tile_words`: ``[E, T, C, 32, 16]``, ``[E, T, C, 32]`` -> packed ``[E, 16T, 32C]``,
    scales ``[E, 16T, 2C]``."""
    check_dtype(words, torch.uint8, "words")
    check_dtype(swords, torch.uint8, "swords")
    e, t, cn = words.shape[:3]
    word = words.contiguous().view(torch.int32).view(e, t, cn, 32, 4)
    c = torch.zeros(*word.shape, 2, 4, dtype=torch.uint8, device=words.device)  # [e, T, cn, 32, 4(s), 2(i), 4(j)]
    for i in range(2):
        for j in range(4):
            for f in range(4):
                c[..., i, j] |= (((word >> SOURCE_BITS[i][j][f]) & 1) << f).to(torch.uint8)
    # e, T, cn, (g, t), s, i, (h, hi8)  ->  e, T, hi8, g, cn, t, s, h, i
    c = c.view(e, t, cn, 8, 4, 4, 2, 2, 2).permute(0, 1, 8, 3, 2, 4, 5, 7, 6)
    codes = c.reshape(e, 16 * t, 64 * cn).to(torch.uint8)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    s = swords.view(e, t, cn, 8, 2, 2).permute(0, 1, 5, 3, 2, 4).reshape(e, 16 * t, 2 * cn)
    return packed.contiguous(), s.contiguous()


def _steps(words: torch.Tensor, swords: torch.Tensor, nt: int) -> torch.Tensor:
    """Tiles ``[E, T, C, ...]`` (``T % nt == 0``, already in group order) -> step blocks
    ``[E, T/nt, C, step_bytes(nt)]``: per (group, chunk) the ``nt`` tiles' weights, then their scales."""
    e, t, cn = words.shape[:3]
    w = words.view(e, t // nt, nt, cn, TILE_BYTES).transpose(2, 3).reshape(e, t // nt, cn, nt * TILE_BYTES)
    s = swords.view(e, t // nt, nt, cn, SCALE_BYTES).transpose(2, 3).reshape(e, t // nt, cn, nt * SCALE_BYTES)
    return torch.cat((w, s), dim=-1).contiguous()


def _unsteps(blocks: torch.Tensor, nt: int) -> Tuple[torch.Tensor, torch.Tensor]:
    e, gq, cn, nbytes = blocks.shape
    if nbytes != step_bytes(nt):
        raise MXFormatError(f"step blocks have {nbytes} bytes, {nt} tiles need {step_bytes(nt)}")
    w = blocks[..., : nt * TILE_BYTES].reshape(e, gq, cn, nt, TILE_BYTES).transpose(2, 3)
    s = blocks[..., nt * TILE_BYTES:].reshape(e, gq, cn, nt, SCALE_BYTES).transpose(2, 3)
    return (w.reshape(e, nt * gq, cn, 32, 16).contiguous(), s.reshape(e, nt * gq, cn, 32).contiguous())


# --------------------------------------------------------------------------------------------
# The two GEMMs
# --------------------------------------------------------------------------------------------
def check_scale_range(scales: torch.Tensor, name: str) -> None:
    """The decode multiplies by ``2**(byte-1)`` in bf16: bytes above :data:`MAX_SCALE_BYTE` do not fit."""
    if scales.numel() and int(scales.max()) > MAX_SCALE_BYTE:
        bad = (scales > MAX_SCALE_BYTE).nonzero()[0].tolist()
        raise MXFormatError(
            f"{name}: E8M0 byte {int(scales[tuple(bad)])} at {bad} > {MAX_SCALE_BYTE}: the decode kernel multiplies "
            f"by 2**(byte-1) in bf16 and supports block scales up to 2**1 (weights up to 12 in magnitude)"
        )


def fc1_to_decode(up: torch.Tensor, up_scale: torch.Tensor, gate: torch.Tensor, gate_scale: torch.Tensor) -> torch.Tensor:
    """GEMM1 weights -> ``[E, I/32, H/64, FC1_STEP_BYTES]``.

    Args: ``up``/``gate`` uint8 ``[E, I, H/2]`` (``I % 32 == 0``, ``H % 64 == 0``; pad first), scales
    uint8 ``[E, I, H/32]``. Tile group ``u`` holds up tiles ``2u, 2u+1`` then gate tiles ``2u, 2u+1``.
    """
    check_multiple(up.shape[1], 2 * TILE_ROWS, "fc1 rows per half (I)")
    if up.shape != gate.shape or up_scale.shape != gate_scale.shape:
        raise MXFormatError(f"up {tuple(up.shape)} / gate {tuple(gate.shape)} (and their scales) must match")
    check_scale_range(up_scale, "fc1 up scales")
    check_scale_range(gate_scale, "fc1 gate scales")
    wu, su = tile_words(up, up_scale)
    wg, sg = tile_words(gate, gate_scale)
    e, t, cn = wu.shape[:3]
    # [E, T/2, 2 (up, gate), 2, ...] -> tiles in group order (up 2u, up 2u+1, gate 2u, gate 2u+1)
    w = torch.stack((wu.view(e, t // 2, 2, cn, 32, 16), wg.view(e, t // 2, 2, cn, 32, 16)), 2)
    s = torch.stack((su.view(e, t // 2, 2, cn, 32), sg.view(e, t // 2, 2, cn, 32)), 2)
    return _steps(w.reshape(e, 2 * t, cn, 32, 16), s.reshape(e, 2 * t, cn, 32), FC1_TILES)


def fc1_from_decode(blocks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact inverse of :func:`fc1_to_decode`: ``(up, up_scale, gate, gate_scale)``."""
    w, s = _unsteps(blocks, FC1_TILES)
    e, t2, cn = w.shape[:3]
    w = w.view(e, t2 // 4, 2, 2, cn, 32, 16)
    s = s.view(e, t2 // 4, 2, 2, cn, 32)
    up, up_s = untile_words(w[:, :, 0].reshape(e, t2 // 2, cn, 32, 16), s[:, :, 0].reshape(e, t2 // 2, cn, 32))
    gate, gate_s = untile_words(w[:, :, 1].reshape(e, t2 // 2, cn, 32, 16), s[:, :, 1].reshape(e, t2 // 2, cn, 32))
    return up, up_s, gate, gate_s


def fc2_to_decode(down: torch.Tensor, down_scale: torch.Tensor) -> torch.Tensor:
    """GEMM2 weights uint8 ``[E, H, I/2]`` (``H % 32 == 0``, ``I % 64 == 0``), scales ``[E, H, I/32]`` ->
    ``[E, H/32, I/64, FC2_STEP_BYTES]``."""
    check_multiple(down.shape[1], FC2_TILES * TILE_ROWS, "fc2 rows (H)")
    check_scale_range(down_scale, "fc2 scales")
    return _steps(*tile_words(down, down_scale), FC2_TILES)


def fc2_from_decode(blocks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact inverse of :func:`fc2_to_decode`."""
    return untile_words(*_unsteps(blocks, FC2_TILES))


def padded_sizes(hidden: int, intermediate: int) -> dict:
    """Rows/K the decode layout pads to: fc1 rows per half ``I32`` and K ``H64``; fc2 rows ``H32``, K ``I64``."""
    return {"I32": _round_up(intermediate, 2 * TILE_ROWS), "H64": _round_up(hidden, CHUNK_K),
            "H32": _round_up(hidden, FC2_TILES * TILE_ROWS), "I64": _round_up(intermediate, CHUNK_K)}


# --------------------------------------------------------------------------------------------
# One element, for teaching and plots
# --------------------------------------------------------------------------------------------
def element_location(row: int, k: int) -> dict:
    """Where weight ``(row, k)`` of one matrix lives in the decode layout (before tile grouping).

    Returns ``tile``, ``chunk``, ``lane`` (``4*g + t``), ``word`` (the MMA step), ``half`` (0 = bits 0..15),
    ``register`` (``a0..a3``), the fragment coordinates ``frag_row``/``frag_k`` inside ``mma.m16n8k16``'s
    16 x 16 A tile, the ``sign_bit`` and ``mag_bits`` (m, e0, e1) inside the 32-bit word, and ``byte`` /
    ``bit`` offsets of the sign inside the lane's 16 bytes.
    """
    tile, rr = divmod(row, TILE_ROWS)
    hi8, g = divmod(rr, 8)
    chunk, kk = divmod(k, CHUNK_K)
    t, r = divmod(kk, 16)
    s, r = divmod(r, 4)
    h, i = divmod(r, 2)
    j = hi8 + 2 * h
    sign = source_bit(j, i, 3)
    return {"tile": tile, "chunk": chunk, "lane": 4 * g + t, "word": s, "half": i, "register": f"a{j}",
            "frag_row": g + 8 * hi8, "frag_k": 2 * t + 8 * h + i, "sign_bit": sign,
            "mag_bits": [source_bit(j, i, f) for f in range(3)], "byte": 4 * s + sign // 8, "bit": sign % 8}
