"""MoE latency sweep: backends x shapes x tokens M x routing, against the roofline. Prints a table, writes JSON.

    python -m mxfp4lab.bench.moe --backends flashinfer_sm90,torch_naive \
        --shapes gpt-oss-20b,gpt-oss-120b,dsv4-flash,seed-bench --m 1,2,4,...,16384 \
        --routing uniform,skewed            # -> data/results/latency/<gpu>.json

Per (shape): one random layer in checkpoint layout is generated ON the GPU (uniform random FP4 codes,
E8M0 scale bytes in 118..122 as FlashInfer's own test, small bf16 biases for GPT-OSS) and prepared
with :mod:`mxfp4lab.prepare` (pure torch, on the GPU). Per (M, routing): ``--rotate`` input sets, each
with its own tokens and routing (routing from random softmax logits; ``skewed`` adds a fixed per-expert
popularity so a few experts take most tokens), so successive timed calls hit different experts and
the L2 cache (50 MB) cannot hold the weights. Before timing, every backend's output on the first set
is checked against the kernel-faithful reference (relative error recorded; a failing backend is not
timed). Timing: CUDA events, warm-up, median of ``--reps`` (CUDA graphs where the backend allows).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Optional

import torch

from ..models import STUDY_SHAPES, MoEConfig, get_model
from ..prepare import prepare_from_experts
from .. import results
from ..reference import expert_weights_from_logical, moe_reference, relative_error
from ..synthetic import make_inputs, random_layer
from .roofline import H100_BF16_FLOPS, H100_COPY_BW, roofline

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
    on_progress=None, modes: Optional[List[str]] = None, mode_m: Optional[List[int]] = None,
) -> List[dict]:
    """``modes``: timing modes (:mod:`mxfp4lab.bench.modes`; default ``["graph"]``, or ``["eager"]`` with
    ``graph=False``), one row per mode, each with ``mode``; modes other than ``graph`` run only at the M in
    ``mode_m`` (None: every M)."""
    from ..backends import get_backend
    from .modes import time_modes

    modes = list(modes or (["graph"] if graph else ["eager"]))

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
                        run = [md for md in modes if md == "graph" or mode_m is None or m in mode_m]
                        timed = [{**row, **be.describe(m), **t} for t in time_modes(be, inputs, run, warmup=warmup, reps=reps)]
                        for r in timed:
                            if "median_us" in r and "error" not in r:
                                r["fraction_of_roofline"] = rf.floor_us / r["median_us"]
                                r["achieved_GBps"] = rf.bytes / r["median_us"] / 1e3
                                r["achieved_TFLOPs"] = rf.flops / r["median_us"] / 1e6
                    except Exception as exc:  # noqa: BLE001
                        row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                        timed = [row]
                    rows.extend(timed)
                    for r in timed:
                        log(_fmt(r))
                if on_progress is not None:
                    on_progress(rows)  # partial results after every M (a killed run keeps them)
        del built, prepared, ref_w
        torch.cuda.empty_cache()
    return rows


def _fmt(r: dict) -> str:
    if "median_us" not in r or "error" in r:
        return f"{r['shape']:14s} {r['backend']:16s} M={r.get('m', '-'):>6} {r.get('routing', ''):8s} ERROR {r.get('error')}"
    err = r.get("rel_err_vs_kernel_ref")
    mode = r.get("mode") or ("graph" if r["graph"] else "eager")
    return (f"{r['shape']:14s} {r['backend']:16s} M={r['m']:>6} {r['routing']:8s} {r['median_us']:10.1f} us "
            f"floor {r['roofline_us']:8.1f} ({r['roofline_bound'][:3]}) {100 * r['fraction_of_roofline']:5.1f}% "
            f"{mode:5s}{'' if r['graph'] or mode != 'graph' else '(eager fallback)'} "
            f"err={'-' if err is None else f'{err:.2e}'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="MoE latency sweep (H100)")
    ap.add_argument("--backends", default="flashinfer_sm90,torch_naive")
    ap.add_argument("--shapes", default=",".join(DEFAULT_SHAPES))
    ap.add_argument("--m", default=",".join(map(str, DEFAULT_M)))
    ap.add_argument("--routing", default="uniform,skewed")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--rotate", type=int, default=4)
    ap.add_argument("--no-graph", action="store_true")
    ap.add_argument("--modes", default=None, help="timing modes, e.g. graph,eager,gemm (mxfp4lab.bench.modes; "
                    "default graph, or eager with --no-graph)")
    ap.add_argument("--mode-m", default=None, help="M values for the modes other than graph (default: every M)")
    ap.add_argument("--check-m", default="1,64,1024", help="M values at which outputs are checked (all: 'all')")
    ap.add_argument("--out", default=None, help="result file (default data/results/latency/<gpu>.json)")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("the latency sweep needs a CUDA GPU; recorded H100 results are in data/results/", file=sys.stderr)
        return 2
    from .harness import measure_ceilings

    out = a.out or results.result_path("latency", results.gpu_slug(torch.cuda.get_device_name()))
    ceil = measure_ceilings()
    print(f"measured ceilings: copy {ceil['copy_bytes_per_s'] / 1e12:.2f} TB/s, bf16 {ceil['bf16_flops_per_s'] / 1e12:.0f} TFLOP/s")
    check_m = None if a.check_m == "all" else [int(v) for v in a.check_m.split(",")]
    def save(rows, done=False):
        from ..flashinfer_build import DEFAULT_CONFIGS

        cfgs = os.environ.get("MXFP4LAB_BUILD_CONFIGS", DEFAULT_CONFIGS)
        extra = {}
        if "flashinfer_sm90" in a.backends:
            from ..backends.flashinfer_sm90 import autotuner_choices

            extra["flashinfer_autotuner"] = autotuner_choices()
        return results.write(out, "latency_sweep", rows, partial=not done, ceilings=ceil, build_configs=cfgs,
                             complete=done, **extra)

    rows = sweep(a.backends.split(","), a.shapes.split(","), [int(v) for v in a.m.split(",")],
                 a.routing.split(","), reps=a.reps, rotate=a.rotate, graph=not a.no_graph, check_m=check_m,
                 ceilings=ceil, on_progress=save, modes=a.modes.split(",") if a.modes else None,
                 mode_m=[int(v) for v in a.mode_m.split(",")] if a.mode_m else None)
    path = save(rows, done=True)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
