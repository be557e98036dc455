"""mxfp4lab's decode kernel on the CPU: its layout (exact inverse, bit placement), its decode and MMA
fragment reading (tests/decode_reading.py parses the kernel's own decode expressions), the layer-level
layout from a LogicalMoE, and an sm_90a compile with nvcc (no spills). The kernel itself runs only on an
SM90 GPU (scripts/gpu/check_decode.py)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

import decode_reading as dr
from conftest import rand_u8
from mxfp4lab.formats import MXFormatError, dequantize_mxfp4
from mxfp4lab.layout import decode_w4a16 as L


@pytest.fixture(scope="module")
def built_library(tmp_path_factory):
    """``(library path, ptxas report)`` of one build_library() per module (the production build)."""
    import json

    from mxfp4lab.kernels.decode_w4a16 import build_library

    path = build_library(out=tmp_path_factory.mktemp("lib") / "lib.so", force=True)
    return path, json.loads((path.parent / "build.json").read_text())["ptxas"]


@pytest.fixture(scope="module")
def kernel_ptx(tmp_path_factory):
    """``kernel_ptx(traced)``: the kernel source's PTX (production or traced build), compiled once per module;
    the kernels' bodies, each starting at its ``.visible .entry``."""
    import re

    from mxfp4lab.kernels.decode_w4a16 import NVCC_FLAGS, SOURCE, TRACE_FLAG

    flags = [f for f in NVCC_FLAGS if f not in ("-shared", "-Xcompiler", "-fPIC")]
    cache = {}

    def get(traced: bool = False):
        if traced not in cache:
            out = tmp_path_factory.mktemp("ptx") / "k.ptx"
            r = subprocess.run(["nvcc", *flags, *([TRACE_FLAG] if traced else []), "-ptx", str(SOURCE), "-o",
                                str(out)], capture_output=True, text=True, check=False)
            assert r.returncode == 0, r.stderr[-2000:]
            cache[traced] = re.split(r"\n(?=\.visible \.entry )", out.read_text())[1:]
        return cache[traced]

    return get


def _kernel_sources():
    from mxfp4lab.kernels.decode_w4a16 import SOURCES

    return SOURCES


