#!/usr/bin/env python3
"""Probe the restricted W4A16 fused_moe_90 build on an SM90 host (H100 / H200).

Steps (each timed; results printed and written as JSON to --out):

1. cold build of ``mxfp4lab.flashinfer_build`` (``--configs``, ``-j``) into a fresh cache dir;
2. warm load in a fresh subprocess (import + spec + tvm-ffi load, no compile);
3. the library's size and its undefined ``tensorrt_llm`` symbols (RTLD_LAZY abort risk);
4. optional (``--moe-call``), in a SUBPROCESS so an abort cannot kill the probe: one tiny
   ``flashinfer.fused_moe.cutlass_fused_moe`` W4A16 call (E=4, H=256, I=256, M=8, top-2) with
   weights prepared by FlashInfer's own ``interleave_moe_weights_for_sm90_mixed_gemm`` and
   ``interleave_moe_scales_for_sm90_mixed_gemm``, through ``mxfp4lab.flashinfer_build.install()``;
   default tactic, then every GEMM1 / GEMM2 tactic by ``profile_ids``, then the autotuner.
   Reports finiteness and the error against a dequantized fp32 reference.

Usage on the GPU host (FlashInfer staged at /tmp/site)::

    cd <repo> && PYTHONPATH=/tmp/site:$PWD python3 scripts/gpu/build_probe.py \\
        --configs minimal -j 16 --moe-call --out $OUT/build_probe_minimal.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mxfp4lab.flashinfer_build import parse_configs  # noqa: E402  (standard library only; after the path insert)

# ------------------------------------------------------------------------------------ child


def _child_load(configs: str) -> dict:
    t0 = time.time()
    import flashinfer  # noqa: F401

    t1 = time.time()
    from mxfp4lab import flashinfer_build as B

    spec = B.w4a16_jit_spec(configs=parse_configs(configs))
    t2 = time.time()
    mod = spec.try_load()
    t3 = time.time()
    if mod is None:
        raise SystemExit("not built")
    return {
        "import_flashinfer_s": t1 - t0,
        "spec_s": t2 - t1,
        "tvm_ffi_load_s": t3 - t2,
        "warm_total_s": t3 - t0,
    }


def _emit(rec: dict) -> None:
    print("@@" + json.dumps(rec), flush=True)


def _child_moe(configs: str, autotune: bool) -> None:
    """Prints one '@@{json}' line per step, so the parent sees progress up to an abort."""
    import torch

    from mxfp4lab import flashinfer_build as B

    B.install(configs=parse_configs(configs), build_if_missing=False)
    from flashinfer import fused_moe

    torch.manual_seed(0)
    dev = "cuda"
    E, H, I, M, K = 4, 256, 256, 8, 2
    x = torch.randn(M, H, dtype=torch.bfloat16, device=dev)
    w1 = torch.randint(0, 256, (E, 2 * I, H // 2), dtype=torch.uint8, device=dev)  # [up; gate]
    w2 = torch.randint(0, 256, (E, H, I // 2), dtype=torch.uint8, device=dev)
    s1 = torch.randint(118, 123, (E, 2 * I, H // 32), dtype=torch.uint8, device=dev)
    s2 = torch.randint(118, 123, (E, H, I // 32), dtype=torch.uint8, device=dev)
    logits = torch.randn(M, E, device=dev)
    topv, topi = torch.topk(torch.softmax(logits, -1), K, dim=-1)
    topv = (topv / topv.sum(-1, keepdim=True)).float()
    topi = topi.to(torch.int32)

    t0 = time.time()
    w1_il = fused_moe.interleave_moe_weights_for_sm90_mixed_gemm(w1, "fp4")
    w2_il = fused_moe.interleave_moe_weights_for_sm90_mixed_gemm(w2, "fp4")
    s1_il = fused_moe.interleave_moe_scales_for_sm90_mixed_gemm(s1)
    s2_il = fused_moe.interleave_moe_scales_for_sm90_mixed_gemm(s2)
    torch.cuda.synchronize()
    _emit({"step": "interleave", "ok": True, "s": time.time() - t0})
    try:
        g = B.interleave_weights_flashinfer_cuda(w1)
        _emit({"step": "interleave_ext_matches_flashinfer", "ok": bool(torch.equal(g, w1_il))})
    except Exception as e:  # noqa: BLE001
        _emit({"step": "interleave_ext_matches_flashinfer", "ok": False, "error": repr(e)[:400]})

    # dequantized reference (element 2i in the low nibble)
    from mxfp4lab.formats import dequantize_mxfp4

    W1, W2 = dequantize_mxfp4(w1, s1), dequantize_mxfp4(w2, s2)
    xf = x.float()
    ref = torch.zeros(M, H, device=dev)  # fc1 halves [up ; gate] (w3 first), out = silu(gate) * up
    ref_swapped = torch.zeros(M, H, device=dev)  # the other convention, for diagnosis only
    for m in range(M):
        for j in range(K):
            e = int(topi[m, j])
            h = W1[e] @ xf[m]
            a, b = h[:I], h[I:]
            ref[m] += topv[m, j] * (W2[e] @ (torch.nn.functional.silu(b) * a))
            ref_swapped[m] += topv[m, j] * (W2[e] @ (torch.nn.functional.silu(a) * b))

    def run(profile_ids=None):
        out = torch.zeros(M, H, dtype=torch.bfloat16, device=dev)
        t = time.time()
        fused_moe.cutlass_fused_moe(
            x, topi, topv, w1_il, w2_il, torch.bfloat16,
            quant_scales=[s1_il.view(torch.int32), s2_il.view(torch.int32)],
            use_w4_group_scaling=True, output=out, profile_ids=profile_ids,
        )
        torch.cuda.synchronize()
        o = out.float()
        rel = float((o - ref).norm() / ref.norm().clamp_min(1e-9))
        rel_sw = float((o - ref_swapped).norm() / ref_swapped.norm().clamp_min(1e-9))
        return {"finite": bool(torch.isfinite(o).all()), "rel_err_vs_ref": rel,
                "rel_err_vs_swapped_halves": rel_sw,
                "max_abs": float(o.abs().max()), "s": time.time() - t}

    _emit({"step": "default_tactic", **run(), "ok": True})

    # every compiled tactic by index (the module's own tactic list == our candidate list)
    try:
        mod = B.load(configs=parse_configs(configs), build_if_missing=False)
        r = mod.init(torch.bfloat16, torch.uint8, torch.bfloat16, False, True, False, False, True, False)
        g1, g2 = int(r.get_gemm1_tactic_count()), int(r.get_gemm2_tactic_count())
        _emit({"step": "tactic_counts", "gemm1": g1, "gemm2": g2, "ok": True})
    except Exception as e:  # noqa: BLE001
        g1 = g2 = 0
        _emit({"step": "tactic_counts", "ok": False, "error": repr(e)[:400]})
    for t in range(g1):
        try:
            _emit({"step": f"gemm1_tactic_{t}", **run([t, -1]), "ok": True})
        except Exception as e:  # noqa: BLE001
            _emit({"step": f"gemm1_tactic_{t}", "ok": False, "error": repr(e)[:300]})
    for t in range(g1, g1 + g2):
        try:
            _emit({"step": f"gemm2_tactic_{t}", **run([-1, t]), "ok": True})
        except Exception as e:  # noqa: BLE001
            _emit({"step": f"gemm2_tactic_{t}", "ok": False, "error": repr(e)[:300]})

    if autotune:
        from flashinfer.autotuner import autotune as _autotune

        t = time.time()
        with _autotune(True):
            run()
        _emit({"step": "autotune", "ok": True, "tune_s": time.time() - t, **run()})
    _emit({"step": "done", "ok": True})


# ------------------------------------------------------------------------------------ parent


def _sub(args_list, env, timeout):
    t = time.time()
    p = subprocess.run([sys.executable, __file__, *args_list], capture_output=True, text=True,
                       env=env, timeout=timeout)
    recs = [json.loads(ln[2:]) for ln in p.stdout.splitlines() if ln.startswith("@@")]
    return {"rc": p.returncode, "wall_s": time.time() - t, "records": recs,
            "stderr_tail": p.stderr[-3000:], "stdout_tail": p.stdout[-1500:] if p.returncode else ""}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="minimal",
                    help="a named set (minimal, compact, full, stock_k128) or comma-separated labels")
    ap.add_argument("-j", "--jobs", type=int, default=16)
    ap.add_argument("--cache", default="/tmp/mxfp4lab_build_probe_cache", help="MXFP4LAB_CACHE for this probe")
    ap.add_argument("--keep-cache", action="store_true", help="do not wipe --cache first (warm rebuild)")
    ap.add_argument("--moe-call", action="store_true", help="run the tiny cutlass_fused_moe check in a subprocess")
    ap.add_argument("--autotune", action="store_true", help="also run the autotuner in the MoE check")
    ap.add_argument("--out", required=True, help="JSON result path")
    ap.add_argument("--_child", choices=["load", "moe"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a._child == "load":
        _emit(_child_load(a.configs))
        return 0
    if a._child == "moe":
        _child_moe(a.configs, a.autotune)
        return 0

    os.environ["MXFP4LAB_CACHE"] = a.cache
    if not a.keep_cache and Path(a.cache).exists():
        shutil.rmtree(a.cache)
    env = dict(os.environ)
    res: dict = {"configs": a.configs, "jobs": a.jobs, "cache": a.cache, "python": sys.version}

    from mxfp4lab import flashinfer_build as B

    cfg = parse_configs(a.configs)
    t0 = time.time()
    try:
        so = B.build(configs=cfg, jobs=a.jobs, verbose=True)
        res["cold_build_s"] = time.time() - t0
        res["build_ok"] = True
    except Exception as e:  # noqa: BLE001
        res["cold_build_s"] = time.time() - t0
        res["build_ok"] = False
        res["build_error"] = str(e)[-4000:]
        so = None
    info = B.build_info(configs=cfg)
    res["info"] = {k: v for k, v in info.items() if k not in ("units",)}
    res["n_units"] = info["n_units"]
    res["n_instantiations"] = info["n_instantiations"]
    res["candidates"] = info["candidates"]
    res["compiled_configs"] = info["compiled_configs"]
    res["library_bytes"] = info.get("library_bytes")
    if info.get("unit_seconds"):
        res["slowest_units"] = list(info["unit_seconds"].items())[:10]

    if so is not None:
        try:
            nm = subprocess.run(["nm", "-D", "--undefined-only", "-C", str(so)], capture_output=True, text=True)
            und = [ln.split(None, 1)[-1] for ln in nm.stdout.splitlines() if "tensorrt_llm" in ln]
            res["undefined_tensorrt_llm_symbols"] = len(und)
            res["undefined_launchers"] = [u for u in und if "mixed_moe_gemm_kernelLauncher" in u][:20]
            res["undefined_sample"] = und[:40]
        except FileNotFoundError:
            res["undefined_tensorrt_llm_symbols"] = "nm not found"
        res["warm_load"] = _sub(["--_child", "load", "--configs", a.configs, "--out", a.out], env, 600)
        if a.moe_call:
            args = ["--_child", "moe", "--configs", a.configs, "--out", a.out]
            if a.autotune:
                args.append("--autotune")
            r = _sub(args, env, 1200)
            recs = r["records"]
            r["ran"] = any(x.get("step") == "default_tactic" for x in recs)
            r["all_finite"] = all(x.get("finite", True) for x in recs)
            r["completed"] = any(x.get("step") == "done" for x in recs)
            r["aborted"] = r["rc"] < 0
            res["moe_call"] = r

    from mxfp4lab import results

    res["run"] = a.configs
    results.write(a.out, "flashinfer_build", [res])  # with the provenance block (GPU, versions, commit, date, command)
    short = {k: res.get(k) for k in ("build_ok", "cold_build_s", "n_units", "n_instantiations", "library_bytes",
                                      "undefined_tensorrt_llm_symbols")}
    short["warm_load"] = (res.get("warm_load") or {}).get("records")
    if "moe_call" in res:
        m = res["moe_call"]
        short["moe_call"] = {k: m[k] for k in ("rc", "ran", "all_finite", "completed", "aborted")}
        short["moe_steps"] = [(x.get("step"), x.get("ok"), x.get("rel_err_vs_ref")) for x in m["records"]]
    print(json.dumps(short, indent=1, default=str))
    return 0 if res.get("build_ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
