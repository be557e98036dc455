"""The Humming backend on the CPU: its layout, Humming's own schema check, the alignment against Humming's
reference, and the backend's data flow with a stand-in for Humming's GEMM.

Humming's weight transform and kernels are JIT-compiled CUDA (GPU only: ``scripts/gpu/check_peers.py``).
What runs here:

* Layout (torch): :func:`humming_layout_from_logical` and its inverse are exact, rows move as documented;
  Humming's ``gpt_oss_mxfp4`` / ``mxfp4`` schemas accept the tensors (``validate_tensors``) and their
  conversion reinterprets the same bytes (int32 weights, E8M0 scales).
* Alignment: :func:`align_for_humming` equals Humming's torch reference (``humming.testing.data.
  generate_moe_tensors``, indexed GEMM) on the blocks Humming runs.
* Data flow (Triton interpreter, child process, its bf16 rounding fixed as in
  ``tests/triton_kernels_interp.py``): ``HummingMoE.forward`` with ``HummingMethod`` replaced by
  :class:`IndexedGemm` -- a torch indexed GEMM with Humming's semantics (``humming/testing/runner.py``
  ``make_reference``: output row = pair id, input row = pair id // top_k, bias added, bf16 out) that also
  checks that its blocks come as Humming's scheduler reads them. Outputs are NaN-poisoned; the result matches
  the fp32 reference to bf16 level (``TOL_FP32`` = 1e-2: four bf16 roundings give ~3e-3 here; a wrong half
  order, block map or combine gives O(1)). (Not ``mode="kernel"``: it rounds GEMM1 before the fc1 bias,
  Humming after, so for GPT-OSS the two differ by ~5e-3 -- more than they differ from fp32.)
"""

import importlib.util
import json
import os

import pytest
import torch
from peer_support import assert_same_logical, print_results, run_cases, run_child, small_moe

os.environ.setdefault("HUMMING_DISABLE_PARALLEL_BUILD", "1")  # `import humming` would start a compiler build

TOL_FP32 = 1e-2  # module docstring
TIMEOUT_S = 600
SCHEMA_REASON = "humming-kernels is not installed (pip install humming-kernels==0.1.19): its schema/reference is the oracle"

# (case, base model, (hidden, intermediate, experts, top_k), shard (tp, tp_rank, ep, ep_rank), M values)
CASES = [
    ("gpt_oss", "gpt-oss-20b", (128, 128, 4, 2), (1, 0, 1, 0), (1, 5, 33)),
    ("gpt_oss_odd", "gpt-oss-20b", (160, 96, 6, 2), (1, 0, 1, 0), (7,)),
    ("dsv4", "dsv4-flash", (128, 128, 6, 3), (1, 0, 1, 0), (1, 9)),
    ("gpt_oss_ep2r1", "gpt-oss-20b", (128, 128, 8, 2), (1, 0, 2, 1), (9,)),
]


