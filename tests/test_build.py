"""CPU-checkable parts of mxfp4lab.flashinfer_build and the `mxfp4lab build` command (no GPU, no long compiles).

The restricted JitSpec is generated into a temporary cache dir; nothing is compiled except where
marked ``slow`` (the host-only heuristic probe, ~1 min, needs nvcc + cublas headers).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

flashinfer = pytest.importorskip("flashinfer")

from mxfp4lab import flashinfer_build as B  # noqa: E402
from mxfp4lab.flashinfer_build import sources  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("mxfp4lab_cache")
    old = os.environ.get("MXFP4LAB_CACHE")
    os.environ["MXFP4LAB_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("MXFP4LAB_CACHE", None)
    else:
        os.environ["MXFP4LAB_CACHE"] = old


@pytest.fixture(scope="module")
def minimal_spec(cache):
    return B.w4a16_jit_spec(configs="minimal")


# ---------------------------------------------------------------- cache key


def _key(**over):
    kw = dict(
        flashinfer_version="0.7.2.post1",
        arch="sm_90a",
        cflags=["-O3"],
        cuda_cflags=["-O3", "-gencode=arch=compute_90a,code=sm_90a"],
        configs=["128x128x128_pingpong_1x1x1"],
        nvcc_version="13.0.88",
    )
    kw.update(over)
    return B.cache_key(**kw)


def test_cache_key_is_stable_and_sensitive():
    base = _key()
    assert base == _key()
    assert len(base) == 16
    assert _key(flashinfer_version="0.7.3") != base
    assert _key(arch="sm_100a") != base
    assert _key(cuda_cflags=["-O3", "-gencode=arch=compute_90a,code=sm_90a", "-DFAST_BUILD"]) != base
    assert _key(cflags=["-O3", "-DFAST_BUILD"]) != base
    assert _key(configs=["128x64x128_coop_1x1x1"]) != base
    assert _key(nvcc_version="13.1") != base


def test_spec_key_and_root_follow_configs(cache):
    a = B.w4a16_jit_spec(configs="minimal")
    b = B.w4a16_jit_spec(configs="compact")
    assert a.info["key"] != b.info["key"]
    assert a.root != b.root
    assert Path(a.root).is_relative_to(Path(cache) / B.MODULE_NAME)
    assert B.w4a16_jit_spec(configs="minimal").info["key"] == a.info["key"]
    c = B.w4a16_jit_spec(configs="minimal", extra_cuda_cflags=["-lineinfo"])
    assert c.info["key"] != a.info["key"]


# ---------------------------------------------------------------- configs


def test_config_labels_roundtrip():
    for cfgs in B.CONFIG_SETS.values():
        assert cfgs, "config sets must be non-empty"
        for c in cfgs:
            assert B.MixedConfig.parse(c.label) == c
    with pytest.raises(ValueError, match="MxNxK"):
        B.MixedConfig.parse("128x64_coop")
    with pytest.raises(ValueError, match="tile M >= 128"):
        B.MixedConfig.parse("64x16x128_coop_1x1x1")


def test_named_sets():
    cands, fast = B.resolve_configs("minimal")
    assert fast and [c.label for c in cands] == [
        "128x128x128_pingpong_1x1x1",
        "128x128x128_pingpong_2x1x1",
        "128x128x128_pingpong_1x2x1",
        "128x128x128_pingpong_2x2x1",
    ]
    full, fast_full = B.resolve_configs("full")
    assert not fast_full and len(full) == 116 and len(set(full)) == 116
    compact, _ = B.resolve_configs("compact")
    assert set(compact) <= set(full) | set(B.FAST_BUILD_CANDIDATES), "compact: stock or FAST_BUILD candidates"
    assert all(c.tile[2] == 128 for c in compact), "compact: K-tile 128 only (any H, I % 128 == 0)"
    k128, fast_k = B.resolve_configs("stock_k128")
    # the stock candidates FlashInfer's isProfileShapeSupported admits for K = 2944 (gemm_k % tile_k == 0),
    # in stock order: 11 tiles x 4 clusters
    assert not fast_k and list(k128) == [c for c in full if 2944 % c.tile[2] == 0] and len(k128) == 44
    assert set(compact) - set(k128) == {B.MixedConfig((128, 128, 128), (1, 1, 1), "pingpong")}, \
        "compact = stock K-128 configs + FAST_BUILD's default front"
    custom, fast_c = B.resolve_configs(["128x64x128_coop_1x1x1", "128x64x128_coop_1x1x1"])
    assert not fast_c and len(custom) == 1
    with pytest.raises(ValueError):
        B.resolve_configs("everything")


def test_workspace_config_always_compiled():
    for name in B.CONFIG_SETS:
        cands, _ = B.resolve_configs(name)
        assert B.WORKSPACE_CONFIG in B.compiled_configs(cands)


# ---------------------------------------------------------------- the spec


def test_spec_sources(minimal_spec):
    names = [Path(s).name for s in minimal_spec.sources]
    assert "moe_gemm_kernels_bf16_fp4.cu" in names, "the W4A16 GEMM unit"
    assert "flashinfer_cutlass_fused_moe_binding.cu" in names
    for left_out in ("fp8_blockscale_gemm.cu", sources.STOCK_RUNNER_UNIT, *B.OTHER_DTYPE_UNITS):
        assert left_out not in names, f"{left_out} is not compiled (the throwing stubs stand in for it)"
    # one instantiation per generated unit, the W4A16 runner copy, the kept units, the stubs last
    gen = [n for n in names if n.endswith(".generated.cu")]
    assert all(n.startswith("w4a16_sm90_mixed_") for n in gen)
    assert len(gen) == minimal_spec.info["n_instantiations"] == 5
    assert names[:5] == gen, "mixed-input units first: the longest compiles start first"
    assert names[-1] == sources.UNDEFINED_STUBS_UNIT
    assert names[5] == sources.RUNNER_UNIT and names[6] == "flashinfer_cutlass_fused_moe_binding.cu"
    assert len(names) == len(B.KEEP_UNITS) + 5 + 2
    for s in minimal_spec.sources:
        assert Path(s).exists(), s


def test_runner_unit_copies_only_the_w4a16_runner(minimal_spec):
    text = (Path(minimal_spec.root) / "src" / sources.RUNNER_UNIT).read_text()
    assert re.findall(r"template class CutlassMoeFCRunner<([^;]*)>;", text) == ["__nv_bfloat16, Fp4Type"]
    assert text.count("INSTANTIATE_FINALIZE_MOE_ROUTING(") == 1
    inc = re.findall(r'#include "([^"]+)"', text)
    assert inc and all(Path(i).exists() for i in inc if i.startswith("/")), inc
    with pytest.raises(RuntimeError, match="FlashInfer changed"):
        sources.runner_unit_text("namespace tensorrt_llm::kernels::cutlass_kernels {\n}", Path("."))


def test_spec_flags(minimal_spec):
    cu = minimal_spec.extra_cuda_cflags
    assert "-gencode=arch=compute_90a,code=sm_90a" in cu
    assert "-DENABLE_FP4" in cu and "-DCOMPILE_HOPPER_TMA_GROUPED_GEMMS" in cu
    assert "-DFAST_BUILD" in cu and "-DFAST_BUILD" in minimal_spec.extra_cflags
    compact = B.w4a16_jit_spec(configs="compact")
    assert "-DFAST_BUILD" not in compact.extra_cuda_cflags
    heur = [s for s in compact.sources if Path(s).name == "cutlass_heuristic.cpp"]
    assert len(heur) == 1 and Path(heur[0]).is_relative_to(compact.root), "patched copy, not site-packages"
    text = Path(heur[0]).read_text()
    for c in B.CONFIG_SETS["compact"]:
        assert c.cpp() in text


def test_generated_units_match_configs(minimal_spec):
    info = minimal_spec.info
    assert info["candidates"] == [c.label for c in B.CONFIG_SETS["minimal"]]
    assert set(info["candidates"]) <= set(info["compiled_configs"])
    assert info["stubbed_configs"] + info["n_instantiations"] == info["generator_configs"] == 184
    for label in info["compiled_configs"]:
        unit = Path(minimal_spec.root) / "src" / f"w4a16_sm90_mixed_{label}.generated.cu"
        text = unit.read_text()
        assert text.count("template void sm90_generic_mixed_moe_gemm_kernelLauncher") == 1
        assert "__nv_bfloat16, SafeFP4" in text


def test_ninja_lists_units_in_our_cache(minimal_spec):
    minimal_spec.write_ninja()
    text = minimal_spec.ninja_path.read_text()
    root = str(minimal_spec.root)
    builds = [ln for ln in text.splitlines() if ln.startswith("build ")]
    assert len(builds) == len(minimal_spec.sources) + 1  # objects + link
    assert all(ln.split()[1].startswith(root) for ln in builds)
    assert f"{root}/{B.MODULE_NAME}.so" in text
    assert "moe_gemm_kernels_bf16_fp4.cu" in text and "moe_gemm_kernels_bf16_bf16.cu" not in text


def test_patch_anchor_fails_loudly():
    with pytest.raises(RuntimeError, match="R-AGREE"):
        sources._patched_heuristic_text("int main() {}", B.CONFIG_SETS["compact"])


def test_build_info_before_build(minimal_spec):
    info = B.build_info(configs="minimal")
    assert info["built"] is False
    assert info["n_units"] == len(minimal_spec.sources)
    assert info["compiled_configs"]


def test_cli_parser():
    from mxfp4lab import cli

    args = cli.build_parser().parse_args(["build", "--configs", "compact", "-j", "4", "--spec-only"])
    assert args.func is cli._cmd_build and args.jobs == 4 and args.spec_only
    assert B.parse_configs("compact") == "compact"
    assert B.parse_configs("128x64x128_coop_1x1x1,,64x16x128_pingpong_1x1x1") == [
        "128x64x128_coop_1x1x1", "64x16x128_pingpong_1x1x1"]


# ---------------------------------------------------------------- interleave extension


def test_interleave_requires_cuda_tensor():
    torch = pytest.importorskip("torch")
    w = torch.zeros(1, 16, 32, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        B.interleave_weights_flashinfer_cuda(w)
    with pytest.raises(TypeError):
        B.interleave_weights_flashinfer_cuda([1, 2, 3])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_interleave_ext_builds(cache):
    so = B.build_interleave_ext()
    assert so.exists() and so.stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("nvcc") is None or not os.environ.get("CPATH", "").count("cu13"),
    reason="needs nvcc and cublas/curand headers on CPATH (pip nvidia-cublas nvidia-curand)",
)
def test_heuristic_agrees_with_compiled_set(minimal_spec):
    got = B.heuristic_candidates(minimal_spec)
    assert got == minimal_spec.info["candidates"]


def test_install_hooks_flashinfer_and_reverts(cache):
    import flashinfer.fused_moe.core as core

    orig = core.gen_cutlass_fused_moe_sm90_module
    spec = B.install(configs="minimal")
    try:
        assert core.gen_cutlass_fused_moe_sm90_module() is spec
        assert core.gen_cutlass_fused_moe_sm90_module(True) is spec
        # a second install of the same build keeps the hook and FlashInfer's cached module
        hook = core.gen_cutlass_fused_moe_sm90_module
        calls = []
        real_clear = core.get_cutlass_fused_moe_module.cache_clear
        core.get_cutlass_fused_moe_module.cache_clear = lambda: calls.append(1) or real_clear()
        try:
            assert B.install(configs="minimal") is spec and core.gen_cutlass_fused_moe_sm90_module is hook
            assert calls == []
        finally:
            core.get_cutlass_fused_moe_module.cache_clear = real_clear
    finally:
        B.uninstall()
    assert core.gen_cutlass_fused_moe_sm90_module is orig


def test_export_import_roundtrip_and_key_check(tmp_path, monkeypatch):
    """A library archive from one host installs into another cache; a foreign key is refused."""
    monkeypatch.setenv("MXFP4LAB_CACHE", str(tmp_path / "a"))
    spec = B.w4a16_jit_spec(configs="compact")
    spec.root.mkdir(parents=True, exist_ok=True)
    (spec.root / f"{B.MODULE_NAME}.so").write_bytes(b"\x7fELF fake library")
    (spec.root / "BUILD_OK").write_text("{}")
    (spec.root / "spec.json").write_text("{}")
    from mxfp4lab.flashinfer_build import tactics as T

    gpu, shape = T.gpu_identity("NVIDIA H200", 132, (9, 0)), T.LayerShape(8, 256, 256, 2)
    key = spec.info["key"]
    tuned = T.TacticCache(T.tactics_path(spec.root), key)
    tuned.record(gpu, shape, {1: (3, 14)}, tune_max_num_tokens=8192, gemm1_count=10, gemm2_count=10)
    tuned.save()
    arc = B.export_archive(tmp_path / "lib.tar.xz", configs="compact")
    monkeypatch.setenv("MXFP4LAB_CACHE", str(tmp_path / "b"))
    # the other host already tuned another shape: the import adds, and keeps its own
    other = T.LayerShape(8, 256, 256, 4)
    dest = T.TacticCache(T.tactics_path(tmp_path / "b" / B.MODULE_NAME / key), key)
    dest.record(gpu, other, {1: (0, 10)}, tune_max_num_tokens=8192, gemm1_count=10, gemm2_count=10)
    dest.save()
    lib = B.import_archive(arc, configs="compact")
    assert lib.read_bytes() == b"\x7fELF fake library"
    assert lib.parent.name == spec.root.name and str(tmp_path / "b") in str(lib)
    merged = T.TacticCache(T.tactics_path(lib.parent), key)
    assert merged.lookup(T.TacticKey(gpu, key, shape, 1)) == (3, 14)
    assert merged.lookup(T.TacticKey(gpu, key, other, 1)) == (0, 10)
    with pytest.raises(ValueError, match="was built for key"):
        B.import_archive(arc, configs="minimal")


def test_export_requires_a_build(tmp_path, monkeypatch):
    monkeypatch.setenv("MXFP4LAB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="mxfp4lab build"):
        B.export_archive(tmp_path / "x.tar.xz", configs="compact")
