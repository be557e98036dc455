"""The latency study: MoE latency vs tokens M per backend and shape, from a recorded sweep
(:mod:`mxfp4lab.results`, kind ``latency_sweep``) or measured here on a GPU; crossovers, speedups, the
fastest backend per (shape, M), the roofline, the original claim. Tidy DataFrames for notebook 03 and
``mxfp4lab bench summary``; figures in :mod:`.latency_figures`.

Every function works on the row frame of :func:`latency_load`, so synthetic frames test them without a GPU.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import pandas as pd
import torch

from .. import results
from ..bench.harness import measure_ceilings
from ..bench.moe import sweep
from ..dispatch import Dispatch
from ..models import STUDY_SHAPES, get_model
from ..provenance import provenance
from ..roofline import ceiling_rates, roofline
from .common import as_list
from .latency_goals import (  # noqa: F401 - re-exported: the notebook and the CLI read them from here
    DECODE, DECODE_PEERS, FI, MARLIN, TRITON, decode_goals, latency_decode_goal_counts, latency_triton_goal_counts,
    triton_goals)

LATENCY_SHAPES = STUDY_SHAPES
#: The recorded sweep read when no file is given: ``data/results/latency/<gpu>.json``
#: (:data:`mxfp4lab.results.PREFERRED_GPUS` order).
LATENCY_STUDY = "latency"
#: The original SGLang claim on the seed shape (H100, kernel level): Marlin 12-15% faster at M <= 64, a tie
#: near M ~ 256, FlashInfer 24-36% faster at M >= 1024.
SEED_CLAIM = (
    dict(regime="M<=64", m_max=64, m_min=None, claim="Marlin 12-15% faster", lo=-0.15, hi=-0.12),
    dict(regime="M~256", m_max=256, m_min=256, claim="tie", lo=-0.05, hi=0.05),
    dict(regime="M>=1024", m_max=None, m_min=1024, claim="FlashInfer 24-36% faster", lo=0.24, hi=0.36),
)


def latency_results_path(path=None):
    """``path``, or the first recorded ``data/results/latency/<gpu>.json`` (the H100 one's path when none
    exists)."""
    if path:
        return Path(path)
    return results.find(LATENCY_STUDY) or results.result_path(LATENCY_STUDY, results.PREFERRED_GPUS[0])


def latency_load(path=None) -> Tuple[pd.DataFrame, Optional[Dict[str, Any]]]:
    """Recorded latency sweep -> (rows, provenance); ``(empty frame, None)`` when there is no file.

    The frame has one row per JSON row (``shape, backend, m, routing, median_us, ...``) plus ``ok``
    (timed, no error). ``df.attrs`` holds ``ceilings``, ``path`` and ``runs`` (a merged sweep's other runs:
    name -> provenance, for the rows whose ``run`` names them).
    """
    p = latency_results_path(path)
    if not p.is_file():
        df = pd.DataFrame(columns=["shape", "backend", "m", "routing", "median_us", "roofline_us", "ok"])
        df.attrs.update(path=str(p), ceilings={})
        return df, None
    res = results.load(p, kind="latency_sweep")
    df = _latency_frame(res.rows)
    df.attrs.update(path=str(p), ceilings=res.meta.get("ceilings") or {}, runs=res.runs())
    return df, res.provenance or {}


def _latency_frame(rows) -> pd.DataFrame:
    """Sweep rows -> frame with the columns the latency_* functions read, and ``ok`` (timed, no error)."""
    df = pd.DataFrame(rows)
    if "mode" in df:  # whole calls from CUDA graphs; eager and GEMM-only rows (bench.modes) are not compared here
        df = df[df["mode"].isna() | (df["mode"] == "graph")].reset_index(drop=True)
    for col in ("m", "routing", "median_us", "error", "roofline_us"):
        if col not in df:
            df[col] = None
    df["ok"] = df["median_us"].notna() & df["error"].isna() & df["m"].notna()
    df.loc[df["m"].notna(), "m"] = df.loc[df["m"].notna(), "m"].astype(int)
    return df


def latency_source_label(prov: Optional[Dict[str, Any]], runs: Optional[Dict[str, Dict[str, Any]]] = None) -> str:
    """'recorded on <gpu> <date>, commit <sha>' (for plot titles), or a no-data note; with ``runs`` (a merged
    sweep's other runs, :func:`latency_load`'s ``df.attrs["runs"]``) each one recorded on another day or commit
    is named after it: '; run <name>: <date>, commit <sha>'."""
    if not prov:
        return "no recorded latency results yet: roofline floor only"

    def when(p):
        return (p.get("date") or "unknown date")[:10], (p.get("mxfp4lab_commit") or "unknown")[:10]

    date, commit = when(prov)
    out = f"recorded on {prov.get('gpu') or 'unknown GPU'} {date}, commit {commit}"
    for name, p in sorted((runs or {}).items()):
        if p and when(p) != (date, commit):
            out += "; run {}: {}, commit {}".format(name, *when(p))
    return out


def latency_roofline(shapes=LATENCY_SHAPES, ms=(1, 4, 16, 64, 256, 1024, 4096, 8192), *, ceilings=None) -> pd.DataFrame:
    """Roofline floor per (shape, M) (:func:`mxfp4lab.roofline.roofline`; ``ceilings`` as in the
    results file, default the H100 numbers of :mod:`mxfp4lab.roofline`). Columns: ``shape, m, floor_us, memory_us, compute_us,
    bound, active_experts, bytes, flops``."""
    bw, fr = ceiling_rates(ceilings)
    rows = []
    for s in as_list(shapes):
        cfg = get_model(s)
        for m in as_list(ms):
            r = roofline(cfg, int(m), bandwidth=bw, flops_rate=fr)
            rows.append(dict(shape=cfg.name, m=int(m), floor_us=r.floor_us, memory_us=r.memory_us,
                             compute_us=r.compute_us, bound=r.bound, active_experts=r.active_experts,
                             bytes=r.bytes, flops=r.flops))
    return pd.DataFrame(rows)


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    d = df[df["ok"].astype(bool)] if "ok" in df else df[df["median_us"].notna()]  # (an empty object column
    # would otherwise index columns, not rows)
    if "routing" not in d:
        d = d.assign(routing="uniform")
    return d.assign(routing=d["routing"].fillna("uniform"))


def latency_crossovers(df: pd.DataFrame, a: str, b: str, *, value: str = "median_us") -> pd.DataFrame:
    """Where backend ``a`` and ``b`` swap places, per (shape, routing).

    On the M values both recorded, ``r(M) = log(t_a / t_b)``; between consecutive M where r changes
    sign the crossover is interpolated linearly in (log M, r) -- exact when t_a/t_b is a power law of
    M there. One row per crossing (``crossing`` 0, 1, ...); a (shape, routing) without one gets a
    single row with ``crossover_m`` NaN. Columns: ``shape, routing, a, b, crossing, crossover_m,
    m_lo, m_hi, faster_below, faster_above, n_crossings, faster_at_min_m, faster_at_max_m``.
    """
    d = _ok(df)
    out = []
    for (shape, routing), g in d.groupby(["shape", "routing"], sort=True):
        p = g.pivot_table(index="m", columns="backend", values=value, aggfunc="median").sort_index()
        if a not in p or b not in p:
            continue
        p = p[[a, b]].dropna()
        if p.empty:
            continue
        ms = p.index.to_numpy(dtype=float)
        r = np.log(p[a].to_numpy() / p[b].to_numpy())
        faster = lambda v: a if v < 0 else b if v > 0 else "tie"  # noqa: E731
        base = dict(shape=shape, routing=routing, a=a, b=b, faster_at_min_m=faster(r[0]),
                    faster_at_max_m=faster(r[-1]))
        found = []
        for i in range(len(ms) - 1):
            r0, r1 = r[i], r[i + 1]
            if r0 * r1 < 0 or (r1 == 0 and r0 != 0):
                t = r0 / (r0 - r1)
                lm = np.log(ms[i]) + t * (np.log(ms[i + 1]) - np.log(ms[i]))
                found.append((float(np.exp(lm)), ms[i], ms[i + 1], r0, r1))
        if not found:
            out.append(dict(base, crossing=0, crossover_m=float("nan"), m_lo=float("nan"), m_hi=float("nan"),
                            faster_below=None, faster_above=None, n_crossings=0))
        for j, (mx, lo, hi, r0, r1) in enumerate(found):
            out.append(dict(base, crossing=j, crossover_m=mx, m_lo=lo, m_hi=hi, faster_below=faster(r0),
                            faster_above=faster(r1), n_crossings=len(found)))
    cols = ["shape", "routing", "a", "b", "crossing", "crossover_m", "m_lo", "m_hi", "faster_below",
            "faster_above", "n_crossings", "faster_at_min_m", "faster_at_max_m"]
    return pd.DataFrame(out, columns=cols)


def latency_speedups(df: pd.DataFrame, baseline: str, *, value: str = "median_us") -> pd.DataFrame:
    """Speedup of every backend over ``baseline`` at each (shape, routing, M) both recorded.

    ``speedup = t_baseline / t_backend`` (> 1: the backend is faster); ``faster_pct = 100 *
    (speedup - 1)`` ("X% faster"). Columns: ``shape, routing, m, backend, baseline, median_us,
    baseline_us, speedup, faster_pct``.
    """
    d = _ok(df)
    base = d[d["backend"] == baseline][["shape", "routing", "m", value]].rename(columns={value: "baseline_us"})
    base = base.groupby(["shape", "routing", "m"], as_index=False)["baseline_us"].median()
    other = d.groupby(["shape", "routing", "m", "backend"], as_index=False)[value].median()
    j = other.merge(base, on=["shape", "routing", "m"], how="inner")
    j = j.rename(columns={value: "median_us"}).assign(baseline=baseline)
    j["speedup"] = j["baseline_us"] / j["median_us"]
    j["faster_pct"] = 100 * (j["speedup"] - 1)
    cols = ["shape", "routing", "m", "backend", "baseline", "median_us", "baseline_us", "speedup", "faster_pct"]
    return j[cols].sort_values(["shape", "routing", "backend", "m"]).reset_index(drop=True)


def latency_dispatch_table(df: pd.DataFrame, *, value: str = "median_us") -> pd.DataFrame:
    """Fastest backend per (shape, routing, M). Columns: ``shape, routing, m, best, best_us, second,
    second_us, margin`` (second_us / best_us), ``n_backends``."""
    d = _ok(df).groupby(["shape", "routing", "m", "backend"], as_index=False)[value].median()
    rows = []
    for (shape, routing, m), g in d.groupby(["shape", "routing", "m"], sort=True):
        g = g.sort_values(value)
        best, second = g.iloc[0], (g.iloc[1] if len(g) > 1 else None)
        rows.append(dict(shape=shape, routing=routing, m=int(m), best=best["backend"], best_us=best[value],
                         second=None if second is None else second["backend"],
                         second_us=float("nan") if second is None else second[value],
                         margin=float("nan") if second is None else second[value] / best[value],
                         n_backends=len(g)))
    return pd.DataFrame(rows, columns=["shape", "routing", "m", "best", "best_us", "second", "second_us",
                                       "margin", "n_backends"])


def latency_roofline_fraction(df: pd.DataFrame) -> pd.DataFrame:
    """Timed rows with ``fraction_of_roofline`` (floor / measured), ``achieved_GBps``,
    ``achieved_TFLOPs`` (recomputed from ``bytes``/``flops`` when those columns are present)."""
    d = _ok(df).copy()
    if "roofline_us" in d:
        d["fraction_of_roofline"] = d["roofline_us"] / d["median_us"]
    if "bytes" in d:
        d["achieved_GBps"] = d["bytes"] / d["median_us"] / 1e3
    if "flops" in d:
        d["achieved_TFLOPs"] = d["flops"] / d["median_us"] / 1e6
    return d


def _find_backend(df: pd.DataFrame, word: str) -> Optional[str]:
    names = sorted(n for n in df["backend"].dropna().unique() if word in str(n).lower())
    return names[0] if names else None


def latency_claim_check(df: pd.DataFrame, *, shape: str = "seed-bench", routing: str = "uniform",
                        flashinfer: Optional[str] = None, marlin: Optional[str] = None) -> pd.DataFrame:
    """The original claim (:data:`SEED_CLAIM`) against the recorded sweep on ``shape``.

    Per recorded M: FlashInfer's advantage over Marlin, ``fi_faster = t_marlin / t_flashinfer - 1``
    (negative: Marlin faster), the claimed range for that regime and whether it holds. Empty frame
    when either backend is absent (``df.attrs["note"]`` says why).
    """
    cols = ["shape", "routing", "m", "regime", "claim", "claim_lo", "claim_hi", "fi_faster", "within_claim"]
    d = _ok(df)
    fi = flashinfer or _find_backend(d, "flashinfer")
    ma = marlin or _find_backend(d, "marlin")
    if fi is None or ma is None:
        out = pd.DataFrame(columns=cols)
        out.attrs["note"] = (f"not measured: no {'marlin' if ma is None else 'flashinfer'} backend in the recorded "
                             f"results (backends: {sorted(d['backend'].dropna().unique())})")
        return out
    sp = latency_speedups(d, ma)
    sp = sp[(sp["backend"] == fi) & (sp["shape"] == shape) & (sp["routing"] == routing)]
    rows = []
    for _, r in sp.iterrows():
        for c in SEED_CLAIM:
            if (c["m_max"] is None or r["m"] <= c["m_max"]) and (c["m_min"] is None or r["m"] >= c["m_min"]):
                v = r["speedup"] - 1
                rows.append(dict(shape=shape, routing=routing, m=int(r["m"]), regime=c["regime"], claim=c["claim"],
                                 claim_lo=c["lo"], claim_hi=c["hi"], fi_faster=v,
                                 within_claim=bool(c["lo"] <= v <= c["hi"])))
    out = pd.DataFrame(rows, columns=cols)
    out.attrs["note"] = f"{fi} vs {ma} on {shape} ({routing} routing)"
    return out


def latency_results(results_file=None, *, measure: bool = False, backends=("flashinfer_sm90",), shapes=LATENCY_SHAPES,
                    ms=(1, 16, 256, 4096), routing: str = "uniform", reps: int = 30
                    ) -> Tuple[pd.DataFrame, Optional[Dict[str, Any]], str, bool]:
    """The latency notebook's data: ``(rows, provenance, plot label, recorded)``.

    ``measure=True`` on a CUDA machine runs :func:`mxfp4lab.bench.moe.sweep` now (with measured
    ceilings); otherwise (or without a GPU, with a printed note) it reads the recorded sweep
    (:func:`latency_load`). ``recorded`` says whether any timed row exists.
    """
    measured = False
    if measure and torch.cuda.is_available():
        ceil = measure_ceilings()
        df = _latency_frame(sweep(list(backends), list(shapes), list(ms), [routing], reps=reps, ceilings=ceil))
        df.attrs.update(ceilings=ceil, path="(measured in this run)")
        prov, measured = provenance("notebooks/03_latency_crossover (measure=True)"), True
    else:
        if measure:
            print("measure=True but no CUDA GPU here: reading recorded results instead.")
        df, prov = latency_load(results_file)
    label = latency_source_label(prov, df.attrs.get("runs")) + (" (measured in this run)" if measured else "")
    return df, prov, label, bool(prov is not None and df["ok"].any())


def latency_all_crossovers(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`latency_crossovers` for every pair of timed backends (empty frame if fewer than two)."""
    names = sorted(df.loc[df["ok"].astype(bool), "backend"].dropna().unique()) if len(df) else []
    parts = [latency_crossovers(df, a, b) for a, b in itertools.combinations(names, 2)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["shape", "routing", "a", "b", "crossing", "crossover_m", "m_lo", "m_hi", "faster_below",
                 "faster_above", "n_crossings"])


