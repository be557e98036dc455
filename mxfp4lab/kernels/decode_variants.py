"""The decode kernel's launch variants (``MXFP4LAB_DECODE_VARIANTS`` in ``csrc/decode_w4a16.cu``): what each one
launches, and which variant's output another's must equal bit for bit.

:data:`VARIANTS` mirrors the CUDA table (the library's ``mxfp4lab_decode_w4a16_variant`` codes are checked against
:attr:`Variant.code` when it is loaded); :func:`twin_of` names the variant a schedule-only change must reproduce
exactly (``scripts/gpu/check_decode.py``). Host side of the kernel: :mod:`mxfp4lab.kernels.decode_w4a16`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from ..layout.decode_w4a16 import FC1_TILES, FC2_TILES


@dataclass(frozen=True)
class Variant:
    """One compiled launch variant (``MXFP4LAB_DECODE_VARIANTS`` in the CUDA source)."""

    token_groups: int  # G: up to 8 G tokens per item (one m16n8k16 N block each)
    ctas_per_sm: int  # 2: two CTAs of 8 warps per SM, so one CTA's epilogue overlaps the other's streaming
    depth: int  # cp.async ring stages per warp
    red_buffers: int  # 2: double-buffered partial sums, one barrier per item
    #: L2 staging bits: 1 = fc1 prefetches fc2's weights into L2 (up to :data:`~mxfp4lab.kernels.decode_w4a16.L2_PREFETCH_SHARE` of the L2,
    #: split over the CTAs), 2 = fc1 streams its own weights with L2 evict_first, 4 = the prefetch of bit 1 issued
    #: once an fc1 CTA has read its own weights (late staging: while it reduces, stores and leaves), 8 = fc1
    #: prefetches its first item's epilogue inputs (bias rows, per-expert alpha, beta, limit) into L1 right after
    #: routing. No arithmetic changes.
    l2: int = 0
    #: compact activation rows (G = 1): up to this many tokens per item, and a ring stage holds only their rows
    #: (lanes of the MMA's other token columns feed zeros), so the ring runs deeper; 0 = 8 G token rows
    token_rows: int = 0
    #: fc2's own ring depth and token rows (None: fc1's). fc2 copies the weights of its first ``depth - 1``
    #: steps before it waits for fc1, so a deeper fc2 ring streams more of its weights while fc1 ends.
    fc2_depth: Optional[int] = None
    fc2_token_rows: Optional[int] = None
    #: fc1 and fc2 as one cooperative launch with a grid barrier between them: a CTA done with fc1 copies its
    #: first fc2 steps' weights while the others finish (no second launch, no kernel boundary). Wide items (mma.sync):
    #: one cooperative grid whose CTAs run their fc1 items, then their fc2 items, each fc2 item once every fc1 item of
    #: its expert is stored (a ready counter per expert), not after fc1's whole grid; both GEMMs' items form one
    #: round-robin sequence, so the CTAs with fewer fc1 items take fc2's first ones (the same sums)
    fused: bool = False
    #: dynamic items, bit 0 in fc1 and bit 1 in fc2 (3: both): CTAs claim items from a counter shared by the grid
    #: (one atomic per item) instead of a fixed contiguous range, so CTAs on faster-streaming SMs take more and
    #: the grid ends together; in fc2, whose CTAs start as fc1's leave, the CTAs that start first take the items
    dynamic: int = 0
    #: split grid: fc1 takes this many of the ``ctas_per_sm`` CTA slots of every SM and fc2 the others, so that
    #: fc2's CTAs are resident from fc1's start and copy the weights of their first ``depth2 - 1`` steps while
    #: fc1 streams (0: each GEMM launches SMs x ``ctas_per_sm`` CTAs). fc2's items stay static ranges.
    split: int = 0
    #: 16-row tiles per item of fc1 and of fc2 (the kernel's ItemTiles): the layout's tile groups
    #: (:data:`FC1_TILES` = 4: 2 up + 2 gate tiles, :data:`FC2_TILES` = 2), or fc1 half of one (2: an up and a gate
    #: tile, half the accumulators, so that 16 tokens per item fit three CTAs per SM) and fc2 two of them (4: half
    #: the items, a warp's per-step work -- copies, addresses, the loop -- spread over twice the weights).
    #: Which tiles an item holds changes no sum. Wide items: a warp's tiles -- fc1 4 (a layout group) or 2 (half of
    #: one: an up and the gate tile of the same 16 rows), fc2 4 (two layout groups) or 2 (one); 2 (twice the items,
    #: half the accumulators) with mma.sync only.
    fc1_tiles: int = FC1_TILES
    fc2_tiles: int = FC2_TILES
    #: wide items (``decode_w4a16_wide.cuh``; 0: the split-K items above): each warp owns 4 tiles (fc1 a layout group,
    #: fc2 two) and 32 tokens over the whole K, ``wide`` warps of a CTA share a row group, so an item holds 32 ``wide``
    #: tokens (``token_groups`` = 4 ``wide``) and 8 / ``wide`` row groups; a CTA-wide ring of ``depth`` stages. For many
    #: tokens per expert: weights decoded once per 32 tokens, activations read once per 8 / ``wide`` row groups, no
    #: cross-warp reduction. Another fp32 summation order than the split-K items (its own twin). ``token_groups`` =
    #: 2 ``wide`` (mma.sync only): 16 tokens per warp (2 N blocks, 32 accumulators), so that two CTAs fit an SM and an
    #: expert with 9-16 tokens decodes its weights once.
    wide: int = 0
    #: wide items whose MMAs are ``wgmma.mma_async`` (A, the decoded weights, from registers; the token tile from
    #: shared memory) instead of ``mma.sync``: a warpgroup issues one m64nNk16 per tile for its 4 warps' rows and a warp
    #: decodes the next MMA step while the tensor cores run this one. Another summation inside the MMA (its own twin).
    #: 2: split tiles (``wide`` = 2): the two warps of a row group each own 2 of its 4 tiles (fc1: an up and a gate
    #: tile; fc2: one layout group) and all 64 tokens, so a weight is decoded once per 64 tokens and the MMA's N is the
    #: item's tokens (up to 64) instead of 32 per warp. 3: split tiles of 128 tokens (``token_groups`` = 16): a weight
    #: decoded once per 128 tokens, 128 accumulators per lane, N above 64 rounded up to 96 or 128. 5: warp-specialized
    #: items of 128 tokens (``decode_w4a16_ws.cuh``): a producer warpgroup copies each chunk's weights and token rows
    #: and decodes the weights into shared memory, ``wide`` consumer warpgroups (2 or 4; 64 weight rows each) run
    #: wgmma with both operands in shared memory, 64 accumulators per lane, the chunk's natural K order in the MMA; a
    #: 4-stage ring with token rows two chunks ahead and raw weights three (4, dropped: a chunk freed only after the
    #: next one's MMAs were issued). 6: 5 with two producer warpgroups (``wide`` = 2: 512 threads; each producer warp
    #: copies and decodes one tile per chunk): the same sums. 7: warp-specialized items of 128 tokens with the decode
    #: on the consumers (``decode_w4a16_wsr.cuh``): the producer warpgroup only copies (raw weights and token rows, into
    #: a ring), each consumer warp decodes its own 16-row tile's A fragments in registers and its warpgroup
    #: runs wgmma with A from registers (64 accumulators per lane): the MMAs of 3's items, the same sums. Its ring is
    #: ``depth`` stages deep (3 to 6), the producer ``depth - 1`` chunks ahead.
    wgmma: int = 0

    @property
    def depth2(self) -> int:
        return self.depth if self.fc2_depth is None else self.fc2_depth

    @property
    def token_rows2(self) -> int:
        return self.token_rows if self.fc2_token_rows is None else self.fc2_token_rows

    @property
    def code(self) -> int:
        """This variant's entry of the library's table (``mxfp4lab_decode_w4a16_variant``), less the id."""
        return (self.token_groups // 10 * 10**18 + int(self.wgmma) * 10**17 + self.wide * 10**16 + self.fc2_tiles * 10**15 + self.fc1_tiles * 10**14
                + self.split * 10**13 + int(self.dynamic) * 10**12
                + int(self.fused) * 10**11 + self.token_rows2 * 10**10 + self.depth2 * 10**8 + self.token_rows * 10**7 + self.l2 * 10**6
                + self.token_groups % 10 * 1000 + self.ctas_per_sm * 100 + self.depth * 10 + self.red_buffers)


VARIANTS = {1: Variant(1, 1, 6, 2), 2: Variant(1, 2, 3, 1), 3: Variant(2, 1, 4, 2), 4: Variant(4, 1, 2, 1),
            5: Variant(1, 3, 2, 1), 6: Variant(2, 2, 2, 1),
            7: Variant(1, 3, 2, 1, 3), 8: Variant(1, 3, 2, 1, 1), 9: Variant(1, 1, 6, 2, 3),
            10: Variant(1, 2, 3, 1, 3), 11: Variant(2, 2, 2, 1, 3),
            12: Variant(1, 3, 3, 1, token_rows=2), 13: Variant(1, 2, 5, 2, token_rows=2),
            14: Variant(1, 4, 2, 1, token_rows=2),
            15: Variant(1, 3, 2, 1, fc2_depth=6, fc2_token_rows=2), 16: Variant(1, 4, 2, 1, token_rows=2, fc2_depth=4),
            17: Variant(1, 3, 3, 1, token_rows=2, fc2_depth=6),
            18: Variant(1, 3, 2, 1, fc2_depth=6, fc2_token_rows=2, fused=True),
            19: Variant(1, 4, 2, 1, token_rows=2, fc2_depth=4, fused=True),
            20: Variant(1, 3, 3, 1, token_rows=2, fc2_depth=6, fused=True),
            21: Variant(1, 3, 2, 1, dynamic=3), 22: Variant(1, 3, 2, 1, fc2_depth=6, fc2_token_rows=2, dynamic=3),
            23: Variant(1, 4, 2, 1, token_rows=2, dynamic=3), 24: Variant(4, 1, 2, 1, dynamic=3),
            25: Variant(1, 2, 4, 1, token_rows=2, fc2_depth=12, dynamic=1, split=1),
            26: Variant(1, 4, 2, 1, token_rows=2, fc2_depth=7, split=3),
            27: Variant(1, 3, 2, 1, fc2_depth=7, fc2_token_rows=2, split=2),
            28: Variant(1, 3, 2, 1, token_rows=2, fc2_depth=11, split=2),
            29: Variant(1, 3, 3, 1, token_rows=2, fc2_depth=8, split=2),
            30: Variant(1, 3, 2, 1, fc2_depth=6, fc2_token_rows=2, dynamic=2),
            31: Variant(1, 3, 3, 1, token_rows=2, fc2_depth=6, dynamic=2),
            32: Variant(1, 3, 2, 1, fc2_depth=7, fc2_token_rows=1, dynamic=2),
            33: Variant(1, 3, 2, 1, 4, fc2_depth=6, fc2_token_rows=2),
            34: Variant(1, 3, 2, 1, 8, fc2_depth=6, fc2_token_rows=2),
            35: Variant(1, 3, 2, 1, 8, fc2_depth=6, fc2_token_rows=2, dynamic=2),
            36: Variant(1, 3, 2, 1, 8, fc2_depth=6, fc2_token_rows=2, dynamic=3),
            37: Variant(1, 3, 2, 1, dynamic=3, fc2_tiles=4), 38: Variant(1, 3, 2, 1, fc2_tiles=4),
            39: Variant(2, 3, 2, 1, dynamic=3, fc1_tiles=2), 40: Variant(2, 3, 2, 1, fc1_tiles=2),
            41: Variant(1, 3, 2, 1, fc2_depth=3, fc2_token_rows=2, fc2_tiles=4),
            42: Variant(4, 1, 4, 1, fc2_tiles=4, wide=1), 43: Variant(8, 1, 4, 1, fc2_tiles=4, wide=2),
            44: Variant(4, 1, 6, 1, fc2_tiles=4, wide=1),
            46: Variant(4, 1, 4, 1, fc2_tiles=4, wide=1, wgmma=1), 47: Variant(8, 1, 4, 1, fc2_tiles=4, wide=2, wgmma=1),
            48: Variant(4, 1, 6, 1, fc2_tiles=4, wide=1, wgmma=1),
            49: Variant(8, 1, 4, 1, fc2_tiles=4, wide=2, wgmma=2), 50: Variant(8, 1, 6, 1, fc2_tiles=4, wide=2, wgmma=2),
            51: Variant(8, 2, 4, 1, fc2_tiles=4, wide=2, wgmma=2), 52: Variant(4, 2, 3, 1, fc2_tiles=4, wide=1, wgmma=1),
            53: Variant(8, 2, 3, 1, fc2_tiles=4, wide=2, wgmma=2),
            56: Variant(16, 1, 4, 1, fc2_tiles=4, wide=2, wgmma=3), 57: Variant(16, 1, 3, 1, fc2_tiles=4, wide=2, wgmma=3),
            70: Variant(2, 2, 4, 1, fc2_tiles=4, wide=1), 72: Variant(2, 2, 4, 1, fc2_tiles=2, wide=1),
            73: Variant(2, 2, 4, 1, fc2_tiles=4, wide=1, fused=True),
            74: Variant(2, 2, 4, 1, fc2_tiles=2, wide=1, fused=True),
            75: Variant(2, 3, 3, 1, fc1_tiles=2, fc2_tiles=2, wide=1),
            76: Variant(2, 3, 3, 1, fc1_tiles=2, fc2_tiles=2, wide=1, fused=True),
            79: Variant(16, 1, 4, 1, fc2_tiles=4, wide=4, wgmma=5), 80: Variant(16, 1, 4, 1, fc2_tiles=4, wide=2, wgmma=5),
            81: Variant(16, 1, 4, 1, fc2_tiles=4, wide=2, wgmma=6),
            82: Variant(2, 2, 4, 1, fc2_tiles=2, wide=1, fused=True, dynamic=2),
            83: Variant(2, 2, 4, 1, fc2_tiles=2, wide=1, fused=True, dynamic=3),
            84: Variant(2, 2, 4, 1, fc1_tiles=2, fc2_tiles=2, wide=1, fused=True, dynamic=3),
            85: Variant(16, 1, 4, 1, fc2_tiles=4, wide=4, wgmma=7),
            86: Variant(16, 1, 4, 1, fc2_tiles=4, wide=2, wgmma=7),
            87: Variant(16, 1, 6, 1, fc2_tiles=4, wide=2, wgmma=7)}


def unstaged_twin(variant: int) -> int:
    """The variant without L2 staging that launches the same kernels as ``variant`` (itself if unstaged)."""
    v = VARIANTS[variant]
    if not v.l2:
        return variant
    return next(i for i, u in VARIANTS.items() if not u.l2 and dataclasses.replace(u, l2=v.l2) == v)


def twin_of(variant: int) -> int:
    """The variant whose output ``variant`` must equal bit for bit (itself if none): an L2-staged variant's
    unstaged twin, a fused launch's two-launch twin, a dynamic-items variant's static twin, a split grid's first
    plain variant with the same token rows per item (the same GEMM arithmetic per item, another schedule), and a
    variant whose items hold other tiles than the layout's groups the same variant with the layout's (else the
    first plain one with its token rows): which tiles an item holds changes no sum."""
    v = VARIANTS[variant]
    if v.wide:  # another summation order than every split-K variant. With 16 tokens per warp (mma.sync) each output is
        # one warp's MMA chain over K in chunk order whatever tiles the warp holds (fc1 half a layout group or one, fc2
        # one or two), however many CTAs share an SM, however deep the ring, and whether both GEMMs run as one grid
        # (fused): the bits of the first such variant with whole tiles and two launches (70)
        if v.wgmma == 0 and v.token_groups == 2 * v.wide:
            return next(i for i, u in VARIANTS.items() if u.wide == v.wide and u.wgmma == 0 and not u.fused
                        and u.token_groups == v.token_groups and (u.fc1_tiles, u.fc2_tiles) == (FC1_TILES, 2 * FC2_TILES))
        if v.wgmma == 6:  # two producer warpgroups: the same MMAs in the same order as one producer's (5)
            return next(i for i, u in VARIANTS.items() if u == dataclasses.replace(v, wgmma=5))
        if v.wgmma == 7:  # the decode on the consumers: per output the MMAs of the 128-token items (3), A fragments,
            # token rows, K order and chunk order alike, whatever the item's rows, its token split or the MMA's N
            return next(i for i, u in VARIANTS.items() if u.wgmma == 3)
        return variant

    def plain(w: Variant) -> bool:  # one schedule of its own: no staging, fused launch, dynamic items or split grid
        return not (w.fused or w.dynamic or w.split or w.l2)

    def plain_like(u: Variant) -> int:  # the first plain variant of the layout's tiles with u's token rows per item
        return next(i for i, w in VARIANTS.items() if plain(w) and (w.fc1_tiles, w.fc2_tiles) == (FC1_TILES, FC2_TILES)
                    and (w.token_groups, w.token_rows, w.token_rows2) == (u.token_groups, u.token_rows, u.token_rows2))

    if v.l2 and (v.split or v.fused or v.dynamic):  # a staged schedule: its unstaged variant's twin
        return twin_of(next(i for i, u in VARIANTS.items() if u == dataclasses.replace(v, l2=0)))
    if v.split:  # another grid and depth, the same token rows per item
        return plain_like(v)
    if v.fused or v.dynamic:
        plains = {i: u for i, u in VARIANTS.items() if plain(u)}
        schedule = dict(fused=v.fused, dynamic=v.dynamic)
        # the same rings; else (32) the one that differs only in fc2's ring depth and token rows -- a slot's token
        # rows decide which lanes load zeros, not what a token's sums are
        ring = dict(schedule, fc2_depth=v.fc2_depth, fc2_token_rows=v.fc2_token_rows)
        exact = [i for i, u in plains.items() if dataclasses.replace(u, **schedule) == v]
        return (exact or [i for i, u in plains.items() if dataclasses.replace(u, **ring) == v])[0]
    if (v.fc1_tiles, v.fc2_tiles) != (FC1_TILES, FC2_TILES):  # the layout's tile groups per item
        whole = dataclasses.replace(v, fc1_tiles=FC1_TILES, fc2_tiles=FC2_TILES)
        return next((i for i, u in VARIANTS.items() if u == whole), None) or plain_like(v)
    return unstaged_twin(variant)
