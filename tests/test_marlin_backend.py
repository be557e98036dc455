"""marlin_mxfp4 backend on a CPU: availability, library discovery, and the pure-torch layout helpers.

The helpers re-implement vLLM's Marlin weight repack and scale/bias permutations. They are checked
(a) against values derived by hand from the layout description in their docstrings, and
(b) bit-exactly against the outputs of vLLM's own pure-Python functions (``marlin_utils_test.marlin_weights``
/ ``get_weight_perm``, ``marlin_utils.marlin_permute_scales`` / ``marlin_permute_bias``,
``marlin_utils_fp4.mxfp4_marlin_process_scales``, ``scalar_type`` ids) on fixed inputs, as recorded from
the pinned vLLM wheel in ``tests/data/marlin_vllm_record.*`` (``tests/vllm_marlin.py``). Both run on any
machine; the slow test re-derives the record from the wheel (``make test-slow`` fetches it once).
"""

from __future__ import annotations

import lzma
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import vllm_marlin as vm
from conftest import rand_u8

from mxfp4lab.backends import BackendUnavailable, get_backend
from mxfp4lab.backends import marlin as mb
from mxfp4lab.formats import pack_fp4
from mxfp4lab.reference import swiglu

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def record():
    """(tensors, metadata) of vLLM's outputs, as checked in."""
    return vm.read_record()


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
# exact cross-checks against vLLM's outputs (the checked-in record)
# --------------------------------------------------------------------------------------------
def test_record_inputs_are_regenerated_exactly(record):
    """The seeded inputs here are the ones the record was computed from (torch's generator unchanged)."""
    _, meta = record
    assert meta["input_sha256"] == {key: vm.digest(t) for key, t in vm.inputs().items()}
    assert meta["output_sha256"] == {key: vm.digest(t) for key, t in record[0].items()}


def test_weight_perm_equals_vllm(record):
    assert torch.equal(mb.marlin_weight_perm(), record[0]["weight_perm"])


@pytest.mark.parametrize("n,k", vm.REPACK_SHAPES)
def test_repack_equals_vllm_marlin_weights(n, k, record):
    got = mb.marlin_repack_fp4(pack_fp4(vm.repack_codes(n, k)))
    want = record[0][f"repack_n{n}_k{k}"]
    assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize("n,k", vm.SCALE_SHAPES)
def test_scale_perm_equals_vllm(n, k, record):
    got = mb.marlin_permute_mx_scales(vm.scale_bytes(n, k))
    want = record[0][f"scales_n{n}_k{k}"]
    assert got.dtype == want.dtype == torch.uint8 and torch.equal(got, want)


def test_bias_perm_equals_vllm(record):
    got = mb.marlin_permute_bias(vm.bias_values())
    assert torch.equal(got, record[0]["bias"])


def test_fp4_type_id_equals_vllm(record):
    ids = record[1]["scalar_type_ids"]
    assert ids["float4_e2m1f"] == mb.FLOAT4_E2M1F_ID
    assert ids["bfloat16"] == mb.BFLOAT16_ID


def test_record_comparison_has_teeth(record):
    """compare_records, which the re-derivation relies on, reports one flipped bit and a changed id."""
    tensors, meta = record
    bad = dict(tensors)
    bad["bias"] = tensors["bias"].clone()
    bad["bias"].view(torch.int16)[1, 7] ^= 1
    bad_meta = dict(meta, scalar_type_ids=dict(meta["scalar_type_ids"], bfloat16=0))
    problems = vm.compare_records((bad, bad_meta), record)
    assert "bias differs" in problems and any("scalar_type_ids" in p for p in problems)
    assert vm.compare_records(record, record) == []


@pytest.mark.slow
def test_record_rederived_from_the_vllm_wheel(request):
    """The record is what the pinned wheel's functions return (downloads the wheel once if not cached)."""
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("MXFP4LAB_RUN_SLOW"):
        pytest.skip("needs the 300 MB vLLM wheel; run with -m slow or MXFP4LAB_RUN_SLOW=1 (make test-slow)")
    r = subprocess.run([sys.executable, str(ROOT / "scripts/record_marlin_reference.py"), "--check"],
                       capture_output=True, text=True, timeout=1800, check=False)
    assert r.returncode == 0 and "record matches" in r.stdout, r.stdout + r.stderr
