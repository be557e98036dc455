"""Launch configurations of mxfp4lab's Triton MoE kernels: named tiles, decode paths, and the tuning table.

Standard library only (the table is read by the backend, the sm_90a compile report and the tests without
importing Triton).

A :class:`TileConfig` fixes both GEMMs' tiles (they share BLOCK_M: one alignment of the (token, slot)
pairs), warps, pipeline stages and the :class:`DequantPath`. :data:`TILE_TABLE` maps each M bucket
(upper bound of tokens) to its candidates; the first is the bucket's default,
:meth:`mxfp4lab.backends.triton_w4a16.TritonW4A16.tune` times the rest on the GPU and keeps the fastest
one whose output agrees with the default's.

How the table was chosen:

* Decode buckets use BLOCK_M = 16 (``tl.dot``'s minimum): a block per active expert, the weights streamed once.
* Every candidate was screened with an sm_90a compile on the CPU (``mxfp4lab sass``): none
  spills registers on the four model shapes (tested). fc1 holds two accumulators (up, gate), so BLOCK_M >= 32
  tiles need 8 warps; an H100 sweep ran the 4-warp versions of those, which spilled 24-144 bytes per
  thread in fc1.
* :attr:`DequantPath.PTX` halves the SASS instructions of the decode tiles (GPT-OSS-120b fc1 2664 -> 1328,
  fc2 1320 -> 688 at 16x64x128); its bit logic is checked exhaustively on the CPU (tests/test_ptx_decode.py)
  and every candidate on an H200 (``data/results/triton_check/h200.json``). Never a bucket's default.
* :attr:`DequantPath.SWAP_AB_PTX` cuts the K loop further (sm_90a: 16x64x128 fc2 431 -> 393 instructions,
  64x128x64 fc1 606 -> 417 with shared stores 58 -> 6). BLOCK_N is the MMA M there (>= 64 rows per
  warpgroup), BLOCK_M the MMA N; its BLOCK_M 32 tiles do not spill with 4 warps.
* On the H100 the tuner picked the PTX path at every M <= 64 and swap AB at every M >= 256
  (``data/results/latency/h100.json``, column ``tile``).
* Triton's ``tl.dot_scaled`` decode is not a path: on the H100 (Triton 3.6) it gave wrong results (rel err
  1.4, uncorrelated) for 52 of 70 checked (shape, M, tile) points, right exactly when BLOCK_K = 4 x BLOCK_N
  (``data/results/triton_check/h100.json``, ``dequant`` 1). Its value 1 stays unused so recorded tiles keep
  their meaning.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass


class DequantPath(enum.IntEnum):
    """How a kernel turns packed E2M1 bytes + E8M0 scales into the bf16 MMA operand (values as recorded)."""

    #: bit-level decode in plain Triton ops (E2M1 -> fp32 bits, times the scale), then ``tl.dot``
    EXPLICIT = 0
    #: K-parity split (even / odd k) with one PTX block decoding 8 codes per 4 bytes in registers (GPU only)
    PTX = 2
    #: swap AB: ``acc^T = W^T x^T``, the decoded weight is wgmma's A operand from registers; PTX decode (GPU only)
    SWAP_AB_PTX = 3
    #: swap AB with the explicit decode (what SWAP_AB_PTX runs as under the CPU interpreter)
    SWAP_AB_EXPLICIT = 4

    @property
    def swap_ab(self) -> bool:
        return self in (DequantPath.SWAP_AB_PTX, DequantPath.SWAP_AB_EXPLICIT)

    def under_interpreter(self) -> DequantPath:
        """The path Triton's CPU interpreter runs instead (no inline PTX there; the structure is kept)."""
        return DequantPath.SWAP_AB_EXPLICIT if self.swap_ab else DequantPath.EXPLICIT


@dataclass(frozen=True)
class TileConfig:
    """One explicit launch configuration; ``as_list()`` is the form recorded beside timings
    (``[block_m, block_n1, block_k1, block_n2, block_k2, num_warps, num_stages, dequant]``)."""

    block_m: int
    block_n1: int
    block_k1: int
    block_n2: int
    block_k2: int
    num_warps: int = 4
    num_stages: int = 3
    dequant: DequantPath = DequantPath.EXPLICIT

    def __post_init__(self):
        object.__setattr__(self, "dequant", DequantPath(self.dequant))  # ValueError names a bad path

    def check(self, h_pad: int, i_pad: int) -> None:
        """The tile must divide the padded layer and each K block hold whole E8M0 groups."""
        for nm, v in (("block_k1", self.block_k1), ("block_k2", self.block_k2)):
            if v % 32 or v < 32:
                raise ValueError(f"{nm} = {v} must be a positive multiple of 32 (one E8M0 scale per 32)")
        if i_pad % self.block_n1 or i_pad % self.block_k2 or h_pad % self.block_n2 or h_pad % self.block_k1:
            raise ValueError(
                f"tile {self.label} does not divide the padded shape (I_pad={i_pad} % block_n1 / block_k2, "
                f"H_pad={h_pad} % block_n2 / block_k1 must be 0)"
            )

    def with_path(self, dequant: DequantPath) -> TileConfig:
        return dataclasses.replace(self, dequant=dequant)

    def as_list(self) -> list:
        return [self.block_m, self.block_n1, self.block_k1, self.block_n2, self.block_k2, self.num_warps,
                self.num_stages, int(self.dequant)]

    @classmethod
    def from_list(cls, values) -> TileConfig:
        """Inverse of :meth:`as_list` (a recorded tile, or the CLI's ``bm,bn1,bk1,bn2,bk2,warps,stages,dq``)."""
        return cls(*(int(v) for v in values))

    @property
    def label(self) -> str:
        return (f"{self.block_m}x{self.block_n1}x{self.block_k1}/{self.block_n2}x{self.block_k2} "
                f"w{self.num_warps} s{self.num_stages} {self.dequant.name.lower()}")


