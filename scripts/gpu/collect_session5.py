"""Collect the raw outputs of GPU sessions 5 and 6 (2026-11-28) into data/results/.

    python scripts/gpu/collect_session5.py RAW5 RAW6 RAW6B

- RAW5: the unpacked ``s5out/`` of ``bash scripts/gpu/session5.sh`` (asked for 2 x H100 as
  nvidia-h100-x2, GOT 2 x NVIDIA H200: the device service moves such a call to H200s when H100s do not
  come; the raw file names say h100, their provenance says H200; named by the real GPU here);
- RAW6: the unpacked ``s5out/`` of ``WORK=scripts/gpu/session6_work.sh bash scripts/gpu/session5.sh`` on one
  NVIDIA H100 80GB HBM3; RAW6B: the files of the follow-up call on the same warm H100
  (``config_set_stock_k128_h100.json``: the first call's 240 s limit stopped that run;
  ``latency_triton_dsv4_rerun_h100.json``: see below).

Each raw file carries its own provenance (commit from ``.devcarry/COMMIT``); this script merges and
derives only. It writes:

- ``sharded_nccl_h200.json``            TP=2 and EP=2 over NCCL on the two H200s;
- ``build_w4a16_stock_k128_h200.json``  the stock_k128 cold build (32-core H200 host, -j 28);
- ``config_sets_h100.json`` / ``config_sets_h200.json``  FlashInfer compact vs stock_k128 on GPT-OSS-120b,
  ratio per M, and the tactic the autotuner picked per GEMM and M (decoded to its config label);
- ``triton_check_paths23_h200.json``    Triton decode paths 2/3 correctness (poisoned, every candidate);
- ``latency_h100.json``                 its triton_w4a16 rows replaced by session 6's (the kernel changed:
  decode paths 2 and 3 are tuning candidates now; the older rows move to ``superseded_triton_rows_session3``)
  and session 6's same-machine FlashInfer/Marlin
  baseline (GPT-OSS-120b, seed-bench) stored beside the earlier rows;
- ``latency_triton_h200.json``          session 5's Triton sweep and its H200 baseline.

One substitution, stated in the output: in session 6's sweep the tuner picked the slow path-0 tile
(16, 32, 128, ...) for dsv4-flash's M <= 16 bucket (209 / 743 / 2409 us at M = 1 / 4 / 16, 2.2-3.5x the
identical-shape seed-bench rows of the same sweep, which picked a path-2 tile); a rerun in a fresh
process on the same warm H100 picked a path-2 tile (96 / 231 / 689 us). The rerun's rows are recorded,
the first ones kept under ``superseded_rows``.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from mxfp4lab.build import CONFIG_SETS  # noqa: E402

RES = ROOT / "data" / "results"
RAW5, RAW6, RAW6B = (Path(p) for p in (sys.argv[1:4] if len(sys.argv) > 3 else
                                       ("/tmp/gpu5/s5out", "/tmp/gpu6/s5out", "/work/.device/5")))


def load(d, name):
    p = d / name
    return json.loads(p.read_text()) if p.exists() else None


def dump(name, d):
    (RES / name).write_text(json.dumps(d, indent=1) + "\n")
    print("wrote", RES / name)


def sharded():
    tp, ep = load(RAW5, "tp2_nccl_h100.json"), load(RAW5, "ep2_nccl_h100.json")
    assert tp["provenance"]["gpu"] == "NVIDIA H200", tp["provenance"]["gpu"]
    dump("sharded_nccl_h200.json", {
        "provenance": tp["provenance"],
        "check": "sharded_moe_nccl",
        "note": ("One GPT-OSS-120b layer (random MXFP4 weights, seed 7) on two GPUs of one host (asked for 2 x H100, "
                 "got 2 x NVIDIA H200, SM90 like the H100), one rank per GPU, torch.distributed.run + NCCL all-reduce "
                 "of the fp32 partial outputs (NVLink multicast off: NCCL_NVLS_ENABLE=0), FlashInfer SM90 compact "
                 "build, autotuned. rel_err_vs_sharded_kernel_ref: vs the kernel-faithful model of the sharded run "
                 "(per-shard moe_reference(mode='kernel') bf16 partials summed in fp32); vs_unsharded: vs tp_size=1 "
                 "through the same backend on rank 0's GPU (differs by the partials' extra bf16 rounding)."),
        "tp2": tp, "ep2": ep,
    })


def build():
    d = load(RAW5, "build_probe_stock_k128_h100.json")
    # build_probe.py wrote no provenance then (it does now): the session's own block, read on the same
    # host by the TP run of the same detached job, with this build's exact command
    prov = dict(load(RAW5, "tp2_nccl_h100.json")["provenance"])
    prov["command"] = ("python3 scripts/gpu/build_probe.py --configs stock_k128 -j 28 --cache /tmp/mxcache "
                       "--keep-cache --out /tmp/s5out/build_probe_stock_k128_h100.json "
                       "(detached by scripts/gpu/session5_work.sh)")
    prov["note"] = "provenance read on the same host by the TP=2 run of the same job, minutes later"
    d = {"provenance": prov, **d}
    d["note"] = ("Cold build of the stock_k128 config set (45 instantiations, 61 units) on the 32-core host of "
                 "session 5 (2 x H200; the build uses no GPU), -j 28, while TP/EP and the Triton runs used the GPUs.")
    dump("build_w4a16_stock_k128_h200.json", d)


def _tactics(d, configs: str):
    """Autotuner choices -> [{gemm, m_bucket, tactic, config}]: tactic = position in the candidate list
    (GEMM2's list follows GEMM1's, so its tactics are offset by the GEMM1 count)."""
    cands = CONFIG_SETS[configs]
    out = []
    for e in d.get("flashinfer_autotuner", []):
        g = int(re.search(r"gemm(\d)", e["key"]).group(1))
        m = int(re.search(r"nearest_profile=\(\((\d+),", e["key"]).group(1))
        t = int(re.match(r"\((-?\d+)", e["choice"]).group(1))
        i = t - (len(cands) if g == 2 else 0)
        out.append({"gemm": g, "m_bucket": m, "tactic": t, "config": cands[i].label if 0 <= i < len(cands) else None})
    return sorted(out, key=lambda r: (r["gemm"], r["m_bucket"]))


def config_sets(a, b, name, gpu_note):
    ta = {r["m"]: r for r in a["rows"] if "median_us" in r}
    tb = {r["m"]: r for r in b["rows"] if "median_us" in r}
    pick = {c: {(r["gemm"], r["m_bucket"]): r["config"] for r in _tactics(d, c)} for c, d in
            (("compact", a), ("stock_k128", b))}
    comp = []
    for m in sorted(set(ta) & set(tb)):
        c = {"m": m, "compact_us": ta[m]["median_us"], "stock_k128_us": tb[m]["median_us"],
             "compact_over_stock": ta[m]["median_us"] / tb[m]["median_us"]}
        for cs in ("compact", "stock_k128"):
            c[f"{cs}_gemm1"], c[f"{cs}_gemm2"] = pick[cs].get((1, m)), pick[cs].get((2, m))
        comp.append(c)
        print(f"{name} M={m:>5}  compact {c['compact_us']:8.1f} us  stock_k128 {c['stock_k128_us']:8.1f} us  "
              f"ratio {c['compact_over_stock']:.3f}  stock picks {c['stock_k128_gemm1']} / {c['stock_k128_gemm2']}")
    dump(name, {
        "provenance": a["provenance"], "benchmark": "flashinfer_config_sets",
        "note": ("FlashInfer SM90 W4A16 on one GPT-OSS-120b layer, uniform routing, CUDA graphs, median of 20 after "
                 "warm-up, 4 rotated input sets; autotuned per M bucket with the compact set (10 candidates) and "
                 "with stock_k128 (the 44 stock candidates with K-tile 128 = every stock candidate FlashInfer's "
                 "isProfileShapeSupported admits for GPT-OSS's K = 2944, so 'full' offers this layer nothing more). "
                 "Two processes on the same GPU, one after the other. *_gemm1/2: the autotuner's pick for that M "
                 "bucket, tactic index decoded as the position in the candidate list. " + gpu_note),
        "comparison": comp, "compact": a, "stock_k128": b,
    })


def triton_check():
    d = load(RAW5, "triton_check.json")
    d["note"] = ("Decode paths 2 (PTX register decode, K-parity split) and 3 (the same with swap AB: the weight is "
                 "wgmma's register A operand) only -- every candidate of each M bucket, 4 shapes, M 1..8192, fresh "
                 "inputs, outputs and intermediates NaN-poisoned, second run bit-identical. On an H200 (session 5 "
                 "asked for H100s). Path 0 was checked on the H100 in session 3 (triton_check_h100.json).")
    dump("triton_check_paths23_h200.json", d)


def latency_h100():
    new = load(RAW6, "latency_triton_h100.json")
    rerun = load(RAW6B, "latency_triton_dsv4_rerun_h100.json")
    base = load(RAW6, "latency_baseline_h100.json")
    for x in (new, rerun, base):
        assert x["provenance"]["gpu"].startswith("NVIDIA H100"), x["provenance"]["gpu"]
    rerun_keys = {(r["shape"], r["m"]) for r in rerun["rows"] if "m" in r}
    superseded = [r for r in new["rows"] if (r.get("shape"), r.get("m")) in rerun_keys]
    tri = [dict(r, source="latency_triton_h100.json (session 6)") for r in new["rows"]
           if r.get("backend") == "triton_w4a16" and (r.get("shape"), r.get("m")) not in rerun_keys]
    tri += [dict(r, source="latency_triton_dsv4_rerun_h100.json (session 6, same machine)") for r in rerun["rows"]
            if r.get("backend") == "triton_w4a16"]
    p = RES / "latency_h100.json"
    d = json.loads(p.read_text())
    if "superseded_triton_rows_session3" in d:
        print("latency_h100.json already holds session 6's Triton rows: not merged again")
        return
    # every earlier Triton row goes: they timed an older kernel (path 0 only); kept aside, not in the rows
    old_tri = [r for r in d["rows"] if r.get("backend") == "triton_w4a16"]
    d["rows"] = [r for r in d["rows"] if r.get("backend") != "triton_w4a16"] + tri
    d["superseded_triton_rows_session3"] = old_tri
    d["parts"] = [x for x in d.get("parts", []) if not str(x.get("file", "")).startswith("latency_triton")]
    d["parts"].append({"file": "latency_triton_h100.json + latency_triton_dsv4_rerun_h100.json (session 6)",
                       "provenance": new["provenance"], "complete": new.get("complete"),
                       "ceilings": new.get("ceilings"),
                       "replaces": (f"all {len(old_tri)} earlier triton_w4a16 rows (session 3, decode path 0 only; "
                                    "kept under superseded_triton_rows_session3)"),
                       "superseded_rows": superseded,
                       "superseded_note": ("first sweep: the tuner picked the slow path-0 tile (16, 32, 128, ...) for "
                                           "dsv4-flash's M <= 16 bucket; rerun in a fresh process on the same warm "
                                           "H100 picked a path-2 tile; the rerun's rows are the recorded ones")})
    d["baseline_session6"] = {
        "note": ("FlashInfer (compact, autotuned) and Marlin re-timed on the session-6 H100, the machine of the new "
                 "Triton rows, on GPT-OSS-120b and seed-bench at M in {1,4,16,64,256,1024,4096,8192}: Triton is "
                 "compared with these; the earlier rows above come from another H100 (session 3)."),
        "provenance": base["provenance"], "ceilings": base.get("ceilings"), "rows": base["rows"]}
    d["note"] = (d.get("note", "").split(" Session 6:")[0]
                 + " Session 6: triton_w4a16 rows re-measured on another H100 with decode paths 2 and 3 among the "
                   "tuned candidates (M in {1,4,16,64,256,1024,4096,8192}); they replace every earlier Triton row "
                   "(those timed the older kernel: superseded_triton_rows_session3).")
    dump("latency_h100.json", d)


def latency_h200():
    new, base = load(RAW5, "latency_triton_h100.json"), load(RAW5, "latency_baseline_h100.json")
    assert new["provenance"]["gpu"] == "NVIDIA H200"
    new["note"] = ("Session 5 (2 x H200 host; the Triton sweep on GPU 1 while GPU 0 ran the Triton check and a "
                   "FlashInfer build used 28 of the 32 cores): Triton tuned per M bucket incl. decode paths 2/3.")
    new["baseline"] = {"provenance": base["provenance"], "rows": base["rows"]}
    dump("latency_triton_h200.json", new)


if __name__ == "__main__":
    RES.mkdir(parents=True, exist_ok=True)
    sharded()
    build()
    config_sets(load(RAW6, "config_set_compact_h100.json"), load(RAW6B, "config_set_stock_k128_h100.json"),
                "config_sets_h100.json", "On one NVIDIA H100 80GB HBM3 (session 6); the stock_k128 library came "
                "from session 5's build as an archive (same cache key).")
    config_sets(load(RAW5, "config_set_compact_h100.json"), load(RAW5, "config_set_stock_k128_h100.json"),
                "config_sets_h200.json", "On an NVIDIA H200 (session 5, GPU 0 of 2).")
    triton_check()
    latency_h100()
    latency_h200()
