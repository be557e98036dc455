"""The warp-specialized wide items with the decode on the consumers (variants with ``wgmma`` 7:
``mxfp4lab/kernels/csrc/decode_w4a16_wsr.cuh``) read back on the CPU, through the kernel's own index map.

The producer warpgroup copies each consumer warp's tile (codes and scales) byte for byte into a ring stage and the
item's token rows into a WgmmaTile; each consumer warp decodes its own tile's A fragments as every register-A variant
does. Here ``WsrMap`` (host-compiled from the CUDA source) places every byte as the kernel does, the consumer's tile is
read back lane by lane (:func:`decode_reading.tile_chunk_products`: the kernel's decode expressions and the PTX ISA's
fragment maps), and its products must be exactly the dequantized weights of the rows its epilogue stores under --
written from :func:`mxfp4lab.formats.dequantize_mxfp4`, not from the kernel's map.
"""

from __future__ import annotations

import json
import re

import decode_reading as dr
import numpy as np
import pytest
import torch
from conftest import rand_u8

from mxfp4lab.formats import dequantize_mxfp4
from mxfp4lab.layout import decode_w4a16 as L

WSR_SOURCE = dr.SOURCE.with_name("decode_w4a16_wsr.cuh")


def _struct(src: str, head: str) -> str:
    start = src.index(head)
    return src[start : src.index("\n};\n", start) + 4]


def wsr_map(tmp_path, nc: int, fc1: bool) -> dict:
    """WsrMap<nc, fc1>, WsrSmem<nc> and WgmmaTile, host-compiled from the CUDA source, as JSON (row block 1)."""
    wide, wsr = dr.WIDE_SOURCE.read_text(), WSR_SOURCE.read_text()
    prog = ("#include <cstdint>\n#include <cstdio>\n#define __device__\n#define __forceinline__ inline\n"
            "constexpr int kChunkK = 64, kTileBytes = 512, kScaleBytes = 32, kNT1 = 4, kNT2 = 2;\n"
            + _struct(wide, "struct WgmmaTile {") + _struct(wsr, "template <int NC>\nstruct WsrSmem {")
            + _struct(wsr, "template <int NC, bool FC1>\nstruct WsrMap {") + f"""
using M = WsrMap<{nc}, {'true' if fc1 else 'false'}>;
using S = WsrSmem<{nc}>;
int main() {{
  std::printf("{{\\"kAct\\": %d, \\"kStage\\": %d, \\"kSwap\\": %d, \\"group\\": [", S::kAct, S::kStage, S::kSwap);
  for (int c = 0; c < {nc}; ++c) for (int w = 0; w < 4; ++w) std::printf("%s%d", c + w ? "," : "", M::group(1, c, w));
  std::printf("], \\"src\\": [");
  for (int w = 0; w < 4; ++w) std::printf("%s%d,%d", w ? "," : "", M::tile_src(w), M::scale_src(w));
  std::printf("], \\"raw\\": [");
  for (int c = 0; c < {nc}; ++c) for (int w = 0; w < 4; ++w)
    std::printf("%s%d,%d", c + w ? "," : "", M::raw_tile(c, w), M::raw_scale(c, w));
  std::printf("], \\"act\\": [");
  for (int t = 0; t < 128; ++t) for (int i = 0; i < 8; ++i)  // row, piece, the kernel's address, dst of the row
    std::printf("%s%d,%d,%u,%u", t + i ? "," : "", M::act_row(t, i), M::act_piece(t),
                WgmmaTile::dst(M::act_row(t, 0), M::act_piece(t), 0) + i * 2 * WgmmaTile::kSbo,
                WgmmaTile::dst(M::act_row(t, i), M::act_piece(t), 0));
  std::printf("], \\"out_row\\": [");
  for (int c = 0; c < {nc}; ++c) for (int w = 0; w < 4; ++w) for (int g = 0; g < 8; ++g) for (int hr = 0; hr < 2; ++hr)
    std::printf("%s%d", c + w + g + hr ? "," : "", M::out_row(1, c, w, g, hr));
  std::printf("], \\"swap\\": [");
  for (int w = 0; w < 4; ++w) for (int l = 0; l < 32; ++l) for (int k = 0; k < 8; ++k)
    std::printf("%s%d", w + l + k ? "," : "", M::swap_at(w, l, k));
  std::printf("]}}\\n");
}}
""")
    m = json.loads(dr._run_host(tmp_path, f"wsr_map_{nc}_{int(fc1)}", prog))
    m["group"] = np.array(m["group"]).reshape(nc, 4)
    m["src"] = np.array(m["src"]).reshape(4, 2)
    m["raw"] = np.array(m["raw"]).reshape(nc, 4, 2)
    m["act"] = np.array(m["act"]).reshape(128, 8, 4)
    m["out_row"] = np.array(m["out_row"]).reshape(nc, 4, 8, 2)
    m["swap"] = np.array(m["swap"]).reshape(4, 32, 8)
    return m


