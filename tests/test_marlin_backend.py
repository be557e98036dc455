"""marlin_mxfp4 backend on a CPU: availability, library discovery, and the pure-torch layout helpers.

The helpers re-implement vLLM's Marlin weight repack and scale/bias permutations. They are checked
(a) against values derived by hand from the layout description in their docstrings, always, and
(b) exactly against vLLM's own pure-Python functions (``marlin_utils_test.marlin_weights`` /
``get_weight_perm``, ``marlin_utils.marlin_permute_scales`` / ``marlin_permute_bias``,
``marlin_utils_fp4.mxfp4_marlin_process_scales``), read from an unzipped vLLM wheel when one is at
``$MXFP4LAB_VLLM_SRC`` (default ``/tmp/vllm026``: ``unzip vllm-0.26.0-*.whl -d /tmp/vllm026``); the
functions are pulled out of the source with ``ast`` and run with numpy/torch only (importing vLLM
needs CUDA-built extensions).
"""

from __future__ import annotations

import ast
import lzma
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mxfp4lab.backends import BackendUnavailable, get_backend
from mxfp4lab.backends import marlin as mb
from mxfp4lab.formats import pack_fp4
from mxfp4lab.reference import swiglu
from conftest import rand_u8

VLLM_SRC = Path(os.environ.get("MXFP4LAB_VLLM_SRC", "/tmp/vllm026"))
UTILS = VLLM_SRC / "vllm/model_executor/layers/quantization/utils"