def _codes_scales(e, n, k, seed=0, lo=118, hi=123):
    return rand_u8(e, n, k // 2, seed=seed), rand_u8(e, n, k // 32, seed=seed + 1, lo=lo, hi=hi)


@pytest.mark.parametrize("e,n,k", [(1, 16, 64), (2, 48, 192), (3, 64, 128)])
def test_tile_words_is_exactly_inverted(e, n, k):
    p, s = _codes_scales(e, n, k, seed=e)
    w, sw = L.tile_words(p, s)
    assert w.shape == (e, n // 16, k // 64, 32, 16) and sw.shape == (e, n // 16, k // 64, 32)
    p2, s2 = L.untile_words(w, sw)
    assert torch.equal(p2, p) and torch.equal(s2, s)


def test_fc1_and_fc2_blocks_are_exactly_inverted():
    up, us = _codes_scales(2, 64, 128, seed=3)
    gate, gs = _codes_scales(2, 64, 128, seed=5)
    blocks = L.fc1_to_decode(up, us, gate, gs)
    assert blocks.shape == (2, 2, 2, L.FC1_STEP_BYTES)
    for got, want in zip(L.fc1_from_decode(blocks), (up, us, gate, gs)):
        assert torch.equal(got, want)
    down, ds = _codes_scales(2, 128, 192, seed=7)
    blocks2 = L.fc2_to_decode(down, ds)
    assert blocks2.shape == (2, 4, 3, L.FC2_STEP_BYTES)
    for got, want in zip(L.fc2_from_decode(blocks2), (down, ds)):
        assert torch.equal(got, want)


def test_each_code_lands_where_the_docstring_says():
    """Scalar walk over every element of a small matrix with one distinct code at a time."""
    n, k = 16, 64
    for row, kk, code in [(0, 0, 9), (5, 17, 3), (8, 2, 15), (15, 63, 6), (9, 38, 12), (3, 45, 1)]:
        codes = torch.zeros(1, n, k, dtype=torch.uint8)
        codes[0, row, kk] = code
        packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
        w, _ = L.tile_words(packed, torch.full((1, n, k // 32), 127, dtype=torch.uint8))
        hi8, g = divmod(row, 8)
        t, r = divmod(kk, 16)
        s, r = divmod(r, 4)
        h, i = divmod(r, 2)
        j = hi8 + 2 * h
        word = int.from_bytes(w[0, 0, 0, 4 * g + t, 4 * s : 4 * s + 4].numpy().tobytes(), "little")
        want = sum(((code >> f) & 1) << L.SOURCE_BITS[i][j][f] for f in range(4))
        assert word == want, (row, kk, code, hex(word), hex(want))  # the code's bits there, no other bit set


def test_the_bit_map_in_the_docstring_is_the_one_the_code_uses():
    """The module docstring's 32-bit diagram (register.half.field per bit) == SOURCE_BITS, a permutation."""
    import re

    flat = sorted(b for half in L.SOURCE_BITS for reg in half for b in reg)
    assert flat == list(range(32))
    lines = L.__doc__.splitlines()
    drawn = {}
    for n, line in enumerate(lines):
        if line.strip().startswith("bit ") and re.fullmatch(r"\s*bit(\s+\d+){16}", line):
            bits = [int(v) for v in line.split()[1:]]
            names = lines[n + 1].split()
            drawn.update(zip(bits, names))
    assert sorted(drawn) == list(range(32))
    for i in range(2):
        for j in range(4):
            for f in range(4):
                assert drawn[L.SOURCE_BITS[i][j][f]] == f"a{j}.{i}" + "m01s"[f]


def test_kernel_decode_of_every_code_in_every_slot_is_exact():
    """The CUDA source's decode_word + the scale multiply give v * 2^(byte-127) bit-exactly for all 16
    codes in all 8 (register, half) slots and E8M0 bytes 0..128."""
    decode = dr.kernel_decode_word()
    for j in range(4):
        for i in range(2):
            for code in range(16):
                q = sum(((code >> f) & 1) << L.SOURCE_BITS[i][j][f] for f in range(4))
                regs = decode(q)
                for other in range(4):
                    if other != j:
                        assert regs[other] == 0, (j, i, code, other)
                for byte in (0, 1, 100, 127, 128):
                    val = dr.mul_bf16x2(regs[j], dr.kernel_scale_factor(byte))[i]
                    assert val == dr.e2m1(code) * 2.0 ** (byte - 127), (j, i, code, byte, val)


@pytest.mark.parametrize("seed", [0, 1])
def test_lanes_and_fragments_compute_the_tile_gemm(seed):
    """Lane-by-lane reading of one step block through the PTX fragment maps == W @ x^T, exactly."""
    n_rows, k = 32, 128  # one fc2 tile group (2 tiles) x two chunks
    p, s = _codes_scales(1, n_rows, k, seed=10 + seed, lo=115, hi=129)
    blocks = L.fc2_to_decode(p, s)
    w = dequantize_mxfp4(p, s, torch.float64)[0].numpy()  # [64, 128]
    rng = np.random.default_rng(seed)
    x = rng.integers(-8, 9, size=(8, k)).astype(np.float64) / 4  # exact in bf16 and fp64 sums
    want = w @ x.T  # [32 rows, 8 tokens]
    got = np.zeros_like(want)
    for c in range(k // 64):
        block = blocks[0, 0, c].numpy()
        for nt in range(L.FC2_TILES):
            got[16 * nt : 16 * nt + 16] += dr.tile_chunk_products(block, nt, x[:, 64 * c : 64 * c + 64],
                                                                  tiles_per_group=L.FC2_TILES)
    assert np.array_equal(got, want)


def test_fc1_group_holds_up_then_gate_tiles_of_the_same_rows():
    up, us = _codes_scales(1, 64, 64, seed=21)
    gate, gs = _codes_scales(1, 64, 64, seed=23)
    blocks = L.fc1_to_decode(up, us, gate, gs)
    x = np.eye(8, 64)  # token j reads column j
    for grp in range(2):
        block = blocks[0, grp, 0].numpy()
        for nt, (src, ss, tile) in enumerate([(up, us, 2 * grp), (up, us, 2 * grp + 1),
                                              (gate, gs, 2 * grp), (gate, gs, 2 * grp + 1)]):
            want = dequantize_mxfp4(src, ss, torch.float64)[0, 16 * tile : 16 * tile + 16, :8].numpy()
            assert np.array_equal(dr.tile_chunk_products(block, nt, x), want)


def test_scale_bytes_above_128_are_rejected_with_the_tensor_name():
    p, s = _codes_scales(1, 64, 64)
    s[0, 3, 1] = 129
    with pytest.raises(MXFormatError, match=r"fc2 scales: E8M0 byte 129 at \[0, 3, 1\]"):
        L.fc2_to_decode(p, s)


def test_shape_rules_are_named():
    p, s = _codes_scales(1, 48, 64)
    with pytest.raises(MXFormatError, match="fc2 rows"):
        L.fc2_to_decode(p, s)
    p, s = _codes_scales(1, 64, 96)
    with pytest.raises(MXFormatError, match="K"):
        L.tile_words(p, s)


def _decode_layout(small_layer):
    from mxfp4lab.kernels.decode_w4a16 import DecodeLayout
    from mxfp4lab.prepare import prepare_from_experts

    cfg, experts = small_layer
    logical = prepare_from_experts(experts, config=cfg)
    return cfg, logical, DecodeLayout.from_logical(logical)


def test_layout_from_a_logical_layer_trims_padding_and_keeps_every_weight(small_layer):
    cfg, logical, lay = _decode_layout(small_layer)
    sz = L.padded_sizes(cfg.hidden_size, cfg.intermediate_size)
    assert lay.w13.shape[1:] == (sz["I32"] // 32, sz["H64"] // 64, L.FC1_STEP_BYTES)
    assert lay.w2.shape[1:] == (sz["H32"] // 32, sz["I64"] // 64, L.FC2_STEP_BYTES)
    up, us, gate, gs = L.fc1_from_decode(lay.w13)
    i_pad = logical.w13.shape[1] // 2
    assert torch.equal(up, logical.w13[:, : sz["I32"], : sz["H64"] // 2])
    assert torch.equal(us, logical.w13_scale[:, : sz["I32"], : sz["H64"] // 32])
    assert torch.equal(gate, logical.w13[:, i_pad : i_pad + sz["I32"], : sz["H64"] // 2])
    assert torch.equal(gs, logical.w13_scale[:, i_pad : i_pad + sz["I32"], : sz["H64"] // 32])
    down, ds = L.fc2_from_decode(lay.w2)
    assert torch.equal(down, logical.w2[:, : sz["H32"], : sz["I64"] // 2])
    assert torch.equal(ds, logical.w2_scale[:, : sz["H32"], : sz["I64"] // 32])
    # everything the logical stage trims away is zero padding
    assert not logical.w13[:, sz["I32"] : i_pad].any() and not logical.w13[:, i_pad + sz["I32"] :].any()
    assert not logical.w13[..., sz["H64"] // 2 :].any() and not logical.w2[:, sz["H32"] :].any()
    if logical.w13_bias is not None:
        assert torch.equal(lay.b13[:, 0], logical.w13_bias[:, : sz["I32"]])
        assert torch.equal(lay.b13[:, 1], logical.w13_bias[:, i_pad : i_pad + sz["I32"]])
        assert torch.equal(lay.b2, logical.w2_bias[:, : sz["H32"]])
    for f in ("swiglu_alpha", "swiglu_beta", "swiglu_limit"):
        want = getattr(logical, f)
        assert (getattr(lay, f) is None) == (want is None) and (want is None or torch.equal(getattr(lay, f), want))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA 12.4+) to compile for sm_90a")
def test_kernel_compiles_for_sm90a_without_spills(built_library):
    report = built_library[1]
    entries = report.count("Compiling entry function")
    from mxfp4lab.kernels.decode_w4a16 import VARIANTS

    # gemm_kernel instances: fc1 per (configuration, staging bits, dynamic items); fc2 per (configuration, dynamic
    # items: never for a split grid's fc2) and fc2 with the fused combine per configuration (static); one
    # fused_kernel per fused configuration; the combine
    def cfg1(v):
        return v.token_groups, v.ctas_per_sm, v.depth, v.red_buffers, v.token_rows, v.fc1_tiles

    def cfg2(v):
        return v.token_groups, v.ctas_per_sm, v.depth2, v.red_buffers, v.token_rows2, v.fc2_tiles

    two = [v for v in VARIANTS.values() if not v.fused and not v.wide]
    sep = [v for v in VARIANTS.values() if v.wide and not v.fused and v.wgmma < 5]  # wide_kernel: fc1, fc2
    ws = {(v.wide, v.depth, v.wgmma) for v in VARIANTS.values() if v.wgmma in (5, 6)}  # ws_kernel: fc1, fc2
    wsr = {(v.wide, v.depth) for v in VARIANTS.values() if v.wgmma == 7}  # wsr_kernel: fc1, fc2
    wide = {(v.wide, v.depth, v.ctas_per_sm, v.wgmma, v.token_groups, v.fc1_tiles) for v in sep}
    wide2 = {(v.wide, v.depth, v.ctas_per_sm, v.wgmma, v.token_groups, v.fc2_tiles) for v in sep}
    # wide_one_kernel (both GEMMs in one grid)
    one = {(v.wide, v.depth, v.ctas_per_sm, v.token_groups, v.fc1_tiles, v.fc2_tiles, v.dynamic) for v in VARIANTS.values()
           if v.wide and v.fused}
    fc1 = {cfg1(v) + (v.l2, v.dynamic & 1) for v in two}
    fc2 = {cfg2(v) + (v.dynamic >> 1 & 1 and not v.split,) for v in two}
    cmb = {cfg2(v) for v in two}
    fused = {cfg1(v)[:-1] + cfg2(v)[2:-1] for v in VARIANTS.values() if v.fused and not v.wide}  # the layout's tiles
    assert len(cmb) > len({cfg1(v) for v in two})  # some variants give fc2 a ring of its own
    assert entries == len(fc1) + len(fc2) + len(cmb) + len(fused) + len(wide) + len(wide2) + len(one) + 2 * len(ws) + \
        2 * len(wsr) + 1, \
        report[-2000:]
    assert report.count("Compiling entry function '_ZN15mxfp4lab_decode9ws_kernel") == 2 * len(ws) > 0
    assert report.count("Compiling entry function '_ZN15mxfp4lab_decode10wsr_kernel") == 2 * len(wsr) > 0
    assert report.count("Compiling entry function '_ZN15mxfp4lab_decode15wide_one_kernel") == len(one) > 0
    assert report.count("Compiling entry function '_ZN15mxfp4lab_decode12fused_kernel") == len(fused)
    assert report.count("Compiling entry function '_ZN15mxfp4lab_decode11wide_kernel") == len(wide) + len(wide2) > 0
    with_cmb = [ln for ln in report.splitlines() if "Compiling entry function" in ln and "ELb0ELi0ELb1ELi" in ln]
    assert len(with_cmb) == len(cmb), "one fc2 with the fused combine per fc2 configuration"
    # every entry function and the device function they call (the one-warp routing, not inlined) without a stack,
    # but the split tiles of 128 tokens (wgmma = 3: 128 fp32 accumulators per lane at 255 registers) and the
    # warp-specialized kernels of 640 threads (96 registers each), which may spill a few per-item values -- outside
    # the chunk loops (test_128_token_items_spill_only_outside_the_chunk_loop, test_ws_chunk_loops_do_not_spill,
    # test_wsr_chunk_loops_do_not_spill)
    frames = dict(re.findall(r"Function properties for (\S+)\n\s+(.*bytes stack frame.*)", report))
    assert len(frames) >= entries
    big = {f for f in frames if WGMMA_128.search(f) or WS_640.search(f) or WSR_640.search(f)}
    assert len(big) == 2 * len({(v.depth, v.ctas_per_sm) for v in VARIANTS.values() if v.wgmma == 3}) + \
        2 * len({(v.depth, v.wgmma == 7) for v in VARIANTS.values() if v.wgmma >= 5 and v.wide == 4}) > 0
    assert {frames[f] for f in frames if f not in big} == {"0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"}
    for f in big:  # a few per-item values: two with 128 accumulators, up to six at 96 registers
        stack, stores, loads = map(int, re.findall(r"(\d+) bytes", frames[f]))
        lim = (32, 64, 96) if WS_640.search(f) or WSR_640.search(f) else (16, 32, 32)
        assert all(v <= m for v, m in zip((stack, stores, loads), lim)), (f, frames[f])


#: the wide_kernel instances of the split tiles of 128 tokens (WT = 2, any D, one CTA per SM, fc1 or fc2, WG = 3)
WGMMA_128 = re.compile(r"wide_kernelILi2ELi\d+ELi1ELb[01]ELi3E")
#: the warp-specialized kernels with four consumer warpgroups (640 threads: at most 96 registers per thread)
WS_640 = re.compile(r"(?<!w)ws_kernelILi4ELi\d+ELb[01]E")
#: the same with the decode on the consumers
WSR_640 = re.compile(r"wsr_kernelILi4ELi\d+ELb[01]E")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA 12.4+) to compile for sm_90a")
def test_ws_chunk_loops_do_not_spill(built_library):
    """The warp-specialized kernels (wgmma 5, 6): in SASS no local-memory access lies in a consumer's chunk loop --
    from its wait for a full A buffer (mbarrier try_wait) to its arrivals on the empty barriers after the wgmma -- or
    in the producer's decode, from its first 16-byte shared load of raw weights to its last 16-byte store of A; and
    each consumer chunk waits once for its own wgmma group (wait_group 0, the decoupled ring), never for each wgmma."""
    from mxfp4lab.kernels.decode_w4a16 import VARIANTS
    from mxfp4lab.kernels.sass import _tool

    sass = subprocess.run([_tool("cuobjdump"), "-sass", str(built_library[0])], capture_output=True, text=True,
                          check=True).stdout
    funcs = dict(re.findall(r"Function : (\S+)\n(.*?)(?=\n\s+Function : |\Z)", sass, re.S))
    ws = [f for f in funcs if "9ws_kernel" in f]
    assert len(ws) == 2 * len({(v.wide, v.depth, v.wgmma) for v in VARIANTS.values() if v.wgmma in (5, 6)}) > 0
    local = re.compile(r"\b(LDL|STL)\b")
    for f in ws:
        lines = funcs[f].splitlines()
        mma = [i for i, ln in enumerate(lines) if "HGMMA" in ln]
        assert len(mma) >= 4 * 5, f  # four k16 steps per chunk, one loop per MMA shape
        for i in mma:
            start = max(j for j in range(i) if "TRYWAIT" in lines[j])
            end = min(j for j in range(i, len(lines)) if "SYNCS.ARRIVE" in lines[j])
            assert not [ln for ln in lines[start:end] if local.search(ln)], (f, i)
        deps = [ln for ln in lines if "WARPGROUP.DEPBAR" in ln]
        # one wait per chunk body (four wgmma each), and the one before the epilogue
        assert deps and all("gsb0, 0x0" in ln for ln in deps) and len(deps) in (len(mma) // 4, len(mma) // 4 + 1), \
            (f, len(deps), len(mma))
        lds = [i for i, ln in enumerate(lines) if "LDS.128" in ln]
        sts = [i for i, ln in enumerate(lines) if "STS.128" in ln]
        assert lds and sts and not [ln for ln in lines[min(lds) : max(sts) + 1] if local.search(ln)], f


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA 12.4+) to compile for sm_90a")
def test_wsr_chunk_loops_do_not_spill(built_library):
    """The warp-specialized kernels with the decode on the consumers (wgmma 7): in SASS a consumer's chunk loop -- from
    its wait for a full stage (mbarrier try_wait) over its four decode-and-wgmma steps to the loop's back branch -- has
    no local-memory access; with two consumer warpgroups (384 threads, up to 168 registers) each step waits only for
    the step before (wait_group 1: the decode of step st + 1 runs beside step st's MMA), and the item's last wait is
    wait_group 0. At 640 threads (96 registers) ptxas serializes the wgmma (C7511: a wait_group 0 after each); there
    the other three consumer warpgroups' MMAs fill the tensor pipe."""
    from mxfp4lab.kernels.decode_w4a16 import VARIANTS
    from mxfp4lab.kernels.sass import _tool

    sass = subprocess.run([_tool("cuobjdump"), "-sass", str(built_library[0])], capture_output=True, text=True,
                          check=True).stdout
    funcs = dict(re.findall(r"Function : (\S+)\n(.*?)(?=\n\s+Function : |\Z)", sass, re.S))
    wsr = [f for f in funcs if "wsr_kernel" in f]
    assert len(wsr) == 2 * len({(v.wide, v.depth) for v in VARIANTS.values() if v.wgmma == 7}) > 0
    local = re.compile(r"\b(LDL|STL)\b")
    for f in wsr:
        lines = funcs[f].splitlines()
        mma = [i for i, ln in enumerate(lines) if "HGMMA" in ln]
        assert len(mma) == 4 * 10, f  # four k16 steps per chunk, one loop per MMA shape (N = 8 .. 64, 96, 128)
        for i in mma[::4]:  # each loop: its mbarrier wait, its four steps, the back branch after the last
            start = max(j for j in range(i) if "TRYWAIT" in lines[j])
            last = mma[mma.index(i) + 3]
            end = min(j for j in range(last + 1, len(lines)) if re.search(r"\bBRA\b", lines[j]))
            assert not [ln for ln in lines[start:end] if local.search(ln)], (f, i)
        deps = [re.sub(r"/\*.*?\*/", "", ln).strip() for ln in lines if "WARPGROUP.DEPBAR" in ln]
        if "wsr_kernelILi2E" in f:
            assert deps.count("WARPGROUP.DEPBAR.LE gsb0, 0x1 ;") == len(mma) and \
                deps.count("WARPGROUP.DEPBAR.LE gsb0, 0x0 ;") == 1, (f, deps)
        else:
            assert set(deps) == {"WARPGROUP.DEPBAR.LE gsb0, 0x0 ;"}, (f, set(deps))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA 12.4+) to compile for sm_90a")
def test_128_token_items_spill_only_outside_the_chunk_loop(built_library):
    """The split tiles of 128 tokens hold 128 fp32 accumulators per lane; ptxas spills a few per-item values (the
    item loop's counter and bound) there. In SASS the chunk loop -- from the CTA barrier each chunk starts with to the
    last wgmma -- must have no local-memory access: a spill there would cost a load per chunk."""
    from mxfp4lab.kernels.decode_w4a16 import VARIANTS
    from mxfp4lab.kernels.sass import _tool

    sass = subprocess.run([_tool("cuobjdump"), "-sass", str(built_library[0])], capture_output=True, text=True,
                          check=True).stdout
    funcs = dict(re.findall(r"Function : (\S+)\n(.*?)(?=\n\s+Function : |\Z)", sass, re.S))
    big = [f for f in funcs if WGMMA_128.search(f)]
    assert len(big) == 2 * len({v.depth for v in VARIANTS.values() if v.wgmma == 3}) > 0, sorted(funcs)[:5]
    for f in big:
        lines = funcs[f].splitlines()
        mma = [i for i, ln in enumerate(lines) if "HGMMA" in ln]
        start = max(i for i, ln in enumerate(lines[: mma[0]]) if "BAR.SYNC" in ln)
        loop = lines[start : mma[-1] + 1]
        assert len(mma) >= 16 and not [ln for ln in loop if re.search(r"\b(LDL|STL)\b", ln)], f


def test_ncu_csv_is_parsed_per_launch_in_base_units():
    from mxfp4lab.bench.launches import parse_ncu_csv

    text = "\n".join([
        "==PROF== Connected to process 1",
        '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size",'
        '"Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"',
        '"0","1","python","h","gemm_kernel<4, 1, 4, true>","1","7","(256, 1, 1)","(132, 1, 1)","0","9.0","",'
        '"dram__bytes_read.sum","Mbyte","35.20"',
        '"0","1","python","h","gemm_kernel<4, 1, 4, true>","1","7","(256, 1, 1)","(132, 1, 1)","0","9.0","",'
        '"gpu__time_duration.sum","usecond","10.00"',
        '"1","1","python","h","combine_kernel","1","7","(256, 1, 1)","(2, 1, 1)","0","9.0","",'
        '"gpu__time_duration.sum","nsecond","2,500"',
    ])
    rows = parse_ncu_csv(text)
    assert [r["launch_id"] for r in rows] == [0, 1]
    assert rows[0]["dram__bytes_read.sum"] == 35.2e6 and rows[0]["duration_us"] == 10.0
    assert rows[0]["dram_read_GBps"] == pytest.approx(3520.0)  # 35.2 MB in 10 us
    assert rows[1]["duration_us"] == 2.5 and "dram_read_GBps" not in rows[1]
    assert "issue_floor_us" not in rows[0]  # no instruction counters recorded


def test_ncu_units_scale_to_base_units_and_give_the_issue_floor():
    """ncu scales units by magnitude ("Kinst", "Mcycle", "usecond", "ns"): each becomes its base unit; the issue
    floor is the duration times the scheduler's instructions over its elapsed cycles; an unknown unit is named."""
    from mxfp4lab.bench.launches import parse_ncu_csv, unit_scale

    assert [unit_scale(u) for u in ("byte", "Kbyte", "MB", "inst", "Kinst", "Mcycle", "cycle", "%")] == \
        [1, 1e3, 1e6, 1, 1e3, 1e6, 1, 1]
    assert unit_scale("nsecond") == pytest.approx(1e-3) and unit_scale("ms") == pytest.approx(1e3)
    assert unit_scale("usecond") == unit_scale("us") == 1.0
    for bad in ("furlong", "K%", "Kfurlong"):
        with pytest.raises(ValueError, match=repr(bad)):
            unit_scale(bad)
    head = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size",'
            '"Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"')
    row = '"0","1","python","h","gemm_kernel<2, 1>","1","7","(256, 1, 1)","(396, 1, 1)","0","9.0","","{}","{}","{}"'
    text = "\n".join([head, row.format("gpu__time_duration.sum", "usecond", "14.94"),
                      row.format("smsp__inst_executed.avg", "Kinst", "9.50"),
                      row.format("smsp__cycles_elapsed.avg", "Kcycle", "28.40")])
    (r,) = parse_ncu_csv(text)
    assert r["smsp__inst_executed.avg"] == 9500.0 and r["smsp__cycles_elapsed.avg"] == 28400.0
    assert r["issue_floor_us"] == pytest.approx(14.94 * 9500 / 28400)  # a third of the cycles issue
    with pytest.raises(ValueError, match="smsp__inst_executed.avg.*'Kwarp'"):
        parse_ncu_csv("\n".join([head, row.format("smsp__inst_executed.avg", "Kwarp", "1")]))


def test_element_location_agrees_with_the_layout_bits():
    """element_location (a scalar formula) finds every code of a random tile where tile_words put it."""
    p, s = _codes_scales(1, 32, 128, seed=31)
    words, _ = L.tile_words(p, s)
    codes = torch.stack((p & 15, p >> 4), dim=-1).reshape(1, 32, 128)
    for row in range(0, 32, 3):
        for k in range(0, 128, 5):
            loc = L.element_location(row, k)
            w = int.from_bytes(words[0, loc["tile"], loc["chunk"], loc["lane"],
                                     4 * loc["word"] : 4 * loc["word"] + 4].numpy().tobytes(), "little")
            code = int(codes[0, row, k])
            assert (w >> loc["sign_bit"]) & 1 == code >> 3
            assert sum(((w >> b) & 1) << n for n, b in enumerate(loc["mag_bits"])) == code & 7
            assert loc["frag_row"] in (loc["lane"] // 4, loc["lane"] // 4 + 8)


def test_a_pinned_variant_is_read_and_checked(monkeypatch):
    """$MXFP4LAB_DECODE_VARIANT (or variant=) pins the launch variant; an unknown one is refused."""
    from mxfp4lab.backends.decode_w4a16 import pinned_variant

    monkeypatch.delenv("MXFP4LAB_DECODE_VARIANT", raising=False)
    assert pinned_variant() is None and pinned_variant(3) == 3
    monkeypatch.setenv("MXFP4LAB_DECODE_VARIANT", "5")
    assert pinned_variant() == 5 and pinned_variant(2) == 2
    with pytest.raises(ValueError, match="variant must be one of"):
        pinned_variant(99)


def test_a_pinned_combine_is_read_and_checked(monkeypatch):
    """$MXFP4LAB_DECODE_COMBINE picks the fused combine for a pinned variant (default: three launches); any other
    word is refused with the variable's name."""
    from mxfp4lab.backends.decode_w4a16 import pinned_fused_combine

    monkeypatch.delenv("MXFP4LAB_DECODE_COMBINE", raising=False)
    assert pinned_fused_combine() is False
    monkeypatch.setenv("MXFP4LAB_DECODE_COMBINE", "fused")
    assert pinned_fused_combine() is True
    monkeypatch.setenv("MXFP4LAB_DECODE_COMBINE", "yes")
    with pytest.raises(ValueError, match="MXFP4LAB_DECODE_COMBINE"):
        pinned_fused_combine()


def test_tuner_buckets_cover_every_m_and_put_compact_rows_only_at_small_m():
    """One bucket per power of two up to 8192, then one for the rest; the two-token-row variants (12-14) are
    candidates only up to M = 64, every candidate is a compiled variant; no variant staging fc2's weights in L2
    is tuned (staging at fc1's start gained nothing on the H200, late staging lost 2-5 % at M <= 8), nor the
    epilogue-input prefetch (bit 8: within 1.5 % of its twins either way at M <= 8)."""
    from mxfp4lab.backends.decode_w4a16 import CANDIDATES, bucket_of
    from mxfp4lab.kernels.decode_w4a16 import VARIANTS

    assert [bucket_of(m) for m in (1, 2, 3, 5, 9, 17, 33, 65, 129, 257, 513, 1025, 4096, 8193)] == \
        [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 1 << 62]
    for b, cands in CANDIDATES.items():
        assert set(cands) <= set(VARIANTS) and not any(VARIANTS[v].l2 for v in cands)
        assert any(VARIANTS[v].token_rows or VARIANTS[v].token_rows2 for v in cands) == (b <= 64)


def test_l2_staged_variants_are_twins_of_compiled_ones_and_split_half_the_l2():
    """Every L2-staged variant launches the kernels of an unstaged one (same G, CTAs/SM, depth, buffers);
    the prefetch budget is half the L2 in whole lines, split over the grid."""
    from mxfp4lab.kernels.decode_w4a16 import L2_PREFETCH_SHARE, VARIANTS, l2_prefetch_bytes

    base = {(v.token_groups, v.ctas_per_sm, v.depth, v.red_buffers) for v in VARIANTS.values() if v.l2 == 0}
    staged = [v for v in VARIANTS.values() if v.l2]
    assert staged and all((v.token_groups, v.ctas_per_sm, v.depth, v.red_buffers) in base for v in staged)
    assert all(v.l2 in (1, 3, 4, 8) for v in staged)  # bit 2 (evict_first) only with the prefetch it protects
    from mxfp4lab.kernels.decode_w4a16 import unstaged_twin

    assert {g: unstaged_twin(g) for g in (1, 5, 7, 8, 9, 10, 11, 33, 34)} == {
        1: 1, 5: 5, 7: 5, 8: 5, 9: 1, 10: 2, 11: 6, 33: 15, 34: 15}
    from mxfp4lab.kernels.decode_w4a16 import twin_of

    assert {g: twin_of(g) for g in (34, 35, 36)} == {34: 15, 35: 15, 36: 15}  # staged dynamic: the static twin
    n = l2_prefetch_bytes(50 * 2**20, 396)  # an H200's L2, variant 5's grid
    assert n % 128 == 0 and n * 396 <= 50 * 2**20 * L2_PREFETCH_SHARE < (n + 128) * 396


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA 12.4+) to compile for sm_90a")
def test_only_staged_kernels_carry_the_l2_staging(kernel_ptx):
    """The staging bits are a template parameter: the unstaged kernels have no L2 policy or prefetch at all
    (so they are the kernels of before staging), the staged fc1 kernels have exactly their bits' code."""
    import re

    bodies = kernel_ptx()
    seen = {}
    for body in bodies:
        name = re.match(r"\.visible \.entry (\w+)", body).group(1)
        m = re.search(r"gemm_kernelILi(\d)ELi(\d)ELi(\d+)ELi(\d)ELi(\d)ELb([01])ELi(\d)E", name)
        if not m:
            continue
        fc1, l2 = m.group(6) == "1", int(m.group(7))
        seen[(m.groups()[:5], fc1, l2)] = True
        assert ("prefetch.global.L2" in body) == bool(l2 & 5), name
        assert ("createpolicy" in body) == bool(l2 & 2), name
        assert ("prefetch.global.L1" in body) == bool(l2 & 8), name
        assert fc1 or l2 == 0, name
    from mxfp4lab.kernels.decode_w4a16 import VARIANTS

    # (tiles per item, G, CTAs per SM, depth, buffers): the kernel name's first five template arguments
    split_k = [v for v in VARIANTS.values() if not v.wide]  # (wide_kernel has no staging bits)
    configs = {(v.fc1_tiles, v.token_groups, v.ctas_per_sm, v.depth, v.red_buffers) for v in split_k}
    configs2 = {(v.fc2_tiles, v.token_groups, v.ctas_per_sm, v.depth2, v.red_buffers) for v in split_k}
    staged = {(v.token_groups, v.ctas_per_sm, v.depth, v.red_buffers, v.l2) for v in VARIANTS.values() if v.l2}
    assert sum(1 for k in seen if k[2]) == len(staged) == 7
    assert sum(1 for k in seen if not k[2]) == len(configs) + len(configs2)  # fc1 and fc2 of every configuration


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA 12.4+) to compile for sm_90a")
def test_only_the_traced_build_reads_the_global_timer(kernel_ptx):
    """The phase stamps are compiled only with TRACE_FLAG: the production kernels never touch the timer, and in
    the traced build every GEMM kernel stamps (entry .. exit) and so does the combine."""
    import re

    for traced in (False, True):
        bodies = kernel_ptx(traced)
        assert len(bodies) > 20
        for body in bodies:
            name = re.match(r"\.visible \.entry (\w+)", body).group(1)
            stamps = body.count("%globaltimer")
            if not traced:
                assert stamps == 0, name
            else:  # entry, routed, ready, first step, streamed, exit (+ the early exit); combine: entry, ready, exit
                assert stamps >= (3 if "combine" in name else 6), (name, stamps)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA 12.4+) to compile for sm_90a")
def test_the_combine_reads_only_y_after_it_waits(kernel_ptx):
    """The combine launch starts while fc2 runs: it fetches routing, top-k weights and fc2's bias rows before
    griddepcontrol.wait, and its 16-byte loads (y and the bias, which fc2's output is summed with) come after."""
    body = next(b for b in kernel_ptx() if "combine_kernel" in b[:200])
    before, wait, after = body.partition("griddepcontrol.wait")
    assert wait, "the combine waits for fc2"
    assert before.count("prefetch.global.L1") >= 3  # ids, weights, bias
    assert "ld.global.v4" not in before and after.count("ld.global.v4") >= 2  # y and the bias rows, after it


def test_phase_summary_of_a_synthetic_trace():
    """Two fc1 CTAs (one idle), two fc2 CTAs, one combine block, stamps in ns from 1000: the summary is their
    differences in us, medians over the busy CTAs."""
    import numpy as np

    from mxfp4lab.bench.phases import format_phases, median_summary, summarize, timer_step_ns
    from mxfp4lab.kernels.decode_w4a16 import TRACE_SLOTS

    assert TRACE_SLOTS == ("entry", "routed", "ready", "first_step", "streamed", "exit", "sm", "items", "counted",
                           "gathered")
    t = np.zeros((5, 10), np.int64)
    t[0] = [1000, 3000, 3000, 5000, 15000, 17000, 0, 1, 2200, 16000]   # fc1, busy
    t[1] = [1500, 3500, 3500, 0, 0, 4000, 1, 0, 2600, 0]               # fc1, no item: exits after routing
    t[2] = [2000, 4000, 18000, 20000, 26000, 27000, 2, 1, 3000, 26500]  # fc2, waits for fc1 until 18 us
    t[3] = [17500, 19500, 19500, 21000, 25000, 28000, 0, 2, 18500, 26000]
    t[4] = [16000, 0, 28500, 0, 0, 30000, 3, 0, 0, 0]                  # combine block
    s = summarize(t, grid=2)
    assert s["fc1"]["slowest_warp"] == 1.0 and s["fc2"]["slowest_warp"] == (0.5 + 1.0) / 2
    assert s["fc1"]["median_exit"] == 16.0 and s["fc2"]["median_exit"] == (26.0 + 27.0) / 2
    assert s["fc1"]["exit_by_load"] == {1: 16.0} and s["fc2"]["exit_by_load"] == {1: 26.5}
    assert s["fc1"]["first_entry"] == 0.0 and s["fc1"]["last_entry"] == 0.5
    assert s["fc1"]["route"] == 2.0 and s["fc1"]["ready_wait"] is None
    assert s["fc1"]["route_ids"] == (1.2 + 1.1) / 2 and s["fc2"]["route_ids"] == 1.0
    assert s["combine"]["route_ids"] is None
    assert s["fc1"]["first_step"] == 2.0 and s["fc1"]["stream"] == 10.0 and s["fc1"]["epilogue"] == 2.0
    assert s["fc1"]["last_exit"] == 16.0 and (s["fc1"]["ctas"], s["fc1"]["busy"], s["fc1"]["max_items"]) == (2, 1, 1)
    assert s["fc2"]["first_entry"] == 1.0 and s["fc2"]["last_entry"] == 16.5
    assert s["fc2"]["ready_wait"] == (14.0 + 0.0) / 2 and s["fc2"]["first_step"] == (2.0 + 1.5) / 2
    assert s["fc2"]["stream"] == (6.0 + 4.0) / 2 and s["fc2"]["last_exit"] == 27.0 and s["fc2"]["max_items"] == 2
    assert s["combine"]["ready_wait"] == 12.5 and s["combine"]["last_exit"] == 29.0 and s["combine"]["stream"] is None
    assert timer_step_ns([t]) == 500
    med = median_summary([s, s])
    assert med["fc2"] == s["fc2"]
    lines = format_phases({"launches": med, "replays": 2, "grid": 2, "variant": 5, "timer_step_ns": 500})
    assert len(lines) == 9 and lines[2].split()[0] == "fc1" and "27.00" in lines[3]
    assert lines[5] == "  fc1 exits by CTAs with items per SM: 1: 16.00 us"
    assert lines[6] == "  fc1 latest 5 % of CTAs: entry 0.00, route 2.00, first_step 2.00, stream 10.00, epilogue 2.00 us"
    with pytest.raises(ValueError, match="traced build"):
        summarize(np.zeros((5, 10), np.int64), grid=2)
    # two busy CTAs on one SM and one alone: the tail is the loaded SM's
    t2 = np.zeros((4, 10), np.int64)
    for i, (sm, ex) in enumerate(((0, 9000), (0, 11000), (1, 7000), (2, 4000))):
        t2[i] = [1000, 2000, 2000, 3000, 6000, ex, sm, int(i < 3), 1500, 6500]
    s2 = summarize(np.concatenate([t2, t2, t[4:]]), grid=4)
    assert s2["fc1"]["exit_by_load"] == {1: 6.0, 2: 9.0} and s2["fc1"]["median_exit"] == 8.0
    assert s2["fc1"]["late"]["entry"] == 0.0 and s2["fc1"]["late"]["epilogue"] == 5.0  # CTA 1, exit at 10 us


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA 12.4+) to compile for sm_90a")
def test_the_library_table_is_the_python_table_and_the_trace_flag_is_checked(built_library, monkeypatch):
    """The library loads without a GPU (host functions only): its variant table is VARIANTS (fc2's own ring
    depth and rows included), its shared-memory need is the larger of fc1's and fc2's, and asking for the
    traced build when the library is not (or the other way round) is refused."""
    from mxfp4lab.kernels import decode_w4a16 as k

    lib_path = built_library[0]
    monkeypatch.setenv("MXFP4LAB_DECODE_LIB", str(lib_path))
    monkeypatch.setenv("MXFP4LAB_DECODE_TRACED_LIB", str(lib_path))
    k.load_library.cache_clear()
    try:
        lib = k.load_library()
        assert [lib.mxfp4lab_decode_w4a16_variant(i) for i in range(len(k.VARIANTS))] == \
            [v.code + i * 10000 for i, v in k.VARIANTS.items()]
        # variant 16 = variant 14's fc1 + a 4-deep fc2 ring (8 warps x 4 x 1344 B > fc1's 2 x 2432 B + partials)
        smem = lib.mxfp4lab_decode_w4a16_smem_bytes
        assert smem(16, 128, 4, 0) > smem(14, 128, 4, 0)
        assert smem(15, 128, 4, 0) == smem(5, 128, 4, 0)
        assert smem(99, 128, 4, 0) == -1
        # per GEMM (1 = fc1, 2 = fc2; 0 = the larger): variant 25's fc2 ring is 8 warps x 12 x 1344 B
        assert smem(25, 128, 4, 0) == max(smem(25, 128, 4, 1), smem(25, 128, 4, 2)) == smem(25, 128, 4, 2)
        assert smem(25, 128, 4, 2) - smem(16, 128, 4, 2) == 8 * (12 - 4) * 1344
        assert smem(25, 128, 4, 1) - smem(14, 128, 4, 1) == 8 * (4 - 2) * 2432
        # a split grid's fc1 and fc2 CTAs fit one H200 SM side by side (233472 B; 1 KB reserved per CTA) for
        # GPT-OSS (128 experts) and DeepSeek-V4 (256) at M = 1 and 8 (the buckets that tune them)
        for v, var in k.VARIANTS.items():
            if var.split:
                for e, p in ((128, 4), (256, 6), (128, 32), (256, 48)):
                    k.check_shared_memory(lib, v, e, p, 232448, 233472)
        with pytest.raises(k.DecodeKernelError, match="side by side per SM"):
            k.check_shared_memory(lib, 25, 1024, 8192, 232448, 233472)
        with pytest.raises(k.DecodeKernelError, match="shared memory per CTA"):
            k.check_shared_memory(lib, 1, 1024, 8192, 232448, 233472)
        with pytest.raises(k.DecodeKernelError, match="not the traced build"):
            k.load_library(traced=True)
        # a library built from other source (e.g. a carried one gone stale) is refused, naming both digests
        k.load_library.cache_clear()
        monkeypatch.setattr(k, "source_digest", lambda: "0" * 16)
        with pytest.raises(k.DecodeKernelError, match="was built from decode_w4a16.cu with digest [0-9a-f]{16}, "
                                                      "this checkout's is 0{16}"):
            k.load_library()
    finally:
        k.load_library.cache_clear()


def test_every_variant_the_tuner_can_pick_passed_a_recorded_gpu_check():
    """The recorded GPU check (scripts/gpu/check_decode.py: data/results/decode_check/h200.json) holds every variant
    of the tuner's candidates, on the four study shapes, every row ok (within tolerance of the kernel-faithful
    reference, no NaN, deterministic, every counter back at zero) and, where its twin ran beside it, equal to the twin
    bit for bit: a variant that enters the candidates without a check recorded on the GPU fails here."""
    from collections import defaultdict

    from mxfp4lab import results
    from mxfp4lab.backends.decode_w4a16 import CANDIDATES

    rows = defaultdict(list)
    for x in results.load("decode_check", "h200").rows:
        rows[x["variant"]].append(x)
        # a launch the library refused or failed is a failure, never "not supported" (DecodeLaunchError)
        assert not (x["ok"] and "launch" in x.get("error", "")), x
    for v in sorted(set().union(*CANDIDATES.values())):
        got = rows.get(v)
        assert got, f"variant {v} is a tuner candidate without a recorded GPU check"
        assert all(x["ok"] for x in got), v
        assert all(x.get("equal_to_twin", True) for x in got), v
        shapes = {x["label"].split()[0] for x in got if x.get("supported", True)}
        assert {"gpt-oss-120b", "gpt-oss-20b", "dsv4-flash", "seed-bench"} <= shapes, (v, shapes)


def test_the_recorded_sweeps_picks_are_todays_candidates():
    """Every decode_w4a16 row of the recorded H200 sweep (data/results/latency/h200.json) ran a variant the library
    compiles and its M bucket still offers: a candidate dropped, or a variant retired, while the sweep still shows it
    as the pick would describe a tuner that no longer exists."""
    from mxfp4lab import results
    from mxfp4lab.backends.decode_w4a16 import CANDIDATES, bucket_of
    from mxfp4lab.kernels.decode_w4a16 import VARIANTS

    picks = [(r["shape"], r["m"], r["routing"], r["launch"]["variant"]) for r in results.load("latency", "h200").rows
             if r["backend"] == "decode_w4a16" and "launch" in r]
    assert len(picks) >= 88  # four shapes x 11 M (1..4096) x two routings (a later sweep may add points)
    for shape, m, routing, v in picks:
        assert v in VARIANTS and v in CANDIDATES[bucket_of(m)], (shape, m, routing, v)


def test_fused_launch_variants_are_twins_of_two_launch_ones():
    """Each fused-launch variant runs the kernels' arithmetic of a two-launch variant (same G, CTAs per SM, both
    rings, token rows), so the check can ask for its bits; fused launches never combine inside fc2 and are
    candidates only where a CTA has few items (M <= 64; the one-grid wide items: their own test)."""
    from mxfp4lab.backends.decode_w4a16 import CANDIDATES
    from mxfp4lab.kernels.decode_w4a16 import VARIANTS, twin_of

    fused = [i for i, v in VARIANTS.items() if v.fused and not v.wide]  # (the one-grid wide items: their own test)
    assert fused == [18, 19, 20]
    assert {i: twin_of(i) for i in fused} == {18: 15, 19: 16, 20: 17}
    assert {i: twin_of(i) for i in (5, 7, 15)} == {5: 5, 7: 5, 15: 15}
    # dynamic items: the same per-item arithmetic as the static twin (32: fc2's other ring, the same sums); fc1's
    # tuned from M = 2 on (at M = 1 a CTA has at most one item, nothing to balance)
    assert {i: twin_of(i) for i, v in VARIANTS.items() if v.dynamic and not v.split and not v.wide} == {
        21: 5, 22: 15, 23: 14, 24: 4, 30: 15, 31: 17, 32: 5, 35: 15, 36: 15, 37: 38, 39: 40}
    for b, cands in CANDIDATES.items():
        assert any(VARIANTS[v].fused and not VARIANTS[v].wide for v in cands) == (b <= 64)
        # fc1 with dynamic items from M = 2 on; fc2 alone (30, 31) where its CTAs start while fc1 ends (M <= 64; the
        # one-grid wide items' fc2 claims, 82: their own test)
        assert any(VARIANTS[v].dynamic & 1 and not VARIANTS[v].split for v in cands) == (b >= 2)
        assert any(VARIANTS[v].dynamic == 2 and not VARIANTS[v].wide for v in cands) == (b <= 64)
    # fc2's whole item before the wait (32): slower than 15 at M = 1 on the H200, not tuned
    assert not any(32 in cands for cands in CANDIDATES.values())


def test_split_grid_variants_share_every_sm_between_fc1_and_fc2():
    """A split grid gives fc1 ``split`` of every SM's CTA slots and fc2 the others (so fc2's CTAs are resident from
    fc1's start); its bits are those of the first plain variant with the same token rows per item; its fc2 keeps
    static items (launch_forward gives a split grid's fc2 no dynamic items)."""
    from mxfp4lab.backends.decode_w4a16 import CANDIDATES
    from mxfp4lab.kernels.decode_w4a16 import VARIANTS, twin_of

    split = {i: v for i, v in VARIANTS.items() if v.split}
    assert sorted(split) == [25, 26, 27, 28, 29]
    assert all(0 < v.split < v.ctas_per_sm and not (v.fused or v.l2) for v in split.values())
    assert {i: twin_of(i) for i in split} == {25: 12, 26: 12, 27: 15, 28: 12, 29: 12}
    # the variant code keeps a two-digit fc2 depth apart from its neighbours
    assert VARIANTS[28].code // 10**8 % 100 == 11 and VARIANTS[28].code // 10**10 % 10 == 2
    assert VARIANTS[26].code // 10**13 % 10 == 3 and VARIANTS[25].code // 10**12 % 10 == 1
    # measured slower than the two-launch variants at M <= 8 on the H200: not tuned
    assert not any(VARIANTS[v].split for cands in CANDIDATES.values() for v in cands)


def test_dynamic_items_copy_cursor_never_reads_an_unpublished_claim():
    """A model of the kernel's claim protocol (gemm_phase, DY): a CTA claims k = min(D, 2 + (D - 2) // (chunks //
    8)) items at its start and one more (position it + k) per item, published by item it's epilogue barrier;
    every warp's copy cursor runs D - 1 steps ahead of its consumer. For every ring depth and K the cursor only
    reads claims already published, and the claims ring (2 D slots) never overwrites one still to be read."""
    for depth in range(2, 17):
        for chunks in range(1, 97):
            k = min(depth, 2 + (depth - 2) // max(1, chunks // 8))
            assert k <= depth
            for ncw in {chunks // 8, (chunks + 7) // 8} - {0}:  # the warps' chunk counts (0: issues nothing)
                items = 6
                for q in range(items * ncw):  # consuming step q of item q // ncw ...
                    it = q // ncw
                    cursor = (q + depth - 1) // ncw  # ... the cursor fills the position of step q + D - 1
                    assert cursor <= it + k - 1, (depth, chunks, ncw, q)  # published: positions < it + k
                    # slot of the claim item it's epilogue writes (it + k) held position it + k - 2 D, read by
                    # the consumer (item it + k - 2 D < it) and passed by the cursor (at >= it) already
                    assert it + k - 2 * depth < it
                assert (depth - 2) // ncw <= k - 1  # the prologue's D - 1 steps stay within the first k claims
    # the old rule (k = D) was safe too, but let the first CTAs of a deep ring take every item at M = 1:
    # a 6-deep fc2 ring over 45 chunks claims 2, not 6
    assert min(6, 2 + (6 - 2) // (45 // 8)) == 2


def _claim_items(n_items: int, grid: int, depth: int, chunks: int, order) -> dict:
    """A model of gemm_phase's claims (DY): CTAs reach their first claim in ``order`` and then take turns item by
    item; returns {cta: [items]}. With at least as many CTAs as items a CTA claims one position and writes "none"
    (n_items) into every later one; otherwise k = min(D, 2 + (D - 2) // (chunks // 8)) at its start and one more
    per item it starts."""
    one_each = n_items <= grid
    k = min(depth, 2 + (depth - 2) // max(1, chunks // 8))
    counter, claims, done = 0, {}, {c: [] for c in range(grid)}
    for c in order:  # first claims
        n = 1 if one_each else k
        claims[c] = [counter + j for j in range(n)] + ([n_items] * (k - 1) if one_each else [])
        counter += n
    active = list(order)
    while active:  # each active CTA starts its next claimed item (claiming position it + k), round robin
        for c in list(active):
            it = len(done[c])
            if claims[c][it] >= n_items:
                active.remove(c)
                continue
            done[c].append(claims[c][it])
            if one_each:
                claims[c].append(n_items)
            else:
                claims[c].append(counter)
                counter += 1
    return done


def _pair_lists(ids, E, parallel, warps=8):
    """A model of build_routing's pair lists: for each expert its pairs in pair order, at start[e] of one list;
    ``parallel``: chunks of 32 ``warps`` pairs (the CTA's threads), each warp's 32 pairs ranked at once, a pair's
    slot = fill[e] + the sizes of its expert's groups in the chunk's earlier warps + its rank in its warp's group (the
    kernel above 64 pairs)."""
    import numpy as np

    P = len(ids)
    valid = [(0 <= e < E) for e in ids]
    count = np.bincount([e for e, v in zip(ids, valid) if v], minlength=E)
    start = np.concatenate([[0], np.cumsum(count)])
    plist, fill = [-1] * int(start[-1]), [0] * E
    if not parallel:
        for p, (e, v) in enumerate(zip(ids, valid)):
            if v:
                plist[start[e] + fill[e]] = p
                fill[e] += 1
        return plist
    for c0 in range(0, P, 32 * warps):
        hist = np.zeros((warps, E), int)
        ranks = {}
        for w in range(warps):
            seen = {}
            for lane in range(32):
                p = c0 + 32 * w + lane
                if p < P and valid[p]:
                    ranks[p] = seen.get(ids[p], 0)
                    seen[ids[p]] = ranks[p] + 1
            for e, n in seen.items():
                hist[w, e] = n
        for p, r in ranks.items():
            w = (p - c0) // 32
            plist[start[ids[p]] + fill[ids[p]] + int(hist[:w, ids[p]].sum()) + r] = p
        for e in range(E):
            fill[e] += int(hist[:, e].sum())
    return plist


def test_pair_lists_built_by_every_warp_equal_warp_0s_walk():
    """Above 64 pairs the kernel lists each expert's pairs with every warp at once (per-warp group sizes in the
    spare shared memory); the lists must be those of warp 0's walk, pair order within each expert, for any ids
    (experts outside the shard skipped), so every CTA and both GEMMs agree on the token chunks -- with the 8 warps of
    most kernels and the 12 or 20 of the warp-specialized ones (build_routing's NT)."""
    import random

    rng = random.Random(1)
    for P, E in ((65, 8), (256, 128), (384, 256), (1000, 32), (600, 1024)):
        ids = [rng.randrange(-3, E + 3) for _ in range(P)]  # some outside [0, E): another shard's experts
        for warps in (8, 12, 20):
            assert _pair_lists(ids, E, True, warps) == _pair_lists(ids, E, False)
    src = "".join(p.read_text() for p in _kernel_sources())  # the .cu and the headers it includes
    assert "if (P > kWalkPairs && (NT / 32) * E <= spare_ints) {" in src
    assert "for (int c0 = 0; c0 < P; c0 += NT) {" in src
    assert "for (int w = 0; w < warp; ++w) base += hist[w * E + e];" in src


def _routing(ids, E, token_chunk, groups, one_warp):
    """A model of the routing's arrays: per local expert its pair count, start in the pair list and first item,
    and the pair list. Block-wide build: counts, then exclusive scans, then each expert's pairs in pair order.
    ``one_warp`` (the kernel's build at most 32 pairs): lane p holds the key 2 e + (its rank among the lanes of
    its expert e is a multiple of the token chunk), or a key above every expert; expert x's count, start and first
    item count the keys of x and below 2 x, and a pair's slot is the keys below its own expert plus its rank."""
    P = len(ids)
    lane_e = [e if 0 <= e < E else -1 for e in ids]
    items = lambda c: -(-c // token_chunk) * groups  # noqa: E731
    if one_warp:
        assert P <= 32
        rank = [sum(1 for q in range(p) if lane_e[q] == lane_e[p]) for p in range(P)]
        keys = [2 * e + (rank[p] % token_chunk == 0) if e >= 0 else 2 * 1024 + 2 for p, e in enumerate(lane_e)]
        count = [sum(1 for k in keys if k >> 1 == x) for x in range(E)]
        start = [sum(1 for k in keys if k < 2 * x) for x in range(E)]
        istart = [groups * sum(1 for k in keys if k < 2 * x and k & 1) for x in range(E)]
        start.append(start[-1] + count[-1])
        istart.append(istart[-1] + items(count[-1]))
        plist = [-1] * start[E]
        for p in range(P):
            if lane_e[p] >= 0:
                plist[sum(1 for k in keys if k < 2 * lane_e[p]) + rank[p]] = p
        return count, start, istart, plist
    count = [sum(1 for x in lane_e if x == e) for e in range(E)]
    start, istart = [0], [0]
    for c in count:
        start.append(start[-1] + c)
        istart.append(istart[-1] + items(c))
    plist = [p for e in range(E) for p in range(P) if lane_e[p] == e]
    return count, start, istart, plist


def test_one_warp_routing_builds_the_block_wide_arrays():
    """At most 32 pairs (M = 1..8 on GPT-OSS, 1..5 on DeepSeek-V4) the routing is built from one warp's
    registers in one barrier; its counts, starts, item starts and pair list must be the block-wide build's for any
    ids (another shard's experts skipped, repeated experts), so that every CTA, both GEMMs and the bits agree."""
    import random

    rng = random.Random(2)
    cases = [([5, 9, 70, 3], 128, 8, 90), ([7, 7, 7, 7], 128, 2, 90), ([-1, 200, 3], 128, 1, 4)]
    for _ in range(200):
        P, E = rng.randint(1, 32), rng.choice((4, 32, 128, 256))
        cases.append(([rng.randrange(-2, E + 2) for _ in range(P)], E, rng.choice((1, 2, 8, 16)), rng.randint(1, 90)))
    for ids, E, tc, g in cases:
        assert _routing(ids, E, tc, g, True) == _routing(ids, E, tc, g, False)
    src = "".join(p.read_text() for p in _kernel_sources())  # the .cu and the headers it includes
    assert "if (a.num_pairs <= 32) {" in src and "chunks += k < xk && (k & 1);" in src
    assert "const int key = mine ? e * 2 + (rank % token_chunk == 0) : 2 * kMaxExperts + 2;" in src
    assert "r.plist[mine_before + rank] = static_cast<L>(lane);" in src


def test_dynamic_items_one_each_where_the_grid_has_as_many_ctas_as_items():
    """Where a grid has at least as many CTAs as items (M = 1: 360 items, 396 CTAs on GPT-OSS-120b), the CTAs
    that claim first take one item each and the last ones none, instead of the first half taking two each and
    running them one after the other; with more items than CTAs the claims run ahead as before. Either way every
    item is done exactly once."""
    import random

    rng = random.Random(0)
    for n_items, grid in ((360, 396), (396, 396), (720, 396), (5, 264), (1200, 132)):
        order = list(range(grid))
        rng.shuffle(order)
        done = _claim_items(n_items, grid, depth=6, chunks=45, order=order)
        assert sorted(i for items in done.values() for i in items) == list(range(n_items))
        if n_items <= grid:
            assert max(len(v) for v in done.values()) == 1
            assert all(len(done[c]) == 0 for c in order[n_items:])  # the last to claim take none
        else:
            assert max(len(v) for v in done.values()) >= 2
    # the kernel implements the same rule
    src = "".join(p.read_text() for p in _kernel_sources())  # the .cu and the headers it includes
    assert "const bool one_each = DY && n_items <= static_cast<int>(gridDim.x);" in src
    assert "atomicAdd(a.sched, one_each ? 1 : kAhead)" in src and "one_each ? n_items : atomicAdd(a.sched, 1)" in src


def test_the_argument_block_mirrors_the_cuda_struct():
    """ctypes' DecodeArgs has the CUDA source's ``struct DecodeArgs`` fields in the same order, each 8 bytes
    (int64_t or double on both sides), so that no field is read at another one's offset."""
    import ctypes
    import re

    from mxfp4lab.kernels.decode_w4a16 import SOURCE, DecodeArgs

    body = re.search(r"struct DecodeArgs \{(.*?)\n\};", SOURCE.read_text(), re.S).group(1)
    fields = []
    for line in body.splitlines():
        m = re.match(r"\s*(int64_t|double)\s+([^;]+);", line.split("//")[0])
        if m:
            fields += [(m.group(1), n.strip()) for n in m.group(2).split(",")]
    assert fields and [n for _, n in fields] == [n for n, _ in DecodeArgs._fields_]
    kinds = {"int64_t": ctypes.c_int64, "double": ctypes.c_double}
    assert all(kinds[t] is ct for (t, _), (_, ct) in zip(fields, DecodeArgs._fields_))
    assert ctypes.sizeof(DecodeArgs) == 8 * len(fields)


def test_the_combine_scales_each_output_after_rounding_it(kernel_ptx):
    """The routed scaling factor is applied as after the kernel: each of a thread's 8 outputs is rounded to bf16,
    multiplied by the factor in fp32 (an unfused multiply) and rounded again, 16 conversions in all."""
    body = next(b for b in kernel_ptx() if "combine_kernel" in b[:200])
    after = body.partition("griddepcontrol.wait")[2]
    assert after.count("cvt.rn.bf16.f32") >= 16 and after.count("mul.rn.f32") >= 8


def test_a_bad_routed_scaling_factor_is_refused_by_name():
    import types

    from mxfp4lab.kernels.decode_w4a16 import DecodeKernelError, forward

    layout = types.SimpleNamespace(hidden_size=64, intermediate_size=64)
    ids, w = torch.zeros(1, 2, dtype=torch.int32), torch.ones(1, 2)
    for bad in (0.0, -1.5, float("nan"), float("inf")):
        with pytest.raises(DecodeKernelError, match="routed_scaling_factor must be a finite number > 0"):
            forward(torch.zeros(1, 64, dtype=torch.bfloat16), ids, w, layout, routed_scaling_factor=bad)


def test_item_tile_variants_twin_the_layouts_groups_and_carry_their_tiles_in_the_code():
    """Variants whose items hold other tiles than the layout's groups (fc2: two groups; fc1: half a group) check
    bit for bit against the same launch with the layout's groups, or the first plain one with their token rows;
    the library's table code carries both tile counts; fused launches and L2 staging keep the layout's groups;
    the tuner takes the two-group fc2 items, not the half fc1 items (slower on the H200)."""
    from mxfp4lab.backends.decode_w4a16 import CANDIDATES
    from mxfp4lab.kernels.decode_w4a16 import VARIANTS, describe, LaunchConfig, twin_of
    from mxfp4lab.layout.decode_w4a16 import FC1_TILES, FC2_TILES

    tiles = {i: (v.fc1_tiles, v.fc2_tiles) for i, v in VARIANTS.items()
             if (v.fc1_tiles, v.fc2_tiles) != (4, 2) and not v.wide}  # (wide items: their own test)
    assert tiles == {37: (4, 4), 38: (4, 4), 39: (2, 2), 40: (2, 2), 41: (4, 4)}
    assert (FC1_TILES, FC2_TILES) == (4, 2)
    assert {i: twin_of(i) for i in tiles} == {37: 38, 38: 5, 39: 40, 40: 3, 41: 15}
    for i, v in VARIANTS.items():
        assert v.code // 10**15 % 10 == v.fc2_tiles and v.code // 10**14 % 10 == v.fc1_tiles
        if (v.fused and not v.wide) or v.l2 & 5:
            assert (v.fc1_tiles, v.fc2_tiles) == (FC1_TILES, FC2_TILES), i
        assert v.fc1_tiles in (FC1_TILES, FC1_TILES // 2) and v.fc2_tiles in (FC2_TILES, 2 * FC2_TILES), i
        assert v.fc1_tiles == FC1_TILES or v.token_groups == 2, i  # half items exist for 16 tokens per item
    assert describe(LaunchConfig(variant=37))["tiles_per_item"] == [4, 4]
    tuned = set().union(*CANDIDATES.values())
    assert {37, 38, 41} <= tuned and not {39, 40} & tuned


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="needs a C++ compiler")
def test_item_tiles_gather_the_rows_each_item_stands_for(tmp_path):
    """The kernel's item-tile arithmetic (ItemTiles, composed as the copy cursor composes it: the lane's bytes of the
    item's first layout block + the half shift, tile n at + tile_src(n) (a pair's tiles >= LT one group block
    further), scale lane l at + scale_src(l) - 16 l + half_scale (+ that block)) gathers, from the decode layout, the
    slot of an item laid out as NT contiguous tiles then their scales: for a whole item the layout group's bytes, for
    an fc2 pair item q output rows 64q.. (the last group read again where a layer has an odd number), for an fc1 half
    item i the up and gate rows 16i... Expected slots come from tile_words of those rows, not from the step layout."""
    table = dr.kernel_item_tiles(tmp_path)
    e, chunks = 2, 2
    k = 64 * chunks

    def rows(n, seed):
        return _codes_scales(e, n, k, seed=seed, hi=129)

    def expected_tile(packed, scales, r0, c):  # one 16-row tile's lane words and scale bytes at chunk c
        w, s = L.tile_words(packed[:, r0 : r0 + 16].contiguous(), scales[:, r0 : r0 + 16].contiguous())
        return w[:, 0, c].reshape(e, 512), s[:, 0, c]

    def gather(blocks, nt, lt, item, c):
        t = table[f"{nt},{lt}"]
        lgroups = blocks.shape[1]
        flat = blocks.reshape(e, -1)
        lg, shift, hscale = t["groups"][item]
        second = chunks * t["step"] if nt == 2 * lt and lg + 1 < lgroups else 0
        out = torch.empty(e, nt * 544, dtype=torch.uint8)
        for lane in range(32):
            w = (lg * chunks + c) * t["step"] + lane * 16 + shift
            for n in range(nt):
                src = w + (second if nt == 2 * lt and n >= lt else 0) + t["tiles"][n]
                out[:, n * 512 + lane * 16 : n * 512 + lane * 16 + 16] = flat[:, src : src + 16]
            if lane < 2 * nt:
                src = w + t["scales"][lane] - lane * 16 + hscale + (second if nt == 2 * lt and lane >= 2 * lt else 0)
                out[:, nt * 512 + lane * 16 : nt * 512 + lane * 16 + 16] = flat[:, src : src + 16]
        return out

    # fc2: 5 layout groups of 2 tiles (an odd number): whole items and pair items
    down, ds = rows(160, 7)
    w2 = L.fc2_to_decode(down, ds)
    assert w2.shape[1] == 5 and table["4,2"]["item_groups5"] == 3 and table["2,2"]["item_groups5"] == 5
    for nt, items, row0 in ((2, 5, lambda q, n: 32 * q + 16 * n), (4, 3, lambda q, n: 64 * q + 16 * n)):
        for q in range(items):
            for c in range(chunks):
                got = gather(w2, nt, 2, q, c)
                for n in range(nt):
                    r0 = row0(q, n)
                    if r0 >= 160:  # the missing second group of the last pair: the first group's tile again
                        r0 -= 32
                    wt, st = expected_tile(down, ds, r0, c)
                    assert torch.equal(got[:, n * 512 : (n + 1) * 512], wt), (nt, q, c, n)
                    assert torch.equal(got[:, nt * 512 + n * 32 : nt * 512 + (n + 1) * 32], st), (nt, q, c, n)
    # fc1: 3 layout groups of 2 up + 2 gate tiles: whole items and half items (an up and a gate tile)
    up, us = rows(96, 9)
    gate, gs = rows(96, 11)
    w13 = L.fc1_to_decode(up, us, gate, gs)
    assert table["2,4"]["item_groups5"] == 10 and table["4,4"]["item_groups5"] == 5
    for nt, items, per in ((4, 3, 32), (2, 6, 16)):
        for i in range(items):
            for c in range(chunks):
                got = gather(w13, nt, 4, i, c)
                for n in range(nt):
                    half = nt // 2
                    src, ssrc = (up, us) if n < half else (gate, gs)
                    wt, st = expected_tile(src, ssrc, per * i + 16 * (n % half), c)
                    assert torch.equal(got[:, n * 512 : (n + 1) * 512], wt), (nt, i, c, n)
                    assert torch.equal(got[:, nt * 512 + n * 32 : nt * 512 + (n + 1) * 32], st), (nt, i, c, n)



def test_wide_item_variants_are_their_own_twins_and_route_more_pairs(built_library, monkeypatch):
    """Wide items (variants with ``wide`` > 0): 32 ``wide`` tokens per item (split tiles of 128 tokens, ``wgmma`` = 3:
    128; 70, mma.sync at two CTAs per SM: 16), the code carries ``wide`` and ``wgmma`` (and the tens of ``token_groups`` above them); their sums run in another order than any split-K variant's (and wgmma's inside the MMA), so each is its
    own twin (checked against the reference only); the library's shared memory per CTA is the ring (D stages of
    8 / wide row groups x 2176 B and the item's token rows x 144 B, or 128 B unpadded with wgmma) plus the routing lists
    (16-bit pair ids at two CTAs per SM, so that 51 and 53 fit at M = 4096); they route up to MAX_WIDE_PAIRS pairs where split-K variants stop at
    MAX_PAIRS, refuse the fused combine, and are tuned from M = 16 on (128 tokens per item from M = 128)."""
    import types

    from mxfp4lab.backends.decode_w4a16 import CANDIDATES
    from mxfp4lab.kernels import decode_w4a16 as k

    wide = {i: v for i, v in k.VARIANTS.items() if v.wide}
    assert set(wide) == {42, 43, 44, *range(46, 54), 56, 57, 70, *range(72, 77), *range(79, 88)}
    family = {*range(72, 77), 82, 83, 84}  # 70's items cut or scheduled otherwise: 70's sums
    assert {i for i, v in wide.items() if v.wgmma} == {*range(46, 54), 56, 57, 79, 80, 81, 85, 86, 87}
    assert all(v.wide == 2 for v in wide.values() if v.wgmma in (2, 3))  # split tiles: two warps per row group
    # warp-specialized (wgmma 5; 6: two producer warpgroups; 7: the decode on the consumers): `wide` consumer
    # warpgroups of 64 weight rows, 128 tokens, one CTA per SM; 81 computes 80's sums, 85-87 56's (87: 86 with a
    # 6-stage ring)
    assert {i: (v.wide, v.wgmma) for i, v in wide.items() if v.wgmma >= 5} == {79: (4, 5), 80: (2, 5), 81: (2, 6),
                                                                               85: (4, 7), 86: (2, 7), 87: (2, 7)}
    assert dataclasses.replace(k.VARIANTS[86], depth=6) == k.VARIANTS[87]
    assert all(CANDIDATES[b][0] in wide for b in CANDIDATES if b >= 1024)  # the only ones above 8192 pairs
    for i, v in wide.items():
        # 32 tokens per token warp; 16 (two N blocks) only with mma.sync; 128 per item with the split tiles of WG = 3
        twin = 70 if i in family else 80 if i == 81 else 56 if i in (85, 86, 87) else i
        assert k.twin_of(i) == twin and v.token_groups in ((16,) if v.wgmma >= 3 else (4 * v.wide,) if v.wgmma else
                                                          (4 * v.wide, 2 * v.wide))
        assert v.code // 10**16 == v.wide + 10 * v.wgmma + 100 * (v.token_groups // 10)
        assert (v.fc1_tiles, v.fc2_tiles) == ((2, 2) if i in (75, 76, 84) else (4, 2) if i in (72, 74, 82, 83) else (4, 4))
        assert v.ctas_per_sm == (3 if i in (75, 76) else 2 if 50 < i < 54 or 70 <= i < 77 or i in (82, 83, 84) else 1)
    for i, j in ((42, 46), (43, 47), (44, 48)):  # the wgmma twins: the same items and ring depth
        assert dataclasses.replace(k.VARIANTS[i], wgmma=1) == k.VARIANTS[j]
    assert dataclasses.replace(k.VARIANTS[47], wgmma=2) == k.VARIANTS[49]
    assert dataclasses.replace(k.VARIANTS[49], token_groups=16, wgmma=3) == k.VARIANTS[56]
    assert dataclasses.replace(k.VARIANTS[42], token_groups=2, ctas_per_sm=2) == k.VARIANTS[70]
    assert dataclasses.replace(k.VARIANTS[70], fc2_tiles=2) == k.VARIANTS[72]  # fc2: one layout group per warp
    # 73, 74: 70 and 72 as one grid (wide_one_kernel), the same sums
    assert [dataclasses.replace(k.VARIANTS[i], fused=True) for i in (70, 72)] == [k.VARIANTS[73], k.VARIANTS[74]]
    # 75, 76: fc1 half a layout group and fc2 one per warp (16 accumulators) at three CTAs per SM, a 3-deep ring;
    # 76 as one grid
    assert dataclasses.replace(k.VARIANTS[72], fc1_tiles=2, ctas_per_sm=3, depth=3) == k.VARIANTS[75]
    assert dataclasses.replace(k.VARIANTS[75], fused=True) == k.VARIANTS[76]
    # 82: 74 with fc2's items claimed from a counter (dynamic = 2) instead of dealt: the same items, the same sums
    assert dataclasses.replace(k.VARIANTS[74], dynamic=2) == k.VARIANTS[82]
    # 83: 82 with fc1's items claimed as well (dynamic = 3)
    assert dataclasses.replace(k.VARIANTS[82], dynamic=3) == k.VARIANTS[83]
    # 84: 83 with fc1 items of half a layout group (76's), twice as many at half the work, at two CTAs per SM
    assert dataclasses.replace(k.VARIANTS[83], fc1_tiles=2) == k.VARIANTS[84]
    assert {i for i, v in wide.items() if v.fused} == {73, 74, 76, 82, 83, 84}
    assert {i for i, v in wide.items() if v.dynamic} == {82, 83, 84}
    assert all(k.twin_of(i) != j for i in k.VARIANTS for j in wide
               if i != j and not (i in family and j == 70) and (i, j) not in ((81, 80), (85, 56), (86, 56), (87, 56)))
    assert all({i for i, v in wide.items() if v.token_groups <= 8 and i not in family} <= set(CANDIDATES[b])
               for b in CANDIDATES if b >= 16)
    # the one grid (73, 74; 82, 83: 74 with fc2's, and fc1's, items claimed) and three CTAs per SM as one grid (76)
    # are tuned from M = 16 to 512; 72 and 75 (each slower than 70 or its one-grid form at every point timed) and the
    # warp-specialized items (slower than 56) not
    assert all(family & set(CANDIDATES[b]) == ({73, 74, 76, 82, 83} if 16 <= b <= 512 else set()) for b in CANDIDATES)
    assert not {79, 80, 81, 85, 86, 87} & {v for c in CANDIDATES.values() for v in c}
    assert all({56, 57} <= set(CANDIDATES[b]) for b in CANDIDATES if b >= 128)  # 128 tokens per item
    assert not set(wide) & set(CANDIDATES[8])

    monkeypatch.setenv("MXFP4LAB_DECODE_LIB", str(built_library[0]))
    k.load_library.cache_clear()
    try:
        smem = k.load_library().mxfp4lab_decode_w4a16_smem_bytes
        lists = (5 * 128 + 2 + 16 + 4096 + 32) * 4  # 128 experts, 4096 pairs
        assert smem(42, 128, 4096, 0) == 4 * (8 * 2176 + 32 * 144) + lists
        assert smem(43, 128, 4096, 0) == 4 * (4 * 2176 + 64 * 144) + lists
        assert smem(44, 128, 4096, 1) == smem(44, 128, 4096, 2) == 6 * (8 * 2176 + 32 * 144) + lists
        assert smem(46, 128, 4096, 0) == 4 * (8 * 2176 + 32 * 128) + lists
        assert smem(47, 128, 4096, 0) == 4 * (4 * 2176 + 64 * 128) + lists
        assert smem(48, 128, 4096, 0) == 6 * (8 * 2176 + 32 * 128) + lists
        assert smem(49, 128, 4096, 0) == 4 * (4 * 2176 + 64 * 128) + lists
        assert smem(50, 128, 4096, 0) == 6 * (4 * 2176 + 64 * 128) + lists
        # two CTAs per SM: 16-bit pair ids in the lists (2 bytes per pair instead of 4)
        assert smem(51, 128, 4096, 0) == 4 * (4 * 2176 + 64 * 128) + lists - 2 * 4096
        assert smem(53, 256, 4096 * 6 + 1, 0) == 3 * (4 * 2176 + 64 * 128) + (5 * 256 + 50) * 4 + (2 * 24577 + 3) // 4 * 4
        assert smem(56, 128, 4096, 0) == 4 * (4 * 2176 + 128 * 128) + lists
        assert smem(57, 128, 4096, 0) == 3 * (4 * 2176 + 128 * 128) + lists
        assert smem(70, 128, 4096, 0) == 4 * (8 * 2176 + 16 * 144) + lists - 2 * 4096  # 16 token rows, 16-bit ids
        # warp-specialized (NC consumer warpgroups): two bf16 A buffers of 64 NC rows x 64, a 4-stage ring of the token
        # tile (128 x 64 bf16) and the 4 NC tiles' raw steps (544 B each), 8 mbarriers, then the routing of NT / 32
        # warps with 16-bit pair ids
        for v, nc, pwg in ((79, 4, 1), (80, 2, 1), (81, 2, 2)):
            ws_lists = (5 * 128 + 2 + 2 * (nc + pwg) * 4 + 32) * 4 + 2 * 4096
            assert smem(v, 128, 4096, 0) == 2 * nc * 8192 + 4 * (16384 + 4 * nc * 544) + 8 * 8 + ws_lists, v
        # the decode on the consumers: a 4-stage ring of the token tile and the 4 NC tiles' raw steps, NC swap buffers
        # of 8 KB (fc1's up sums), 8 mbarriers, the routing
        for v, nc, r in ((85, 4, 4), (86, 2, 4), (87, 2, 6)):
            ws_lists = (5 * 128 + 2 + 2 * (nc + 1) * 4 + 32) * 4 + 2 * 4096
            assert smem(v, 128, 4096, 0) == r * (16384 + 4 * nc * 544) + nc * 8192 + 2 * r * 8 + ws_lists, v
            k.check_shared_memory(k.load_library(), v, 256, 32768, 232448, 233472)  # fits at the most pairs
        k.check_shared_memory(k.load_library(), 79, 256, 4096 * 6, 232448, 233472)  # DeepSeek-V4 at M = 4096
        with pytest.raises(k.DecodeKernelError, match="variant 79 .*shared memory per CTA"):  # at the most pairs
            k.check_shared_memory(k.load_library(), 79, 256, 32768, 232448, 233472)
        assert smem(72, 128, 4096, 2) == smem(70, 128, 4096, 2)  # fc2's slots keep room for two groups a warp
        # one grid, the same ring (82's claims use fc1's routing scratch, free in fc2)
        assert smem(73, 128, 4096, 0) == smem(74, 128, 4096, 0) == smem(82, 128, 4096, 0) == smem(83, 128, 4096, 0) == smem(84, 128, 4096, 0) \
            == smem(70, 128, 4096, 0)
        # three CTAs per SM: the same stage (4-tile slots), 3 deep, 32-bit pair ids
        assert smem(75, 128, 4096, 0) == smem(76, 128, 4096, 0) == 3 * (8 * 2176 + 16 * 144) + lists
        k.check_shared_memory(k.load_library(), 75, 32, 512, 232448, 233472)  # GPT-OSS-20b at M = 128, three per SM
        with pytest.raises(k.DecodeKernelError, match="shared memory"):  # GPT-OSS at M = 4096: not three per SM
            k.check_shared_memory(k.load_library(), 75, 128, 16384, 232448, 233472)
        k.check_shared_memory(k.load_library(), 56, 256, 4096 * 6, 232448, 233472)  # DeepSeek-V4 at M = 4096
        k.check_shared_memory(k.load_library(), 52, 256, 6144, 232448, 233472)  # DeepSeek-V4 at M = 1024, two per SM
        k.check_shared_memory(k.load_library(), 70, 128, 16384, 232448, 233472)  # GPT-OSS at M = 4096, two per SM
        with pytest.raises(k.DecodeKernelError, match="shared memory per CTA"):  # DeepSeek-V4 at M = 4096
            k.check_shared_memory(k.load_library(), 70, 256, 4096 * 6, 232448, 233472)
        k.check_shared_memory(k.load_library(), 51, 128, 16384, 232448, 233472)  # GPT-OSS at M = 4096, two per SM
        k.check_shared_memory(k.load_library(), 53, 256, 4096 * 6, 232448, 233472)  # DeepSeek-V4 at M = 4096
        with pytest.raises(k.DecodeKernelError, match="shared memory per CTA"):
            k.check_shared_memory(k.load_library(), 51, 256, 4096 * 6, 232448, 233472)
        k.check_shared_memory(k.load_library(), 42, 256, 4096 * 6, 232448, 233472)  # DeepSeek-V4 at M = 4096
        with pytest.raises(k.DecodeKernelError, match="shared memory per CTA"):
            k.check_shared_memory(k.load_library(), 44, 256, 4096 * 6, 232448, 233472)
    finally:
        k.load_library.cache_clear()

    layout = types.SimpleNamespace(hidden_size=64, intermediate_size=64, num_local_experts=8)
    x = torch.zeros(4097, 64, dtype=torch.bfloat16)
    ids, w = torch.zeros(4097, 2, dtype=torch.int32), torch.ones(4097, 2)
    with pytest.raises(k.DecodeKernelError, match=r"8194 \(token, expert\) pairs > 8192, the most one call of variant 4"):
        k.forward(x, ids, w, layout, k.LaunchConfig(variant=4))
    big = torch.zeros(16385, 2, dtype=torch.int32)
    with pytest.raises(k.DecodeKernelError, match=r"32770 \(token, expert\) pairs > 32768, the most one call of variant 42"):
        k.forward(torch.zeros(16385, 64, dtype=torch.bfloat16), big, torch.ones(16385, 2), layout,
                  k.LaunchConfig(variant=42))
    # the 128-token items address activation rows by 32-bit offsets (an expanded x: no memory behind its 2^31 elements)
    wide_x = torch.zeros(1, 1, dtype=torch.bfloat16).expand(32768, 65536)
    wide_layout = types.SimpleNamespace(hidden_size=65536, intermediate_size=64, num_local_experts=8,
                                        w13=types.SimpleNamespace(shape=(8, 2)))
    refusal = r"variant 56 addresses activation rows by 32-bit offsets: M \* hidden = 2147483648"
    with pytest.raises(k.DecodeKernelError, match=refusal):
        k.forward(wide_x, torch.zeros(32768, 1, dtype=torch.int32), torch.ones(32768, 1), wide_layout,
                  k.LaunchConfig(variant=56))


def test_wide_items_run_the_split_k_epilogues_operations():
    """fc1's SwiGLU epilogue is written twice: in gemm_phase and in the macro MXFP4LAB_SWIGLU, which the wide and
    warp-specialized kernels expand (a shared function changed both kernels' register allocation; the macro leaves
    the wide kernels' SASS as it was). Both must stay the same operations: the bias added to the bf16-rounded sums, the
    clamp, the fp32 SwiGLU. A changed formula in one of them fails here."""
    import re

    from mxfp4lab.kernels.decode_w4a16 import SOURCES

    def ops(text):
        i = text.index("if (a.use_limit) {") if "if (a.use_limit) {" in text else text.index("if (use_limit) {")
        j = text.index("act = gate", i)
        body = text[i:text.index("\n", j)].replace("\\", "").replace("a.use_limit", "use_limit")
        lines = [re.sub(r"\s+", " ", ln).strip().removeprefix("const ").removeprefix("float ").removesuffix(";")
                 for ln in body.splitlines()]
        return [ln for ln in lines if ln]

    common, split_k, wide, ws = (next(p for p in SOURCES if p.name == f"decode_w4a16_{part}.cuh").read_text()
                                 for part in ("common", "split_k", "wide", "ws"))
    macro = common[common.index("#define MXFP4LAB_SWIGLU(") :]
    macro = macro[: macro.index("(up + beta)") + len("(up + beta)")] + "\n"
    assert ops(split_k) == ops(macro) and len(ops(macro)) >= 5
    for text in (split_k, macro):
        assert re.search(r"up = bf16_round\(.*\)", text)
    # the bias, bf16 -> fp32, added to the rounded sum: in place in gemm_phase, read once per item in the wide kernels
    assert "up += __bfloat162float(" in split_k and "gate += __bfloat162float(" in split_k
    assert re.search(r"b_up\[t\]\[r\] = __bfloat162float\(bias\[row\]\)", wide)
    assert re.search(r"b_gate\[t\]\[r\] = __bfloat162float\(bias\[a\.bias_ld \+ row\]\)", wide)
    assert re.search(r"MXFP4LAB_SWIGLU\(act, [^;]*bias,\s+b_up\[t\]\[i >> 1\], b_gate\[t\]\[i >> 1\], a\.use_limit", wide)
    assert "MXFP4LAB_SWIGLU(act, acc[j][u], acc[j][u + 2], bias, b_up, b_gate, a.use_limit" in ws


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="needs a C++ compiler")
@pytest.mark.parametrize("counts,bn,blocks", [([33, 0, 1, 64, 65, 32], 32, 12), ([7, 0, 0, 130], 64, 23), ([0, 5], 32, 6),
                                               ([9, 16, 17, 0, 33, 1], 16, 12)])  # 16: variant 70
def test_wide_items_cover_every_token_tile_and_row_block_once(tmp_path, counts, bn, blocks):
    """The wide kernel's find_wide_item (its own source, host-compiled): the items of a routing are every (expert,
    token tile, row block) exactly once, expert-major, row block-major inside an expert with its token tiles
    next to each other (so that CTAs dealt neighbouring items read one row block's weights side by side), and the
    token tiles of an expert split its pair list [start, start + count) into pieces of up to bn."""
    got = dr.kernel_wide_items(tmp_path, counts, bn, blocks)
    want, start = [], 0
    for e, c in enumerate(counts):
        tiles = -(-c // bn)
        for b in range(blocks):
            for t in range(tiles):
                want.append((e, start + t * bn, min(bn, c - t * bn), b))
        start += c
    assert got == want and len(got) == sum(-(-c // bn) for c in counts) * blocks


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="needs a C++ compiler")
# GPT-OSS-20b's row blocks per token tile (90 layout groups of fc1 and of fc2, 8 warps per item) on 132 SMs: 73 (fc1 a
# group a warp, fc2 two; two CTAs per SM), 74 (fc2 one group a warp), 76 (fc1 half a group, fc2 one; three per SM)
@pytest.mark.parametrize("blocks1, blocks2, grid, shorter", [(12, 6, 264, False), (12, 12, 264, True),
                                                             (23, 12, 396, False)])
def test_the_one_grid_schedule_deals_every_item_once_and_fc2_waits_for_its_experts_fc1(tmp_path, blocks1, blocks2,
                                                                                       grid, shorter):
    """The one-grid kernel (wide_one_kernel, host-compiled: find_wide_item over token-tile offsets, expert_items,
    dealt_items) at GPT-OSS-20b's row blocks and 16-token tiles, 256 pairs over 32 experts drawn as a router would:
    fc1's and fc2's items are each the wide enumeration, every item dealt to exactly one CTA at its place in one
    round-robin sequence (fc1's, then fc2's), an fc2 item waits for exactly its expert's fc1 items, and -- with every
    item taking one unit -- the one grid ends no later than fc2 launched after fc1's whole grid, and sooner where fc2
    has more items than fit beside fc1's last ones (74)."""
    counts = [int(c) for c in np.random.default_rng(0).multinomial(256, [1 / 32] * 32)]
    bn = 16
    got = dr.kernel_one_grid(tmp_path, counts, bn, blocks1, blocks2, grid)

    def enumerate_items(blocks):  # the wide enumeration (test_wide_items_enumerate_every_tile_once)
        out, start = [], 0
        for e, c in enumerate(counts):
            tiles = -(-c // bn)
            out += [(e, start + t * bn, min(bn, c - t * bn), b) for b in range(blocks) for t in range(tiles)]
            start += c
        return out

    want1, want2 = enumerate_items(blocks1), enumerate_items(blocks2)
    n1 = len(want1)
    for b, (one, two) in got.items():
        assert one == want1[b::grid]  # fc1: sequence positions b, b + grid, ...
        first2 = (b - n1) % grid  # fc2's item j sits at position n1 + j
        assert [it for it, _ in two] == want2[first2::grid]
        fc1_of = {e: sum(1 for it in want1 if it[0] == e) for e in range(len(counts))}
        assert all(need == fc1_of[it[0]] > 0 for it, need in two)
    assert sum(len(one) for one, _ in got.values()) == n1 and sum(len(two) for _, two in got.values()) == len(want2)

    # unit-time schedule: fc1 items never wait; an fc2 item starts when its CTA is free and its expert's fc1 is done
    done1 = {}
    for b, (one, _) in got.items():
        for k, it in enumerate(one):
            done1[it[0]] = max(done1.get(it[0], 0), k + 1)
    end_one = 0
    for b, (one, two) in got.items():
        t = len(one)
        for it, _ in two:
            t = max(t, done1[it[0]]) + 1
        end_one = max(end_one, t)
    rounds1, rounds2 = -(-n1 // grid), -(-len(want2) // grid)
    assert end_one <= rounds1 + rounds2
    assert (end_one < rounds1 + rounds2) == shorter


def test_the_source_digest_covers_every_file_the_library_compiles():
    """SOURCES (whose digest the library carries and the loader checks) are the .cu and exactly the headers it and
    they include: a header left out would let a stale library load after that header changed."""
    import re

    from mxfp4lab.kernels.decode_w4a16 import SOURCE, SOURCES

    included = {name for p in SOURCES for name in re.findall(r'^#include "([^"]+)"', p.read_text(), re.M)}
    assert SOURCES[0] == SOURCE and {p.name for p in SOURCES[1:]} == included
    assert all(p.parent == SOURCE.parent and p.is_file() for p in SOURCES)
    # and every one of them ships with the package (pyproject's package data), not only in a checkout
    import fnmatch
    import tomllib

    root = SOURCE.parents[3]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mxfp4lab"]
    rel = [p.relative_to(root / "mxfp4lab").as_posix() for p in SOURCES]
    assert all(any(fnmatch.fnmatch(r, gl) for gl in globs) for r in rel), (rel, globs)


def test_wgmma_token_tile_meets_the_decoded_fragments_k_order(tmp_path):
    """Wide items with wgmma (variants with ``wgmma``): the decoded A fragments are the mma.sync ones, so at MMA step
    st wgmma must read as B[k][n] token row n's chunk element 16 (k % 8 // 2) + 4 st + 2 (k // 8) + k % 2 -- the
    element lane k % 8 // 2 feeds mma.sync at logical k (b0: k = 2t, 2t + 1; b1: 2t + 8, 2t + 9; the layout's K
    permutation, as tile_chunk_products reads it). The kernel's copy map (WgmmaTile::dst), its descriptor and its
    per-step start address, read through the PTX ISA's K-major no-swizzle canonical layout, must give exactly that
    for all 128 token rows (split tiles read all 64 or 128 at once, the other wgmma variants 32 per warpgroup, from row
    32 4 SBO further); every copied byte lands once, inside the tile's 128 x 128 bytes."""
    dst, desc = dr.kernel_wgmma_tile(tmp_path)
    assert len(set(dst.flatten().tolist())) == dst.size and dst.min() >= 0 and dst.max() + 4 <= 128 * 128
    assert (desc & 0x3FFF) == 4096 >> 4 and (desc >> 49) & 0x7 == 0 and desc >> 62 == 0  # start, base offset, no swizzle
    wide = dr.WIDE_SOURCE.read_text()
    step_expr = "desc + (((2 * h + s2) * 2 * WgmmaTile::kLbo) >> 4)"
    assert step_expr in wide  # the per-step start the model below applies (st = 2 h + s2)
    lbo = ((desc >> 16) & 0x3FFF) << 4
    got = dr.wgmma_b_reads(dst, desc, lambda st: (st * 2 * lbo) >> 4)
    st, k, n = np.meshgrid(np.arange(4), np.arange(16), np.arange(128), indexing="ij")
    want = n * 64 + 16 * (k % 8 // 2) + 4 * st + 2 * (k // 8) + k % 2
    assert np.array_equal(got, want)


def test_gemm_kernel_pattern_names_every_gemm_kernel_of_the_library():
    """The GEMM-only timing mode and the launch log select the decode backend's GEMM kernels by its
    ``gemm_kernel_pattern``: it must match every __global__ kernel the CUDA source defines but the combine (as the
    profiler and ncu name them: namespace, template arguments, parameters) -- the split-K, fused, wide, one-grid and
    warp-specialized kernels alike -- and not the combine, which is no GEMM."""
    import re

    from mxfp4lab.backends.decode_w4a16 import DecodeW4A16
    from mxfp4lab.kernels.decode_w4a16 import SOURCES

    names = set()
    for p in SOURCES:
        names |= set(re.findall(r"__global__ void(?: __launch_bounds__\([^)]*\))? (\w+)\(", p.read_text()))
    assert {"combine_kernel", "gemm_kernel", "wide_kernel", "ws_kernel"} <= names, names
    pat = DecodeW4A16.gemm_kernel_pattern
    for n in names:
        shown = f"void mxfp4lab_decode::{n}<2, 4, 1, true, 3, 16>(mxfp4lab_decode::GemmArgs)"
        assert bool(re.search(pat, shown)) == (n != "combine_kernel"), (n, pat)
    assert not re.search(pat, "void mxfp4lab_decode::combine_kernel(mxfp4lab_decode::CombineArgs)")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA 12.4+) to compile for sm_90a")
@pytest.mark.skipif(torch.cuda.is_available(), reason="launches with dummy pointers: only where no GPU can run them")
def test_the_library_accepts_the_workspaces_forward_allocates_for_every_variant(built_library, monkeypatch):
    """forward() allocates each variant's scratch by :func:`workspaces`; the library refuses any other set with
    cudaErrorInvalidValue (1) before it launches. On a machine without a GPU every accepted call gets as far as the
    CUDA runtime and fails there (no driver or no device, never 1), so the library's rules are checked on the CPU:
    the set from ``workspaces`` passes them for every variant (with and without the fused combine where it runs), and
    a set the rules forbid is refused -- 82's fc2 claims taken from the split-K items' counters as well as from its
    ready counters was such a set, seen only when a GPU run failed."""
    import ctypes
    import dataclasses

    from mxfp4lab.kernels import decode_w4a16 as k

    monkeypatch.setenv("MXFP4LAB_DECODE_LIB", str(built_library[0]))
    k.load_library.cache_clear()
    try:
        lib = k.load_library()

        def call(variant, ws):
            p = 1 << 16  # a dummy device address: the call must stop before anything reads it
            a = k.DecodeArgs(
                x=p, topk_ids=p, topk_w=p, w13=p, w2=p, b13=p, b2=p, alpha_s=1.0, use_limit=0, h=p, y=p, out=p, m=1,
                top_k=4, hidden=2880, inter=2880, ld_x=2880, ld_h=2880, ld_y=2880, ld_out=2880, ld_b13=2880,
                ld_b2=2880, groups1=90, groups2=90, chunks1=45, chunks2=45, expert_offset=0, num_experts=32,
                variant=variant, grid=264, pdl=1, counters=p if ws.counters else 0, barrier=p if ws.barrier else 0,
                sched=p if ws.sched else 0, ready=p if ws.ready else 0, out_scale=1.0)
            return lib.mxfp4lab_decode_w4a16_forward(ctypes.byref(a), 0)

        invalid = 1  # cudaErrorInvalidValue
        for variant, var in k.VARIANTS.items():
            sets = [k.workspaces(variant, False, 32)]
            if not (var.fused or var.dynamic or var.wide):
                sets.append(k.workspaces(variant, True, 32))
            else:
                with pytest.raises(k.DecodeKernelError, match=f"variant {variant} .*; the fused combine runs only"):
                    k.workspaces(variant, True, 32)
            for ws in sets:
                assert call(variant, ws) != invalid, (variant, ws)
            ws = sets[0]
            if var.wide:  # wide items: no split-K scratch; the ready counters exactly when one grid
                forbidden = [dataclasses.replace(ws, sched=True), dataclasses.replace(ws, barrier=True),
                             dataclasses.replace(ws, counters=True), dataclasses.replace(ws, ready=0 if ws.ready else 33)]
            else:  # split-K: the fused launch needs its barrier, dynamic items their counters
                forbidden = ([dataclasses.replace(ws, barrier=False)] if var.fused else []) + (
                    [dataclasses.replace(ws, sched=False)] if var.dynamic else [])
            for bad in forbidden:
                assert call(variant, bad) == invalid, (variant, bad)
        assert k.workspaces(82, False, 32) == k.Workspaces(counters=False, barrier=False, sched=False, ready=34)
        assert k.workspaces(74, False, 32).ready == 33 and k.workspaces(83, False, 32).ready == 35
    finally:
        k.load_library.cache_clear()
