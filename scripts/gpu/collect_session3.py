"""Collect the raw outputs of GPU session 3 (2026-11-28, one NVIDIA H100 80GB HBM3) into data/results/.

    python scripts/gpu/collect_session3.py RAW_DIR

RAW_DIR holds the files the device calls brought back (their ``$OUT``):
``build_probe_compact.json, triton_check.json, marlin_smoke.json, h100_kernel_check.json`` (call A,
``bash scripts/gpu/session3a.sh``), ``latency_h100_a.json`` (call B), ``latency_h100_b.json`` and
``latency_h100_skewed.json`` (call C), ``h100_kernel_check_dsv4.json`` (call D; renamed on this side).
Each carries its own provenance (the commit came from ``.devcarry/COMMIT``); this script only merges.

Two corrections, stated in the output:
- skewed rows: the sweep's roofline floor then assumed uniform routing (expected distinct experts),
  which overstates the bytes a skewed routing reads (fractions over 100%). Their roofline fields are
  set to null; the code now counts the experts each input set really hits.
- TP=2/EP=2 (ranks in sequence on one GPU) on GPT-OSS-120b: call A printed M=16 (tp, ep) and a later
  call printed M=1024 (tp) before its time limit stopped it ahead of its JSON write; the printed values
  are transcribed here, marked ``source: "log"``.
"""
import json
import sys
from pathlib import Path

RAW = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gpu3")
ROOT = Path(__file__).resolve().parents[2]
RES = ROOT / "data" / "results"
ROOF_FIELDS = ("roofline_us", "roofline_bound", "active_experts", "bytes", "flops", "fraction_of_roofline",
               "achieved_GBps", "achieved_TFLOPs")


def load(name):
    return json.loads((RAW / name).read_text())


def dump(name, d):
    (RES / name).write_text(json.dumps(d, indent=1) + "\n")
    print("wrote", RES / name)


def latency():
    parts = [("latency_h100_a.json", load("latency_h100_a.json")), ("latency_h100_b.json", load("latency_h100_b.json")),
             ("latency_h100_skewed.json", load("latency_h100_skewed.json"))]
    rows = []
    for name, d in parts:
        for r in d["rows"]:
            r = dict(r, source=name)
            if r.get("routing") == "skewed":
                for f in ROOF_FIELDS:
                    r[f] = None
                r["roofline_note"] = "floor not recorded: the run's floor assumed uniform routing (see note)"
            rows.append(r)
    first = parts[0][1]
    out = {
        "provenance": first["provenance"],
        "benchmark": "moe_latency",
        "ceilings": first["ceilings"],
        "build_configs": first.get("build_configs"),
        "complete": all(d.get("complete") for _, d in parts),
        "note": ("Three runs on one warm H100 (same machine, same process setup): uniform routing at M in "
                 "{1,4,16,64,256,1024,4096,16384} (a) and {2,8,32,128,512,2048,8192} (b), all four shapes; "
                 "skewed routing on seed-bench and gpt-oss-120b at M in {1,16,64,256,1024,4096}. FlashInfer: "
                 "compact W4A16 build, autotuned per M bucket; Triton: tuned per M bucket. torch_naive was not "
                 "re-run on the H100 (device time): see latency_h200.json. Skewed rows carry no roofline: the "
                 "run's floor assumed uniform routing (fixed in code since: bench.moe counts the experts hit)."),
        "parts": [{"file": n, "provenance": d["provenance"], "complete": d.get("complete")} for n, d in parts],
        "rows": rows,
    }
    dump("latency_h100.json", out)


def kernel_check():
    a = load("h100_kernel_check.json")
    b = load("h100_kernel_check_dsv4.json")
    models = dict(a.get("models", {}))
    models.update(b.get("models", {}))
    seq = {
        "tp2_m16": {"rel_err_vs_tp1_kernel": 0.003739109722509688, "rel_err_vs_fp32_ref": 0.004078276720490146,
                    "tp1_rel_err_vs_fp32_ref": 0.003636498884151361, "source": "log", "run": "call A"},
        "ep2_m16": {"rel_err_vs_tp1_kernel": 0.002804840820342106, "rel_err_vs_fp32_ref": 0.004052608101451716,
                    "tp1_rel_err_vs_fp32_ref": 0.003636498884151361, "source": "log", "run": "call A"},
        "tp2_m1024": {"rel_err_vs_tp1_kernel": 0.0037493171321311223, "rel_err_vs_fp32_ref": 0.0040737828663081925,
                      "tp1_rel_err_vs_fp32_ref": 0.003650361838013669, "source": "log", "run": "call E"},
    }
    out = {
        "provenance": a["provenance"],
        "check": "flashinfer_sm90_moe",
        "build_configs": "compact",
        "install_s": a.get("install_s"),
        "models": models,
        "sharding_sequential_one_gpu": seq,
        "sharding_note": ("TP=2 / EP=2 ranks run one after the other on one H100, partial outputs summed in fp32 "
                          "(what the all-reduce computes), GPT-OSS-120b layer, seed 7. Values transcribed from the "
                          "runs' logs (no JSON written: time limit). EP=2 at M=1024 was not reached. Two H100s "
                          "with NCCL: not run (device time)."),
        "parts": [{"file": "h100_kernel_check.json", "models": sorted(a.get("models", {})), "provenance": a["provenance"]},
                  {"file": "h100_kernel_check_dsv4.json", "models": sorted(b.get("models", {})),
                   "provenance": b["provenance"]}],
    }
    dump("kernel_check_h100.json", out)


def triton():
    d = load("triton_check.json")
    d["note"] = ("Every candidate tile config of each M bucket, both dequant paths (0: explicit decode + tl.dot, "
                 "1: tl.dot_scaled). Path 0: all points OK. Path 1 gave uncorrelated output (rel err ~1.4) at most "
                 "points and was removed from the tuning table after this run.")
    dump("triton_check_h100.json", d)


def build():
    p = RES / "build_w4a16_h100.json"
    d = json.loads(p.read_text())
    probe = load("build_probe_compact.json")
    prov = dict(load("triton_check.json")["provenance"])
    prov["command"] = ("python3 scripts/gpu/build_probe.py --configs compact -j 14 --cache /tmp/mxcache "
                       "(detached, while the Triton check and the Marlin smoke ran on the same host)")
    d["repeat_session3"] = {"provenance": prov, "probe": probe}
    dump("build_w4a16_h100.json", d)


if __name__ == "__main__":
    RES.mkdir(parents=True, exist_ok=True)
    latency()
    kernel_check()
    triton()
    build()
