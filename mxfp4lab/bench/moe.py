"""MoE latency sweep: backends x shapes x tokens M x routing, against the roofline (:func:`sweep`).

    mxfp4lab bench moe --backends flashinfer_sm90,torch_naive \
        --shapes gpt-oss-20b,gpt-oss-120b,dsv4-flash,seed-bench --m 1,2,4,...,16384 \
        --routing uniform,skewed            # prints a table, writes data/results/latency/<gpu>.json

Per (shape): one random layer in checkpoint layout is generated ON the GPU (uniform random FP4 codes,
E8M0 scale bytes in 118..122 as FlashInfer's own test, small bf16 biases for GPT-OSS) and prepared
with :mod:`mxfp4lab.prepare` (pure torch, on the GPU; :func:`mxfp4lab.synthetic.random_layer`). Per (M, routing): ``--rotate`` input sets, each
with its own tokens and routing (routing from random softmax logits; ``skewed`` adds a fixed per-expert
popularity so a few experts take most tokens), so successive timed calls hit different experts and
the L2 cache (50 MB) cannot hold the weights. Before timing, every backend's output on the first set
is checked against the kernel-faithful reference (relative error recorded; a failing backend is not
timed). Timing: CUDA events, warm-up, median of ``--reps`` (CUDA graphs where the backend allows).
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional

import torch

from ..backends import get_backend
from ..models import STUDY_SHAPES, get_model
from ..prepare import prepare_from_experts
from ..reference import expert_weights_from_logical, moe_reference, relative_error
from ..roofline import H100_BF16_FLOPS, H100_COPY_BW, roofline
from ..synthetic import make_inputs, random_layer
from .harness import time_cuda

DEFAULT_M = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
DEFAULT_SHAPES = STUDY_SHAPES
# kernel vs kernel-faithful reference: a few bf16 ulps (2^-8 relative) after four roundings; a
# wrong layout or scale gives O(1)
CHECK_TOL = 2e-2


def check_backend(backend, weights_ref, cfg, inputs) -> float:
    x, ids, w = inputs[0]
    out = backend(x, ids, w)
    ref = moe_reference(x, ids, w, weights_ref, mode="kernel", **cfg.swiglu_kwargs,
                        routed_scaling_factor=cfg.routed_scaling_factor)
    return relative_error(out, ref)


def sweep(
    backends: List[str], shapes: List[str], ms: List[int], routings: List[str], *, reps: int = 50,
    warmup: int = 5, rotate: int = 4, graph: bool = True, check_m: Optional[List[int]] = None,
    ceilings: Optional[dict] = None, log=print, backend_kwargs: Optional[Dict[str, dict]] = None,
    on_progress=None,
) -> List[dict]:
    bw = (ceilings or {}).get("copy_bytes_per_s", H100_COPY_BW)
    fr = (ceilings or {}).get("bf16_flops_per_s", H100_BF16_FLOPS)
    rows = []
    for shape in shapes:
        cfg = get_model(shape)
        t0 = time.perf_counter()
        layer = random_layer(cfg)
        prepared = prepare_from_experts(layer, config=cfg)
        del layer
        ref_w = expert_weights_from_logical(prepared)
        log(f"[{shape}] prepared on GPU in {time.perf_counter() - t0:.1f} s "
            f"({prepared.nbytes() / 1e9:.2f} GB)")
        built = {}
        for b in backends:
            try:
                built[b] = get_backend(b)(prepared, cfg, **(backend_kwargs or {}).get(b, {}))
            except Exception as exc:  # noqa: BLE001 - record and go on with the others
                log(f"[{shape}] backend {b} unavailable: {exc}")
                rows.append({"shape": shape, "backend": b, "error": str(exc)[:300]})
        for routing in routings:
            for m in ms:
                inputs = make_inputs(cfg, m, rotate, routing, seed=m)
                # the floor counts the experts this routing really hits (mean over the rotated sets)
                active = sum(int(torch.unique(s[1]).numel()) for s in inputs) / len(inputs)
                rf = roofline(cfg, m, bandwidth=bw, flops_rate=fr, active_experts=active)
                for b, be in built.items():
                    row = {"shape": shape, "backend": b, "m": m, "routing": routing,
                           "roofline_us": rf.floor_us, "roofline_bound": rf.bound,
                           "active_experts": rf.active_experts, "bytes": rf.bytes, "flops": rf.flops}
                    try:
                        be.tune(*inputs[0])  # first, so that the check below covers the timed configuration
                        if check_m is None or m in check_m:
                            row["rel_err_vs_kernel_ref"] = err = check_backend(be, ref_w, cfg, inputs)
                            if not err < CHECK_TOL:
                                row["error"] = f"output check failed: rel err {err:.3g} >= {CHECK_TOL}"
                                log(f"[{shape}] {b} M={m}: {row['error']}")
                                rows.append(row)
                                continue
                        t = time_cuda(be, inputs, warmup=warmup, reps=reps, graph=graph and be.graph_capturable)
                        row.update(t.as_dict())
                        row.update(be.describe(m))
                        row["fraction_of_roofline"] = rf.floor_us / t.median_us
                        row["achieved_GBps"] = rf.bytes / t.median_us / 1e3
                        row["achieved_TFLOPs"] = rf.flops / t.median_us / 1e6
                    except Exception as exc:  # noqa: BLE001
                        row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                    rows.append(row)
                    log(_fmt(row))
                if on_progress is not None:
                    on_progress(rows)  # partial results after every M (a killed run keeps them)
        del built, prepared, ref_w
        torch.cuda.empty_cache()
    return rows


def _fmt(r: dict) -> str:
    if "median_us" not in r:
        return f"{r['shape']:14s} {r['backend']:16s} M={r.get('m', '-'):>6} {r.get('routing', ''):8s} ERROR {r.get('error')}"
    err = r.get("rel_err_vs_kernel_ref")
    return (f"{r['shape']:14s} {r['backend']:16s} M={r['m']:>6} {r['routing']:8s} {r['median_us']:10.1f} us "
            f"floor {r['roofline_us']:8.1f} ({r['roofline_bound'][:3]}) {100 * r['fraction_of_roofline']:5.1f}% "
            f"{'graph' if r['graph'] else 'eager'} err={'-' if err is None else f'{err:.2e}'}")
