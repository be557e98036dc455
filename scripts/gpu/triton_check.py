"""mxfp4lab's Triton W4A16 MoE (backend ``triton_w4a16``) on an H100/H200: correctness, then timings.

    python scripts/gpu/triton_check.py check --out DIR [--shapes ...] [--m ...]
    python scripts/gpu/triton_check.py time  --out DIR [--shapes ...] [--m ...] [--backends triton_w4a16,flashinfer_sm90]
    python scripts/gpu/triton_check.py all   --out DIR

``check``: every candidate tile config of each M's bucket (both dequant paths), per shape, one random layer (``synthetic.random_layer``) prepared like the checkpoints
(``prepare_from_experts``, logical tensors) -> the Triton backend (layout: a transpose of those).
For every M: FRESH random inputs (own seed per (shape, M)); the output buffer is filled with NaN and so
are the kernels' intermediate buffers (``scratch_fill``), so any element no kernel wrote shows as NaN;
relative error vs the kernel-faithful reference (``moe_reference(mode="kernel")``, fp32 on the GPU)
and vs the semantic reference (``mode="fp32"``, no intermediate rounding); a second run on the same inputs without
poison must give the same bits (no races, deterministic combine). Pass: no NaN and rel err <
``CHECK_TOL`` (bench.moe).

``time``: ``bench.moe.sweep`` (CUDA graphs, rotated input sets, median of --reps, outputs checked
first at --check-m) for the named backends; Triton's ``tune()`` picks the best of each M bucket's
explicit configs first. Rows carry the roofline floor from the MEASURED copy bandwidth and bf16 rate.

Each stage writes a result file (:mod:`mxfp4lab.results`: ``DIR/triton_check.json`` kind ``triton_check``,
``DIR/triton_latency.json`` kind ``latency_sweep``) as it goes and prints a short table last.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mxfp4lab.bench.moe import CHECK_TOL  # noqa: E402
from mxfp4lab.models import get_model  # noqa: E402
from mxfp4lab.prepare import prepare_from_experts  # noqa: E402
from mxfp4lab import results  # noqa: E402
from mxfp4lab.reference import expert_weights_from_logical, moe_reference, relative_error  # noqa: E402
from mxfp4lab.synthetic import make_inputs, random_layer  # noqa: E402

SHAPES = ("gpt-oss-20b", "gpt-oss-120b", "dsv4-flash", "seed-bench")
MS = (1, 4, 16, 64, 256, 1024, 4096, 8192)
DEVICE = "cuda"  # a CPU smoke test of this script sets "cpu" (with TRITON_INTERPRET=1 and tiny shapes)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def stage_check(out: Path, shapes, ms, all_configs: bool = True, dequant=None) -> dict:
    """``dequant``: only candidates of these decode paths (None: all)."""
    from mxfp4lab.backends import get_backend

    res = {"tol": CHECK_TOL, "rows": [], "complete": False}
    path = out / "triton_check.json"

    def write_result(p, r, final=False):
        results.write(p, "triton_check", r["rows"], partial=not final, **{k: v for k, v in r.items() if k != "rows"})

    for si, shape in enumerate(shapes):
        cfg = get_model(shape) if isinstance(shape, str) else shape
        shape = cfg.name
        t0 = time.perf_counter()
        try:
            prepared = prepare_from_experts(random_layer(cfg, device=DEVICE, seed=100 + si), config=cfg)
            ref_w = expert_weights_from_logical(prepared)
            be = get_backend("triton_w4a16")(prepared, cfg)
        except Exception as exc:  # noqa: BLE001
            res["rows"].append({"shape": shape, "error": f"setup: {type(exc).__name__}: {exc}"[:500],
                                "traceback": traceback.format_exc()[-2000:]})
            write_result(path, res)
            continue
        print(f"[{shape}] prepared + layout in {time.perf_counter() - t0:.1f} s", flush=True)
        kw = cfg.swiglu_kwargs
        from mxfp4lab.kernels.tiles import TILE_TABLE, bucket_of

        for m in ms:
            bucket = bucket_of(m)
            cands = TILE_TABLE[bucket] if all_configs else TILE_TABLE[bucket][:1]
            for ci, cand in enumerate(cands):
                if dequant is not None and cand.dequant not in dequant:
                    continue
                row = {"shape": shape, "m": m, "candidate": ci, "tile_config": cand.as_list()}
                try:
                    try:
                        cand.check(be.layout.padded_hidden, be.layout.padded_intermediate)
                    except ValueError as exc:  # this tile does not divide this shape: the tuner skips it too
                        row.update(skipped=str(exc)[:200], ok=True)
                        res["rows"].append(row)
                        print(f"{shape:13s} M={m:>5} cand {ci} skipped (does not divide the shape)", flush=True)
                        continue
                    be.chosen[bucket] = cand
                    # fresh inputs per (shape, M, candidate)
                    x, ids, w = make_inputs(cfg, m, 1, "uniform", device=DEVICE,
                                            seed=10_000 * (si + 1) + 100 * m + ci)[0]
                    be.scratch_fill = float("nan")
                    poisoned = torch.full((m, cfg.hidden_size), float("nan"), dtype=torch.bfloat16, device=DEVICE)
                    t1 = time.perf_counter()
                    be.forward(x, ids, w, out=poisoned)
                    _sync()
                    row["first_call_s"] = time.perf_counter() - t1  # includes Triton compiles for a new config
                    row["unwritten"] = int(torch.isnan(poisoned).sum())
                    be.scratch_fill = None
                    again = be.forward(x, ids, w)
                    _sync()
                    row["deterministic"] = bool(torch.equal(again, poisoned))
                    ref_k = moe_reference(x, ids, w, ref_w, mode="kernel", **kw)
                    row["rel_err_vs_kernel_ref"] = relative_error(poisoned, ref_k)
                    row["bit_identical_frac"] = float((poisoned == ref_k).float().mean())
                    row["max_abs_err_vs_kernel_ref"] = float((poisoned.float() - ref_k.float()).abs().nan_to_num(float("inf")).max())
                    ref_f = moe_reference(x, ids, w, ref_w, mode="fp32", **kw)
                    row["rel_err_vs_fp32_ref"] = relative_error(poisoned, ref_f)
                    row["kernel_ref_vs_fp32_ref"] = relative_error(ref_k, ref_f)
                    row["ok"] = (row["unwritten"] == 0 and row["deterministic"]
                                 and row["rel_err_vs_kernel_ref"] < CHECK_TOL)
                    del ref_k, ref_f
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"{type(exc).__name__}: {exc}"[:500]
                    row["traceback"] = traceback.format_exc()[-2000:]
                    row["ok"] = False
                res["rows"].append(row)
                print(_fmt_check(row), flush=True)
                write_result(path, res)
            be.chosen.pop(bucket, None)
        del be, prepared, ref_w
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    res["complete"] = True
    res["all_ok"] = all(r.get("ok") for r in res["rows"])
    write_result(path, res, final=True)
    return res


def _fmt_check(r: dict) -> str:
    if "error" in r:
        return f"{r['shape']:13s} M={r.get('m', '-'):>5} ERROR {r['error'][:200]}"
    return (f"{r['shape']:13s} M={r['m']:>5} c{r['candidate']} {'OK  ' if r['ok'] else 'FAIL'} err_k={r['rel_err_vs_kernel_ref']:.2e} "
            f"err_f={r['rel_err_vs_fp32_ref']:.2e} (ref_k vs ref_f {r['kernel_ref_vs_fp32_ref']:.2e}) "
            f"unwritten={r['unwritten']} det={r['deterministic']} first={r['first_call_s']:.1f}s cfg={r['tile_config']}")


def stage_time(out: Path, shapes, ms, backends, reps: int, check_m) -> dict:
    from mxfp4lab.bench.harness import measure_ceilings
    from mxfp4lab.bench.moe import _fmt, sweep

    ceil = measure_ceilings()
    print(f"ceilings: copy {ceil['copy_bytes_per_s'] / 1e12:.2f} TB/s, bf16 {ceil['bf16_flops_per_s'] / 1e12:.0f} TFLOP/s",
          flush=True)
    path = out / "triton_latency.json"
    payload = {"ceilings": ceil, "backends": backends, "complete": False, "rows": []}

    def save(rows, done=False):
        payload.update(rows=rows, complete=done)
        return results.write(path, "latency_sweep", rows, partial=not done,
                             **{k: v for k, v in payload.items() if k != "rows"})

    rows = sweep(backends, list(shapes), list(ms), ["uniform"], reps=reps, rotate=4, check_m=check_m,
                 ceilings=ceil, on_progress=save, log=lambda s: print(s, flush=True))
    save(rows, done=True)
    # short table: per (shape, M) each backend's median, Triton / FlashInfer, Triton / floor
    print("\nshape          M      floor_us  " + "  ".join(f"{b:>16s}" for b in backends) + "   tri/fi  tri/floor")
    by = {}
    for r in rows:
        if "m" in r:
            by.setdefault((r["shape"], r["m"]), {})[r["backend"]] = r
    for (shape, m), d in by.items():
        floor = next(iter(d.values())).get("roofline_us", float("nan"))
        t = {b: d.get(b, {}).get("median_us") for b in backends}
        tri, fi = t.get("triton_w4a16"), t.get("flashinfer_sm90")
        cells = "  ".join(f"{v:16.1f}" if v else f"{'-':>16s}" for v in t.values())
        ratio = f"{tri / fi:7.2f}" if tri and fi else "      -"
        rfl = f"{tri / floor:9.2f}" if tri and floor else "        -"
        print(f"{shape:13s} {m:>6} {floor:10.1f}  {cells}  {ratio}  {rfl}")
    for r in rows:
        if r.get("error"):
            print(_fmt(r) if "m" in r else r)
    return payload


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=("check", "time", "all"))
    ap.add_argument("--out", required=True, help="output directory (copy the files into data/results/ to record them)")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--m", default=",".join(map(str, MS)))
    ap.add_argument("--backends", default="triton_w4a16,flashinfer_sm90")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--default-config-only", action="store_true",
                    help="check: only each M bucket's default tile config (default: every candidate)")
    ap.add_argument("--dequant", default=None, help="check: only candidates of these decode paths, e.g. '2,3'")
    ap.add_argument("--check-m", default="1,64,1024", help="M values the timing sweep re-checks ('all' for all)")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU (the CPU suite runs the kernels under TRITON_INTERPRET=1)", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    shapes = a.shapes.split(",")
    ms = [int(v) for v in a.m.split(",")]
    rc = 0
    if a.stage in ("check", "all"):
        dq = None if a.dequant is None else {int(v) for v in a.dequant.split(",")}
        res = stage_check(out, shapes, ms, all_configs=not a.default_config_only, dequant=dq)
        print(f"check: {'ALL OK' if res['all_ok'] else 'FAILURES'} -> {out / 'triton_check.json'}", flush=True)
        rc = 0 if res["all_ok"] else 1
    if a.stage in ("time", "all"):
        check_m = None if a.check_m == "all" else [int(v) for v in a.check_m.split(",")]
        stage_time(out, shapes, ms, a.backends.split(","), a.reps, check_m)
        print(f"time: -> {out / 'triton_latency.json'}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
