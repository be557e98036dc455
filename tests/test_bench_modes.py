"""Timing modes (mxfp4lab.bench.modes) on the CPU: the GEMM-kernel accounting from a profiler's kernel list,
the kernel-name patterns of every backend, and the mode plumbing (profiling replaced by a fixed list)."""

import re

import pytest

from mxfp4lab.bench import modes as M

# Kernel names of one call per backend, as their libraries name them (templates shortened); the GEMMs first.
NAMES = {
    "flashinfer_sm90": (
        ["void cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<cutlass::bfloat16_t, cutlass::float_e2m1_t>>",
         "void cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<cutlass::bfloat16_t, cutlass::float_e2m1_t, 1>>"],
        ["void tensorrt_llm::kernels::cutlass_kernels::expandInputRowsKernel<cutlass::bfloat16_t, 128>",
         "void tensorrt_llm::kernels::cutlass_kernels::doActivationKernel<__nv_bfloat16, cutlass::epilogue::thread::SwiGLU>",
         "void tensorrt_llm::kernels::cutlass_kernels::finalizeMoeRoutingKernel<__nv_bfloat16, float>",
         "void tensorrt_llm::kernels::cutlass_kernels::computeStridesTmaWarpSpecializedKernel<float>"]),
    "marlin_mxfp4": (["void marlin_moe_wna16::Marlin<1125899906909960l, 562949953487106l, 256, 1, 8, 8, true>"] * 2,
                     ["void vllm::moe::moe_align_block_size_kernel<int>", "_kernel"]),
    "triton_w4a16": (["_fc1_swiglu_kernel", "_fc2_kernel"], ["_align_small_kernel", "_combine_kernel"]),
    "triton_kernels": (["_matmul_ogs_NNT_bf16xbf16xmxfp4_16x256x128x1_swiglu", "_p_matmul_ogs_NNT_bf16xbf16xmxfp4_64x256x128x1"],
                       ["_reduce_grouped", "_combined_routing_compute", "pack_bitmatrix_kernel", "_sum_bitmatrix_rows"]),
    "humming": (["void humming<SM90Config, bf16, e2m1, 64, 128>(HummingParams)"] * 2,
                ["_align_small_kernel", "_kernel", "_combine_kernel"]),
}


def _pattern(name):
    if name in M.GEMM_KERNELS:
        return M.GEMM_KERNELS[name]
    import importlib

    mod = {"triton_kernels": "triton_kernels", "humming": "humming"}[name]
    return importlib.import_module(f"mxfp4lab.backends.{mod}").GEMM_KERNEL_PATTERN


@pytest.mark.parametrize("name", sorted(NAMES))
def test_each_backends_pattern_names_its_gemms_and_nothing_else(name):
    gemms, others = NAMES[name]
    rx = re.compile(_pattern(name))
    assert all(rx.search(n) for n in gemms), name
    assert not any(rx.search(n) for n in others), [n for n in others if rx.search(n)]


def test_gemm_time_is_the_median_of_per_call_sums():
    calls = 3
    per_call = [("_fc1_swiglu_kernel", 10.0), ("_align_small_kernel", 2.0), ("_fc2_kernel", 5.0), ("_combine_kernel", 1.0)]
    ks = []
    for c, extra in enumerate((0.0, 4.0, 1.0)):  # call sums 15, 19, 16 -> median 16
        ks += [(n, us + (extra if n == "_fc2_kernel" else 0.0)) for n, us in per_call]
    r = M.per_call_gemm_us(ks, M.GEMM_KERNELS["triton_w4a16"], calls)
    assert r["median_us"] == 16.0 and r["p10_us"] == 15.0 and r["p90_us"] == 19.0 and r["note"] == ""
    assert r["device_total_us"] == pytest.approx((18 * 3 + 5) / 3)
    assert r["gemm_kernels"]["_fc1_swiglu_kernel"] == [1.0, 10.0]
    assert next(iter(r["kernels"])) == "_fc1_swiglu_kernel"  # slowest first