def latency_dispatch_speedups(df: pd.DataFrame, routing: str = "uniform") -> pd.DataFrame:
    """Dispatching the fastest recorded backend per (shape, M) vs always running one backend:
    one row per (always, shape) plus ``shape == "all"``: ``geomean, worst, best, n_m`` of
    ``t_always / t_dispatch`` (in-sample: the policy is scored on the rows it was built from)."""
    d = Dispatch.from_rows(df[df["ok"].astype(bool)].to_dict("records"), routing=routing)
    rows = [dict(always=b, shape=s, **{k: v[k] for k in ("geomean", "worst", "best", "n_m")})
            for b in d.backends() for s, v in d.speedup_vs(always=b).items()]
    return pd.DataFrame(rows)


def shape_aliases(shapes) -> Dict[str, str]:
    """Shapes with the same MoE dimensions (H, I, E, top-k) as an earlier one in ``shapes``: alias -> that
    earlier shape (``seed-bench`` -> ``dsv4-flash``). Figures draw one panel per distinct shape."""
    seen: Dict[tuple, str] = {}
    out = {}
    for s in as_list(shapes):
        c = get_model(s)
        key = (c.hidden_size, c.intermediate_size, c.num_experts, c.top_k)
        if key in seen:
            out[c.name] = seen[key]
        else:
            seen[key] = c.name
    return out


