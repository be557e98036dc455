"""The warp-specialized wide items (variants with ``wgmma`` 5, 6: ``mxfp4lab/kernels/csrc/decode_w4a16_ws.cuh``) read
back on the CPU, through the kernel's own index map and decode expressions.

The producer warpgroups copy a chunk's tile pieces and scales from the decode layout, decodes them with
``decode_word`` and the scale multiply, and stores 16-byte rows into a bf16 A tile; the consumer warpgroups read that
tile and the token tile as wgmma operands. Here ``WsMap`` (host-compiled from the CUDA source) places every byte as
the kernel does, and the tiles are read back through the PTX ISA's K-major, no-swizzle canonical layout with the
descriptor ``WgmmaTile::desc`` builds. What the MMA reads at each step must be exactly the dequantized weight and the
token row of the logical row, column and token the epilogue stores the sum under -- written from
:func:`mxfp4lab.formats.dequantize_mxfp4`, not from the kernel's map.
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

WS_SOURCE = dr.SOURCE.with_name("decode_w4a16_ws.cuh")


def ws_map(tmp_path, nc: int, fc1: bool, pwg: int = 1) -> dict:
    """WsMap<nc, fc1, pwg> and WgmmaTile::desc(4096), host-compiled from the CUDA source, as JSON."""
    wide, ws = dr.WIDE_SOURCE.read_text(), WS_SOURCE.read_text()
    start = wide.index("struct WgmmaTile {")
    tile = wide[start : wide.index("\n};\n", start) + 4]
    start = ws.index("template <int NC, bool FC1, int PWG = 1>\nstruct WsMap {")
    wsmap = ws[start : ws.index("\n};\n", start) + 4]
    prog = ("#include <cstdint>\n#include <cstdio>\n#define __device__\n#define __forceinline__ inline\n"
            "constexpr int kTileBytes = 512, kScaleBytes = 32, kNT1 = 4, kNT2 = 2;\n" + tile + wsmap + f"""
