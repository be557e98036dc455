"""Everything mxfp4lab checks on a real SM90 GPU (H100/H200), in stages that each write a result file
(:mod:`mxfp4lab.results` schema, with provenance) as they go.

    python scripts/gpu/check_sm90.py golden  --out DIR   # DIR/interleave_check.json (+ DIR/golden/ bytes)
    python scripts/gpu/check_sm90.py kernel  --out DIR   # DIR/kernel_check.json: FlashInfer SM90 MoE vs
                                                         #   the references, TP=2 / EP=2 ranks in sequence
    python scripts/gpu/check_sm90.py all     --out DIR

To record them: copy to ``data/results/interleave_check/<gpu>.json`` / ``kernel_check/<gpu>.json``.

``golden`` needs only the tiny interleave extension (one small nvcc compile of FlashInfer's own
``moe_gemm_mixed_utils.cu``); ``kernel`` needs the W4A16 build (``mxfp4lab build``), and builds it
if missing. Shapes are the real layers: GPT-OSS-20b, GPT-OSS-120b, DeepSeek-V4-Flash.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mxfp4lab import prepare as P  # noqa: E402
from mxfp4lab import results  # noqa: E402
from mxfp4lab.synthetic import make_inputs, random_layer  # noqa: E402
from mxfp4lab.layout import interleave_weights_sm90  # noqa: E402
from mxfp4lab.models import get_model  # noqa: E402
from mxfp4lab.moe_tensors import ShardSpec  # noqa: E402
from mxfp4lab.provenance import provenance  # noqa: E402
from mxfp4lab.reference import expert_weights_from_logical, moe_reference, relative_error  # noqa: E402

GOLDEN_SHAPES = [(1, 16, 32), (2, 48, 96), (3, 128, 160), (1, 256, 1472), (2, 64, 1024)]  # [E, rows, K/2]
RANDOM_SHAPES = [(1, 16, 32), (5, 80, 64), (2, 144, 224), (7, 32, 320), (3, 2944, 1472), (128, 5888, 1472)]


def stage_golden(out: Path) -> dict:
    from safetensors.torch import save_file

    from mxfp4lab.flashinfer_build import build_interleave_ext, interleave_weights_flashinfer_cuda

    t0 = time.perf_counter()
    lib = build_interleave_ext(verbose=True)
    res = {"interleave_ext": str(lib), "ext_build_s": time.perf_counter() - t0, "golden": [], "random": []}
    gdir = out / "golden"
    gdir.mkdir(parents=True, exist_ok=True)
    tensors, shapes = {}, []
    for i, shape in enumerate(GOLDEN_SHAPES):
        g = torch.Generator().manual_seed(1000 + i)
        w = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        fi = interleave_weights_flashinfer_cuda(w.cuda()).cpu()
        tag = "x".join(map(str, shape))
        tensors[f"input_{tag}"], tensors[f"output_{tag}"] = w, fi
        eq = bool(torch.equal(fi, interleave_weights_sm90(w)))
        shapes.append({"shape": list(shape), "seed": 1000 + i, "equal_to_mxfp4lab": eq})
        res["golden"].append({"shape": shape, "equal": eq})
        print(f"golden {shape}: equal={eq}", flush=True)
    # one file (the device returns at most 8 files per call): input_<shape> / output_<shape> pairs
    name = "sm90_fp4_interleave_golden"
    save_file(tensors, str(gdir / f"{name}.safetensors"))
    meta = {"provenance": provenance(), "shapes": shapes,
            "what": "FlashInfer interleave_fp4_weights_for_sm90_mixed_gemm output (quant_type fp4) via "
                    "mxfp4lab's ctypes wrapper of the installed moe_gemm_mixed_utils.cu"}
    (gdir / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    for i, shape in enumerate(RANDOM_SHAPES):
        w = torch.randint(0, 256, shape, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        t = time.perf_counter()
        fi = interleave_weights_flashinfer_cuda(w)
        torch.cuda.synchronize()
        t_fi = time.perf_counter() - t
        t = time.perf_counter()
        ours = interleave_weights_sm90(w)  # vectorized torch, on the GPU
        torch.cuda.synchronize()
        t_ours = time.perf_counter() - t
        eq = bool(torch.equal(fi, ours))
        res["random"].append({"shape": shape, "equal": eq, "flashinfer_s": t_fi, "mxfp4lab_torch_gpu_s": t_ours})
        print(f"random {shape}: equal={eq} (flashinfer {t_fi * 1e3:.1f} ms, ours {t_ours * 1e3:.1f} ms)", flush=True)
        del w, fi, ours
    res["all_equal"] = all(r["equal"] for r in res["golden"] + res["random"])
    return res


def _kernel_errors(be, ref_w, cfg, inputs):
    x, ids, w = inputs
    out = be(x, ids, w)
    kw = dict(cfg.swiglu_kwargs, routed_scaling_factor=cfg.routed_scaling_factor)
    ref_k = moe_reference(x, ids, w, ref_w, mode="kernel", **kw)
    ref_f = moe_reference(x, ids, w, ref_w, mode="fp32", **kw)
    d = (out.float() - ref_k.float()).abs()
    return {
        "rel_err_vs_kernel_ref": relative_error(out, ref_k),
        "rel_err_vs_fp32_ref": relative_error(out, ref_f),
        "rel_err_kernel_ref_vs_fp32_ref": relative_error(ref_k, ref_f),
        "max_abs_diff_vs_kernel_ref": d.max().item(),
        "frac_bitexact_vs_kernel_ref": (out == ref_k).float().mean().item(),
        "flashinfer_test_tolerance_pass": bool(torch.allclose(out.float(), ref_f.float(), rtol=0.1, atol=0.1)),
        "out_finite": bool(torch.isfinite(out.float()).all()),
        "ref_norm": ref_f.float().norm().item(),
    }, out


def stage_kernel(out: Path, models=("gpt-oss-20b", "gpt-oss-120b", "dsv4-flash"), ms=(1, 16, 128, 1024, 4096),
                 save=None) -> dict:
    from mxfp4lab import flashinfer_build as build
    from mxfp4lab.backends import get_backend

    res = {"models": {}, "sharding": {}}
    t0 = time.perf_counter()
    build.install()
    res["install_s"] = time.perf_counter() - t0
    torch.backends.cuda.matmul.allow_tf32 = False
    for name in models:
        cfg = get_model(name)
        layer = random_layer(cfg, seed=7)
        prep = P.prepare_from_experts(layer, config=cfg)
        ref_w = expert_weights_from_logical(prep)
        entry = {"config": {k: getattr(cfg, k) for k in ("hidden_size", "intermediate_size", "num_experts", "top_k",
                                                          "swiglu_alpha", "swiglu_beta", "swiglu_limit")},
                 "padded": [prep.padded_hidden, prep.padded_intermediate], "points": []}
        for fused in (None, False):
            try:
                be = get_backend("flashinfer_sm90")(prep, cfg, use_fused_finalize=fused)
            except Exception as exc:  # noqa: BLE001
                entry["points"].append({"use_fused_finalize": fused, "error": repr(exc)[:500]})
                continue
            for m in ms:
                inputs = make_inputs(cfg, m, 1, "uniform", seed=100 + m)[0]
                try:
                    errs, _ = _kernel_errors(be, ref_w, cfg, inputs)
                    errs.update(m=m, use_fused_finalize=fused)
                except Exception:  # noqa: BLE001
                    errs = {"m": m, "use_fused_finalize": fused, "error": traceback.format_exc()[-800:]}
                entry["points"].append(errs)
                print(name, json.dumps(errs), flush=True)
        res["models"][name] = entry
        if save is not None:
            save(res)  # after every model: a killed run keeps what it has
        del ref_w, layer
        # TP=2 and EP=2 on one GPU, ranks run one after the other, partial outputs summed (the
        # all-reduce), against the TP=1 output of the same kernel and the kernel-faithful reference
        if name == "gpt-oss-120b":
            res["sharding"] = _sharding(cfg, seed=7)
            if save is not None:
                save(res)
        del prep
        torch.cuda.empty_cache()
    return res


def _sharding(cfg, seed):
    from mxfp4lab.backends import get_backend

    layer = random_layer(cfg, seed=seed)
    full = P.prepare_from_experts(layer, config=cfg)
    be_full = get_backend("flashinfer_sm90")(full, cfg)
    ref_w = expert_weights_from_logical(full)
    out = {}
    for m in (16, 1024):
        x, ids, w = make_inputs(cfg, m, 1, "uniform", seed=m)[0]
        y1 = be_full(x, ids, w)
        ref = moe_reference(x, ids, w, ref_w, mode="fp32", **cfg.swiglu_kwargs)
        for kind in ("tp", "ep"):
            acc = torch.zeros(m, cfg.hidden_size, dtype=torch.float32, device="cuda")
            for r in range(2):
                spec = ShardSpec(tp_size=2, tp_rank=r) if kind == "tp" else ShardSpec(ep_size=2, ep_rank=r)
                shard = P.prepare_from_experts(layer, config=cfg, shard=spec)
                acc += get_backend("flashinfer_sm90")(shard, cfg)(x, ids, w).float()
                del shard
            y2 = acc.to(torch.bfloat16)
            out[f"{kind}2_m{m}"] = {"rel_err_vs_tp1_kernel": relative_error(y2, y1),
                                    "rel_err_vs_fp32_ref": relative_error(y2, ref),
                                    "tp1_rel_err_vs_fp32_ref": relative_error(y1, ref)}
            print(kind, m, out[f"{kind}2_m{m}"], flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["golden", "kernel", "all"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="gpt-oss-20b,gpt-oss-120b,dsv4-flash")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python scripts/gpu/check_sm90.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if a.stage in ("golden", "all"):
        try:
            r = stage_golden(out)
        except Exception:  # noqa: BLE001
            r = {"error": traceback.format_exc()[-3000:]}
            print(r["error"], flush=True)
        rows = [dict(x, inputs="golden") for x in r.pop("golden", [])]
        rows += [dict(x, inputs="random") for x in r.pop("random", [])]
        results.write(out / "interleave_check.json", "sm90_interleave_check", rows, command=cmd, **r)

    def save_kernel(res, complete=False):
        rows = [dict(v, model=name) for name, v in res.get("models", {}).items()]
        meta = {k: v for k, v in res.items() if k != "models"}
        results.write(out / "kernel_check.json", "flashinfer_kernel_check", rows, partial=not complete,
                      command=cmd, complete=complete, **meta)

    if a.stage in ("kernel", "all"):
        try:
            r = stage_kernel(out, models=a.models.split(","), save=save_kernel)
        except Exception:  # noqa: BLE001
            r = {"error": traceback.format_exc()[-3000:]}
            print(r["error"], flush=True)
        save_kernel(r, complete="error" not in r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
