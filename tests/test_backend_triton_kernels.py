"""The triton_kernels backend on the CPU: its layout, its routing data, and the whole MoE under Triton's
interpreter.

* Layout (torch): :func:`triton_kernels_layout_from_logical` and its inverse are exact; the gate/up
  interleave, the trimmed padding and the scale-group padding are checked by value; the library's own
  Hopper value/scale layout classes round-trip our tensors exactly.
* Routing: :func:`routing_torch` equals triton_kernels' torch reference (``routing.routing_torch``),
  and (interpreter) the library's Triton ``routing_from_bitmatrix`` fed by our bitmatrix kernel, also for
  EP shards.
* MoE (interpreter, ``tests/triton_kernels_interp.py`` says what is bridged): the backend's output is
  BIT-IDENTICAL to :func:`emulate` -- a torch model of triton_kernels' rounding points written from its
  source (fp32 GEMM1 + fp32 bias -> SwiGLU in fp32 -> bf16; fp32 GEMM2 + bias, times the bf16 router
  weight -> bf16; fp32 sum over k -> bf16) -- and matches the fp32 reference to bf16 level:
  ``TOL_FP32`` = 1e-2 relative (three bf16 roundings plus the bf16 router weight give ~3.5e-3 on these
  layers; a layout, routing or activation bug gives O(1)). Outputs are NaN-poisoned first.

* sm_90a compile (child process, a stand-in driver reporting an H100, launches replaced by compiles):
  both GEMMs of both models with the Hopper layouts and the block sizes the GPU picks, plus the routing
  kernels, compile; the GEMMs use wgmma (HGMMA) and spill nothing; their names match the profiler's GEMM
  pattern (:data:`GEMM_KERNEL_PATTERN`).

The library's source comes from :mod:`mxfp4lab.backends.triton_kernels_source` (fetched into the user
cache, checked against its manifest, if no copy is found).
"""

import dataclasses
import importlib.util
import os
import sys

import pytest
import torch
from peer_support import assert_same_logical, print_results, run_cases, run_child, small_moe

TOL_FP32 = 1e-2  # module docstring
TIMEOUT_S = 600

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed: triton_kernels is Triton code")

# (case, base model, (hidden, intermediate, experts, top_k), shard (tp, tp_rank, ep, ep_rank), routing, M values)
CASES = [
    ("gpt_oss_torch_routing", "gpt-oss-20b", (128, 128, 4, 2), (1, 0, 1, 0), "torch", (1, 5, 33)),
    ("gpt_oss_triton_routing", "gpt-oss-20b", (128, 128, 4, 2), (1, 0, 1, 0), "triton", (1, 5, 33)),
    # H = 160: K tails of 32 inside a 128 K-block, scale groups 5 -> 8; I = 96 -> 128 (multiple of 64)
    ("gpt_oss_odd_shape", "gpt-oss-20b", (160, 96, 6, 2), (1, 0, 1, 0), "torch", (7,)),
    # beta = 0 (swiglu_beta), top-3 (not a power of two: torch routing), routed scaling 1.5
    ("dsv4", "dsv4-flash", (128, 128, 6, 3), (1, 0, 1, 0), "torch", (1, 9)),
    ("gpt_oss_ep2r1", "gpt-oss-20b", (128, 128, 8, 2), (1, 0, 2, 1), "triton", (9,)),
    ("dsv4_tp2r1", "dsv4-flash", (128, 256, 4, 3), (2, 1, 1, 0), "torch", (6,)),
]


def _source():
    from mxfp4lab.backends import triton_kernels_source as S

    try:
        return S.find_source()[0]
    except S.SourceError:
        try:
            return S.fetch()
        except Exception as exc:  # noqa: BLE001 - no network and no copy
            pytest.skip(f"triton_kernels source unavailable and not fetchable: {exc}")


@pytest.fixture(scope="module")
def tk():
    root = _source()
    from mxfp4lab.backends.triton_kernels_source import import_triton_kernels

    os.environ.setdefault("MXFP4LAB_TRITON_KERNELS", str(root))
    return import_triton_kernels()