def _vllm_functions(*wanted):
    """Named top-level functions from vLLM's Marlin utility files, exec'd with numpy/torch only."""
    files = ["marlin_utils.py", "marlin_utils_fp4.py", "marlin_utils_test.py"]
    if not all((UTILS / f).exists() for f in files):
        pytest.skip(f"no unzipped vLLM wheel at {VLLM_SRC} (set MXFP4LAB_VLLM_SRC)")
    ns = {"torch": torch, "np": np, "numpy": np, "GPTQ_MARLIN_TILE": 16, "get_pack_factor": lambda b: 32 // b}
    found = set()
    for f in files:
        tree = ast.parse((UTILS / f).read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name in wanted:
                exec(compile(ast.Module([node], []), str(UTILS / f), "exec"), ns)  # noqa: S102
                found.add(node.name)
    missing = set(wanted) - found
    assert not missing, f"vLLM source at {VLLM_SRC} lacks {missing}"
    return ns


def _rand_codes(*shape, seed=0):
    return rand_u8(*shape, seed=seed, hi=16)


# --------------------------------------------------------------------------------------------
# availability
# --------------------------------------------------------------------------------------------
def test_registered_and_unavailable_here():
    cls = get_backend("marlin_mxfp4")
    assert cls is mb.MarlinMXFP4
    ok, why = cls.available()
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: availability depends on the staged library")
    assert not ok and "CUDA" in why
    with pytest.raises(BackendUnavailable, match="marlin_mxfp4"):
        cls(None)


def test_find_library_reports_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("MXFP4LAB_MARLIN_LIBS", str(tmp_path))
    monkeypatch.setattr(mb.importlib.util, "find_spec", lambda name: None)
    path, why = mb.find_moe_library()
    assert path is None and str(tmp_path) in why and "_moe_C" in why


def test_find_library_unpacks_staged_xz(tmp_path, monkeypatch):
    libs, cache = tmp_path / "libs", tmp_path / "cache"
    libs.mkdir()
    payload = os.urandom(4096)
    with lzma.open(libs / "_moe_C_stable_libtorch.abi3.so.xz", "wb") as f:
        f.write(payload)
    monkeypatch.setenv("MXFP4LAB_MARLIN_LIBS", str(libs))
    monkeypatch.setenv("MXFP4LAB_MARLIN_CACHE", str(cache))
    path, why = mb.find_moe_library()
    assert why == "" and path.startswith(str(cache)) and path.endswith("_moe_C_stable_libtorch.abi3.so")
    assert Path(path).read_bytes() == payload
    assert mb.find_moe_library()[0] == path  # second call reuses the unpacked copy


# --------------------------------------------------------------------------------------------
# layout helpers vs hand-derived values
# --------------------------------------------------------------------------------------------
def test_weight_perm_hand_values():
    perm = mb.marlin_weight_perm()
    assert sorted(perm.tolist()) == list(range(1024))
    # lane 0: rows 0,1,8,9 of columns 0 (half 0) and 8 (half 1) of tile 0 -> 0,16,128,144,8,24,136,152,
    # then interleaved 0 2 4 6 1 3 5 7
    assert perm[:8].tolist() == [0, 128, 8, 136, 16, 144, 24, 152]
    # same lane, tile 1: +256
    assert perm[8:16].tolist() == [256, 384, 264, 392, 272, 400, 280, 408]
    # lane 5: column 1, rows 2,3,10,11 -> 33,49,161,177 | 41,57,169,185
    assert perm[5 * 32:5 * 32 + 8].tolist() == [33, 161, 41, 169, 49, 177, 57, 185]


def test_repack_first_words_from_definition():
    e, n, k = 2, 128, 64
    codes = _rand_codes(e, n, k)  # W[e, n, k]
    packed = mb.marlin_repack_fp4(pack_fp4(codes))
    assert packed.shape == (e, k // 16, 2 * n) and packed.dtype == torch.int32
    perm = mb.marlin_weight_perm()
    u32 = packed.to(torch.int64) & 0xFFFFFFFF
    for ex in range(e):
        for kt in range(k // 16):
            for word in (0, 1, 37, 2 * n - 1):
                want = 0
                for i in range(8):
                    p = word * 8 + i
                    chunk, q = divmod(p, 1024)
                    src = chunk * 1024 + perm[q].item()  # flat position in the tile row (tiles side by side)
                    tile, rc = divmod(src, 256)
                    r, c = divmod(rc, 16)
                    want |= int(codes[ex, 16 * tile + c, 16 * kt + r]) << (4 * i)
                assert u32[ex, kt, word].item() == want, (ex, kt, word)


def test_scale_perm_hand_values():
    s = torch.arange(64, dtype=torch.uint8).view(1, 64, 1)  # [E=1, N=64, K/32=1], value = n
    out = mb.marlin_permute_mx_scales(s)
    assert out.shape == (1, 1, 64)
    t = [i + 8 * j for i in range(8) for j in range(8)]  # 8x8 transpose: 0,8,..,56,1,9,..
    t = [t[4 * g + o] for g in range(16) for o in (0, 2, 1, 3)]
    assert out[0, 0].tolist() == t
    assert out[0, 0, :8].tolist() == [0, 16, 8, 24, 32, 48, 40, 56]


def test_bias_perm_hand_values():
    b = torch.arange(64, dtype=torch.bfloat16).view(1, 64)
    out = mb.marlin_permute_bias(b)
    assert out[0, :16].tolist() == [0, 1, 8, 9, 16, 17, 24, 25, 2, 3, 10, 11, 18, 19, 26, 27]
    assert out[0, 32:40].tolist() == [32, 33, 40, 41, 48, 49, 56, 57]
    assert mb.marlin_permute_bias(None) is None


def test_swap_halves_and_block_size():
    t = torch.arange(2 * 6).view(2, 6)
    assert mb.swap_halves(t).tolist() == [[3, 4, 5, 0, 1, 2], [9, 10, 11, 6, 7, 8]]
    assert torch.equal(mb.swap_halves(mb.swap_halves(t)), t)
    assert mb.swap_halves(None) is None
    assert mb.block_size_m(1, 4, 32) == 8
    assert mb.block_size_m(64, 4, 32) == 16  # 8/16 = 0.5 < 0.9
    assert mb.block_size_m(16384, 4, 32) == 64


def test_swiglu_packed_torch_matches_reference():
    g = torch.Generator().manual_seed(1)
    h = (torch.randn(5, 2 * 64, generator=g) * 6).to(torch.bfloat16)
    for alpha, beta, limit in ((1.702, 1.0, 7.0), (1.0, 0.0, None), (1.0, 0.0, 10.0)):
        got = mb.swiglu_packed_torch(h, alpha, beta, limit)
        want = swiglu(h[:, :64].float(), h[:, 64:].float(), alpha, beta, limit).to(torch.bfloat16)
        assert torch.equal(got, want)


_TRITON_CHILD = textwrap.dedent("""
    import torch
    from mxfp4lab.backends import marlin as mb
    g = torch.Generator().manual_seed(2)
    for t, i in ((3, 64), (2, 1536)):
        h = (torch.randn(t, 2 * i, generator=g) * 6).to(torch.bfloat16)
        for a, b, lim in ((1.702, 1.0, 7.0), (1.0, 0.0, None)):
            got = mb.swiglu_packed(h, a, b, lim)
            want = mb.swiglu_packed_torch(h, a, b, lim)
            d = (got.float() - want.float()).abs().max().item()
            assert d <= 2 ** -6 * want.float().abs().max().item(), (t, i, lim, d)
    print("ok")
""")


def test_triton_swiglu_under_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", _TRITON_CHILD], env=env, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------------------------------------
# exact cross-checks against vLLM's pure-Python functions (unzipped wheel)
# --------------------------------------------------------------------------------------------
def test_weight_perm_equals_vllm():
    ns = _vllm_functions("get_weight_perm")
    assert torch.equal(mb.marlin_weight_perm(), ns["get_weight_perm"](4).long())


@pytest.mark.parametrize("n,k", [(128, 64), (256, 128), (192, 256)])
def test_repack_equals_vllm_marlin_weights(n, k):
    ns = _vllm_functions("marlin_permute_weights", "marlin_weights", "get_weight_perm")
    e = 2
    codes = _rand_codes(e, n, k, seed=n + k)
    got = mb.marlin_repack_fp4(pack_fp4(codes))
    perm = ns["get_weight_perm"](4)
    for ex in range(e):
        # vLLM's reference for gptq_marlin_repack: unpacked q_w [K, N] (tests/kernels/.../test_marlin_gemm.py)
        want = ns["marlin_weights"](codes[ex].T.contiguous().to(torch.int32), k, n, 4, perm)
        assert torch.equal(got[ex], want), ex


@pytest.mark.parametrize("n,k", [(128, 64), (256, 128), (192, 256)])
def test_scale_perm_equals_vllm(n, k):
    ns = _vllm_functions("get_scale_perms", "marlin_permute_scales", "mxfp4_marlin_process_scales")
    e = 3
    g = torch.Generator().manual_seed(n * k)
    s = torch.randint(0, 255, (e, n, k // 32), dtype=torch.uint8, generator=g)  # 255 (NaN) excluded
    got = mb.marlin_permute_mx_scales(s)
    # vLLM's prepare_moe_mxfp4_layer_for_marlin: view E8M0 -> bf16 -> per expert permute + process
    sb = s.view(torch.float8_e8m0fnu).to(torch.bfloat16)
    for ex in range(e):
        ms = ns["marlin_permute_scales"](s=sb[ex].T, size_k=k, size_n=n, group_size=32)
        want = ns["mxfp4_marlin_process_scales"](ms)
        assert want.dtype == torch.float8_e8m0fnu
        assert torch.equal(got[ex], want.view(torch.uint8)), ex


def test_bias_perm_equals_vllm():
    ns = _vllm_functions("get_scale_perms", "marlin_permute_bias")
    g = torch.Generator().manual_seed(3)
    b = torch.randn(4, 256, generator=g).to(torch.bfloat16)
    got = mb.marlin_permute_bias(b)
    for ex in range(4):
        assert torch.equal(got[ex], ns["marlin_permute_bias"](b[ex]))


def test_fp4_type_id_equals_vllm():
    path = VLLM_SRC / "vllm/scalar_type.py"
    if not path.exists():
        pytest.skip(f"no unzipped vLLM wheel at {VLLM_SRC}")
    import importlib.util

    spec = importlib.util.spec_from_file_location("_vllm_scalar_type", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        assert mod.scalar_types.float4_e2m1f.id == mb.FLOAT4_E2M1F_ID
        assert mod.scalar_types.bfloat16.id == mb.BFLOAT16_ID
    finally:
        sys.modules.pop(spec.name, None)
