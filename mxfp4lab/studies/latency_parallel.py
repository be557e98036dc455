"""The latency study across GPUs: one MoE layer split over 1, 2, 4, 8 GPUs of one host (TP and EP), read from
the recorded multi-GPU run (:mod:`mxfp4lab.results`, kind ``parallel_latency``, written by
``torchrun ... -m mxfp4lab bench parallel``). Tidy frames for notebook 03; the figures are
:func:`mxfp4lab.studies.latency_figures.plot_parallel_scaling` and ``plot_parallel_allreduce_share``.

Without a recorded run every function still answers: :func:`parallel_load` gives an empty frame, and
:func:`parallel_floor_only` gives the per-GPU part of the floor (the experts' weight bytes over one GPU's
bandwidth; the all-reduce part needs the bandwidth a run measures, so it is left out and said so).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from .. import results
from ..models import get_model
from ..moe_tensors import ShardSpec
from ..roofline import ceiling_rates, expected_active_experts, sharded_roofline
from .common import as_list

PARALLEL_STUDY = "parallel_latency"
#: The multi-GPU hosts this study was planned for come first.
PARALLEL_GPUS = ("h200", "h100")
SCALING_COLUMNS = ["shape", "backend", "parallel", "world", "m", "layer_us", "layer_p10_us", "layer_p90_us",
                   "experts_us", "allreduce_us", "allreduce_share", "roofline_us", "roofline_gpu_us",
                   "roofline_allreduce_us", "speedup", "efficiency"]
NO_RUN = "no multi-GPU run recorded yet"


def parallel_results_path(path=None) -> Path:
    """``path``, or the first recorded ``data/results/parallel_latency/<gpu>.json`` (the H200 one's path when
    none exists)."""
    if path:
        return Path(path)
    return results.find(PARALLEL_STUDY, PARALLEL_GPUS) or results.result_path(PARALLEL_STUDY, PARALLEL_GPUS[0])


def parallel_load(path=None) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """The recorded run -> (rows, provenance); ``(empty frame, None)`` when there is no file.

    ``ok``: timed on GPUs (``timer == "cuda_events"``) without error. A file of CPU stand-in timings (the
    gloo test path) loads with ``ok`` False everywhere and ``df.attrs["note"]`` saying why: those are never
    shown as results. ``df.attrs``: ``path``, ``ceilings``, ``launched_ranks``, ``note``.
    """
    p = parallel_results_path(path)
    cols = ["shape", "backend", "parallel", "world", "m", "layer_us", "error", "timer", "ok"]
    if not p.is_file():
        df = pd.DataFrame(columns=cols)
        df.attrs.update(path=str(p), ceilings={}, launched_ranks=None, note=f"{NO_RUN} (looked for {p})")
        return df, None
    res = results.load(p, kind=PARALLEL_STUDY)
    df = pd.DataFrame(res.rows)
    for c in cols[:-1]:
        if c not in df:
            df[c] = None
    gpu_timed = df["timer"] == "cuda_events"
    df["ok"] = df["layer_us"].notna() & df["error"].isna() & gpu_timed
    note = "" if gpu_timed.all() else (f"{int((~gpu_timed).sum())} rows timed with {sorted(set(df.loc[~gpu_timed, 'timer'].dropna()))}"
                                       " (CPU stand-ins of the test path): not shown as results")
    df.attrs.update(path=str(p), ceilings=res.meta.get("ceilings") or {}, launched_ranks=res.meta.get("launched_ranks"),
                    note=note)
    return df, res.provenance or {}


def parallel_source_label(prov: dict[str, Any] | None, df: pd.DataFrame | None = None) -> str:
    """'recorded on N x <gpu> <date>, commit <sha>' (for plot titles), or :data:`NO_RUN`."""
    if not prov or df is None or not df["ok"].astype(bool).any():
        return NO_RUN
    n = (df.attrs.get("launched_ranks") if df is not None else None) or prov.get("device_count") or "?"
    return (f"recorded on {n} x {prov.get('gpu') or 'unknown GPU'} {(prov.get('date') or 'unknown date')[:10]}, "
            f"commit {(prov.get('mxfp4lab_commit') or 'unknown')[:10]}")


def parallel_scaling(df: pd.DataFrame) -> pd.DataFrame:
    """Timed points as scaling curves: one row per (shape, backend, parallel, world, M) with
    :data:`SCALING_COLUMNS`. The one-GPU point (``parallel`` "none") starts both the TP and the EP curve;
    ``speedup = t(1 GPU) / t(world)`` of the same backend, shape and M, ``efficiency = speedup / world``."""
    d = df[df["ok"].astype(bool)] if len(df) else df
    if d.empty:
        return pd.DataFrame(columns=SCALING_COLUMNS)
    d = d.copy()
    for c in SCALING_COLUMNS:
        if c not in d:
            d[c] = float("nan")
    one = d[d["world"] == 1]
    curves = [d[d["world"] > 1]] + [one.assign(parallel=p) for p in ("tp", "ep")]
    s = pd.concat(curves, ignore_index=True)
    base = one.set_index(["shape", "backend", "m"])["layer_us"]
    key = pd.MultiIndex.from_frame(s[["shape", "backend", "m"]])
    s["speedup"] = base.reindex(key).to_numpy() / s["layer_us"].to_numpy()
    s["efficiency"] = s["speedup"] / s["world"]
    return s[SCALING_COLUMNS].sort_values(["shape", "parallel", "backend", "m", "world"]).reset_index(drop=True)


def parallel_best(scaling: pd.DataFrame) -> pd.DataFrame:
    """The fastest backend's layer per (shape, parallel, world, M): what a deployment would run there."""
    if scaling.empty:
        return scaling
    i = scaling.groupby(["shape", "parallel", "world", "m"])["layer_us"].idxmin()
    return scaling.loc[i].reset_index(drop=True)