@pytest.mark.parametrize("base,dims", [("gpt-oss-20b", (224, 192, 6, 2)), ("dsv4-flash", (160, 96, 4, 3))])
def test_layout_is_an_exact_inverse_and_moves_rows_as_documented(base, dims):
    from mxfp4lab.backends.humming import humming_layout_from_logical, logical_from_humming_layout

    cfg, prep = small_moe(base, dims)
    logical = prep
    lay = humming_layout_from_logical(logical)
    h, i = cfg.hidden_size, cfg.intermediate_size
    i64, i_pad = -(-i // 64) * 64, logical.padded_intermediate
    assert (lay.hidden_size, lay.intermediate_size) == (h, i64)
    # [gate ; up]: rows [0, i64) = gate = logical rows [I_pad, I_pad + i64); rows [i64, 2 i64) = up
    assert torch.equal(lay.fc1.weight[:, :i64], logical.w13[:, i_pad: i_pad + i64, : h // 2])
    assert torch.equal(lay.fc1.weight[:, i64:], logical.w13[:, :i64, : h // 2])
    assert torch.equal(lay.fc1.scale[:, :i64], logical.w13_scale[:, i_pad: i_pad + i64, : h // 32])
    assert torch.equal(lay.fc2.weight, logical.w2[:, :h, : i64 // 2])
    back = logical_from_humming_layout(lay, logical.intermediate_size)
    assert_same_logical(back, logical)


@pytest.mark.parametrize("base,schema", [("gpt-oss-20b", "gpt_oss_mxfp4"), ("dsv4-flash", "mxfp4")])
def test_humming_schemas_accept_the_layout_and_convert_the_same_bytes(base, schema):
    pytest.importorskip("humming", reason=SCHEMA_REASON)
    from mxfp4lab.backends.humming import SCHEMA, check_schema, humming_layout_from_logical

    cfg, prep = small_moe(base, (224, 192, 4, 2))
    assert SCHEMA[cfg.checkpoint_format] == schema
    lay = humming_layout_from_logical(prep)
    for sub, (ws, tensors, n, k) in check_schema(lay, schema).items():
        # the GPU path calls the public convert_humming (it enters a CUDA device context); same body
        hs, conv = ws._convert_humming(dict(tensors), [n], [k], torch.bfloat16, lay.num_local_experts)
        assert (str(hs.b_dtype), str(hs.bs_dtype), hs.weight_scale_group_size) == ("float4e2m1", "float8e8m0", 32)
        assert conv["weight"].dtype == torch.int32 and conv["weight_scale"].dtype == torch.float8_e8m0fnu
        assert torch.equal(conv["weight"].view(torch.uint8), tensors["weight"]), sub
        assert torch.equal(conv["weight_scale"].view(torch.uint8), tensors["weight_scale"]), sub
    bad = humming_layout_from_logical(prep)
    bad.fc2.scale = bad.fc2.scale[..., :-1]
    with pytest.raises(AssertionError, match="weight_scale shape mismatched"):
        check_schema(bad, schema)


@pytest.mark.parametrize("m,k,e,block", [(1, 4, 32, 16), (37, 4, 40, 32), (200, 6, 16, 64), (5, 2, 128, 16)])
def test_alignment_equals_hummings_reference_on_the_blocks_it_runs(m, k, e, block):
    pytest.importorskip("humming", reason=SCHEMA_REASON)
    from humming.config import GemmType
    from humming.testing.data import generate_moe_tensors

    from mxfp4lab.backends.humming import align_for_humming

    g = torch.Generator().manual_seed(m)
    ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(m)]).to(torch.int32)
    sorted_ids, expert_ids, padded = align_for_humming(ids, e, 0, block)
    _, _, ref_sorted, ref_experts, ref_padded = generate_moe_tensors(ids, e, gemm_type=GemmType.INDEXED,
                                                                     block_size_config=block)
    n = int(ref_padded)
    assert int(padded) == n and padded.dtype == torch.int32 and padded.shape == (1,)
    assert torch.equal(sorted_ids[:n], ref_sorted) and torch.equal(expert_ids[: n // block], ref_experts)
    assert sorted_ids.numel() >= n and sorted_ids.numel() % block == 0


def test_block_size_follows_the_tuning_entry_that_covers_valid_m():
    from mxfp4lab.backends.humming import DEFAULT_BLOCK_M, block_m_for

    tuning = [[0, 16, {"block_shape": [16, 128, 128]}], [16, 512, {"block_shape": [64, 256, 64]}]]
    assert [block_m_for(tuning, v) for v in (1, 16, 17, 512)] == [16, 16, 64, 64]
    assert block_m_for(tuning, 513) == DEFAULT_BLOCK_M


# --------------------------------------------------------------------------------------------
# Data flow under the interpreter
# --------------------------------------------------------------------------------------------
class IndexedGemm:
    """Stands in for ``humming.layer.HummingMethod`` (module docstring)."""

    def __init__(self, layout, block_m):
        from mxfp4lab.formats import dequantize_mxfp4

        self.block_m = block_m
        self.w = {"w13": dequantize_mxfp4(layout.fc1.weight, layout.fc1.scale, torch.float32),
                  "w2": dequantize_mxfp4(layout.fc2.weight, layout.fc2.scale, torch.float32)}
        self.b = {"w13": layout.fc1.bias, "w2": layout.fc2.bias}
        self.calls = []

    def forward_layer(self, layer, inputs, outputs, sublayer_name, top_k, sorted_ids, expert_ids,
                      num_tokens_padded, valid_shape_m, compute_config, tuning_config):
        bm, n = self.block_m, int(num_tokens_padded)
        pairs = outputs.shape[0]
        assert n % bm == 0 and json.loads(compute_config)["gemm_type"] == "indexed"
        assert sorted_ids.dtype == expert_ids.dtype == num_tokens_padded.dtype == torch.int32
        for blk in range(n // bm):
            e = int(expert_ids[blk])
            for p in sorted_ids[blk * bm:(blk + 1) * bm].tolist():
                if p >= pairs:
                    continue  # padding
                acc = inputs[p // top_k].float() @ self.w[sublayer_name][e].T
                if self.b[sublayer_name] is not None:
                    acc = acc + self.b[sublayer_name][e].float()
                outputs[p] = acc.to(torch.bfloat16)
        self.calls.append((sublayer_name, top_k, valid_shape_m))


def _run_case(base, dims, shard, ms, seed):
    from mxfp4lab.backends.humming import HummingMoE
    from mxfp4lab.reference import expert_weights_from_logical, moe_reference, relative_error
    from mxfp4lab.synthetic import make_inputs

    class Backend(HummingMoE):
        @classmethod
        def available(cls):
            return True, ""

        def _setup(self):
            tuning = [[0, 1 << 30, {"block_shape": [16, 128, 128]}]]
            return IndexedGemm(self.layout, 16), None, {"w13": tuning, "w2": tuning}

    cfg, prep = small_moe(base, dims, shard, seed)
    be = Backend(prep, cfg)
    be.poison = True
    ref_w = expert_weights_from_logical(prep)
    rows = []
    for m in ms:
        x, ids, w = make_inputs(cfg, m, 1, "uniform", device="cpu", seed=seed * 100 + m)[0]
        got = be(x, ids, w)
        ref = moe_reference(x, ids, w, ref_w, mode="fp32", **cfg.swiglu_kwargs,
                            routed_scaling_factor=cfg.routed_scaling_factor)
        rows.append({"m": m, "nan": int(torch.isnan(got).sum()), "rel_err_fp32": relative_error(got, ref)})
    return {"rows": rows, "calls": [list(c) for c in be._hm.calls[:2]], "valid_m": be.valid_shape_m(ms[0], cfg.top_k)}


def _worker() -> dict:
    assert os.environ.get("TRITON_INTERPRET") == "1"
    from triton_kernels_interp import patch_interpreter

    patch_interpreter()  # fp32 -> bf16 rounds to nearest even, as on the GPU
    return run_cases({c[0]: (lambda c=c, i=i: _run_case(*c[1:], seed=31 + i)) for i, c in enumerate(CASES)})


@pytest.fixture(scope="module")
def interp():
    return run_child(__file__, env={"TRITON_INTERPRET": "1"}, timeout=TIMEOUT_S)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (Triton kernels)")
@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_data_flow_with_an_indexed_gemm_stand_in_matches_the_references(interp, case):
    r = interp[case]
    assert "error" not in r, r.get("error")
    spec = next(c for c in CASES if c[0] == case)
    k = spec[2][3]
    assert r["calls"][0][:2] == ["w13", k] and r["calls"][1][:2] == ["w2", 1]
    assert r["calls"][0][2] == r["valid_m"]
    assert [row["m"] for row in r["rows"]] == list(spec[4])
    for row in r["rows"]:
        assert row["nan"] == 0, row
        assert row["rel_err_fp32"] < TOL_FP32, row


if __name__ == "__main__":  # the interpreter child
    print_results(_worker())
