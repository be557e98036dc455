"""Figures of the accuracy study (seaborn/matplotlib) from the DataFrames of :mod:`.accuracy`; each returns
the :class:`matplotlib.figure.Figure` it drew and computes nothing beyond reshaping for display."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .accuracy import ACCURACY_DISTS, ACCURACY_RULES

RULE_ORDER, DIST_ORDER = ACCURACY_RULES, ACCURACY_DISTS


def _order(values, preferred) -> list:
    vals = list(dict.fromkeys(values))
    return [v for v in preferred if v in vals] + [v for v in vals if v not in preferred]


def plot_accuracy_heatmap(quant: pd.DataFrame, *, figsize=(14, 4.2)) -> plt.Figure:
    """Rule x distribution heatmaps of :func:`mxfp4lab.studies.accuracy.accuracy_quantization` (mean over
    models and matrices): relative error, SQNR and the fraction of saturated elements."""
    rules, dists = _order(quant["rule"], RULE_ORDER), _order(quant["dist"], DIST_ORDER)
    fig, axes = plt.subplots(1, 3, figsize=figsize)
    for ax, (col, title, fmt, cmap) in zip(axes, (
            ("rel_err", "relative error ||W_q - W|| / ||W||", ".4f", "rocket_r"),
            ("sqnr_db", "SQNR (dB)", ".2f", "mako"),
            ("clipped_frac", "saturated elements (|x/s| > 6)", ".2%", "rocket_r"))):
        grid = quant.pivot_table(index="rule", columns="dist", values=col, aggfunc="mean").reindex(index=rules,
                                                                                                   columns=dists)
        sns.heatmap(grid, annot=True, fmt=fmt, cmap=cmap, ax=ax, cbar=False, linewidths=0.5)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel("scale rule" if ax is axes[0] else "")
        ax.tick_params(axis="x", rotation=15)
    models = ", ".join(sorted(quant["model"].unique()))
    shapes = ", ".join(sorted({f"{r}x{k}" for r, k in zip(quant["rows"], quant["K"])}))
    fig.suptitle(f"MXFP4 weight error vs the bf16 origin ({models}; one expert, matrices rows x K: {shapes})",
                 fontsize=11)
    fig.tight_layout()
    return fig


def plot_accuracy_block_errors(blocks: pd.DataFrame, *, figsize=(15, 4.2)) -> plt.Figure:
    """Per-block worst error in units of the block scale, per distribution; dashed lines: the bounds
    1 (half the 4->6 gap: round_up, flashinfer) and 2 (ocp, which can also clip [6, 8) to 6)."""
    dists, rules = _order(blocks["dist"], DIST_ORDER), _order(blocks["rule"], RULE_ORDER)
    fig, axes = plt.subplots(1, len(dists), figsize=figsize, sharey=True, squeeze=False)
    bins = np.linspace(0, 2.05, 42)
    for ax, dist in zip(axes[0], dists):
        d = blocks[blocks["dist"] == dist]
        for i, rule in enumerate(rules):
            v = d.loc[d["rule"] == rule, "max_err_over_scale"]
            ax.hist(v, bins=bins, histtype="step", lw=2, label=rule, color=sns.color_palette()[i])
        for b, txt in ((1.0, "bound 1"), (2.0, "ocp bound 2")):
            ax.axvline(b, color="gray", ls="--", lw=1)
            ax.text(b, 0.97, txt, transform=ax.get_xaxis_transform(), ha="right", va="top", fontsize=8, rotation=90)
        ax.set_yscale("log")
        ax.set_title(dist, fontsize=10)
        ax.set_xlabel("max |error| in block / block scale")
    axes[0][0].set_ylabel("blocks")
    axes[0][-1].legend(title="scale rule")
    fig.suptitle("Worst element error per 32-element block (ocp's tail above 1: saturated block maxima; "
                 "round_up and flashinfer nearly coincide)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_accuracy_k_sweep(ksweep: pd.DataFrame, *, figsize=(13, 4.2)) -> plt.Figure:
    """Weight and GEMM relative error vs K (log x), one line per rule, style per distribution."""
    fig, axes = plt.subplots(1, 2, figsize=figsize, sharey=True)
    kw = dict(hue="rule", hue_order=_order(ksweep["rule"], RULE_ORDER), style="dist", markers=True)
    sns.lineplot(data=ksweep, x="K", y="rel_err", ax=axes[0], legend=False, **kw)
    sns.lineplot(data=ksweep, x="K", y="gemm_rel_err", ax=axes[1], **kw)
    axes[1].legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    for ax, t in zip(axes, ("weights vs origin", "GEMM x @ W.T vs origin (bf16 x, fp32 accumulate)")):
        ax.set_xscale("log", base=2)
        ax.set_title(t, fontsize=10)
        ax.set_ylabel("relative error")
    fig.suptitle("Error vs reduction length K", fontsize=11)
    fig.tight_layout()
    return fig


def plot_accuracy_layer(layer: pd.DataFrame, *, figsize=(15, 4.8)) -> plt.Figure:
    """Left: MoE layer output error vs the bf16-origin fp32 reference (kernel-faithful MXFP4 path) per
    rule and distribution, clamp on/off. Right: the small differences between references and
    backends (log scale); a bit-identical comparison draws no bar but an "exact" mark on the axis.
    Legends sit beside the axes, never on the bars."""
    model = ", ".join(layer["model"].unique())
    fig, (a, b) = plt.subplots(1, 2, figsize=figsize, gridspec_kw=dict(width_ratios=[1.1, 1]))
    d = layer[(layer["path"] == "mxfp4 kernel") & (layer["reference"] == "origin fp32")].copy()
    d["case"] = d["dist"] + np.where(d["clamp"], "", " (no clamp)")
    sns.barplot(data=d, x="rule", y="rel_err", hue="case", ax=a, order=_order(d["rule"], RULE_ORDER))
    a.set_title("MXFP4 layer (kernel rounding) vs bf16 origin fp32", fontsize=10)
    a.set_ylabel("relative error of the layer output")
    a.legend(fontsize=8, title="distribution", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    small = layer[~((layer["reference"] == "origin fp32") & (layer["path"] != "origin kernel"))].copy()
    small["comparison"] = small["path"] + "\nvs " + small["reference"]
    agg = small.groupby(["comparison", "rule"], as_index=False)["rel_err"].max()
    hue_order = _order(agg["rule"], ("bf16",) + RULE_ORDER)
    comps = list(dict.fromkeys(agg["comparison"]))
    width = 0.8 / len(hue_order)
    pal = sns.color_palette()
    nonzero = agg.loc[agg["rel_err"] > 0, "rel_err"]
    bottom = 10 ** np.floor(np.log10(nonzero.min() / 10)) if len(nonzero) else 1e-6
    labeled = set()
    for j, rule in enumerate(hue_order):
        for i, comp in enumerate(comps):
            v = agg[(agg["comparison"] == comp) & (agg["rule"] == rule)]
            if v.empty:
                continue
            x = i - 0.4 + width * (j + 0.5)
            val = v["rel_err"].iloc[0]
            lab = None if rule in labeled else rule
            labeled.add(rule)
            if val == 0:  # bit-identical: nothing to draw on a log axis; say so at its foot
                b.plot([x], [bottom], marker="v", color=pal[j], ms=7, label=lab, clip_on=False)
                b.text(x, bottom * 1.6, "exact (0)", ha="center", va="bottom", fontsize=7, rotation=90)
                continue
            b.bar(x, val - bottom, width, bottom=bottom, color=pal[j], label=lab)
            b.text(x, val * 1.3, f"{val:.1e}", ha="center", va="bottom", fontsize=7, rotation=90)
    b.set_xticks(range(len(comps)), comps)
    b.set_yscale("log")
    b.set_ylim(bottom, 1)
    b.set_title("rounding / layout differences (max over distributions, clamp)", fontsize=10)
    b.set_ylabel("relative error (log)")
    b.set_xlabel("")
    b.tick_params(axis="x", labelsize=8)
    b.legend(fontsize=8, title="rule", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"MoE layer output error ({model})", fontsize=11)
    fig.tight_layout()
    return fig


def plot_accuracy_depth(depth: pd.DataFrame, *, figsize=(15, 4.5)) -> plt.Figure:
    """Error of the hidden state vs depth (left), each layer's own output error (middle) and routing
    agreement with the truth path (right), one line per path: the mean over seeds (and models), the band
    spans min..max over them. One legend beside the panels."""
    d = depth[depth["path"] != "origin fp32"]
    n_seeds = d["seed"].nunique() if "seed" in d else 1
    fig, axes = plt.subplots(1, 3, figsize=figsize)
    for ax, (col, title) in zip(axes, (("rel_err_hidden", "hidden state vs truth"),
                                        ("rel_err_out", "this layer's MoE output vs truth"),
                                        ("routing_agreement", "tokens routed like the truth path"))):
        sns.lineplot(data=d, x="layer", y=col, hue="path", marker="o", ax=ax, errorbar=("pi", 100),
                     estimator="mean", legend=ax is axes[-1])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer")
    axes[0].set_ylabel("relative error")
    axes[1].set_ylabel("relative error")
    axes[2].set_ylabel("fraction of tokens")
    axes[2].set_ylim(-0.02, 1.02)
    if axes[-1].get_legend():
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title="path")
    fig.suptitle(f"Error through a stack of MoE layers (truth: bf16 origin, fp32; "
                 f"{', '.join(depth['model'].unique())}, {', '.join(depth['dist'].unique())}; "
                 f"mean and min..max over {n_seeds} seed(s) x {depth['model'].nunique()} model(s))", fontsize=11)
    fig.tight_layout()
    return fig