EXPLICIT, PTX, SWAP_AB_PTX = DequantPath.EXPLICIT, DequantPath.PTX, DequantPath.SWAP_AB_PTX

# -------------------------------------------------------------------- the tile shapes (explicit decode)
#: decode: BLOCK_M 16, N 64, K 128 in both GEMMs
DECODE_N64 = TileConfig(block_m=16, block_n1=64, block_k1=128, block_n2=64, block_k2=128, num_warps=4, num_stages=4)
#: decode, narrower N (more programs for small I)
DECODE_N32 = TileConfig(block_m=16, block_n1=32, block_k1=128, block_n2=32, block_k2=128, num_warps=4, num_stages=4)
#: decode, wider N (fewer programs, longer rows)
DECODE_N128 = TileConfig(block_m=16, block_n1=128, block_k1=128, block_n2=128, block_k2=128, num_warps=4,
                         num_stages=4)
#: BLOCK_M 32 with 8 warps (two fp32 accumulators in fc1)
SMALL_M32 = TileConfig(block_m=32, block_n1=64, block_k1=128, block_n2=64, block_k2=128, num_warps=8, num_stages=4)
#: the same with 4 warps: only for swap AB, whose accumulators are transposed and do not spill
SMALL_M32_W4 = dataclasses.replace(SMALL_M32, num_warps=4)
#: BLOCK_M 32, fc2 N 128 / K 64
MID_M32 = TileConfig(block_m=32, block_n1=64, block_k1=128, block_n2=128, block_k2=64, num_warps=8, num_stages=4)
#: the same with 4 warps (swap AB only)
MID_M32_W4 = dataclasses.replace(MID_M32, num_warps=4)
#: BLOCK_M 64, fc1 N 64 / K 128
MID_M64 = TileConfig(block_m=64, block_n1=64, block_k1=128, block_n2=128, block_k2=64, num_warps=8, num_stages=3)
#: BLOCK_M 64, N 128, K 64 in both GEMMs
PREFILL_M64 = TileConfig(block_m=64, block_n1=128, block_k1=64, block_n2=128, block_k2=64, num_warps=8,
                         num_stages=3)
#: BLOCK_M 128, N 128, K 64
PREFILL_M128 = dataclasses.replace(PREFILL_M64, block_m=128)

#: M upper bound of each bucket -> candidates (first = the bucket's default, always the explicit decode).
TILE_TABLE: dict[int, tuple[TileConfig, ...]] = {
    16: (DECODE_N64, DECODE_N32, DECODE_N64.with_path(PTX), DECODE_N128.with_path(PTX),
         DECODE_N64.with_path(SWAP_AB_PTX), DECODE_N128.with_path(SWAP_AB_PTX)),
    64: (DECODE_N64, SMALL_M32, DECODE_N64.with_path(PTX), SMALL_M32.with_path(PTX),
         DECODE_N64.with_path(SWAP_AB_PTX), SMALL_M32_W4.with_path(SWAP_AB_PTX)),
    512: (MID_M32, MID_M64, MID_M32.with_path(PTX), PREFILL_M64.with_path(PTX),
          MID_M32_W4.with_path(SWAP_AB_PTX), PREFILL_M64.with_path(SWAP_AB_PTX)),
    2048: (PREFILL_M64, MID_M64, PREFILL_M64.with_path(PTX), PREFILL_M64.with_path(SWAP_AB_PTX)),
    1 << 62: (PREFILL_M128, PREFILL_M64, PREFILL_M128.with_path(PTX), PREFILL_M128.with_path(SWAP_AB_PTX)),
}
#: Tiny tiles for the CPU interpreter (tests): a handful of programs, each a few numpy ops.
INTERPRET_TILE = TileConfig(block_m=16, block_n1=32, block_k1=64, block_n2=32, block_k2=64, num_warps=4, num_stages=1)


def bucket_of(m: int) -> int:
    """The :data:`TILE_TABLE` bucket of ``m`` tokens (the smallest upper bound >= m)."""
    return next(b for b in sorted(TILE_TABLE) if m <= b)


def table_tiles(bucket: int | None = None) -> list[TileConfig]:
    """Every distinct tile of the table (or of one bucket), sorted by :meth:`TileConfig.as_list`."""
    seen = {t for b, ts in TILE_TABLE.items() if bucket in (None, b) for t in ts}
    return sorted(seen, key=TileConfig.as_list)
