"""Figures of the latency study (seaborn/matplotlib) from the DataFrames of :mod:`.latency`; each returns
the :class:`matplotlib.figure.Figure` it drew and computes nothing beyond reshaping for display. Every
figure carries the label of where its numbers come from (GPU, date, commit)."""

from __future__ import annotations

import textwrap
from typing import Any, Dict, List, Optional, Tuple

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Patch

from .latency import LATENCY_SHAPES, shape_aliases


def _shape_axes(shapes, figsize, sharey=False):
    n = len(shapes)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=figsize, squeeze=False, sharey=sharey)
    flat = axes.reshape(-1)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _backend_colors(backends) -> Dict[str, Any]:
    pal = sns.color_palette("tab10", max(len(backends), 3))
    return {b: pal[i] for i, b in enumerate(sorted(backends))}


def distinct_shapes(shapes) -> Tuple[List[str], Dict[str, str]]:
    """(shapes to draw, one per distinct MoE shape; panel title per drawn shape naming its aliases)."""
    shapes = list(dict.fromkeys(shapes))
    shapes.sort(key=lambda x: (LATENCY_SHAPES.index(x) if x in LATENCY_SHAPES else len(LATENCY_SHAPES)))
    alias = shape_aliases(shapes)
    drawn = [s for s in shapes if s not in alias]
    titles = {s: s + "".join(f" (= {a}: same shape)" for a, b in alias.items() if b == s) for s in drawn}
    return drawn, titles


def backend_label(name: str, n_m: int, n_grid: int) -> str:
    """Legend label; says so when a backend was timed at fewer M than the grid."""
    return name if n_m >= n_grid else f"{name} (timed at {n_m} of {n_grid} M)"


def _log2_ticks(ax):
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))