def _stage(blocks: torch.Tensor, m: dict, nc: int, chunk: int) -> np.ndarray:
    """A ring stage's raw bytes (after the token tile) for one chunk of row block 1 of expert 0, as the producer warps
    copy them: warp pw serves consumer warpgroup c = pw nc / 4, tiles t0 .. t0 + nc - 1 (t0 = (pw % (4 / nc)) nc), its
    lane L 16 bytes of each at 16 L, and lanes L < 2 nc the tiles' scales (tile t0 + L / 2, half L % 2). -1: a byte no
    copy wrote."""
    pt = nc
    raw = np.full(4 * nc * (512 + 32), -1, dtype=np.int64)
    written = np.zeros_like(raw)

    def put(dst, src):
        raw[dst : dst + 16] = src
        written[dst : dst + 16] += 1

    for pw in range(4):
        c, t0 = pw * pt // 4, (pw % (4 // pt)) * pt
        for lane in range(32):
            for i in range(pt):
                u = t0 + i
                step = blocks[0, m["group"][c, u], chunk].numpy()
                put(m["raw"][c, u, 0] + 16 * lane, step[m["src"][u, 0] + 16 * lane : m["src"][u, 0] + 16 * lane + 16])
            if lane < 2 * pt:
                u = t0 + lane // 2
                step = blocks[0, m["group"][c, u], chunk].numpy()
                h = 16 * (lane & 1)
                put(m["raw"][c, u, 1] + h, step[m["src"][u, 1] + h : m["src"][u, 1] + h + 16])
    assert (written == 1).all(), "every raw byte of the stage copied exactly once"
    return raw


