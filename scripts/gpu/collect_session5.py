"""Collect the raw outputs of GPU session 5 (2 x NVIDIA H100, ``bash scripts/gpu/session5.sh``) into data/results/.

    python scripts/gpu/collect_session5.py RAW_DIR      # RAW_DIR = the unpacked s5out/ of the last call

Each raw file carries its own provenance (commit from ``.devcarry/COMMIT``); this script merges and
derives, and says what it wrote:

- ``sharded_nccl_h100.json``       TP=2 and EP=2 over NCCL (tp2/ep2_nccl_h100.json);
- ``build_w4a16_stock_k128_h100.json``  the stock_k128 cold build probe;
- ``config_sets_h100.json``        FlashInfer compact vs stock_k128 on GPT-OSS-120b, ratio per M;
- ``triton_check_paths23_h100.json``    Triton decode paths 2/3 correctness (poisoned, every candidate);
- ``latency_h100.json``            its triton_w4a16 rows replaced by this session's (the kernel changed:
                                   decode paths 2 and 3 are candidates now); FlashInfer/Marlin rows kept,
                                   with this session's same-machine baseline stored beside them.
"""
import json
import sys
from pathlib import Path

RAW = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gpu5/s5out")
ROOT = Path(__file__).resolve().parents[2]
RES = ROOT / "data" / "results"


def load(name):
    p = RAW / name
    return json.loads(p.read_text()) if p.exists() else None


def dump(name, d):
    (RES / name).write_text(json.dumps(d, indent=1) + "\n")
    print("wrote", RES / name)


def sharded():
    tp, ep = load("tp2_nccl_h100.json"), load("ep2_nccl_h100.json")
    if not (tp or ep):
        print("no TP/EP results")
        return
    dump("sharded_nccl_h100.json", {
        "provenance": (tp or ep)["provenance"],
        "check": "sharded_moe_nccl",
        "note": ("One GPT-OSS-120b layer (random MXFP4 weights, seed 7) on two H100s, one rank per GPU, "
                 "torch.distributed.run + NCCL all-reduce of the fp32 partial outputs (NVLink multicast off: "
                 "NCCL_NVLS_ENABLE=0), FlashInfer SM90 compact build, autotuned. rel_err_vs_sharded_kernel_ref: "
                 "vs the kernel-faithful model of the sharded run (per-shard moe_reference(mode='kernel') bf16 "
                 "partials summed in fp32); vs_unsharded: vs tp_size=1 through the same backend (differs by the "
                 "partials' extra bf16 rounding)."),
        "tp2": tp, "ep2": ep,
    })


def build():
    d = load("build_probe_stock_k128_h100.json")
    if d:
        dump("build_w4a16_stock_k128_h100.json", d)


def config_sets():
    a, b = load("config_set_compact_h100.json"), load("config_set_stock_k128_h100.json")
    if not (a and b):
        print("config-set comparison incomplete:", bool(a), bool(b))
        return
    ta = {r["m"]: r for r in a["rows"] if "median_us" in r}
    tb = {r["m"]: r for r in b["rows"] if "median_us" in r}
    comp = [{"m": m, "compact_us": ta[m]["median_us"], "stock_k128_us": tb[m]["median_us"],
             "compact_over_stock": ta[m]["median_us"] / tb[m]["median_us"]} for m in sorted(set(ta) & set(tb))]
    for c in comp:
        print(f"M={c['m']:>5}  compact {c['compact_us']:9.1f} us  stock_k128 {c['stock_k128_us']:9.1f} us  "
              f"compact/stock {c['compact_over_stock']:.3f}")
    dump("config_sets_h100.json", {
        "provenance": a["provenance"], "benchmark": "flashinfer_config_sets",
        "note": ("FlashInfer SM90 W4A16 on one GPT-OSS-120b layer, uniform routing, CUDA graphs, median of 20 after "
                 "warm-up, 4 rotated input sets; autotuned per M bucket with the compact set (10 candidates) and "
                 "with stock_k128 (the 44 stock candidates with K-tile 128 = every stock candidate FlashInfer's "
                 "isProfileShapeSupported admits for GPT-OSS's K = 2944; 'full' offers this layer nothing more). "
                 "Two processes on the same GPU, one after the other."),
        "comparison": comp, "compact": a, "stock_k128": b,
    })


def triton_check():
    d = load("triton_check.json")
    if d:
        dump("triton_check_paths23_h100.json", d)


def latency():
    new = load("latency_triton_h100.json")
    if not new:
        print("no Triton sweep")
        return
    p = RES / "latency_h100.json"
    d = json.loads(p.read_text())
    tri = [dict(r, source="latency_triton_h100.json (session 5)") for r in new["rows"]
           if r.get("backend") == "triton_w4a16"]
    keys = {(r["shape"], r["m"], r["routing"]) for r in tri if "m" in r}
    old = [r for r in d["rows"] if r.get("backend") == "triton_w4a16"]
    n_before = len(d["rows"])
    kept = [r for r in d["rows"] if not (r.get("backend") == "triton_w4a16"
                                         and (r.get("shape"), r.get("m"), r.get("routing")) in keys)]
    d["rows"] = kept + tri
    base = load("latency_baseline_h100.json")
    d["parts"] = [x for x in d.get("parts", []) if x.get("file") != "latency_triton_h100.json"]
    d["parts"].append({"file": "latency_triton_h100.json", "provenance": new["provenance"],
                       "complete": new.get("complete"), "ceilings": new.get("ceilings"),
                       "replaces": f"{n_before - len(kept)} of {len(old)} earlier triton_w4a16 rows "
                                   "(same shape, M, routing)"})
    if base:
        d["baseline_session5"] = {"note": ("FlashInfer and Marlin re-timed on the session-5 H100 (the machine of the "
                                           "new Triton rows) at a few points: compare with the rows above to see "
                                           "the machine-to-machine spread."),
                                  "provenance": base["provenance"], "ceilings": base.get("ceilings"),
                                  "rows": base["rows"]}
    d["note"] = d.get("note", "") + (" Session 5: triton_w4a16 rows re-measured on another H100 with decode paths "
                                     "2 and 3 among the tuned candidates; they replace the earlier Triton rows "
                                     "at the same points (source field).")
    dump("latency_h100.json", d)


if __name__ == "__main__":
    RES.mkdir(parents=True, exist_ok=True)
    sharded()
    build()
    config_sets()
    triton_check()
    latency()