def plot_latency_vs_m(df: pd.DataFrame, roof: pd.DataFrame, *, label: str = "", routing: str = "uniform",
                      figsize=(14, 9)) -> plt.Figure:
    """Measured median latency vs M (p10-p90 band) per backend, one panel per distinct shape, with the
    roofline floor (black dashed; memory and compute parts dotted). The y axis starts just below the
    lowest floor or time of the panel; a backend timed at fewer M than the grid says so in the legend.
    With ``df`` empty: the floor only."""
    shapes, titles = distinct_shapes(list(roof["shape"]) + list(df.get("shape", pd.Series(dtype=str)).dropna()))
    d = df[(df.get("ok", False) == True) & (df["routing"].fillna("uniform") == routing)] if len(df) else df  # noqa: E712
    colors = _backend_colors(d["backend"].unique() if len(d) else [])
    fig, axes = _shape_axes(shapes, figsize)
    for ax, shape in zip(axes, shapes):
        r = roof[roof["shape"] == shape].sort_values("m")
        ax.plot(r["m"], r["floor_us"], "k--", lw=2, label="roofline floor")
        ax.plot(r["m"], r["memory_us"], ":", color="gray", lw=1, label="weight bytes / bandwidth")
        ax.plot(r["m"], r["compute_us"], ":", color="tab:brown", lw=1, label="FLOPs / peak")
        s = d[d["shape"] == shape] if len(d) else d
        grid = len(set(s["m"])) if len(s) else 0
        lows = list(r["floor_us"])
        for b, g in (s.groupby("backend") if len(s) else []):
            g = g.sort_values("m")
            ax.plot(g["m"], g["median_us"], "o-", color=colors[b], label=backend_label(b, g["m"].nunique(), grid),
                    ms=4)
            lows += list(g["median_us"])
            if {"p10_us", "p90_us"} <= set(g.columns) and g["p10_us"].notna().all():
                ax.fill_between(g["m"], g["p10_us"], g["p90_us"], color=colors[b], alpha=0.2)
        _log2_ticks(ax)
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.7 * min(lows))
        ax.set_xlim(r["m"].min() / 1.3, r["m"].max() * 1.3)
        ax.set_title(titles[shape], fontsize=10)
        ax.set_xlabel("tokens M")
        ax.set_ylabel("latency per MoE layer (us)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    what = f"MoE layer latency vs M ({routing} routing)" if len(d) else "Roofline floor of one MoE layer"
    fig.suptitle(f"{what}\n{label}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_latency_roofline_only(roof: pd.DataFrame, *, label: str = "", figsize=(14, 4.5)) -> plt.Figure:
    """Expected active experts and arithmetic intensity vs M per distinct shape (the two things that set
    the floor), with the ridge point of the ceilings used."""
    shapes, titles = distinct_shapes(roof["shape"])
    fig, (a, b) = plt.subplots(1, 2, figsize=figsize)
    for shape in shapes:
        g = roof[roof["shape"] == shape].sort_values("m")
        a.plot(g["m"], g["active_experts"], "o-", label=titles[shape], ms=4)
        b.plot(g["m"], g["flops"] / g["bytes"], "o-", label=titles[shape], ms=4)
    ridge = (roof["compute_us"] / roof["flops"]).iloc[0]
    ridge_ai = 1.0 / (ridge * (roof["bytes"] / roof["memory_us"]).iloc[0])  # FLOP/s / (B/s) = FLOP per byte
    b.axhline(ridge_ai, color="k", ls="--", lw=1)
    b.text(roof["m"].min(), ridge_ai * 1.1, f"ridge {ridge_ai:.0f} FLOP/B (compute-bound above)", fontsize=8)
    for ax in (a, b):
        _log2_ticks(ax)
        ax.set_yscale("log")
        ax.set_xlabel("tokens M")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    a.set_ylabel("expected distinct active experts")
    b.set_ylabel("FLOPs / byte moved")
    a.set_title("experts touched (uniform top-k)", fontsize=10)
    b.set_title("arithmetic intensity", fontsize=10)
    fig.suptitle(f"Why the floor bends: weight bytes saturate, FLOPs keep growing\n{label}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_latency_speedup(sp: pd.DataFrame, *, crossovers: Optional[pd.DataFrame] = None, label: str = "",
                         routing: str = "uniform", figsize=(14, 9)) -> plt.Figure:
    """Speedup over the baseline (``latency_speedups``) vs M per backend and distinct shape. Where a
    backend crosses the baseline (its crossover with it), a marker on the 1.0 line and the M, the
    labels stacked so none overlaps."""
    s = sp[sp["routing"] == routing]
    shapes, titles = distinct_shapes(s["shape"])
    baseline = s["baseline"].iloc[0] if len(s) else "?"
    colors = _backend_colors(s["backend"].unique())
    fig, axes = _shape_axes(shapes or ["(none)"], figsize)
    for ax, shape in zip(axes, shapes):
        ss = s[s["shape"] == shape]
        grid = ss["m"].nunique()
        for b, g in ss[ss["backend"] != baseline].groupby("backend"):
            g = g.sort_values("m")
            ax.plot(g["m"], g["speedup"], "o-", color=colors[b], label=backend_label(b, g["m"].nunique(), grid), ms=4)
        ax.axhline(1.0, color="k", lw=1, label=f"{baseline} (= 1)")
        if crossovers is not None and len(crossovers):
            c = crossovers[(crossovers["shape"] == shape) & (crossovers["routing"] == routing)
                           & ((crossovers["a"] == baseline) | (crossovers["b"] == baseline))]
            c = c.dropna(subset=["crossover_m"]).sort_values("crossover_m")
            for i, row in enumerate(c.itertuples()):
                other = row.b if row.a == baseline else row.a
                ax.plot([row.crossover_m], [1.0], "D", color=colors.get(other, "gray"), ms=6, zorder=5)
                ax.annotate(f"M~{row.crossover_m:.0f}", (row.crossover_m, 1.0), xytext=(0, -14 - 11 * (i % 3)),
                            textcoords="offset points", ha="center", va="top", fontsize=8,
                            color=colors.get(other, "gray"))
        _log2_ticks(ax)
        ax.set_title(titles[shape], fontsize=10)
        ax.set_xlabel("tokens M")
        ax.set_ylabel(f"speedup over {baseline}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Speedup over {baseline} ({routing} routing; diamonds: crossovers with {baseline})\n{label}",
                 fontsize=11)
    fig.tight_layout()
    return fig


def plot_latency_roofline_fraction(frac: pd.DataFrame, *, label: str = "", routing: str = "uniform",
                                   figsize=(14, 6.5)) -> plt.Figure:
    """Per distinct shape (columns): fraction of the roofline floor reached (floor / measured, top row) and
    achieved weight bandwidth (bottom row) vs M, one line per backend; one legend beside the panels."""
    d = frac[frac["routing"] == routing]
    shapes, titles = distinct_shapes(d["shape"]) if len(d) else (["(none)"], {"(none)": "(no data)"})
    colors = _backend_colors(d["backend"].unique() if len(d) else [])
    fig, axes = plt.subplots(2, len(shapes), figsize=figsize, squeeze=False, sharex=True, sharey="row")
    handles = {}
    for j, shape in enumerate(shapes):
        ds = d[d["shape"] == shape] if len(d) else d
        for b, g in (ds.groupby("backend") if len(ds) else []):
            g = g.sort_values("m")
            (h,) = axes[0, j].plot(g["m"], g["fraction_of_roofline"], "o-", color=colors[b], ms=3)
            handles[b] = h
            if "achieved_GBps" in g:
                axes[1, j].plot(g["m"], g["achieved_GBps"], "o-", color=colors[b], ms=3)
        axes[0, j].axhline(1.0, color="k", ls="--", lw=1)
        axes[0, j].set_title(titles[shape], fontsize=9)
        for ax in axes[:, j]:
            _log2_ticks(ax)
            ax.grid(True, alpha=0.3)
        axes[1, j].set_xlabel("tokens M")
    axes[0, 0].set_ylabel("roofline floor / measured")
    axes[1, 0].set_ylabel("achieved GB/s\n(active weight bytes / time)")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.0, 0.9), fontsize=8,
                   title="backend")
    fig.suptitle(f"How close to the roofline ({routing} routing)\n{label}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_latency_dispatch(table: pd.DataFrame, *, label: str = "", routing: str = "uniform",
                          figsize=(14, 3.2)) -> plt.Figure:
    """Fastest backend per (distinct shape, M) as a colored grid, annotated with the margin over the
    runner-up."""
    t = table[table["routing"] == routing]
    shapes, titles = distinct_shapes(t["shape"])
    t = t[t["shape"].isin(shapes)].assign(shape=lambda x: x["shape"].map(titles))
    backends = sorted(t["best"].unique())
    code = {b: i for i, b in enumerate(backends)}
    grid = t.pivot(index="shape", columns="m", values="best").map(lambda v: code.get(v, np.nan))
    ann = t.pivot(index="shape", columns="m", values="margin").map(lambda v: "" if pd.isna(v) else f"{v:.2f}x")
    pal = sns.color_palette("tab10", max(len(backends), 1))
    fig, ax = plt.subplots(figsize=figsize)
    sns.heatmap(grid.astype(float), annot=ann, fmt="", cmap=pal[: len(backends)], cbar=False, ax=ax,
                linewidths=0.5, vmin=-0.5, vmax=len(backends) - 0.5)
    ax.legend(handles=[Patch(color=pal[i], label=b) for b, i in code.items()], bbox_to_anchor=(1.01, 1),
              loc="upper left", fontsize=8, title="fastest")
    ax.set_xlabel("tokens M (annotation: runner-up time / fastest time)")
    ax.set_ylabel("")
    fig.suptitle(f"Dispatch table: fastest recorded backend ({routing} routing)\n{label}", fontsize=11)
    fig.tight_layout()
    return fig