using M = WsMap<{nc}, {'true' if fc1 else 'false'}, {pwg}>;
int main() {{
  std::printf("{{\\"desc\\": %llu, \\"group\\": [", static_cast<unsigned long long>(WgmmaTile::desc(4096)));
  for (int c = 0; c < {nc}; ++c) for (int u = 0; u < 4; ++u) std::printf("%s%d", c + u ? "," : "", M::group(1, c, u));
  std::printf("], \\"tile_src\\": [");
  for (int u = 0; u < 4; ++u) std::printf("%s%d,%d", u ? "," : "", M::tile_src(u), M::scale_src(u));
  std::printf("], \\"piece\\": [");
  for (int l = 0; l < 32; ++l) std::printf("%s%d", l ? "," : "", M::piece(l));
  std::printf("], \\"a_row\\": [");
  for (int u = 0; u < 4; ++u) for (int hr = 0; hr < 2; ++hr) for (int g = 0; g < 8; ++g)
    std::printf("%s%d", u + hr + g ? "," : "", M::a_row(u, hr, g));
  std::printf("], \\"at\\": [");
  for (int r = 0; r < 128; ++r) for (int j = 0; j < 8; ++j) std::printf("%s%u", r + j ? "," : "", M::at(r, j));
  std::printf("], \\"act\\": [");
  for (int t = 0; t < 128 * {pwg}; ++t) for (int i = 0; i < 8 / {pwg}; ++i)
    std::printf("%s%d,%d", t + i ? "," : "", M::act_row(t, i), M::act_piece(t));
  std::printf("], \\"out_row\\": [");
  for (int c = 0; c < {nc}; ++c) for (int w = 0; w < 4; ++w) for (int g = 0; g < 8; ++g) for (int hr = 0; hr < 2; ++hr)
    std::printf("%s%d", c + w + g + hr ? "," : "", M::out_row(1, c, w, g, hr));
  std::printf("]}}\\n");
}}
""")
    m = json.loads(dr._run_host(tmp_path, f"ws_map_{nc}_{int(fc1)}_{pwg}", prog))
    m["group"] = np.array(m["group"]).reshape(nc, 4)
    m["tile_src"] = np.array(m["tile_src"]).reshape(4, 2)
    m["a_row"] = np.array(m["a_row"]).reshape(4, 2, 8)
    m["at"] = np.array(m["at"]).reshape(128, 8)
    m["act"] = np.array(m["act"]).reshape(128 * pwg, 8 // pwg, 2)
    m["out_row"] = np.array(m["out_row"]).reshape(nc, 4, 8, 2)
    return m


def canonical_read(image: dict, desc: int, st: int, rows: int) -> np.ndarray:
    """What wgmma reads as operand[row][k] (k < 16) at MMA step st from a K-major, no-swizzle tile: the PTX ISA's
    canonical layout ((8, m), (T, 2k)) : ((1T, SBO), (1, LBO)) in 16-byte units (9.7.15.5.1.2), LBO and SBO from the
    descriptor's fields, the start address its bits 0-13 plus the kernel's step offset st * 2 LBO. ``image`` maps a
    tile byte (from the tile's start, 4096 in the descriptor) to the value the kernel stored in the bf16 there."""
    lbo, sbo = ((desc >> 16) & 0x3FFF) << 4, ((desc >> 32) & 0x3FFF) << 4
    start = ((desc & 0x3FFF) << 4) - 4096 + st * 2 * lbo
    out = np.empty((rows, 16), dtype=object)
    for r in range(rows):
        for k in range(16):
            out[r, k] = image.get(start + (r // 8) * sbo + (r % 8) * 16 + (k // 8) * lbo + (k % 8) * 2)
    return out


def _produce(blocks: torch.Tensor, m: dict, nc: int, pwg: int, chunk: int) -> list[dict]:
    """One chunk of row block 1 of expert 0 as the producer warps store it: per consumer warpgroup, its A tile as
    {byte: value}. Warp pw of 4 pwg serves warpgroup pw pt / 4, tiles (pw % (4 / pt)) pt .. + pt - 1 with pt = nc /
    pwg (the kernel's split)."""
    decode = dr.kernel_decode_word()
    images = [{} for _ in range(nc)]
    pt = nc // pwg
    for pw in range(4 * pwg):
        c, t0 = pw * pt // 4, (pw % (4 // pt)) * pt
        for u in range(t0, t0 + pt):
            step = blocks[0, m["group"][c, u], chunk].numpy()
            tsrc, ssrc = m["tile_src"][u]
            for lane in range(32):
                g, tl = lane & 7, lane >> 3
                piece = step[tsrc + 16 * m["piece"][lane] : tsrc + 16 * m["piece"][lane] + 16]
                words = [int.from_bytes(piece[4 * q : 4 * q + 4].tobytes(), "little") for q in range(4)]
                sb = ssrc + (2 * g + tl // 2) * 2
                f_lo, f_hi = dr.kernel_scale_factor(int(step[sb])), dr.kernel_scale_factor(int(step[sb + 1]))
                for h in range(2):
                    r, v = decode(words[2 * h]), decode(words[2 * h + 1])
                    # the kernel's two sts128 of granule 2 tl + h: rows g (r0, r2, v0, v2) and g + 8 (r1, r3, v1, v3)
                    for hr, regs, f in ((0, (r[0], r[2], v[0], v[2]), f_lo), (1, (r[1], r[3], v[1], v[3]), f_hi)):
                        base = m["at"][m["a_row"][u, hr, g], 2 * tl + h]
                        for q, reg in enumerate(regs):
                            lo, hi = dr.mul_bf16x2(reg, f)
                            for b, val in ((4 * q, lo), (4 * q + 2, hi)):
                                assert base + b not in images[c], "a byte of A stored twice"
                                images[c][base + b] = val
    return images


@pytest.mark.parametrize("nc, pwg", [(4, 1), (2, 1), (2, 2)])
@pytest.mark.parametrize("fc1", [True, False])
def test_ws_producer_tiles_are_the_weights_the_epilogue_stores(tmp_path, nc, pwg, fc1):
    """Every MMA step of every consumer warpgroup reads, through the canonical layout, exactly the dequantized weights
    of chunk elements 16 st .. 16 st + 15 of the rows its epilogue stores under: fc1 A row 16 w + x the up row and
    16 w + 8 + x the gate row of intermediate row out_row(w, x) (the SwiGLU pairs them in one lane), fc2 A row 16 w +
    x + 8 hr output row out_row(w, x, hr). Random codes and scales, row block 1 (block offsets), the last chunk."""
    src = WS_SOURCE.read_text()
    # the decode the model above replays: words (h, 0) and (h, 1) of the lane's 16 bytes, two 16-byte row stores
    assert "decode_word(h ? wv[i].z : wv[i].x, r[0], r[1], r[2], r[3]);" in src
    assert "decode_word(h ? wv[i].w : wv[i].y, v[0], v[1], v[2], v[3]);" in src
    assert "wv[i] = lds128(raw + (c * 4 + t0 + i) * kTileBytes + lane * 16);" in src
    assert "const uint32_t sa = raw + S::kTiles * kTileBytes + (c * 4 + t0 + i) * kScaleBytes + (g * 2 + (tl >> 1)) * 2;" in src
    assert re.search(r"sts128\(abase \+ Map::at\(row0, 2 \* tl \+ h\), hmul2_bf16\(r\[0\], flo\), hmul2_bf16\(r\[2\], flo\),"
                     r"\s+hmul2_bf16\(v\[0\], flo\), hmul2_bf16\(v\[2\], flo\)\);", src)
    assert re.search(r"sts128\(abase \+ Map::at\(row1, 2 \* tl \+ h\), hmul2_bf16\(r\[1\], fhi\), hmul2_bf16\(r\[3\], fhi\),"
                     r"\s+hmul2_bf16\(v\[1\], fhi\), hmul2_bf16\(v\[3\], fhi\)\);", src)
    m = ws_map(tmp_path, nc, fc1, pwg)
    chunks, groups = 2, 2 * (nc if fc1 else 2 * nc)  # two row blocks
    k = 64 * chunks
    if fc1:
        rows = 32 * groups  # intermediate rows: 32 per layout group
        up, gate = rand_u8(1, rows, k // 2, seed=1), rand_u8(1, rows, k // 2, seed=2)
        us, gs = rand_u8(1, rows, k // 32, seed=3, lo=118, hi=129), rand_u8(1, rows, k // 32, seed=4, lo=118, hi=129)
        blocks = L.fc1_to_decode(up, us, gate, gs)
        w_up, w_gate = dequantize_mxfp4(up, us)[0], dequantize_mxfp4(gate, gs)[0]
    else:
        rows = 32 * groups
        down, ds = rand_u8(1, rows, k // 2, seed=5), rand_u8(1, rows, k // 32, seed=6, lo=118, hi=129)
        blocks = L.fc2_to_decode(down, ds)
        w_down = dequantize_mxfp4(down, ds)[0]
    assert blocks.shape[1:3] == (groups, chunks)
    images = _produce(blocks, m, nc, pwg, chunks - 1)
    for c in range(nc):
        assert len(images[c]) == 64 * 64  # the warpgroup's 64 rows x 64 elements, each bf16 stored once
        for st in range(4):
            got = canonical_read(images[c], m["desc"], st, 64)
            cols = 64 * (chunks - 1) + 16 * st + np.arange(16)
            for w in range(4):
                for x in range(8):
                    for hr in range(2):
                        a = got[16 * w + x + 8 * hr]
                        if fc1:  # hr = 0: up, 1: gate of the same intermediate row
                            want = (w_gate if hr else w_up)[m["out_row"][c, w, x, 0], cols]
                        else:
                            want = w_down[m["out_row"][c, w, x, hr], cols]
                        assert np.array_equal(a.astype(float), want.numpy()), (c, st, w, x, hr)
    # each warpgroup reads its own rows: fc1 its layout group's 32 intermediate rows, fc2 64 output rows
    per = 32 if fc1 else 64
    assert sorted(m["out_row"][..., 0 if fc1 else slice(None)].flatten().tolist()) == list(range(per * nc, 2 * per * nc))


@pytest.mark.parametrize("nc, pwg", [(4, 1), (2, 2)])
def test_ws_token_tile_is_read_as_the_tokens_chunk_elements(tmp_path, nc, pwg):
    """The producers' token-row copies (act_row, act_piece: 128 pwg threads x 8 / pwg copies of 16 bytes) cover the
    128 x 8 pieces of a chunk exactly once, and at MMA step st wgmma reads as B[n][k] token row n's chunk element
    16 st + k (the natural K order the A tile has)."""
    m = ws_map(tmp_path, nc, True, pwg)
    pieces = {tuple(p) for p in m["act"].reshape(-1, 2).tolist()}
    assert pieces == {(r, j) for r in range(128) for j in range(8)} and m["act"].reshape(-1, 2).shape[0] == 1024
    # 8-row blocks grow with the copy index, so the kernel's early exit at the padded N skips only rows past it
    blocks = m["act"][:, :, 0] // 8
    assert (np.diff(blocks, axis=1) > 0).all()
    image = {}
    for r, j in pieces:
        for e in range(8):
            image[m["at"][r, j] + 2 * e] = (r, 8 * j + e)
    for st in range(4):
        got = canonical_read(image, m["desc"], st, 128)
        for n in range(128):
            assert got[n].tolist() == [(n, 16 * st + k) for k in range(16)]


@pytest.mark.parametrize("fc1", [True, False])
@pytest.mark.parametrize("pwg", [1, 2])
def test_ws_quarter_warps_store_one_core_matrix(tmp_path, fc1, pwg):
    """Bank conflicts: the 8 lanes of a quarter warp store 16 bytes each into one 128-byte core matrix -- the A rows g
    = 0 .. 7 of one granule (the lane -> layout-piece permutation's purpose), for every tile, row half and granule;
    and the 8 threads of a quarter warp copy their token-row pieces into one core matrix too."""
    m = ws_map(tmp_path, 4 // pwg, fc1, pwg)
    for u in range(4):
        for hr in range(2):
            for h in range(2):
                for q in range(4):
                    addrs = sorted(int(m["at"][m["a_row"][u, hr, lane & 7], 2 * (lane >> 3) + h])
                                   for lane in range(8 * q, 8 * q + 8))
                    assert addrs[0] % 128 == 0 and addrs == list(range(addrs[0], addrs[0] + 128, 16)), (u, hr, h, q)
    for t0 in range(0, 128 * pwg, 8):
        for i in range(8 // pwg):
            addrs = sorted(int(m["at"][m["act"][t, i, 0], m["act"][t, i, 1]]) for t in range(t0, t0 + 8))
            assert addrs[0] % 128 == 0 and addrs == list(range(addrs[0], addrs[0] + 128, 16)), (t0, i)


def ws_items(tmp_path, counts, blocks):
    """find_ws_item (the warp-specialized kernel's item -> expert, even token tile, row block), host-compiled from the
    CUDA source with find_wide_item and the routing struct, over every item of a routing with these pair counts per
    expert. Returns [(e, tok0, ntok, block)] in item order."""
    e = len(counts)
    head = dr._wide_routing_program(counts, 128, blocks, "find_wide_item")
    ws = WS_SOURCE.read_text()
    start = ws.index("template <typename L>\n__device__ __forceinline__ WideItem find_ws_item(")
    fn = ws[start : ws.index("\n}\n", start) + 3]
    cut = head.index("\nint main() {")
    prog = head[:cut] + "\n" + fn + head[cut:] + f"""
  for (int i = 0; i < ist[{e}]; ++i) {{
    WideItem it = find_ws_item(r, {e}, i, {blocks});
    std::printf("%d %d %d %d\\n", it.e, it.tok0, it.ntok, it.block);
  }}
}}
"""
    return [tuple(map(int, ln.split())) for ln in dr._run_host(tmp_path, "ws_items", prog).splitlines()]


def test_ws_items_split_each_experts_tokens_evenly(tmp_path):
    """Each expert's tokens go to ceil(count / 128) tiles of sizes differing by at most one (no trailing tile of a few
    tokens), every token in exactly one tile per row block, tiles in token order, the items in find_wide_item's order
    (the same expert and row block at each position, so the routing's item counts and the round-robin deal hold)."""
    counts = [0, 1, 127, 128, 129, 140, 255, 256, 257, 530, 3]
    blocks = 3
    got = ws_items(tmp_path, counts, blocks)
    plain = dr.kernel_wide_items(tmp_path, counts, 128, blocks)
    assert [(e, b) for e, _, _, b in got] == [(e, b) for e, _, _, b in plain]
    start = np.concatenate([[0], np.cumsum(counts)])
    for x, c in enumerate(counts):
        for b in range(blocks):
            tiles = [(t0, n) for e, t0, n, bb in got if e == x and bb == b]
            assert len(tiles) == -(-c // 128)
            if not c:
                continue
            sizes = [n for _, n in tiles]
            assert max(sizes) - min(sizes) <= 1 and max(sizes) <= 128 and sum(sizes) == c, (x, sizes)
            assert [t0 for t0, _ in tiles] == list(start[x] + np.concatenate([[0], np.cumsum(sizes)[:-1]])), (x, tiles)
    assert sorted(n for e, _, n, b in got if e == 5 and b == 0) == [70, 70]  # 140 tokens: two of 70, not 128 + 12