def test_uneven_gemm_counts_fall_back_to_the_mean_and_say_so():
    r = M.per_call_gemm_us([("_fc2_kernel", 4.0)] * 3, M.GEMM_KERNELS["triton_w4a16"], 2)
    assert r["median_us"] == 6.0 and "mean, not median" in r["note"]


def test_a_pattern_that_matches_nothing_is_an_error_not_zero():
    with pytest.raises(ValueError, match="no kernel matches"):
        M.per_call_gemm_us([("_combine_kernel", 3.0)], M.GEMM_KERNELS["triton_w4a16"], 1)
    with pytest.raises(ValueError, match="calls must be"):
        M.per_call_gemm_us([("_fc2_kernel", 3.0)], ".", 0)


class _Fake:
    name = "triton_w4a16"
    graph_capturable = True

    def __init__(self):
        self.calls = 0

    def __call__(self, *a):
        self.calls += 1


def test_modes_record_their_name_and_errors_per_mode(monkeypatch):
    be = _Fake()
    ks = [("_fc1_swiglu_kernel", 7.0), ("_fc2_kernel", 3.0), ("_combine_kernel", 1.0)]
    monkeypatch.setattr(M, "profile_kernels", lambda fn, inputs, calls: ks * calls)
    rows = M.time_modes(be, [()], ["gemm", "bogus"], warmup=2, profile_calls=4)
    assert [r["mode"] for r in rows] == ["gemm", "bogus"]
    assert rows[0]["median_us"] == 10.0 and rows[0]["reps"] == 4 and rows[0]["graph"] is False
    assert rows[0]["gemm_pattern"] == M.GEMM_KERNELS["triton_w4a16"] and "error" not in rows[0]
    assert "unknown timing mode 'bogus'" in rows[1]["error"]
    assert be.calls == 2  # the warm-up calls; profiling was replaced


def test_a_backends_own_pattern_wins_and_a_missing_one_is_named():
    class Own(_Fake):
        gemm_kernel_pattern = "mine"

    assert M.gemm_pattern(Own()) == "mine"
    anon = _Fake()
    anon.name = "nobody"
    with pytest.raises(KeyError, match="no GEMM kernel pattern for backend 'nobody'"):
        M.gemm_pattern(anon)


def test_sweep_writes_one_row_per_mode_and_the_study_reads_only_graph_rows(monkeypatch):
    """bench.moe.sweep on a tiny layer on the CPU (torch_naive; the timings are replaced): modes other than
    graph only at mode_m, every row labelled; the latency study's frame keeps the graph rows."""
    import torch

    from mxfp4lab import experiments, models
    from mxfp4lab.bench import moe

    cfg = models.GPT_OSS_20B.scaled(hidden=64, intermediate=64, experts=4, top_k=2)
    monkeypatch.setattr(moe, "get_model", lambda name: cfg)
    real_layer, real_inputs = moe.random_layer, moe.make_inputs
    monkeypatch.setattr(moe, "random_layer", lambda c, **kw: real_layer(c, device="cpu"))
    monkeypatch.setattr(moe, "make_inputs", lambda c, m, n, r, seed=0: real_inputs(c, m, n, r, device="cpu", seed=seed))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    timings = {"graph": 30.0, "eager": 45.0, "gemm": 12.0}
    monkeypatch.setattr(M, "time_modes", lambda be, inputs, run, **kw: [{"mode": md, "median_us": timings[md], "graph": md == "graph"} for md in run])
    rows = moe.sweep(["torch_naive"], ["tiny"], [1, 8], ["uniform"], modes=["graph", "eager", "gemm"], mode_m=[8],
                     check_m=[1], log=lambda *a: None)
    got = [(r["m"], r["mode"], r["median_us"]) for r in rows]
    assert got == [(1, "graph", 30.0), (8, "graph", 30.0), (8, "eager", 45.0), (8, "gemm", 12.0)]
    assert all(r["fraction_of_roofline"] == r["roofline_us"] / r["median_us"] for r in rows)
    assert rows[0]["rel_err_vs_kernel_ref"] < 2e-2 and "rel_err_vs_kernel_ref" not in rows[1]
    df = experiments._latency_frame(rows)
    assert df["mode"].tolist() == ["graph", "graph"] and df["median_us"].tolist() == [30.0, 30.0]
