"""Figures of the latency study (seaborn/matplotlib) from the DataFrames of :mod:`.latency`; each returns
the :class:`matplotlib.figure.Figure` it drew and computes nothing beyond reshaping for display. Every
figure carries the label of where its numbers come from (GPU, date, commit)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Patch


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


def plot_latency_vs_m(df: pd.DataFrame, roof: pd.DataFrame, *, label: str = "", routing: str = "uniform",
                      figsize=(14, 9)) -> plt.Figure:
    """Measured median latency vs M (p10-p90 band) per backend, one panel per shape, with the roofline
    floor (black dashed; memory and compute parts dotted). With ``df`` empty: the floor only."""
    shapes = list(dict.fromkeys(list(roof["shape"]) + list(df.get("shape", pd.Series(dtype=str)).dropna())))
    d = df[(df.get("ok", False) == True) & (df["routing"].fillna("uniform") == routing)] if len(df) else df  # noqa: E712
    colors = _backend_colors(d["backend"].unique() if len(d) else [])
    fig, axes = _shape_axes(shapes, figsize)
    for ax, shape in zip(axes, shapes):
        r = roof[roof["shape"] == shape].sort_values("m")
        ax.plot(r["m"], r["floor_us"], "k--", lw=2, label="roofline floor")
        ax.plot(r["m"], r["memory_us"], ":", color="gray", lw=1, label="weight bytes / bandwidth")
        ax.plot(r["m"], r["compute_us"], ":", color="tab:brown", lw=1, label="FLOPs / peak")
        s = d[d["shape"] == shape] if len(d) else d
        for b, g in (s.groupby("backend") if len(s) else []):
            g = g.sort_values("m")
            ax.plot(g["m"], g["median_us"], "o-", color=colors[b], label=b, ms=4)
            if {"p10_us", "p90_us"} <= set(g.columns) and g["p10_us"].notna().all():
                ax.fill_between(g["m"], g["p10_us"], g["p90_us"], color=colors[b], alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(shape, fontsize=10)
        ax.set_xlabel("tokens M")
        ax.set_ylabel("latency per MoE layer (us)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    what = f"MoE layer latency vs M ({routing} routing)" if len(d) else "Roofline floor of one MoE layer on H100"
    fig.suptitle(f"{what}\n{label}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_latency_roofline_only(roof: pd.DataFrame, *, label: str = "", figsize=(14, 4.5)) -> plt.Figure:
    """Without measurements: expected active experts and arithmetic intensity vs M per shape (the two
    things that set the floor), with the H100 ridge point."""
    fig, (a, b) = plt.subplots(1, 2, figsize=figsize)
    for shape, g in roof.groupby("shape", sort=False):
        g = g.sort_values("m")
        a.plot(g["m"], g["active_experts"], "o-", label=shape, ms=4)
        b.plot(g["m"], g["flops"] / g["bytes"], "o-", label=shape, ms=4)
    ridge = (roof["compute_us"] / roof["flops"]).iloc[0]
    ridge_ai = 1.0 / (ridge * (roof["bytes"] / roof["memory_us"]).iloc[0])  # FLOP/s / (B/s) = FLOP per byte
    b.axhline(ridge_ai, color="k", ls="--", lw=1)
    b.text(roof["m"].min(), ridge_ai * 1.1, f"H100 ridge {ridge_ai:.0f} FLOP/B (compute-bound above)", fontsize=8)
    for ax in (a, b):
        ax.set_xscale("log", base=2)
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
    """Speedup over the baseline (``latency_speedups``) vs M per backend and shape; vertical lines at
    the crossover points."""
    s = sp[sp["routing"] == routing]
    shapes = list(dict.fromkeys(s["shape"]))
    baseline = s["baseline"].iloc[0] if len(s) else "?"
    colors = _backend_colors(s["backend"].unique())
    fig, axes = _shape_axes(shapes or ["(none)"], figsize)
    for ax, shape in zip(axes, shapes):
        for b, g in s[s["shape"] == shape].groupby("backend"):
            g = g.sort_values("m")
            ax.plot(g["m"], g["speedup"], "o-", color=colors[b], label=b, ms=4)
        ax.axhline(1.0, color="k", lw=1)
        if crossovers is not None and len(crossovers):
            c = crossovers[(crossovers["shape"] == shape) & (crossovers["routing"] == routing)]
            for _, row in c.dropna(subset=["crossover_m"]).iterrows():
                ax.axvline(row["crossover_m"], color="gray", ls="--", lw=1)
                ax.text(row["crossover_m"], 0.98, f" {row['a']} = {row['b']}\n M~{row['crossover_m']:.0f}",
                        transform=ax.get_xaxis_transform(), fontsize=7, va="top")
        ax.set_xscale("log", base=2)
        ax.set_title(shape, fontsize=10)
        ax.set_xlabel("tokens M")
        ax.set_ylabel(f"speedup over {baseline}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Speedup over {baseline} ({routing} routing)\n{label}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_latency_roofline_fraction(frac: pd.DataFrame, *, label: str = "", routing: str = "uniform",
                                   figsize=(14, 4.5)) -> plt.Figure:
    """Fraction of the roofline floor reached (floor / measured) and achieved weight bandwidth vs M."""
    d = frac[frac["routing"] == routing]
    fig, (a, b) = plt.subplots(1, 2, figsize=figsize)
    if len(d):
        sns.lineplot(data=d, x="m", y="fraction_of_roofline", hue="backend", style="shape", marker="o", ax=a)
        if "achieved_GBps" in d:
            sns.lineplot(data=d, x="m", y="achieved_GBps", hue="backend", style="shape", marker="o", ax=b,
                         legend=False)
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tokens M")
        ax.grid(True, alpha=0.3)
    a.axhline(1.0, color="k", ls="--", lw=1)
    a.set_ylabel("roofline floor / measured")
    b.set_ylabel("achieved GB/s (active weight bytes / time)")
    if a.get_legend():
        a.legend(fontsize=7, ncol=2)
    fig.suptitle(f"How close to the H100 roofline ({routing} routing)\n{label}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_latency_dispatch(table: pd.DataFrame, *, label: str = "", routing: str = "uniform",
                          figsize=(14, 3.5)) -> plt.Figure:
    """Fastest backend per (shape, M) as a colored grid, annotated with the margin over the runner-up."""
    t = table[table["routing"] == routing]
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


def plot_launches(launches: pd.DataFrame, *, label: str = "", figsize=(13, 3.2)) -> plt.Figure:
    """One forward's launches on the GPU timeline (a CUDA-graph replay), one panel per (backend, shape, M):
    a bar per launch from its start to its end, labelled with ncu's serialised duration, DRAM bytes and
    bandwidth where recorded. Overlapping bars are programmatic dependent launch: a kernel starts early,
    does its routing and waits for its predecessor's output."""
    keys = list(dict.fromkeys(zip(launches["backend"], launches["shape"], launches["m"])))
    fig, axes = plt.subplots(len(keys), 1, figsize=(figsize[0], figsize[1] * max(1, len(keys))), squeeze=False)
    for ax, (b, s, m) in zip(axes[:, 0], keys):
        d = launches[(launches["backend"] == b) & (launches["shape"] == s) & (launches["m"] == m)]
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
        ax.set_title(f"{b}, {s}, M = {m}: span {d['end_us'].max():.1f} us" + (f"  ({label})" if label else ""), fontsize=11)
    fig.tight_layout()
    return fig
