"""The latency report's findings (:mod:`mxfp4lab.findings`), from the numbers notebook 03 records.

:func:`findings` reads the results dict (as in ``results.json``): ``source``, ``recorded``, ``claim_check``
(rows ``m, regime, fi_faster, within_claim``), ``fastest`` (shape -> ``[[m, backend], ...]``),
``dispatch_speedup``, ``best_fraction_of_floor`` (shape -> {m: fraction}), ``triton_goals``, ``decode_goals``
(``{"met", "count"}``), ``launch_bounds`` (the decode kernel's GEMM launches: ``shape, m, launch, bound,
floor_frac``), ``harness_floor`` (:func:`~mxfp4lab.studies.latency_costs.latency_harness_floor`), ``part_costs``
(:func:`~mxfp4lab.studies.latency_costs.latency_part_costs`), ``shape_aliases``.
Missing keys give ``missing`` findings, never an error.
"""

from __future__ import annotations

from typing import Any

from ..findings import Finding, pct_range, runs_on_grid, span
from .latency import SEED_CLAIM


def _claim_findings(rows: list[dict[str, Any]]) -> list[Finding]:
    out = []
    held_all = 0
    for c in SEED_CLAIM:
        r = [x for x in rows if x.get("regime") == c["regime"]]
        q = f"original claim at {c['regime']} ({c['claim']})"
        if not r:
            out.append(Finding(q, "not measured", "no seed-bench point in this regime", "missing"))
            continue
        ok = [x for x in r if x.get("within_claim")]
        held_all += len(ok)
        verdict = "holds" if len(ok) == len(r) else "does not hold" if not ok else "partly holds"
        status = {"holds": "good", "does not hold": "bad"}.get(verdict, "mixed")
        fi = [x["fi_faster"] for x in r if x.get("fi_faster") is not None]
        fast_fi = [v for v in fi if v > 0]
        fast_ma = [-v for v in fi if v < 0]
        measured = []
        if fast_ma:
            measured.append(f"Marlin {pct_range(fast_ma)} faster")
        if fast_fi:
            measured.append(f"FlashInfer {pct_range(fast_fi)} faster")
        inside = ", ".join(str(x["m"]) for x in ok) or "none"
        out.append(Finding(q, verdict, f"measured at M = {', '.join(str(x['m']) for x in r)}: {'; '.join(measured)}; "
                                       f"within the claim at M = {inside}", status))
    n = len(rows)
    if n:
        verdict = "holds" if held_all == n else "does not hold" if held_all == 0 else "partly holds"
        out.insert(0, Finding("original claim on seed-bench (FlashInfer vs Marlin; claimed on an H100)", verdict,
                              f"within the claimed range at {held_all} of {n} recorded M",
                              {"holds": "good", "does not hold": "bad"}.get(verdict, "mixed")))
    return out


def _fastest_findings(fastest: dict[str, list[list[Any]]], aliases: dict[str, str]) -> list[Finding]:
    out = []
    for shape, pts in fastest.items():
        if shape in aliases:  # same MoE shape as another one already listed
            continue
        pts = sorted(pts, key=lambda p: p[0])
        stretches = runs_on_grid([p[0] for p in pts], [p[1] for p in pts])
        verdict = ", ".join(f"{b} M {span(ms)}" for b, ms in stretches)
        same = [a for a, b in aliases.items() if b == shape]
        q = f"fastest backend on {shape}" + (f" (= {', '.join(same)})" if same else "")
        out.append(Finding(q, verdict, f"{len(pts)} recorded M", "info"))
    return out


#: the M ranges the launch-bound finding speaks of: decode (few tokens per expert) and many tokens per expert
_LAUNCH_RANGES = (("M <= 64", 1, 64), ("M = 128..512", 128, 512), ("M >= 1024", 1024, 1 << 62))


def _launch_findings(rows: list[dict[str, Any]]) -> list[Finding]:
    """Per M range, how close the decode kernel's GEMM launches run to their floor and which floor bounds them."""
    parts, fracs = [], []
    for name, lo, hi in _LAUNCH_RANGES:
        r = [x for x in rows if lo <= int(x["m"]) <= hi]
        if not r:
            continue
        f = [float(x["floor_frac"]) for x in r]
        fracs += f
        bounds = sorted({x["bound"] for x in r})
        parts.append(f"{name}: {pct_range(f)} of their {' / '.join(bounds)} floor ({len(r)} launches)")
    if not parts:
        return [Finding("what bounds mxfp4lab's decode kernel launch by launch", "not measured",
                        "no launch breakdown with floors recorded: mxfp4lab bench launches --ncu", "missing")]
    low = [x for x in rows if float(x["floor_frac"]) < 0.5]
    verdict = parts[0] if len(parts) == 1 else "; ".join(parts[:1] + parts[-1:])
    detail = "; ".join(parts) + (f". Below half their floor (latency: fill, drain, waits, warps in flight): "
                                 f"{', '.join(f'{s} M {m}' for s, m in sorted({(x['shape'], int(x['m'])) for x in low}))}" if low else "")
    # a breakdown of another launch variant than the sweep's time at that point describes another kernel
    stale = sorted({(x["shape"], int(x["m"]), x["variant"], x["sweep_variant"]) for x in rows
                    if x.get("variant") is not None and x.get("sweep_variant") is not None
                    and x["variant"] != x["sweep_variant"]}, key=lambda t: (t[0], t[1]))
    if stale:
        detail += (". Recorded with another launch variant than the sweep now runs there (re-record with mxfp4lab "
                   "bench launches --ncu): " + ", ".join(f"{s} M {m} (variant {v}; the sweep: {w})"
                                                         for s, m, v, w in stale))
    return [Finding("what bounds mxfp4lab's decode kernel launch by launch (fc1, fc2 against their DRAM, issue, ALU "
                    "and tensor floors)", verdict, detail, "good" if min(fracs) >= 0.8 else "mixed")]