def emulate(layout, x, topk_ids, topk_weights, alpha, beta, limit):
    """triton_kernels' MoE in torch, rounding where its kernels round (module docstring); reads the
    layout (:class:`~mxfp4lab.backends.peer_layout.PeerLayout`) directly (interleaved rows, padded scale
    groups), experts only."""
    from mxfp4lab.formats import dequantize_mxfp4

    h, i = layout.hidden_size, layout.intermediate_size
    w13 = dequantize_mxfp4(layout.fc1.weight, layout.fc1.scale[..., : h // 32], torch.float32)
    w2 = dequantize_mxfp4(layout.fc2.weight, layout.fc2.scale[..., : i // 32], torch.float32)
    out = torch.zeros(x.shape[0], h)
    for t in range(x.shape[0]):
        for j in range(topk_ids.shape[1]):
            e = int(topk_ids[t, j]) - layout.expert_offset
            if not 0 <= e < layout.num_local_experts:
                continue
            a = x[t].float() @ w13[e].T
            if layout.fc1.bias is not None:
                a = a + layout.fc1.bias[e]
            g, u = a[0::2], a[1::2]
            if limit is not None:
                g, u = g.clamp(max=limit), u.clamp(-limit, limit)
            s = g * torch.sigmoid(alpha * g)
            act = (s * (u + beta)).to(torch.bfloat16).float()
            y = act @ w2[e].T
            if layout.fc2.bias is not None:
                y = y + layout.fc2.bias[e]
            out[t] += (y * topk_weights[t, j].to(torch.bfloat16).float()).to(torch.bfloat16).float()
    return out.to(torch.bfloat16)


# --------------------------------------------------------------------------------------------
# Layout (torch)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("base,dims", [("gpt-oss-20b", (224, 192, 6, 2)), ("dsv4-flash", (160, 96, 4, 3))])
def test_layout_is_an_exact_inverse_and_moves_rows_as_documented(base, dims):
    from mxfp4lab.backends.triton_kernels import (
        logical_from_triton_kernels_layout,
        triton_kernels_layout_from_logical,
    )

    cfg, prep = small_moe(base, dims)
    logical = prep
    lay = triton_kernels_layout_from_logical(logical)
    h, i = cfg.hidden_size, cfg.intermediate_size
    i64 = -(-i // 64) * 64
    assert (lay.hidden_size, lay.intermediate_size) == (h, i64)
    assert lay.fc1.weight.shape == (cfg.num_experts, 2 * i64, h // 2) and lay.fc2.weight.shape == (cfg.num_experts, h, i64 // 2)
    assert lay.fc1.scale.shape[-1] == -(-(h // 32) // 4) * 4 and lay.fc2.scale.shape[-1] == -(-(i64 // 32) // 4) * 4
    assert not lay.fc1.scale[..., h // 32:].any() and not lay.fc2.scale[..., i64 // 32:].any()
    i_pad = logical.padded_intermediate
    # row 2j = gate_j (logical row I_pad + j), row 2j+1 = up_j (logical row j)
    assert torch.equal(lay.fc1.weight[:, 0::2], logical.w13[:, i_pad: i_pad + i64, : h // 2])
    assert torch.equal(lay.fc1.weight[:, 1::2], logical.w13[:, :i64, : h // 2])
    if logical.w13_bias is not None:
        assert lay.fc1.bias.dtype == torch.float32 and lay.fc2.bias.dtype == torch.float32
        assert torch.equal(lay.fc1.bias[:, 0::2], logical.w13_bias[:, i_pad: i_pad + i64].float())
    back = logical_from_triton_kernels_layout(lay, logical.intermediate_size)
    assert_same_logical(back, logical)


def test_layout_rejects_a_hidden_size_off_the_scale_block():
    from mxfp4lab.backends.triton_kernels import triton_kernels_layout_from_logical

    _, prep = small_moe("gpt-oss-20b", (128, 128, 2, 2))
    logical = prep
    logical = dataclasses.replace(logical, hidden_size=120)  # H_pad stays 128
    with pytest.raises(ValueError, match="hidden_size = 120 must be a multiple of 32"):
        triton_kernels_layout_from_logical(logical)


def test_swiglu_parameters_must_be_one_value_for_all_experts():
    from mxfp4lab.backends.triton_kernels import one_value

    assert one_value(None, "swiglu_limit") is None and one_value(2, "swiglu_beta") == 2.0
    assert one_value(torch.full((4,), 1.702), "swiglu_alpha") == pytest.approx(1.702)
    with pytest.raises(ValueError, match="swiglu_limit: one value for all experts"):
        one_value(torch.tensor([7.0, 10.0]), "swiglu_limit")


def test_hopper_layouts_of_the_library_round_trip_our_tensors(tk):
    from triton_kernels.tensor_details.layout import HopperMXScaleLayout, HopperMXValueLayout

    from mxfp4lab.backends.triton_kernels import to_matmul_ogs_weights, triton_kernels_layout_from_logical

    _, prep = small_moe("gpt-oss-20b", (224, 192, 3, 2))
    lay = triton_kernels_layout_from_logical(prep)
    w13, pc13, w2, pc2 = to_matmul_ogs_weights(lay, swizzle="hopper")
    for wq, pc, w, s in ((w13, pc13, lay.fc1.weight, lay.fc1.scale), (w2, pc2, lay.fc2.weight, lay.fc2.scale)):
        assert isinstance(wq.storage.layout, HopperMXValueLayout)
        assert isinstance(pc.weight_scale.storage.layout, HopperMXScaleLayout)
        assert wq.shape == [w.shape[0], w.shape[2] * 2, w.shape[1]]  # FP4 [E, K, N]
        back = wq.storage.layout.unswizzle_data(wq.storage.data)
        assert torch.equal(back, w.transpose(-2, -1))
        sb = pc.weight_scale.storage.layout.unswizzle_data(pc.weight_scale.storage.data)
        n = s.shape[1]
        assert torch.equal(sb[..., :n], s.transpose(-2, -1)) and not sb[..., n:].any()  # rows padded to 256


# --------------------------------------------------------------------------------------------
# Routing (torch)
# --------------------------------------------------------------------------------------------
def _topk(m, k, e, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(m)]).to(torch.int32)
    w = torch.rand(m, k, generator=g) + 0.1
    return ids, w / w.sum(1, keepdim=True)


@pytest.mark.parametrize("m,k,e", [(1, 4, 32), (37, 4, 40), (200, 6, 16), (3, 2, 128)])
def test_torch_routing_equals_the_librarys_torch_reference(tk, m, k, e, monkeypatch):
    from triton_kernels.routing import routing_torch as library_reference

    from mxfp4lab.backends.triton_kernels import routing_torch

    histc = torch.histc  # the reference histograms int ids: CUDA-only; the same counts in float on the CPU
    monkeypatch.setattr(torch, "histc", lambda x, *a, **kw: histc(x.float(), *a, **kw))
    ids, w = _topk(m, k, e, seed=m)
    rd, gi, si = routing_torch(ids, w, e)
    # the reference takes logits: log-weights at the chosen ids give back the weights after its softmax
    logits = torch.full((m, e), -1e30).scatter(1, ids.long(), w.log())
    ref, rgi, rsi = library_reference(logits, k, expt_indx=ids)
    assert torch.equal(rd.expt_hist, ref.expt_hist)
    assert torch.equal(gi.src_indx, rgi.src_indx) and torch.equal(gi.dst_indx, rgi.dst_indx)
    assert torch.equal(si.src_indx, rsi.src_indx) and torch.equal(si.dst_indx, rsi.dst_indx)
    assert torch.equal(rd.expt_data.token_offs_raw, ref.expt_data.token_offs_raw)
    for b in (16, 32, 64, 128):
        assert torch.equal(rd.expt_data.token_offs_pad[b], ref.expt_data.token_offs_pad[b]), b
        assert torch.equal(rd.expt_data.block_pid_map[b], ref.expt_data.block_pid_map[b]), b
    assert torch.equal(rd.gate_scal, w.reshape(-1).to(torch.bfloat16)[gi.src_indx.long()])
    torch.testing.assert_close(rd.gate_scal.float(), ref.gate_scal.float(), rtol=0, atol=0.004)  # bf16 vs fp32


def test_torch_routing_of_an_ep_shard_drops_the_other_experts(tk):
    from mxfp4lab.backends.triton_kernels import routing_torch

    ids = torch.tensor([[0, 5], [6, 7], [4, 2]], dtype=torch.int32)  # shard: experts 4..7
    w = torch.tensor([[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]])
    rd, gi, _ = routing_torch(ids, w, num_local=4, expert_offset=4)
    assert rd.expt_hist.tolist() == [1, 1, 1, 1]  # local 0 (=4), 1 (=5), 2 (=6), 3 (=7)
    assert gi.src_indx.tolist() == [4, 1, 2, 3, -1, -1]  # gates 4 (e4), 1 (e5), 2 (e6), 3 (e7), then none
    assert gi.dst_indx.tolist() == [-1, 1, 2, 3, 0, -1]
    assert rd.gate_scal[:4].float().tolist() == [0.8984375, 0.5, 0.25, 0.75]  # bf16(0.9) = 0.8984375
    assert rd.expt_data.block_pid_map[16].tolist() == [0, 1, 2, 3]  # max_tiles(6 gates, 4 experts) = 4


# --------------------------------------------------------------------------------------------
# Interpreter (child process with TRITON_INTERPRET=1)
# --------------------------------------------------------------------------------------------
def _run_case(base, dims, shard, routing, ms, seed):
    from mxfp4lab.backends.triton_kernels import TritonKernelsMoE
    from mxfp4lab.reference import expert_weights_from_logical, moe_reference, relative_error
    from mxfp4lab.synthetic import make_inputs

    cfg, prep = small_moe(base, dims, shard, seed)
    be = TritonKernelsMoE(prep, cfg, routing=routing)
    be.poison = True
    ref_w = expert_weights_from_logical(prep)
    sw = {k: float(v[0]) if isinstance(v, torch.Tensor) else v for k, v in be.swiglu.items()}
    rows = []
    for m in ms:
        x, ids, w = make_inputs(cfg, m, 1, "uniform", device="cpu", seed=seed * 100 + m)[0]
        got = be.forward(x, ids, w)
        emu = emulate(be.layout, x, ids, w, sw["swiglu_alpha"], sw["swiglu_beta"], sw["swiglu_limit"])
        ref = moe_reference(x, ids, w, ref_w, mode="fp32", **cfg.swiglu_kwargs,
                            routed_scaling_factor=cfg.routed_scaling_factor)
        full = be(x, ids, w)
        rows.append({"m": m, "nan": int(torch.isnan(got).sum()), "bit_identical": bool(torch.equal(got, emu)),
                     "max_abs_vs_emulation": float((got.float() - emu.float()).abs().max()),
                     "rel_err_fp32": relative_error(full, ref)})
    return {"rows": rows, "describe": be.describe(1)}


def _run_routing(seed):
    from mxfp4lab.backends.triton_kernels import routing_from_topk, routing_torch

    rows = []
    for m, k, e, off, local in ((37, 4, 40, 0, 40), (64, 4, 128, 0, 128), (33, 2, 16, 8, 8), (5, 8, 64, 32, 32)):
        ids, w = _topk(m, k, e, seed + m)
        (ra, ga, _), (rb, gb, _) = routing_from_topk(ids, w, local, off), routing_torch(ids, w, local, off)
        nv = int(rb.expt_hist.sum())
        same = [torch.equal(ra.expt_hist, rb.expt_hist), torch.equal(ga.src_indx, gb.src_indx),
                torch.equal(ga.dst_indx, gb.dst_indx), torch.equal(ra.gate_scal[:nv], rb.gate_scal[:nv]),
                torch.equal(ra.expt_data.token_offs_raw, rb.expt_data.token_offs_raw)]
        same += [torch.equal(ra.expt_data.token_offs_pad[b], rb.expt_data.token_offs_pad[b])
                 and torch.equal(ra.expt_data.block_pid_map[b], rb.expt_data.block_pid_map[b]) for b in (16, 32, 64, 128)]
        rows.append({"case": [m, k, e, off, local], "valid": nv, "same": same})
    return {"rows": rows}


def _worker() -> dict:
    assert os.environ.get("TRITON_INTERPRET") == "1"
    from mxfp4lab.backends.triton_kernels_source import import_triton_kernels

    import_triton_kernels()
    import triton_kernels_interp

    triton_kernels_interp.install()
    cases = {"routing": lambda: _run_routing(seed=5)}
    cases.update({c[0]: (lambda c=c, i=i: _run_case(*c[1:], seed=21 + i)) for i, c in enumerate(CASES)})
    return run_cases(cases)


@pytest.fixture(scope="module")
def interp(tk):
    return run_child(__file__, env={"TRITON_INTERPRET": "1", "MXFP4LAB_TRITON_KERNELS": str(_source())},
                     timeout=TIMEOUT_S)


@needs_triton
def test_library_routing_kernels_equal_torch_routing_including_ep_shards(interp):
    r = interp["routing"]
    assert "error" not in r, r.get("error")
    assert len(r["rows"]) == 4
    for row in r["rows"]:
        assert row["valid"] > 0 and all(row["same"]), row


@needs_triton
@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_moe_under_the_interpreter_is_bit_identical_to_the_emulation(interp, case):
    r = interp[case]
    assert "error" not in r, r.get("error")
    spec = next(c for c in CASES if c[0] == case)
    assert [row["m"] for row in r["rows"]] == list(spec[5])
    assert r["describe"]["routing"] == spec[4] and r["describe"]["value_layout"] is None  # strided under the interpreter
    assert r["describe"]["activation"] == ("swiglu" if spec[1].startswith("gpt") else "swiglu_beta")
    for row in r["rows"]:
        assert row["nan"] == 0, row  # every output element written
        assert row["bit_identical"], row
        assert row["rel_err_fp32"] < TOL_FP32, row


# --------------------------------------------------------------------------------------------
# sm_90a compile (child process: a stand-in driver reports an H100; kernels are compiled, not launched)
# --------------------------------------------------------------------------------------------
COMPILE_BLOCK_MS = (16, 64, 128)  # matmul_ogs: block_m = clamp(next_pow2(tokens per expert), 16, 128)


def _compile_worker() -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime.jit import JITFunction

    class H100Driver:
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_active_torch_device(self):
            return torch.device("cpu")

    triton.runtime.driver.set_active(H100Driver())
    torch.cuda.get_device_capability = lambda *a, **k: (9, 0)  # read by matmul_ogs's TMA gate
    compiled = []
    run = JITFunction.run

    def compile_only(self, *args, grid, warmup, **kwargs):
        k = run(self, *args, grid=grid, warmup=True, **kwargs)
        compiled.append(k)
        return k

    JITFunction.run = compile_only
    from mxfp4lab.backends import triton_kernels as B
    from mxfp4lab.backends.triton_kernels_source import import_triton_kernels
    from mxfp4lab.kernels.sass import report
    from mxfp4lab.synthetic import make_inputs

    import_triton_kernels()
    from triton_kernels.matmul_ogs import matmul_ogs
    from triton_kernels.matmul_ogs_details import opt_flags as OF

    res = {}
    for base in ("gpt-oss-20b", "dsv4-flash"):
        cfg, prep = small_moe(base, (512, 256, 4, 4))
        lay = B.triton_kernels_layout_from_logical(prep)
        w13, pc13, w2, pc2 = B.to_matmul_ogs_weights(lay, swizzle="hopper")
        act = B.fused_swiglu(cfg.swiglu_alpha, cfg.swiglu_beta, cfg.swiglu_limit)
        x, ids, w = make_inputs(cfg, 8, 1, "uniform", device="cpu")[0]
        rows = []
        for bm in COMPILE_BLOCK_MS:
            OF._opt_flags = None
            OF.set_opt_flags(OF.OptFlags(block_m=bm, block_n=256, block_k=128, num_warps=8, num_stages=3, group_m=8,
                                         xcd_swizzle=1, w_cache_modifier=None, split_k=1, is_persistent=False,
                                         fused_scatter=False, epilogue_subtile=1, arch=None, target_kernel_kwargs={},
                                         idle_sms=0))
            compiled.clear()
            rd, gi, si = B.routing_from_topk(ids, w, lay.num_local_experts)
            h = matmul_ogs(x, w13, lay.fc1.bias, rd, gather_indx=gi, precision_config=pc13, fused_activation=act)
            matmul_ogs(h, w2, lay.fc2.bias, rd, scatter_indx=si, precision_config=pc2, gammas=rd.gate_scal)
            for k in compiled:
                r = report(k, k.name, (bm,))
                rows.append({"block_m": bm, "name": k.name, "registers": r.registers, "stack": r.stack_bytes,
                             "shared": r.shared_bytes, "hgmma": r.mma.get("HGMMA", 0)})
        res[base] = rows
    return res


@pytest.fixture(scope="module")
def compiled_sm90(tk, tmp_path_factory):
    return run_child(__file__, "compile", timeout=TIMEOUT_S,
                     env={"TRITON_INTERPRET": None, "MXFP4LAB_TRITON_KERNELS": str(_source()),
                          "TRITON_CACHE_DIR": str(tmp_path_factory.mktemp("tcache"))})


@needs_triton
@pytest.mark.parametrize("base,act", [("gpt-oss-20b", "_swiglu"), ("dsv4-flash", "_swiglu_beta")])
def test_hopper_gemms_compile_for_sm90_with_wgmma_and_no_spills(compiled_sm90, base, act):
    import re

    from mxfp4lab.backends.triton_kernels import GEMM_KERNEL_PATTERN

    rows = compiled_sm90[base]
    gemms = [r for r in rows if re.search(GEMM_KERNEL_PATTERN, r["name"])]
    assert len(gemms) == 2 * len(COMPILE_BLOCK_MS), [r["name"] for r in rows]  # GEMM1 and GEMM2 per block_m
    assert sum(r["name"].endswith(act) for r in gemms) == len(COMPILE_BLOCK_MS)  # the fused activation
    for r in gemms:
        assert r["hgmma"] > 0 and r["stack"] == 0 and r["registers"] <= 255 and r["shared"] <= 227 * 1024, r
    others = {r["name"] for r in rows if r not in gemms}
    assert "pack_bitmatrix_kernel" in others and "_reduce_grouped" in others, others
    assert all(r["stack"] == 0 for r in rows), rows


if __name__ == "__main__":  # the child processes
    print_results(_compile_worker() if sys.argv[1:] == ["compile"] else _worker())