def latency_ms(df: pd.DataFrame, ms=()) -> list:
    """The M grid for the roofline: ``ms`` plus every M the recorded rows hold (so the floor spans the data)."""
    got = {int(m) for m in as_list(ms)}
    if len(df) and "m" in df:
        got |= {int(m) for m in df.loc[df["m"].notna(), "m"]}
    return sorted(got)


def latency_fastest(df: pd.DataFrame, routing: str = "uniform") -> Dict[str, list]:
    """shape -> ``[[m, fastest backend], ...]`` (from :func:`latency_dispatch_table`), for the findings."""
    t = latency_dispatch_table(df)
    t = t[t["routing"] == routing]
    return {s: [[int(r.m), r.best] for r in g.sort_values("m").itertuples()] for s, g in t.groupby("shape")}


def latency_best_fraction(df: pd.DataFrame, routing: str = "uniform") -> Dict[str, Dict[int, float]]:
    """shape -> {m: floor / fastest backend's time}."""
    t = latency_table(df, routing=routing)
    return {s: {int(r.m): float(r.best_fraction_of_floor) for r in g.itertuples()} for s, g in t.groupby("shape")}


def display_path(path) -> str:
    """``path`` relative to the checkout when inside it (what a report prints), else as given."""
    from ..provenance import REPO_ROOT

    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except (TypeError, ValueError):
        return str(path)


