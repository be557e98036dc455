"""mxfp4lab's Triton W4A16 MoE kernels under Triton's CPU interpreter (TRITON_INTERPRET=1), tiny shapes.

Compared with ``moe_reference(mode="kernel")``: same rounding points (GEMM1 -> bf16 before the bias,
activation -> bf16, GEMM2 -> bf16, fp32 top-k sum -> bf16), only the fp32 summation order inside the
GEMMs may differ, so the tolerance is a few bf16 ulps (2**-8) over the tensor: 2e-3 relative
(a layout, scale, routing or rounding-point bug gives 1e-2 .. O(1); under the interpreter the results
are in fact bit-identical). Output and intermediate buffers are filled with NaN first: an element no
kernel wrote shows up as NaN. Fresh random inputs for every check.

TRITON_INTERPRET must be set before ``import triton`` (``triton.language``'s own helpers are
``@triton.jit`` functions decorated at import), so the kernels run in a child process started with it
(this file run as a script); the parametrized tests assert on its per-case results.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

from mxfp4lab.kernels.tiles import DequantPath, TileConfig

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOL = 2e-3  # module docstring
TIMEOUT_S = 300

# (case id, config kind, shard (tp_size, tp_rank, ep_size, ep_rank), M values)
CASES = [
    ("gpt_oss_tiny", "gpt_oss_tiny", (1, 0, 1, 0), (1, 5, 33)),
    ("dsv4_tiny", "dsv4_tiny", (1, 0, 1, 0), (1, 5, 33)),
    # H=224 -> H_pad 256 (masked K tail of x, N tail of the output); EP: ids outside the shard skipped;
    # TP: I per rank 96 -> I_pad 128, fc2 bias only on rank 0
    ("gpt_oss_small_ep2r1", "gpt_oss_small", (1, 0, 2, 1), (7,)),
    ("gpt_oss_small_tp2r1", "gpt_oss_small", (2, 1, 1, 0), (7,)),
    # swap AB (decode path 3, which runs as path 4 -- same structure, plain-Triton decode -- here):
    # [BN, BK/2] weight tiles, transposed accumulators, padded K / N tails, biases, TP
    ("gpt_oss_tiny_swapab", "gpt_oss_tiny+swapab", (1, 0, 1, 0), (1, 5, 33)),
    ("gpt_oss_small_tp2r1_swapab", "gpt_oss_small+swapab", (2, 1, 1, 0), (7,)),
    # the H100 tile configs (BLOCK_M 16..128, BLOCK_N 32..128, BLOCK_K 64/128) on H = I = 256
    ("gpu_tile_configs", "gpu_tiles", None, ()),
    # the one-program alignment kernel vs the torch alignment
    ("align_small", "align_small", None, ()),
]
# (M, top_k, local experts, expert offset, BLOCK_M): decode to SMALL_ALIGN_MAX_PAIRS, EP offsets
ALIGN_CASES = [(1, 4, 32, 0, 16), (3, 4, 128, 0, 16), (16, 6, 256, 0, 16), (37, 3, 6, 2, 16),
               (64, 4, 128, 0, 32), (200, 5, 16, 8, 64), (256, 4, 128, 0, 16), (170, 6, 64, 64, 16)]

#: the tile of the "+swapab" cases: dequant 3 (the wrapper runs 4 under the interpreter), BLOCK_N = 64
#: (wgmma's M on the GPU), BLOCK_K 64
SWAP_AB_TILE = TileConfig(block_m=16, block_n1=64, block_k1=64, block_n2=64, block_k2=64, num_warps=4, num_stages=1,
                          dequant=DequantPath.SWAP_AB_PTX)

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed (pip install triton): the interpreter test needs it")


# --------------------------------------------------------------------------------------------
# Child process (TRITON_INTERPRET=1)
# --------------------------------------------------------------------------------------------
def _config(kind):
    from mxfp4lab import models

    if kind == "gpt_oss_tiny":
        return models.GPT_OSS_20B.scaled(hidden=128, intermediate=128, experts=4, top_k=2)
    if kind == "dsv4_tiny":
        return models.DSV4_FLASH.scaled(hidden=128, intermediate=128, experts=4, top_k=2)
    from conftest import GPT_OSS_SMALL

    return GPT_OSS_SMALL


def _run_case(kind, shard, ms, seed):
    from mxfp4lab.backends import get_backend
    from mxfp4lab.kernels import triton_moe as K
    from mxfp4lab.moe_tensors import ShardSpec
    from mxfp4lab.prepare import prepare_from_experts
    from mxfp4lab.reference import expert_weights_from_logical, moe_reference, relative_error
    from mxfp4lab.synthetic import make_inputs, random_layer

    kind, _, variant = kind.partition("+")
    cfg = _config(kind)
    tp, tr, ep, er = shard
    prepared = prepare_from_experts(random_layer(cfg, device="cpu", seed=seed), config=cfg,
                                    shard=ShardSpec(tp_size=tp, tp_rank=tr, ep_size=ep, ep_rank=er))
    cls = get_backend("triton_w4a16")
    ok, why = cls.available()
    if not ok:
        return {"error": f"backend unavailable: {why}"}
    be = cls(prepared, cfg)
    be.scratch_fill = float("nan")  # poison the intermediates too
    ref_w = expert_weights_from_logical(prepared)
    rows = []
    for m in ms:
        x, ids, w = make_inputs(cfg, m, 1, "uniform", device="cpu", seed=seed * 1000 + m)[0]
        out = torch.full((m, cfg.hidden_size), float("nan"), dtype=torch.bfloat16)  # poisoned
        t0 = time.perf_counter()
        if variant == "swapab":
            got = K.fused_moe_w4a16(x, ids, w, be.layout, config=SWAP_AB_TILE, out=out,
                                    scratch_fill=float("nan"), **be.swiglu)
        else:
            got = be.forward(x, ids, w, out=out)
        dt = time.perf_counter() - t0
        ref = moe_reference(x, ids, w, ref_w, mode="kernel", **cfg.swiglu_kwargs)
        rows.append({"m": m, "same_buffer": got.data_ptr() == out.data_ptr(),
                     "unwritten": int(torch.isnan(out).sum()), "rel_err": relative_error(out, ref),
                     "bit_identical": bool(torch.equal(out, ref)), "seconds": dt})
    return {"rows": rows, "available": why}


def _run_gpu_tile_configs(seed):
    """Every distinct GPU tile config of the backend's table on one small layer (H = I = 256): the
    tile shapes the H100 will run, checked here for indexing (not for speed)."""
    from mxfp4lab.backends import get_backend
    from mxfp4lab.kernels import triton_moe as K
    from mxfp4lab.kernels.tiles import TileConfig, table_tiles
    from mxfp4lab.models import GPT_OSS_20B
    from mxfp4lab.prepare import prepare_from_experts
    from mxfp4lab.reference import expert_weights_from_logical, moe_reference, relative_error
    from mxfp4lab.synthetic import make_inputs, random_layer

    cfg = GPT_OSS_20B.scaled(hidden=256, intermediate=256, experts=4, top_k=2)
    prepared = prepare_from_experts(random_layer(cfg, device="cpu", seed=seed), config=cfg)
    be = get_backend("triton_w4a16")(prepared, cfg)
    ref_w = expert_weights_from_logical(prepared)
    rows = []
    # one run per tile shape and structure (the interpreter ignores num_warps / num_stages and runs dequant 0
    # for 0-2, the swap-AB structure with the plain-Triton decode (4) for 3)
    shapes = sorted({(tuple(t.as_list()[:5]), 3 if t.dequant.swap_ab else 0) for t in table_tiles()})
    for i, tile in enumerate(TileConfig(*s, num_warps=4, num_stages=1, dequant=dq) for s, dq in shapes):
        m = 20 + i
        x, ids, w = make_inputs(cfg, m, 1, "uniform", device="cpu", seed=seed * 1000 + i)[0]
        out = torch.full((m, cfg.hidden_size), float("nan"), dtype=torch.bfloat16)
        t0 = time.perf_counter()
        K.fused_moe_w4a16(x, ids, w, be.layout, config=tile, out=out, scratch_fill=float("nan"),
                          **be.swiglu)
        dt = time.perf_counter() - t0
        ref = moe_reference(x, ids, w, ref_w, mode="kernel", **cfg.swiglu_kwargs)
        rows.append({"m": m, "tile": tile.as_list(), "same_buffer": True, "unwritten": int(torch.isnan(out).sum()),
                     "rel_err": relative_error(out, ref), "bit_identical": bool(torch.equal(out, ref)),
                     "seconds": dt})
    return {"rows": rows, "available": "interpreter (direct launch)"}


def _run_align_small(seed):
    from mxfp4lab.kernels.align import align_pairs, align_pairs_small

    g = torch.Generator().manual_seed(seed)
    rows = []
    for m, k, e, off, bm in ALIGN_CASES:
        ids = torch.randint(0, off + e + off + 1, (m, k), generator=g, dtype=torch.int32)  # some outside the shard
        a = align_pairs(ids, e, off, bm)
        b = align_pairs_small(ids, e, off, bm)
        rows.append({"case": [m, k, e, off, bm], "max_blocks": [a.max_blocks, b.max_blocks],
                     "sorted_ids_equal": bool(torch.equal(a.sorted_ids, b.sorted_ids.to(a.sorted_ids.dtype))),
                     "block_expert_equal": bool(torch.equal(a.block_expert, b.block_expert.to(a.block_expert.dtype)))})
    return {"rows": rows, "available": "interpreter (direct launch)"}


def _worker() -> dict:
    sys.path[:0] = [str(ROOT), str(HERE)]
    assert os.environ.get("TRITON_INTERPRET") == "1"
    res = {}
    for i, (name, kind, shard, ms) in enumerate(CASES):
        try:
            if kind == "gpu_tiles":
                res[name] = _run_gpu_tile_configs(seed=11 + i)
            elif kind == "align_small":
                res[name] = _run_align_small(seed=11 + i)
            else:
                res[name] = _run_case(kind, shard, ms, seed=11 + i)
        except Exception:  # noqa: BLE001 - reported to the parent test
            res[name] = {"error": traceback.format_exc()[-3000:]}
    return res


# --------------------------------------------------------------------------------------------
# Parent (pytest)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, str(Path(__file__).resolve())], env=env, capture_output=True, check=False,
                       text=True, timeout=TIMEOUT_S, cwd=str(ROOT))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert p.returncode == 0 and lines, f"interpreter child failed (rc {p.returncode}):\n{p.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULTS "):])


@needs_triton
def test_small_alignment_kernel_equals_torch_alignment(results):
    r = results["align_small"]
    assert "error" not in r, r.get("error")
    assert len(r["rows"]) == len(ALIGN_CASES)
    for row in r["rows"]:
        assert row["max_blocks"][0] == row["max_blocks"][1]
        assert row["sorted_ids_equal"] and row["block_expert_equal"], row


@needs_triton
@pytest.mark.parametrize("case", [c[0] for c in CASES if c[1] != "align_small"])
def test_kernels_match_kernel_reference(results, case):
    r = results[case]
    assert "error" not in r, r.get("error")
    assert "interpreter" in r["available"].lower()
    for row in r["rows"]:
        assert row["same_buffer"], "forward(out=...) must write the given buffer"
        assert row["unwritten"] == 0, f"{case} M={row['m']}: {row['unwritten']} output elements never written"
        assert row["rel_err"] < TOL, f"{case} M={row['m']}: rel err {row['rel_err']:.3g} vs kernel-faithful reference"


@needs_triton
def test_alignment_invariants():
    """Every in-shard (token, slot) pair lands in exactly one block of its expert; padding is P.
    (Pure torch; importing the module without the interpreter is fine for it.)"""
    from mxfp4lab.kernels.align import align_pairs

    g = torch.Generator().manual_seed(0)
    for m, k, e, off, bm in [(1, 4, 8, 0, 16), (37, 3, 6, 2, 16), (200, 6, 16, 0, 32)]:
        ids = torch.randint(0, e + 2 * off + 1, (m, k), generator=g, dtype=torch.int32)
        al = align_pairs(ids, e, off, bm)
        p = m * k
        assert al.sorted_ids.numel() == al.max_blocks * bm == al.block_expert.numel() * bm
        flat = ids.reshape(-1).long() - off
        want = sorted(int(i) for i in torch.nonzero((flat >= 0) & (flat < e)).flatten())
        sid = al.sorted_ids.view(al.max_blocks, bm)
        assert sorted(int(v) for v in sid.flatten() if v < p) == want
        for b in range(al.max_blocks):
            ex = int(al.block_expert[b])
            real = [int(v) for v in sid[b] if v < p]
            assert (not real) if ex == e else all(int(flat[v]) == ex for v in real)
        assert (sid[sid >= p] == p).all()


def test_unavailable_without_gpu_or_interpreter(monkeypatch):
    from mxfp4lab.backends import get_backend

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ok, why = get_backend("triton_w4a16").available()
    if not torch.cuda.is_available():
        assert not ok and ("CUDA" in why or "triton" in why)


if __name__ == "__main__":
    print("RESULTS " + json.dumps(_worker()))