_PARALLEL_STYLE = {"tp": "-", "ep": "--"}


def plot_parallel_scaling(scaling: pd.DataFrame, floor: pd.DataFrame | None = None, *, label: str = "",
                          ms=None, figsize=None) -> plt.Figure:
    """One MoE layer's latency vs the GPUs it is split over: one panel per (shape, M), a line per backend
    (solid TP, dashed EP), the all-reduce alone (gray, dotted) and the sharded roofline (black). ``scaling``:
    :func:`mxfp4lab.studies.latency_parallel.parallel_scaling`. With ``scaling`` empty (no run recorded): the
    per-GPU part of the floor from ``floor`` (:func:`~mxfp4lab.studies.latency_parallel.parallel_floor_only`)
    and, in every panel, "no multi-GPU run recorded yet"."""
    recorded = len(scaling) > 0
    src = scaling if recorded else (floor if floor is not None else pd.DataFrame(columns=["shape", "m", "world"]))
    shapes = list(dict.fromkeys(src["shape"]))
    ms = sorted(set(src["m"])) if ms is None else list(ms)
    if not shapes or not ms:
        shapes, ms = ["(none)"], [0]
    fig, axes = plt.subplots(len(shapes), len(ms), figsize=figsize or (max(10, 3.2 * len(ms)), 3.2 * len(shapes) + 1.2),
                             squeeze=False, sharex=True)
    colors = _backend_colors(scaling["backend"].unique() if recorded else [])
    for i, shape in enumerate(shapes):
        for j, m in enumerate(ms):
            ax = axes[i, j]
            if recorded:
                _parallel_panel(ax, scaling[(scaling["shape"] == shape) & (scaling["m"] == m)], colors)
            else:
                f = src[(src["shape"] == shape) & (src["m"] == m)]
                for par, g in f.groupby("parallel"):
                    g = g.sort_values("world")
                    ax.plot(g["world"], g["floor_gpu_us"], "k" + _PARALLEL_STYLE[par], lw=1.5,
                            label=f"{par.upper()} floor, experts only")
                ax.text(0.5, 0.5, "no multi-GPU run\nrecorded yet", transform=ax.transAxes, ha="center",
                        va="center", fontsize=10, color="tab:red", alpha=0.8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks([1, 2, 4, 8])
            ax.set_xticklabels(["1", "2", "4", "8"])
            ax.set_title(f"{shape}, M={m}", fontsize=9)
            ax.grid(True, which="major", alpha=0.3)
            if j == 0:
                ax.set_ylabel("us per MoE layer")
            if i == len(shapes) - 1:
                ax.set_xlabel("GPUs per layer")
    legend = {}  # every panel's lines, once per label (a backend may be missing from some panels)
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    if legend:
        fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=min(len(legend), 5), fontsize=8)
    what = ("MoE layer latency vs GPUs (solid TP, dashed EP): whole layer incl. the all-reduce" if recorded else
            "No multi-GPU run recorded yet: per-GPU part of the floor only (solid TP, dashed EP)")
    fig.suptitle(f"{what}\n{label}", fontsize=11)
    fig.tight_layout(rect=(0, 0.12 if recorded else 0.06, 1, 1))
    return fig