def parallel_floor_only(shapes=("gpt-oss-120b", "dsv4-flash"), worlds=(1, 2, 4, 8),
                        ms=(1, 16, 64, 256, 1024, 4096), *, ceilings=None) -> pd.DataFrame:
    """Without a run: the per-GPU part of the sharded floor under uniform routing (expected active experts; EP:
    a rank's expected share), for TP and EP. ``ceilings``: ``copy_bytes_per_s`` / ``bf16_flops_per_s`` (e.g.
    the single-GPU sweep's), default the H100 numbers. Columns: ``shape, parallel, world, m, floor_gpu_us``
    (the all-reduce is not in it: its bandwidth is measured by a run)."""
    bw, fr = ceiling_rates(ceilings)
    rows = []
    for name in as_list(shapes):
        cfg = get_model(name)
        for w in as_list(worlds):
            for par in ("tp", "ep"):
                for m in as_list(ms):
                    if par == "tp":
                        specs = [ShardSpec(tp_size=w, tp_rank=r) for r in range(w)]
                        act, pairs = [expected_active_experts(cfg, m)] * w, [m * cfg.top_k] * w
                    else:
                        e = cfg.num_experts // w
                        act = [e * (1 - (1 - cfg.top_k / cfg.num_experts) ** m)] * w
                        pairs, specs = [m * cfg.top_k / w] * w, [ShardSpec()] * w
                    inter = [b - a for a, b in (s.intermediate_slice(cfg.intermediate_size) for s in specs)]
                    r = sharded_roofline(cfg, m, rank_intermediate=inter, rank_active_experts=act, rank_pairs=pairs,
                                         bandwidth=bw, flops_rate=fr, allreduce_busbw=math.inf)
                    rows.append({"shape": cfg.name, "parallel": par, "world": w, "m": m, "floor_gpu_us": r.gpu_us})
    return pd.DataFrame(rows, columns=["shape", "parallel", "world", "m", "floor_gpu_us"])


def single_gpu_ceilings() -> dict:
    """The measured ceilings of the recorded single-GPU sweep (``latency/<gpu>.json``, H200 first), or {}."""
    p = results.find("latency", PARALLEL_GPUS)
    return (results.load(p).meta.get("ceilings") or {}) if p else {}
