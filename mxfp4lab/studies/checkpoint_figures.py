"""Figures of the checkpoint study (:mod:`.checkpoint`): per-layer weight statistics and expert load."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

PROJS = ("gate", "up", "down")


def plot_layer_stats(stats: dict[str, Any], *, title: str = "", figsize=(15, 4.3)) -> plt.Figure:
    """(a) E8M0 scale exponent histogram, (b) FP4 value histogram, (c) per-expert Frobenius norms; one colour
    per projection (gate / up / down)."""
    fig, (a, b, c) = plt.subplots(1, 3, figsize=figsize)
    pal = dict(zip(PROJS, sns.color_palette("tab10", 3)))
    sh = stats["scale_hist"]
    for j, p in enumerate(PROJS):
        d = sh[sh["proj"] == p].sort_values("exp")
        a.bar(d["exp"] + (j - 1) * 0.27, d["count"] / d["count"].sum(), width=0.27, color=pal[p], label=p)
    a.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    a.set_xlabel("scale exponent (E8M0 byte - 127)")
    a.set_ylabel("fraction of blocks")
    a.set_title("(a) E8M0 scales", fontsize=10)
    ch = stats["code_hist"].copy()
    ch["fraction"] = ch["count"] / ch.groupby("proj")["count"].transform("sum")
    ch["label"] = [("-0" if c == 8 else "+0") if v == 0 else f"{v:+g}" for c, v in zip(ch["code"], ch["value"])]
    order = [lab for _, lab in sorted({(v if c != 8 else -1e-9, lab) for c, v, lab in
                                       zip(ch["code"], ch["value"], ch["label"])})]
    sns.barplot(data=ch, x="label", y="fraction", hue="proj", hue_order=list(PROJS), order=order, ax=b,
                palette=pal)
    b.set_xlabel("FP4 value (code)")
    b.set_ylabel("fraction of elements")
    b.set_title("(b) FP4 codes", fontsize=10)
    b.tick_params(axis="x", labelsize=7, rotation=90)
    b.legend(fontsize=8, title="proj")
    n = stats["norms"]
    for p in PROJS:
        d = n[n["proj"] == p]
        c.plot(d["expert"], d["norm"], "o", ms=3, color=pal[p], label=p)
    c.set_xlabel("expert")
    c.set_ylabel("||W|| (dequantized, Frobenius)")
    c.set_title("(c) per-expert norms", fontsize=10)
    a.legend(fontsize=8)
    fig.suptitle(title or f"Layer {stats['layer']}: MXFP4 weight statistics", fontsize=11)
    fig.tight_layout()
    return fig


def plot_routing_load(load: pd.DataFrame, *, title: str = "", figsize=(12, 4)) -> plt.Figure:
    """Tokens per expert, experts sorted from the busiest, for the real router beside uniform and skewed
    synthetic routing of as many tokens."""
    fig, ax = plt.subplots(figsize=figsize)
    for r, g in load.groupby("routing", sort=False):
        ax.step(g["rank"], g["tokens"], where="mid", label=r, lw=2 if r not in ("uniform", "skewed") else 1.2)
    ax.set_xlabel("expert rank (busiest first)")
    ax.set_ylabel("tokens routed to the expert")
    ax.legend(fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.suptitle(title or "Expert load", fontsize=11)
    fig.tight_layout()
    return fig