def latency_speedup_table(sp: pd.DataFrame, routing: str = "uniform") -> pd.DataFrame:
    """Speedups over the baseline as one row per (distinct shape, backend) and one column per M: two
    decimals, ``-`` where the backend was not timed at that M (the baseline's own row is left out)."""
    s = sp[(sp["routing"] == routing) & (sp["backend"] != sp["baseline"])]
    s = s[~s["shape"].isin(shape_aliases(list(dict.fromkeys(s["shape"]))))]
    t = s.pivot_table(index=["shape", "backend"], columns="m", values="speedup")
    return t.map(lambda v: "-" if pd.isna(v) else f"{v:.2f}")


def latency_claim_verdicts(claim: pd.DataFrame) -> pd.DataFrame:
    """One row per regime of :func:`latency_claim_check`: the claim, the measured range of ``fi_faster``,
    the M inside the claimed range, and the verdict (holds / partly holds / does not hold)."""
    rows = []
    for regime, g in claim.groupby("regime", sort=False):
        ok = g[g["within_claim"].astype(bool)]
        verdict = "holds" if len(ok) == len(g) else "does not hold" if ok.empty else "partly holds"
        rows.append(dict(regime=regime, claim=g["claim"].iloc[0],
                         measured=f"{100 * g['fi_faster'].min():+.0f}% .. {100 * g['fi_faster'].max():+.0f}%",
                         within_at_m=", ".join(str(int(m)) for m in ok["m"]) or "none", n_m=len(g), verdict=verdict))
    return pd.DataFrame(rows, columns=["regime", "claim", "measured", "within_at_m", "n_m", "verdict"])


