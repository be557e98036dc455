"""Collect the raw outputs of GPU session 1 (2026-11-28, one H200 lent for an H100 request) into data/.

The device copy of the repository had no git history, so each run's ``mxfp4lab_commit`` is assigned
here from the local git log: the last commit before the run started (the working tree may also have
held uncommitted edits of files not involved in the run). Everything else is as the device wrote it.
"""
import json
import shutil
import sys
from pathlib import Path

DEV = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/.device")
ROOT = Path(__file__).resolve().parents[2]
RES, GOLD = ROOT / "data" / "results", ROOT / "data" / "golden"
NOTE = "commit assigned on the CPU side from git log (device copy had no git metadata)"
RUNS = {  # device folder -> (commit at run start, exact command)
    1: ("4fa127b", "bash scripts/gpu/session1.sh"),
    2: ("552f15c", "MXFP4LAB_CACHE=/tmp/mxcache python3 scripts/gpu/h100_check.py kernel --out $OUT/kernel_run"),
    3: ("552f15c", "MXFP4LAB_CACHE=/tmp/mxcache python3 -c 'build.install(); moe.main([--backends flashinfer_sm90,torch_naive "
                   "--routing uniform,skewed --reps 30 --rotate 4 --check-m 1,64,1024,16384])'  (build configs: minimal; default tactic, no autotune)"),
    5: ("c4aacd1", "python3 scripts/gpu/build_probe.py --configs compact -j 16 --cache /tmp/mxcache --keep-cache"),
    6: ("d210cd6", "MXFP4LAB_BUILD_CONFIGS=compact python3 -m mxfp4lab.bench.moe --backends flashinfer_sm90 --routing uniform "
                   "--m 1,4,16,64,256,1024,4096,8192,16384 --reps 20 --rotate 4 --check-m 1,64,1024,16384"),
    7: ("d210cd6", "python3 -m mxfp4lab.bench.moe ... (see rows: minimal 120b uniform; compact skewed)"),
}


def fix(d, run, command=None):
    commit, cmd = RUNS[run]
    d["provenance"]["mxfp4lab_commit"] = commit
    d["provenance"]["commit_note"] = NOTE
    d["provenance"]["command"] = command or cmd
    return d


def load(p):
    return json.loads(Path(p).read_text())


def main():
    RES.mkdir(parents=True, exist_ok=True)
    GOLD.mkdir(parents=True, exist_ok=True)
    # golden bytes (only one shape came back: the transfer limit is 8 files per call)
    for f in (DEV / "1/golden_run/golden").glob("*"):
        if f.suffix == ".json":
            d = fix(load(f), 1, "python scripts/gpu/h100_check.py golden")
            (GOLD / f.name).write_text(json.dumps(d, indent=2) + "\n")
        else:
            shutil.copy(f, GOLD / f.name)
    g = fix(load(DEV / "1/golden_run/h100_golden_check.json"), 1, "python scripts/gpu/h100_check.py golden")
    (RES / "interleave_check_h200.json").write_text(json.dumps(g, indent=2) + "\n")
    k = fix(load(DEV / "2/kernel_run/h100_kernel_check.json"), 2)
    k["build_configs"] = "minimal"
    (RES / "kernel_check_h200.json").write_text(json.dumps(k, indent=2) + "\n")
    # build probes (cold build, warm load, size, tiny MoE call through every tactic)
    bm = load(DEV / "1/build_probe_minimal.json")
    bc = load(DEV / "5/build_probe_compact.json")
    build = {"provenance": {**g["provenance"], "mxfp4lab_commit": RUNS[1][0], "commit_note": NOTE,
                            "command": "python3 scripts/gpu/build_probe.py --configs {minimal|compact} -j 16 [--moe-call]"},
             "probes": {"minimal": bm, "compact": fix({"provenance": dict(g["provenance"]), **bc}, 5)}}
    (RES / "build_w4a16_h200.json").write_text(json.dumps(build, indent=2) + "\n")
    # latency: one file, rows tagged with their source run; provenance per source
    sources, rows = {}, []
    for run, path, label in [(6, "6/latency_gpu_compact.json", "compact"), (7, "7/latency_gpu_compact_skewed.json", "compact"),
                             (7, "7/latency_gpu_minimal_120b.json", "minimal"), (3, "3/latency_gpu.json", "minimal")]:
        d = fix(load(DEV / path), run)
        sources[path] = {"provenance": d["provenance"], "ceilings": d["ceilings"], "build_configs": label}
        for r in d["rows"]:
            if "median_us" not in r:
                continue  # failed points are kept in the raw files only
            if run == 3 and r["backend"] == "flashinfer_sm90":
                r = {**r, "backend": "flashinfer_sm90[minimal,untuned]"}
            elif label == "minimal":
                r = {**r, "backend": "flashinfer_sm90[minimal]"}
            rows.append({**r, "source": path})
    first = sources["6/latency_gpu_compact.json"]
    out = {"provenance": first["provenance"], "benchmark": "moe_latency", "ceilings": first["ceilings"],
           "gpu_note": "measured on an NVIDIA H200 (the device lent for this session); the H100 rerun is pending",
           "sources": sources, "rows": rows}
    (RES / "latency_h200.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"{len(rows)} latency rows")


if __name__ == "__main__":
    main()