def findings(results: dict[str, Any]) -> list[Finding]:
    """The latency report's findings (module docstring); with a checkpoint, its routing findings first."""
    from .checkpoint_findings import findings as checkpoint_findings

    src = results.get("source") or "unknown source"
    ck = checkpoint_findings(results)
    if not results.get("recorded"):
        return ck + [Finding("latency data", "none recorded", f"{src}; record a sweep with `mxfp4lab bench moe` on a "
                                                              f"Hopper GPU", "missing")]
    out = ck + [Finding("latency data", "recorded", src, "info")]
    claim = results.get("claim_check")
    if isinstance(claim, list):
        out += _claim_findings(claim)
    else:
        out.append(Finding("original claim on seed-bench (FlashInfer vs Marlin; claimed on an H100)", "not measured",
                           str(claim or "no FlashInfer and Marlin rows on seed-bench"), "missing"))
    out += _fastest_findings(results.get("fastest") or {}, results.get("shape_aliases") or {})
    disp = [r for r in results.get("dispatch_speedup") or [] if r.get("shape") == "all"]
    if disp:
        worst = min(disp, key=lambda r: r["geomean"])
        out.append(Finding("dispatching the fastest backend per (shape, M)",
                           f"{worst['geomean']:.2f}x over the best single backend ({worst['always']})",
                           "geomean over all recorded (shape, M), in-sample; vs "
                           + ", ".join(f"always {r['always']} {r['geomean']:.2f}x" for r in disp), "info"))
    frac = results.get("best_fraction_of_floor") or {}
    if frac:
        lo, hi, hi_ms = [], [], set()
        for f in frac.values():
            ms = sorted(f, key=int)
            lo.append(f[ms[0]])
            hi.append(f[ms[-1]])
            hi_ms.add(int(ms[-1]))
        out.append(Finding("distance to the roofline floor (fastest backend)",
                           f"{pct_range(lo)} of the floor at the smallest M",
                           f"{pct_range(hi)} at the largest M ({', '.join(map(str, sorted(hi_ms)))})", "info"))
    tg = results.get("triton_goals")
    if isinstance(tg, dict) and tg.get("count"):
        met, n = int(tg["met"]), int(tg["count"])
        out.append(Finding("mxfp4lab Triton kernel against its goals", f"met at {met} of {n} points",
                           "M <= 64: within 1.25x of the floor and faster than Marlin; M >= 1024: within 1.2x of "
                           "FlashInfer", "good" if met == n else "bad" if met == 0 else "mixed"))
    dg = results.get("decode_goals")
    if isinstance(dg, dict) and dg.get("count"):
        met, n = int(dg["met"]), int(dg["count"])
        out.append(Finding("mxfp4lab decode kernel against its goals", f"met at {met} of {n} (shape, M) points",
                           f"M <= 64: >= 1.15x the best peer (and M = 1 <= 2x the floor, M = 4..64 >= 60 % of it); "
                           f"M >= 1024: within 1.1x of the best peer. Fastest of all at {dg.get('fastest', 0)} of "
                           f"{dg.get('small_m', 0)} points with M <= 64"
                           + (f". Within 2 % of the 1.15x (met or not; the spread between runs): "
                              f"{', '.join(dg['narrow'])}" if dg.get("narrow") else ""),
                           "good" if met == n else "bad" if met == 0 else "mixed"))
    hf = results.get("harness_floor")
    if isinstance(hf, dict):
        out.append(Finding("the timing harness's own cost", f"{hf['one_kernel_us']:.2f} us for a CUDA graph of one "
                                                            "tiny kernel",
                           f"{hf['per_launch_us']:.1f} us per further dependent launch, ~{hf['entry_exit_us']:.1f} us "
                           "the graph's entry and exit: in every backend's time, and in the M = 1 goal (<= 2x the "
                           f"floor); {hf['source']}", "info"))
    pc = results.get("part_costs")
    if isinstance(pc, dict) and pc.get("rows"):
        out.append(_part_costs_finding(pc))
    if "launch_bounds" in results:
        out += _launch_findings(results.get("launch_bounds") or [])
    return out


#: how the part-cost finding names each removed part
_PART_LABEL = {"wgmma": "its MMAs", "token_tiles": "its token tiles' copies", "half_token_tiles": "half of them",
               "epilogue": "its epilogue", "decode": "its decode"}


def _part_costs_finding(pc: dict[str, Any]) -> Finding:
    """One finding: per (variant, M), the share of the forward each removed part saved (the largest M first)."""
    def share(r):
        lo, hi = round(100 * r["saved_lo"]) + 0, round(100 * r["saved_hi"]) + 0
        return f"{lo} %" if lo == hi else f"{lo} to {hi} %" if lo < 0 else f"{lo}-{hi} %"

    groups: dict[tuple, list] = {}
    for r in pc["rows"]:
        groups.setdefault((r["m"], r["variant"]), []).append(r)
    said = [f"M = {m} (variant {v}): " + ", ".join(f"{_PART_LABEL.get(r['removed'], r['removed'])} {share(r)}"
                                                   for r in rs) for (m, v), rs in groups.items()]
    return Finding("where the decode kernel's wide items spend their time (each part removed in turn)", said[0],
                   "; ".join(said[1:] + [f"the share of the forward each removal saved; {pc['source']}"]), "info")