def latency_routing_timings(config, routings: Dict[str, tuple], backends, *, reps: int = 30) -> pd.DataFrame:
    """Each backend timed on a random layer of ``config`` (:func:`mxfp4lab.synthetic.random_layer`; timing does
    not depend on the weight values) under each routing ``name -> (x [M, H], topk_ids, topk_weights)``, e.g. a
    checkpoint's real router beside uniform and skewed. Needs a CUDA GPU: without one, an empty frame whose
    ``attrs["note"]`` says so. Columns: ``backend, routing, m, median_us`` (or ``error``)."""
    from ..backends import get_backend
    from ..bench.harness import time_cuda
    from ..prepare import prepare_from_experts
    from ..synthetic import random_layer

    cols = ["backend", "routing", "m", "median_us", "error"]
    if not torch.cuda.is_available():
        out = pd.DataFrame(columns=cols)
        out.attrs["note"] = "not timed: no CUDA GPU here (run with measure=True on a Hopper GPU)"
        return out
    moe = prepare_from_experts(random_layer(config), config=config)
    rows = []
    for b in as_list(backends):
        try:
            be = get_backend(b)(moe, config)
        except Exception as exc:  # noqa: BLE001 - record and go on with the others
            rows.append(dict(backend=b, error=f"{type(exc).__name__}: {str(exc)[:200]}"))
            continue
        for name, (x, ids, w) in routings.items():
            inp = [(x.cuda().bfloat16(), ids.cuda().to(torch.int32), w.cuda().float())]
            try:
                be.tune(*inp[0])
                t = time_cuda(be, inp, reps=reps, graph=be.graph_capturable)
                rows.append(dict(backend=b, routing=name, m=int(x.shape[0]), median_us=t.median_us))
            except Exception as exc:  # noqa: BLE001
                rows.append(dict(backend=b, routing=name, m=int(x.shape[0]), error=f"{type(exc).__name__}: {exc}"))
    return pd.DataFrame(rows, columns=cols)