def _parallel_panel(ax, d: pd.DataFrame, colors) -> None:
    for (b, par), g in d.groupby(["backend", "parallel"]):
        g = g.sort_values("world")
        ax.plot(g["world"], g["layer_us"], _PARALLEL_STYLE[par], marker="o", ms=3, color=colors[b],
                label=f"{b} {par.upper()}")
    for par, g in d.groupby("parallel"):
        g = g.groupby("world", as_index=False)[["roofline_us", "allreduce_us"]].median().sort_values("world")
        ax.plot(g["world"], g["roofline_us"], "k" + _PARALLEL_STYLE[par], lw=1.2, label=f"roofline {par.upper()}")
        g = g[g["world"] > 1]
        ax.plot(g["world"], g["allreduce_us"], ":", color="gray", marker="x", ms=3, label="all-reduce alone")


def plot_parallel_allreduce_share(best: pd.DataFrame, *, label: str = "", figsize=(12, 4)) -> plt.Figure:
    """The all-reduce's share of the fastest backend's layer (``allreduce_us / layer_us``) vs M, one panel per
    shape, a line per (TP / EP, GPUs). ``best``: :func:`mxfp4lab.studies.latency_parallel.parallel_best`."""
    d = best[best["world"] > 1] if len(best) else best
    shapes = list(dict.fromkeys(d["shape"])) or ["(none)"]
    fig, axes = plt.subplots(1, len(shapes), figsize=figsize, squeeze=False)
    worlds = sorted(set(d["world"])) if len(d) else []
    pal = dict(zip(worlds, sns.color_palette("viridis", max(len(worlds), 1))))
    for ax, shape in zip(axes[0], shapes):
        for (par, w), g in (d[d["shape"] == shape].groupby(["parallel", "world"]) if len(d) else []):
            g = g.sort_values("m")
            ax.plot(g["m"], 100 * g["allreduce_share"], _PARALLEL_STYLE[par], marker="o", ms=3, color=pal[w],
                    label=f"{par.upper()}={w}")
        if not len(d):
            ax.text(0.5, 0.5, "no multi-GPU run recorded yet", transform=ax.transAxes, ha="center", va="center",
                    color="tab:red")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tokens M")
        ax.set_ylabel("all-reduce share of the layer (%)")
        ax.set_title(shape, fontsize=10)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"All-reduce share of the fastest backend's layer (solid TP, dashed EP)\n{label}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_launches(launches: pd.DataFrame, *, label: str = "", figsize=(13, 2.2)) -> plt.Figure:
    """One forward's launches on the GPU timeline (a CUDA-graph replay), one panel per (backend, shape, M):
    a bar per launch from its start to its end, labelled with ncu's serialised duration, DRAM bytes and
    bandwidth where recorded. Overlapping bars are programmatic dependent launch: a kernel starts early,
    does its routing and waits for its predecessor's output. Each panel's title names its run (a merged file's
    rows come from several); ``label`` (where and when each run was recorded) is written once, under the panels."""
    keys = list(dict.fromkeys(zip(launches["backend"], launches["shape"], launches["m"])))
    fig, axes = plt.subplots(len(keys), 1, figsize=(figsize[0], figsize[1] * max(1, len(keys))), squeeze=False)
    for ax, (b, s, m) in zip(axes[:, 0], keys):
        d = launches[(launches["backend"] == b) & (launches["shape"] == s) & (launches["m"] == m)]
        run = d["run"].iloc[0] if "run" in d and pd.notna(d["run"].iloc[0]) else None
        for _, r in d.iterrows():
            ax.barh(r["launch"], r["end_us"] - r["start_us"], left=r["start_us"], color=sns.color_palette("deep")[r["launch"] % 10])
            name = r["kernel"].split("(")[0].split("::")[-1][:40]
            extra = ""
            if pd.notna(r.get("ncu_us", np.nan)):
                extra = f"  ncu {r['ncu_us']:.1f} us, {r['dram_read_MB']:.1f} MB, {r['dram_read_GBps'] / 1e3:.2f} TB/s"
                if not r.get("ncu_same_kernel", True):
                    extra += f" (ncu ran {r['ncu_kernel'].split('(')[0].replace('void ', '')})"
            ax.text(r["start_us"], r["launch"], f" {name}{extra}", va="center", fontsize=9)
        ax.set_yticks([])
        ax.invert_yaxis()
        ax.set_xlabel("us from the first kernel's start")
        ax.set_title(f"{b}, {s}, M = {m}: span {d['end_us'].max():.1f} us" + (f"  (run {run})" if run else ""),
                     fontsize=11)
    if label:
        fig.text(0.01, 0.0, textwrap.fill(label, 180), fontsize=8, va="top", ha="left")
    fig.tight_layout()
    return fig
