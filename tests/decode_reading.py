"""An independent reading of the decode kernel (``mxfp4lab/kernels/csrc/decode_w4a16*.cu*``) on the CPU.

Lane by lane and MMA step by MMA step, as the GPU would: the word a lane copies from a step block, the
kernel's own ``decode_word`` expressions (parsed out of the CUDA source and evaluated on Python ints), the
scale multiply, and the ``mma.m16n8k16`` fragment maps of the PTX ISA (A: ``a0 = A[g][2t..]``,
``a1 = A[g+8][2t..]``, ``a2 = A[g][2t+8..]``, ``a3 = A[g+8][2t+8..]``; B: ``b0 = B[2t..][g]``,
``b1 = B[2t+8..][g]``). Written from those descriptions, not from :mod:`mxfp4lab.layout.decode_w4a16`.
Slow by design (scalar loops): small shapes only.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).resolve().parents[1] / "mxfp4lab" / "kernels" / "csrc" / "decode_w4a16.cu"
COMMON_SOURCE = SOURCE.with_name("decode_w4a16_common.cuh")
SPLIT_K_SOURCE = SOURCE.with_name("decode_w4a16_split_k.cuh")
WIDE_SOURCE = SOURCE.with_name("decode_w4a16_wide.cuh")
M32 = 0xFFFFFFFF


def _function_body(src: str, name: str) -> str:
    start = src.index(name + "(")
    body_start = src.index("{", start)
    depth, i = 0, body_start
    while True:
        depth += {"{": 1, "}": -1}.get(src[i], 0)
        if depth == 0:
            return src[body_start + 1 : i]
        i += 1


def kernel_decode_word():
    """``decode_word`` from the CUDA source as a Python function ``q -> (r0, r1, r2, r3)`` (uint32 math)."""
    body = _function_body(COMMON_SOURCE.read_text(), "decode_word")
    py = []
    for stmt in body.split(";"):
        stmt = stmt.strip()
        if not stmt:
            continue
        stmt = re.sub(r"\bconstexpr\b|\buint32_t\b", "", stmt)
        stmt = re.sub(r"(0x[0-9A-Fa-f]+)u\b", r"\1", stmt)
        for part in stmt.split(","):  # "kMag = ..., kSign = ..."
            lhs, rhs = (s.strip() for s in part.split("=", 1))
            py.append(f"{lhs} = ({rhs}) & {M32}")
    code = "def _f(q):\n" + "".join(f"    {line}\n" for line in py) + "    return r0, r1, r2, r3\n"
    ns: dict = {}
    exec(compile(code, str(COMMON_SOURCE), "exec"), ns)  # noqa: S102 - the project's own source
    return ns["_f"]


def kernel_scale_factor(byte: int) -> int:
    """``scale_factor`` of the CUDA source, read the same way: a bf16x2 bit pattern."""
    body = _function_body(COMMON_SOURCE.read_text(), "scale_factor")
    expr = re.search(r"return (.*?);", body, re.S).group(1)
    expr = re.sub(r"(\d+|0x[0-9A-Fa-f]+)u\b", r"\1", expr)
    return eval(expr, {"s": byte}) & M32  # noqa: S307 - the project's own source


def bf16_bits_to_float(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", (bits & 0xFFFF) << 16))[0]


def e2m1(code: int) -> float:
    mag = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0][code & 7]
    return -mag if code & 8 else mag


def mul_bf16x2(a: int, f: int) -> tuple[float, float]:
    """``mul.rn.bf16x2`` of two bf16x2 patterns; the products here are powers of two times <= 2
    significant bits, so fp32/fp64 math is exact and rounding never happens."""
    return (bf16_bits_to_float(a) * bf16_bits_to_float(f), bf16_bits_to_float(a >> 16) * bf16_bits_to_float(f >> 16))


def tile_chunk_products(block: np.ndarray, n: int, x: np.ndarray, tiles_per_group: int = 4) -> np.ndarray:
    """``D[16 rows, 8 tokens]`` that tile ``n`` of one step block contributes for activations ``x``
    ``[8, 64]`` (the chunk's 64 K elements of 8 tokens), read lane by lane as the kernel does.

    ``block``: uint8 ``[tiles_per_group * 544]`` = tiles' weights (``tiles_per_group x 512``), then their scale words.
    """
    decode = kernel_decode_word()
    wbase, sbase = n * 512, tiles_per_group * 512 + n * 32
    d = np.zeros((16, 8))
    for s in range(4):
        a = np.zeros((16, 16))
        b = np.zeros((16, 8))
        for lane in range(32):
            g, t = lane // 4, lane % 4
            off = wbase + lane * 16 + 4 * s
            q = int.from_bytes(block[off : off + 4].tobytes(), "little")
            regs = decode(q)
            sw = int.from_bytes(block[sbase + (2 * g + t // 2) * 2 : sbase + (2 * g + t // 2) * 2 + 2].tobytes(), "little")
            f_g, f_g8 = kernel_scale_factor(sw & 0xFF), kernel_scale_factor(sw >> 8)
            a[g, 2 * t : 2 * t + 2] = mul_bf16x2(regs[0], f_g)
            a[g + 8, 2 * t : 2 * t + 2] = mul_bf16x2(regs[1], f_g8)
            a[g, 2 * t + 8 : 2 * t + 10] = mul_bf16x2(regs[2], f_g)
            a[g + 8, 2 * t + 8 : 2 * t + 10] = mul_bf16x2(regs[3], f_g8)
            # the lane copied x[token g][16t .. 16t+15]; B words 2s, 2s+1 of that copy
            xs = x[g, 16 * t : 16 * t + 16]
            b[2 * t : 2 * t + 2, g] = xs[4 * s : 4 * s + 2]
            b[2 * t + 8 : 2 * t + 10, g] = xs[4 * s + 2 : 4 * s + 4]
        d += a @ b
    return d


def kernel_item_tiles(tmp_path):
    """ItemTiles (the CUDA source's struct, host-compiled with the system C++ compiler) for each (NT, LT) the
    kernel instantiates: per item group its layout group and half shift, per tile its source offset, per scale lane
    its source offset and the half's scale correction, as JSON."""
    src = SPLIT_K_SOURCE.read_text()
    start = src.index("template <int NT, int LT>\nstruct ItemTiles {")
    item_tiles = src[start : src.index("\n};\n", start) + 4]
    prog = ("#include <cstdio>\n#define __host__\n#define __device__\nconstexpr int kTileBytes = 512, kScaleBytes = 32;\n"
            + item_tiles + r'''
template <int NT, int LT> void dump(bool first) {
  using T = ItemTiles<NT, LT>;
  std::printf("%s\"%d,%d\": {\"step\": %d, \"item_groups5\": %d, \"groups\": [", first ? "" : ",", NT, LT,
              T::kLayoutStep, T::item_groups(5));
  for (int i = 0; i < 8; ++i) std::printf("%s[%d, %d, %d]", i ? "," : "", T::layout_group(i), T::half_shift(i),
                                          T::half_scale(T::half_shift(i)));
  std::printf("], \"tiles\": [");
  for (int n = 0; n < NT; ++n) std::printf("%s%d", n ? "," : "", T::tile_src(n));
  std::printf("], \"scales\": [");
  for (int l = 0; l < 2 * NT; ++l) std::printf("%s%d", l ? "," : "", T::scale_src(l));
  std::printf("]}");
}
int main() { std::printf("{"); dump<4, 4>(true); dump<2, 4>(false); dump<2, 2>(false); dump<4, 2>(false); std::printf("}\n"); }
''')
    (Path(tmp_path) / "item_tiles.cpp").write_text(prog)
    exe = Path(tmp_path) / "item_tiles"
    subprocess.run([shutil.which("c++") or shutil.which("g++"), "-std=c++17", "-o", str(exe), str(Path(tmp_path) / "item_tiles.cpp")],
                   check=True, capture_output=True)
    return json.loads(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)


def _run_host(tmp_path, name, prog):
    """Compile a C++17 program with the system compiler and return its stdout."""
    cpp, exe = Path(tmp_path) / f"{name}.cpp", Path(tmp_path) / name
    cpp.write_text(prog)
    subprocess.run([shutil.which("c++") or shutil.which("g++"), "-std=c++17", "-o", str(exe), str(cpp)], check=True,
                   capture_output=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout


def _wide_routing_program(counts, bn, blocks, through):
    """The head of a host program over the wide kernel's item helpers: the CUDA source's routing struct and its text
    from ``struct WideItem`` through the function ``through``, then main()'s opening with a routing of these pair
    counts per expert (``r``; start and istart as the kernel's scan writes them: exclusive prefixes of the counts and
    of ceil(count / bn) * blocks)."""
    src, wide = COMMON_SOURCE.read_text(), WIDE_SOURCE.read_text()
    first = src.index("template <typename L = int>\nstruct RoutingT {")
    last = "using Routing = RoutingT<int>;"
    routing = src[first : src.index(last) + len(last)]
    start = wide.index("struct WideItem {")
    item = wide[start : wide.index("\n}\n", wide.index(through, start)) + 3]
    e = len(counts)
    return ("#include <algorithm>\n#include <cstdio>\nusing std::min;\n#define __device__\n#define __forceinline__ inline\n"
            + routing + "\n" + item + f"""
int main() {{
  int count[{e}] = {{{", ".join(map(str, counts))}}}, st[{e + 1}], ist[{e + 1}];
  st[0] = ist[0] = 0;
  for (int x = 0; x < {e}; ++x) {{ st[x + 1] = st[x] + count[x]; ist[x + 1] = ist[x] + (count[x] + {bn} - 1) / {bn} * {blocks}; }}
  Routing r{{count, st, ist, nullptr}};
""")


def kernel_wide_items(tmp_path, counts, bn, blocks):
    """find_wide_item (the wide kernel's item -> (expert, token tile, row block), host-compiled from the CUDA source
    with the source's routing struct) over every item of a routing with these pair counts per expert.
    Returns [(e, tok0, ntok, block)] in item order."""
    e = len(counts)
    prog = _wide_routing_program(counts, bn, blocks, "find_wide_item") + f"""
  for (int i = 0; i < ist[{e}]; ++i) {{
    WideItem it = find_wide_item(r, {e}, i, {bn}, {blocks});
    std::printf("%d %d %d %d\\n", it.e, it.tok0, it.ntok, it.block);
  }}
}}
"""
    out = _run_host(tmp_path, "wide_items", prog)
    return [tuple(map(int, ln.split())) for ln in out.splitlines()]


def kernel_one_grid(tmp_path, counts, bn, blocks1, blocks2, grid):
    """The one-grid kernel's schedule (wide_one_kernel; find_wide_item with token-tile offsets, expert_items and
    dealt_items host-compiled from the CUDA source): for each CTA b of ``grid``, its fc1 items (dealt from position 0)
    then its fc2 items (dealt from position n1), each as (e, tok0, ntok, block), and for each fc2 item the count its
    expert's ready counter must reach. Returns {b: ([fc1 items], [(fc2 item, need)])}."""
    e = len(counts)
    prog = _wide_routing_program(counts, bn, 1, "dealt_items(int b") + f"""
  const int n1 = ist[{e}] * {blocks1}, n2 = ist[{e}] * {blocks2};
  for (int b = 0; b < {grid}; ++b) {{
    ItemRange one = dealt_items(b, {grid}, 0, n1), two = dealt_items(b, {grid}, n1, n2);
    for (int k = 0; k < one.count; ++k) {{
      WideItem it = find_wide_item<int, true>(r, {e}, one.first + k * {grid}, {bn}, {blocks1});
      std::printf("1 %d %d %d %d %d 0\\n", b, it.e, it.tok0, it.ntok, it.block);
    }}
    for (int k = 0; k < two.count; ++k) {{
      WideItem it = find_wide_item<int, true>(r, {e}, two.first + k * {grid}, {bn}, {blocks2});
      std::printf("2 %d %d %d %d %d %d\\n", b, it.e, it.tok0, it.ntok, it.block, expert_items(r, it.e, {blocks1}));
    }}
  }}
}}
"""
    got = {b: ([], []) for b in range(grid)}
    for ln in _run_host(tmp_path, "one_grid", prog).splitlines():
        phase, b, e_, tok0, ntok, block, need = map(int, ln.split())
        if phase == 1:
            got[b][0].append((e_, tok0, ntok, block))
        else:
            got[b][1].append(((e_, tok0, ntok, block), need))
    return got


def kernel_wgmma_tile(tmp_path):
    """WgmmaTile (the wide kernel's token tile as wgmma's B operand, host-compiled from the CUDA source): the byte
    each 4-byte piece ``p`` of 16-byte piece ``j`` of token row ``r`` is copied to (``dst``), and the descriptor of a
    tile at shared address 4096. Returns ``(dst[r][j][p] for r < 128, j < 8, p < 4, desc)`` (128 rows: split tiles of
    128 tokens)."""
    wide = WIDE_SOURCE.read_text()
    start = wide.index("struct WgmmaTile {")
    tile = wide[start : wide.index("\n};\n", start) + 4]
    prog = ("#include <cstdint>\n#include <cstdio>\n#define __device__\n#define __forceinline__ inline\n" + tile + r"""
int main() {
  for (int r = 0; r < 128; ++r)
    for (int j = 0; j < 8; ++j)
      for (int p = 0; p < 4; ++p) std::printf("%u ", WgmmaTile::dst(r, j, p));
  std::printf("\n%llu\n", static_cast<unsigned long long>(WgmmaTile::desc(4096)));
}
""")
    cpp = Path(tmp_path) / "wgmma_tile.cpp"
    cpp.write_text(prog)
    exe = Path(tmp_path) / "wgmma_tile"
    subprocess.run([shutil.which("c++") or shutil.which("g++"), "-std=c++17", "-o", str(exe), str(cpp)], check=True,
                   capture_output=True)
    dst, desc = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")[:2]
    return np.array(list(map(int, dst.split()))).reshape(128, 8, 4), int(desc)


def wgmma_b_reads(dst, desc, step_offset):
    """What wgmma reads as B[k][n] (k < 16, n < the copied rows) at each MMA step of a chunk, from a tile the kernel
    copied with ``dst``: the PTX ISA's K-major, no-swizzle canonical layout ((8, m), (T, 2k)) : ((1T, SBO), (1, LBO)) in 16-byte
    units (9.7.15.5.1.2), with LBO and SBO taken from the descriptor's fields (bits 16-29, 32-45, in 16-byte units)
    and the start address from bits 0-13 plus ``step_offset(st)`` (descriptor units). Returns ``[4, 16, rows]`` pairs
    (token row, chunk element) read, as ``row * 64 + element``; -1 where no copy wrote the byte."""
    lbo, sbo = ((desc >> 16) & 0x3FFF) << 4, ((desc >> 32) & 0x3FFF) << 4
    base = ((desc & 0x3FFF) << 4) - 4096
    image = {}
    rows = dst.shape[0]
    for r in range(rows):
        for j in range(8):
            for p in range(4):
                for b in range(4):  # piece p: elements 8 j + 2 p, + 1 (bf16), bytes 4 p .. 4 p + 3 of the 16
                    image[int(dst[r, j, p]) + b] = r * 64 + 8 * j + 2 * p + b // 2
    out = np.full((4, 16, rows), -1)
    for st in range(4):
        start = base + (step_offset(st) << 4)
        for k in range(16):
            for n in range(rows):
                addr = start + (n // 8) * sbo + (n % 8) * 16 + (k // 8) * lbo + (k % 8) * 2
                if image.get(addr) == image.get(addr + 1, -2) and image.get(addr, -1) >= 0:
                    out[st, k, n] = image[addr]
    return out