@pytest.mark.parametrize("nc", [4, 2])
@pytest.mark.parametrize("fc1", [True, False])
def test_wsr_consumer_tiles_multiply_the_rows_the_epilogue_stores(tmp_path, nc, fc1):
    """Each consumer warp's tile, as the producer copies it and the consumer decodes it (its lane's 16 bytes at
    raw_tile + 16 lane, its scale bytes at raw_scale + (2 g + tl / 2) * 2), multiplies 8 tokens' chunk elements into
    exactly the products of the dequantized weights of the rows out_row names: fc1 warps 0, 1 the up rows and 2, 3 the
    gate rows of the same intermediate rows, fc2 the output rows. Random codes and scales, row block 1, the last
    chunk; values small enough that float64 sums are exact."""
    src = WSR_SOURCE.read_text()
    # what the models here replay: the producer's copies and the consumer's reads
    assert "cp_async16(raw + Map::raw_tile(c, u) + lane * 16, w + Map::tile_src(u) + lane * 16, true);" in src
    assert ("cp_async16(raw + Map::raw_scale(c, u) + (lane & 1) * 16, w + Map::scale_src(u) + (lane & 1) * 16, true);"
            in src)
    assert "const uint32_t tile = S::kAct + Map::raw_tile(c, w), scales = S::kAct + Map::raw_scale(c, w);" in src
    assert "const uint4 wv = lds128(stage + tile + lane * 16);" in src
    assert "const uint32_t sa = stage + scales + (g * 2 + (tl >> 1)) * 2;" in src
    assert re.search(r"decode_word\(st == 0 \? wv\.x : st == 1 \? wv\.y : st == 2 \? wv\.z : wv\.w, "
                     r"r0, r1, r2, r3\);", src)
    assert "{hmul2_bf16(r0, f_lo), hmul2_bf16(r1, f_hi), hmul2_bf16(r2, f_lo), hmul2_bf16(r3, f_hi)}" in src
    m = wsr_map(tmp_path, nc, fc1)
    chunks, groups = 2, 2 * (nc if fc1 else 2 * nc)  # two row blocks
    k = 64 * chunks
    rows = 32 * groups
    if fc1:
        up, gate = rand_u8(1, rows, k // 2, seed=1), rand_u8(1, rows, k // 2, seed=2)
        us, gs = rand_u8(1, rows, k // 32, seed=3, lo=118, hi=129), rand_u8(1, rows, k // 32, seed=4, lo=118, hi=129)
        blocks = L.fc1_to_decode(up, us, gate, gs)
        w_up, w_gate = dequantize_mxfp4(up, us)[0].double().numpy(), dequantize_mxfp4(gate, gs)[0].double().numpy()
    else:
        down, ds = rand_u8(1, rows, k // 2, seed=5), rand_u8(1, rows, k // 32, seed=6, lo=118, hi=129)
        blocks = L.fc2_to_decode(down, ds)
        w_down = dequantize_mxfp4(down, ds)[0].double().numpy()
    assert blocks.shape[1:3] == (groups, chunks)
    raw = _stage(blocks, m, nc, chunks - 1)
    x = np.random.default_rng(7).integers(-16, 17, size=(8, 64)) / 8.0  # 8 tokens' chunk elements
    cols = 64 * (chunks - 1) + np.arange(64)
    for c in range(nc):
        for w in range(4):
            tile, scales = m["raw"][c, w]
            block = np.concatenate([raw[tile : tile + 512], raw[scales : scales + 32]]).astype(np.uint8)
            got = dr.tile_chunk_products(block, 0, x, tiles_per_group=1)  # [16 rows g + 8 hr, 8 tokens]
            for g in range(8):
                for hr in range(2):
                    row = m["out_row"][c, w, g, hr]
                    weights = (w_gate if w >= 2 else w_up) if fc1 else w_down
                    want = weights[row, cols] @ x.T
                    assert np.array_equal(got[g + 8 * hr], want), (c, w, g, hr)
    # each warpgroup stores its own rows: fc1 its layout group's 32 intermediate rows (up and gate warps alike), fc2
    # its 64 output rows; together the row block's
    per = 32 if fc1 else 64
    for c in range(nc):
        mine = m["out_row"][c] if not fc1 else m["out_row"][c, :2]
        assert sorted(mine.flatten().tolist()) == list(range(per * (nc + c), per * (nc + c + 1))), c
    if fc1:  # the SwiGLU's pairs: gate warp w + 2 holds the rows of up warp w
        assert np.array_equal(m["out_row"][:, 2:], m["out_row"][:, :2])


@pytest.mark.parametrize("nc", [4, 2])
def test_wsr_token_copies_fill_the_wgmma_tile_once(tmp_path, nc):
    """The producer's token-row copies (act_row, act_piece: 128 threads x 8 copies of 16 bytes) cover the 128 x 8
    pieces of a chunk exactly once, rows grow with the copy index (the early exit at the padded N skips only rows past
    it), and the kernel's address arithmetic (copy 0's WgmmaTile::dst plus i 2 SBO) is WgmmaTile::dst of copy i's row:
    the tile whose wgmma reads test_wgmma_token_tile_meets_the_decoded_fragments_k_order checks. The tile sits at the
    start of a stage, the raw bytes after it."""
    m = wsr_map(tmp_path, nc, True)
    act = m["act"]
    assert {(r, j) for r, j in act[:, :, :2].reshape(-1, 2).tolist()} == {(r, j) for r in range(128) for j in range(8)}
    assert act.shape[0] * act.shape[1] == 1024
    assert (np.diff(act[:, :, 0], axis=1) > 0).all()
    assert np.array_equal(act[:, :, 2], act[:, :, 3])
    assert m["kAct"] == 128 * 128 and m["kStage"] == m["kAct"] + 4 * nc * (512 + 32)
    assert (m["raw"] >= 0).all() and (m["raw"][..., 1] + 32 <= 4 * nc * 544).all()
    assert m["kStage"] % 16 == 0  # every stage's token tile 16-byte aligned (the descriptor's start address)


def test_wsr_swap_buffer_pairs_up_and_gate_lanes(tmp_path):
    """fc1's swap buffer: up warp w (< 2) stores slot k of lane L where gate warp w + 2 loads it (the same byte), the
    two up warps' 2 x 32 lanes x 8 slots of 16 bytes fill the warpgroup's buffer exactly, and the 8 lanes of a quarter
    warp store one 128-byte run (no bank conflicts)."""
    m = wsr_map(tmp_path, 4, True)
    swap = m["swap"]
    assert np.array_equal(swap[2:], swap[:2])
    addrs = swap[:2].flatten()
    assert sorted(addrs.tolist()) == list(range(0, m["kSwap"], 16))
    for w in range(2):
        for k in range(8):
            for q in range(4):
                run = sorted(swap[w, 8 * q : 8 * q + 8, k].tolist())
                assert run[0] % 128 == 0 and run == list(range(run[0], run[0] + 128, 16)), (w, k, q)


class _Barrier:
    """An mbarrier (PTX ISA 9.7.13.15): a phase completes when ``count`` arrivals have come; try_wait.parity(p)
    succeeds once the phase of parity p has completed, i.e. while the current phase's parity is not p."""

    def __init__(self, count):
        self.count, self.pending, self.phase = count, count, 0

    def arrive(self):
        self.pending -= 1
        assert self.pending >= 0
        if self.pending == 0:
            self.phase, self.pending = self.phase + 1, self.count

    def done(self, parity):
        return (self.phase & 1) != parity


def _ring_run(r, chunks, items, fc1, producers, consumers, rng):
    """wsr_kernel's ring, as its source orders it (the lines test_wsr_ring_never_reuses_a_busy_stage pins), run by
    ``producers`` producer threads and ``consumers`` consumer warps interleaved at random. Copies land in commit order
    at random times. Returns the violations seen (empty: none) or "deadlock"."""
    total = items * chunks
    full = [_Barrier(producers) for _ in range(r)]
    empty = [_Barrier(consumers) for _ in range(r)]
    stage = [[None] * producers for _ in range(r)]  # the chunk each producer's landed copies hold, per stage
    released = [set() for _ in range(consumers)]  # the chunks each consumer warp is done with
    errors = []

    def producer(p):
        groups = []  # committed cp.async groups, oldest first: lists of chunks

        def issue(c):  # copy chunk c into stage c % r: every consumer must be done with chunk c - r
            if c >= r and not all(c - r in done for done in released):
                errors.append(f"producer {p} copied chunk {c} into stage {c % r} while chunk {c - r} is in use")
            return c

        def land_until(pending):
            while len(groups) > pending:
                for c in groups.pop(0):
                    stage[c % r][p] = c
                yield "land"

        if fc1:
            for c in range(min(r - 1, total)):
                groups.append([issue(c)])
                yield "issue"
            for _ in range(r - 1 - min(r - 1, total)):
                groups.append([])
        else:
            groups.append([issue(c) for c in range(min(r - 1, total))])
            groups.extend([] for _ in range(r - 2))
            yield "issue"
        for q in range(total):
            yield from land_until(r - 2)  # cp_async_wait<R - 2>
            full[q % r].arrive()
            if q + r - 1 < total:
                if q >= 1:
                    while not empty[(q - 1) % r].done(((q - 1) // r) & 1):
                        yield "wait"
                groups.append([issue(q + r - 1)])
            else:
                groups.append([])
            yield "step"
            if rng.random() < 0.3:  # copies land on their own, in order
                yield from land_until(max(0, len(groups) - 1))

    def consumer(w):
        q = 0
        for _ in range(items):
            for ch in range(chunks):
                s = q % r
                while not full[s].done((q // r) & 1):
                    yield "wait"
                if stage[s] != [q] * producers:
                    errors.append(f"warp {w} read chunk {q} from stage {s} holding {stage[s]}")
                yield "read"
                if ch > 0:  # after chunk q's first MMA step: chunk q - 1's MMAs ended
                    released[w].add(q - 1)
                    empty[(q - 1) % r].arrive()
                q += 1
                yield "step"
            released[w].add(q - 1)  # the item's last chunk, after its wait for every MMA
            empty[(q - 1) % r].arrive()

    actors = [producer(p) for p in range(producers)] + [consumer(w) for w in range(consumers)]
    live = list(range(len(actors)))
    stalls = 0
    while live:
        i = live[rng.integers(len(live))]
        try:
            what = next(actors[i])
        except StopIteration:
            live.remove(i)
            stalls = 0
            continue
        stalls = stalls + 1 if what == "wait" else 0
        if stalls > 200 * len(actors):
            return ["deadlock"]
    return errors


@pytest.mark.parametrize("fc1", [True, False])
def test_wsr_ring_never_reuses_a_busy_stage(fc1):
    """The ring's protocol, with the kernel's own parities and release points (pinned to the source below): over random
    interleavings of 2 producer threads and 3 consumer warps, items of 1-5 chunks, 0-3 items, R = 3, 4 and 6, no
    stage is refilled while a consumer still needs its chunk, every consumer reads each chunk only after all of it
    landed, and nobody waits forever. A release one chunk late or a parity off by one fails here."""
    src = WSR_SOURCE.read_text()
    for line in ("mbar_wait(full + 8 * s, (q / R) & 1);",
                 "if (st == 0 && ch > 0 && lane == 0) mbar_arrive(empty + 8 * ((q - 1) % R));",
                 "cp_async_wait<R - 2>();",
                 "mbar_arrive(full + 8 * (q % R));",
                 "if (q + R - 1 < total_steps) {",
                 "if (q >= 1) mbar_wait(empty + 8 * ((q - 1) % R), ((q - 1) / R) & 1);",
                 "if (lane == 0) mbar_arrive(empty + 8 * ((q - 1) % R));  // the item's last chunk: its MMAs ended",
                 "for (int q = 0; q < R - 2; ++q) cp_async_commit();"):
        assert line in src, line
    rng = np.random.default_rng(11)
    for r in (3, 4, 6):
        for chunks in (1, 2, 3, 5):
            for items in (0, 1, 2, 3):
                for _ in range(20):
                    assert _ring_run(r, chunks, items, fc1, 2, 3, rng) == [], (r, chunks, items)


def test_wsr_ring_model_catches_a_late_wait():
    """The model above can fail: the producer refilling the stage of chunk q - 1 without waiting for its EMPTY phase
    (as if the parity were always satisfied) is caught as a busy stage refilled."""
    rng = np.random.default_rng(3)
    real = _Barrier.done
    try:
        _Barrier.done = lambda self, parity: True if self.count == 3 else real(self, parity)
        seen = [_ring_run(4, 3, 3, True, 2, 3, rng) for _ in range(50)]
    finally:
        _Barrier.done = real
    assert any(e and e != ["deadlock"] for e in seen)