def latency_load_floor(summary: pd.DataFrame, config, *, ceilings=None) -> pd.DataFrame:
    """A routing-load summary (``routing, tokens, active_experts, ...``) with ``floor_us``: the roofline floor
    of ``tokens`` tokens that hit that many experts (ceilings as in :func:`latency_roofline`)."""
    bw, fr = ceiling_rates(ceilings)
    floors = [roofline(get_model(config), int(r.tokens), bandwidth=bw, flops_rate=fr,
                       active_experts=float(r.active_experts)).floor_us for r in summary.itertuples()]
    return summary.assign(floor_us=floors)


def latency_table(df: pd.DataFrame, routing: str = "uniform") -> pd.DataFrame:
    """One row per (shape, M): each backend's median (us), the floor, best backend and its fraction.

    One floor for every backend: rows a merged sweep took from other runs carry their own lease's floor (its
    measured bandwidth), so the floor is the point's bytes and FLOPs over the file's ceilings (``df.attrs``, the
    main run's) where the rows have them, else the main run's ``roofline_us`` (rows without ``run``) where it has
    the point."""
    ceil = df.attrs.get("ceilings") or {}
    d = _ok(df)
    d = d[d["routing"] == routing]
    p = d.pivot_table(index=["shape", "m"], columns="backend", values="median_us", aggfunc="median")
    main_first = d.assign(_other=d["run"].notna() if "run" in d else False).sort_values("_other", kind="stable")
    if ceil.get("copy_bytes_per_s") and ceil.get("bf16_flops_per_s") and {"bytes", "flops"} <= set(d) \
            and d["bytes"].notna().all() and d["flops"].notna().all():
        main_first = main_first.assign(roofline_us=1e6 * np.maximum(
            main_first["bytes"].astype(float) / ceil["copy_bytes_per_s"],
            main_first["flops"].astype(float) / ceil["bf16_flops_per_s"]))
    floor = main_first.groupby(["shape", "m"])["roofline_us"].first()
    backends = list(p.columns)
    out = p.copy()
    out["floor_us"] = floor
    out["best"] = p[backends].idxmin(axis=1)
    out["best_fraction_of_floor"] = floor / p[backends].min(axis=1)
    return out.reset_index()


def latency_decode_goals(df: pd.DataFrame, routing: str = "uniform") -> pd.DataFrame:
    """:func:`decode_goals` of :func:`latency_table` for one routing."""
    return decode_goals(latency_table(df, routing=routing))


def latency_triton_goals(df: pd.DataFrame, routing: str = "uniform") -> pd.DataFrame:
    """mxfp4lab's Triton kernel against its goals per (shape, M): :func:`triton_goals` of :func:`latency_table`."""
    return triton_goals(latency_table(df, routing=routing))

# ---------------------------------------------------------------- the study's conclusions, in one dict
def summarize(results_file=None) -> Dict[str, Any]:
    """The latency study's conclusions from a recorded sweep (``mxfp4lab bench summary``): ``table``
    (:func:`latency_table`), ``crossovers`` (FlashInfer vs Marlin), ``claim`` (:func:`latency_claim_check`)
    and ``claim_note``, ``dispatch`` (:func:`latency_dispatch_speedups`), ``triton_goals``, ``decode_goals``,
    plus ``source``
    (the sweep's path) and ``provenance`` (the sweep's)."""
    df, prov = latency_load(results_file)
    if df.empty:
        raise FileNotFoundError(f"no recorded sweep at {df.attrs.get('path')}")
    table = latency_table(df)
    claim = latency_claim_check(df)
    return dict(source=df.attrs["path"], provenance=prov, table=table, crossovers=latency_crossovers(df, FI, MARLIN),
                claim=claim, claim_note=claim.attrs.get("note"), dispatch=latency_dispatch_speedups(df),
                triton_goals=triton_goals(table), decode_goals=decode_goals(table))


def summary_records(summary: Dict[str, Any]) -> Dict[str, Any]:
    """:func:`summarize`'s frames as lists of JSON-ready dicts (NaN -> None)."""
    def clean(v):
        return None if isinstance(v, float) and math.isnan(v) else v

    out = {k: v for k, v in summary.items() if not isinstance(v, pd.DataFrame)}
    for k, v in summary.items():
        if isinstance(v, pd.DataFrame):
            out[k] = [{c: clean(x) for c, x in r.items()} for r in v.to_dict("records")]
    return out
