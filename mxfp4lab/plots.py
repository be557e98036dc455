"""Figures (seaborn/matplotlib) from the tidy DataFrames of :mod:`mxfp4lab.experiments`.

Every function takes data (a DataFrame or a trace dict), returns the :class:`matplotlib.figure.Figure`
it drew (or draws into given axes), and computes nothing beyond reshaping for display. One section
per notebook; new sections go at the END of this file.

* Layout (notebook 01, widgets): :func:`plot_tile_destinations`, :func:`plot_bit_permutation`,
  :func:`plot_scale_fold`, :func:`plot_element_path`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Rectangle

from .experiments import ACCURACY_DISTS, ACCURACY_RULES

# ============================================================================================
# Shared helpers
# ============================================================================================
#: One color per lane-word source byte A, B, C, D (also used for code bits m0, e0, e1, s).
LANE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
HIGHLIGHT = "#d62728"


def _grid(df: pd.DataFrame, index: str, columns: str, values: str) -> pd.DataFrame:
    return df.pivot(index=index, columns=columns, values=values).sort_index().sort_index(axis=1)


def _outline(ax, x: float, y: float, w: float = 1, h: float = 1, color: str = HIGHLIGHT, lw: float = 2.5, **kw):
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=lw, **kw))


# ============================================================================================
# Layout: SM90 weight interleave and scale fold
# ============================================================================================
def plot_tile_destinations(tile: pd.DataFrame, *, figsize=(13, 10)) -> plt.Figure:
    """Three heatmaps over one 16x64 tile of logical elements (from ``layout_tile_map``).

    (a) the destination row inside the tile, (b) the destination 32-bit word inside the 32-byte tile
    row, (c) the lane-word source byte (A..D) each element travels in.
    """
    fig, axes = plt.subplots(3, 1, figsize=figsize, constrained_layout=True)
    panels = [
        ("dst_tile_row", "(a) destination row in tile (0..15): rows r and r+8 swap in byte groups", "viridis", None),
        ("dst_word", "(b) destination 32-bit word in the tile row (0..7)", "tab10", None),
        ("word_byte", "(c) lane-word source byte j: A=(r,c)  B=(r+8,c)  C=(r,c+4)  D=(r+8,c+4)", None, LANE_COLORS),
    ]
    for ax, (col, title, cmap, colors) in zip(axes, panels):
        g = _grid(tile, "tile_row", "tile_k", col)
        sns.heatmap(
            g, ax=ax, cmap=list(colors) if colors else cmap, cbar=True, linewidths=0.2, linecolor="white",
            xticklabels=8, yticklabels=2,
            cbar_kws={"ticks": [0.375, 1.125, 1.875, 2.625]} if colors else None,
        )
        if colors:
            ax.collections[0].colorbar.set_ticklabels(["A", "B", "C", "D"])
        ax.set_title(title, loc="left", fontsize=11)
        ax.set_xlabel("logical k in tile (FP4 element; byte = k // 2)")
        ax.set_ylabel("logical row in tile")
        ax.axhline(8, color="black", lw=1.5)
        for x in range(8, 64, 8):
            ax.axvline(x, color="black", lw=0.6, alpha=0.5)
    fig.suptitle("SM90 FP4 interleave: where each element of a 16x64 tile goes", fontsize=13)
    return fig


def plot_bit_permutation(perm: pd.DataFrame, *, figsize=(15, 9)) -> plt.Figure:
    """The 32-bit lane-word permutation (from ``layout_bit_permutation``): arrows source bit -> dest
    bit (top) and the 32x32 permutation matrix (bottom), colored by source byte A..D."""
    fig = plt.figure(figsize=figsize, constrained_layout=True)
    gs = fig.add_gridspec(2, 2, height_ratios=[1.0, 1.25], width_ratios=[1.6, 1])
    ax = fig.add_subplot(gs[0, :])
    y_src, y_dst = 1.0, 0.0
    for _, r in perm.iterrows():
        c = LANE_COLORS[r.word_byte]
        xs, xd = 31 - r.src_bit, 31 - r.dst_bit  # bit 31 on the left, as in a register diagram
        ax.annotate("", xy=(xd, y_dst + 0.12), xytext=(xs, y_src - 0.12),
                    arrowprops=dict(arrowstyle="->", color=c, lw=1.3, alpha=0.85))
        ax.add_patch(Rectangle((xs - 0.45, y_src - 0.1), 0.9, 0.32, color=c, alpha=0.25))
        ax.text(xs, y_src + 0.06, r.label, ha="center", va="center", fontsize=7, rotation=90)
        ax.add_patch(Rectangle((xd - 0.45, y_dst - 0.22), 0.9, 0.32, color=c, alpha=0.25))
        ax.text(xd, y_dst - 0.06, r.label, ha="center", va="center", fontsize=7, rotation=90)
    for x in range(32):
        ax.text(x, y_src + 0.33, str(31 - x), ha="center", fontsize=6, color="gray")
        ax.text(x, y_dst - 0.38, str(31 - x), ha="center", fontsize=6, color="gray")
    for x in (7.5, 15.5, 23.5):
        ax.axvline(x, color="gray", lw=0.8, ls=":")
    ax.set_xlim(-0.8, 31.8)
    ax.set_ylim(-0.55, 1.5)
    ax.set_yticks([y_dst, y_src], ["destination\nword", "source\nword"])
    ax.set_xticks([])
    ax.set_title("(a) one lane word: bit i of the source (bytes A B C D, little-endian) -> its SM90 bit. "
                 "Label Xn.b = byte X, nibble n (element 2i+n), code bit b (m0 e0 e1 s)",
                 loc="left", fontsize=10)
    for sp in ("top", "right", "left", "bottom"):
        ax.spines[sp].set_visible(False)

    ax2 = fig.add_subplot(gs[1, 0])
    mat = np.full((32, 32), np.nan)
    for _, r in perm.iterrows():
        mat[r.src_bit, r.dst_bit] = r.word_byte
    sns.heatmap(mat, ax=ax2, cmap=list(LANE_COLORS), vmin=-0.5, vmax=3.5, cbar=False, linewidths=0.3,
                linecolor="#eeeeee", square=True, xticklabels=4, yticklabels=4)
    ax2.set_xlabel("destination bit")
    ax2.set_ylabel("source word bit (8 j + 4 nibble + code bit)")
    ax2.set_title("(b) 32x32 permutation matrix", loc="left", fontsize=10)

    ax3 = fig.add_subplot(gs[1, 1])
    ax3.axis("off")
    y = 1.0
    ax3.text(0, y, "Source bytes of one lane word\n(tile row r in 0..7, byte c = 8m + l):", va="top",
             family="monospace", fontsize=9.5)
    for j, name in enumerate(("A", "B", "C", "D")):
        y = 0.86 - 0.06 * j
        ax3.text(0.02, y, f"{name} = (row r{'+8' if j % 2 else '  '}, byte c{'+4' if j // 2 else '  '})",
                 va="top", family="monospace", fontsize=9.5, color=LANE_COLORS[j], weight="bold")
    notes = ["Low nibbles -> low half-word, high -> high.", "Per half-word (n = 0 / 1):",
             "  magnitudes of C, B, A -> bits 0-2, 3-5, 6-8", "  signs of C, B, A     -> bits 9, 12, 15",
             "  D: m0 -> 13, e0 e1 -> 10 11, s -> 14", "",
             "The word is then stored little-endian at", "row r + 8 (m % 2), bytes 16 (m // 2) + 4 l .. +3."]
    ax3.text(0, 0.58, "\n".join(notes), va="top", family="monospace", fontsize=9.5)
    fig.suptitle("SM90 FP4 interleave: the bit permutation inside one 32-bit word", fontsize=13)
    return fig


def plot_scale_fold(fold: pd.DataFrame, *, figsize=(14, 12)) -> plt.Figure:
    """The 64x128 scale fold (from ``layout_scale_fold`` with 64 rows x 4 groups): logical [64, 4]
    scales (left, labelled with their folded (row, column)) -> folded 16x16 bytes (right, labelled
    with the logical row.group they hold); color = 16-row slice."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=figsize, gridspec_kw={"width_ratios": [1, 2.6]},
                                 constrained_layout=True)
    blk = fold[(fold.block == 0) & (fold.k128 == 0)]
    pal = sns.color_palette("Set2", 4)
    cmap = list(pal)
    g1 = _grid(blk, "row", "group", "slice")
    ann1 = blk.assign(t=lambda d: d.frow.astype(str) + "," + d.col.astype(str)).pivot(
        index="row", columns="group", values="t").sort_index()
    sns.heatmap(g1, ax=a1, cmap=cmap, cbar=False, annot=ann1.values, fmt="", annot_kws={"fontsize": 7},
                linewidths=0.3, linecolor="white", yticklabels=4)
    a1.set_title("(a) logical scales s[row, group]\n64 rows x 4 groups (= 128 K); label: folded row,col",
                 loc="left", fontsize=10)
    a1.set_xlabel("K-group in the 128-K block (32 elements each)")
    a1.set_ylabel("row in the 64-row block")
    g2 = _grid(blk, "frow", "col", "slice")
    ann2 = blk.assign(t=lambda d: d.row.astype(str) + "." + d.group_in_k128.astype(str)).pivot(
        index="frow", columns="col", values="t").sort_index()
    sns.heatmap(g2, ax=a2, cmap=cmap, cbar=False, annot=ann2.values, fmt="", annot_kws={"fontsize": 7},
                linewidths=0.3, linecolor="white", square=True)
    for x in (4, 8, 12):
        a2.axvline(x, color="black", lw=1.2)
    a2.set_title("(b) folded block [16 rows x 16 bytes]: label = logical row.group\n"
                 "folded row f holds rows f, f+16, f+32, f+48 (4 groups each): one 16-byte load",
                 loc="left", fontsize=10)
    a2.set_xlabel("byte in folded row = 4 * slice + group")
    a2.set_ylabel("folded row f")
    handles = [Rectangle((0, 0), 1, 1, color=pal[s]) for s in range(4)]
    a2.legend(handles, [f"slice {s}: rows {16 * s}..{16 * s + 15}" for s in range(4)],
              loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    fig.suptitle("SM90 scale fold: one 64-row x 128-K block of E8M0 scales -> [16, 16] bytes", fontsize=13)
    return fig


def plot_element_path(trace: Dict[str, Any], *, reverse: Optional[Dict[str, Any]] = None,
                      fig: Optional[plt.Figure] = None, figsize=(14, 9)) -> plt.Figure:
    """Highlight one element's path (a ``layout_trace`` dict).

    Panels: (a) its cell in the logical 16x64 tile, with the 4 source bytes A-D of its lane word;
    (b) the interleaved 16x32-byte tile with the destination bytes; (c) the destination 32-bit word
    bit by bit, with the element's 4 code bits (m0 e0 e1 s) colored; (d) its scale in the logical
    64x4 block and (e) in the folded 16x16 block.

    ``reverse`` (``layout_reverse`` output plus the queried ``dst_row, dst_byte, dst_bit``) adds a
    magenta dashed box at that physical bit when it lies in the shown tile.
    """
    if fig is None:
        fig = plt.figure(figsize=figsize)
    fig.clf()
    gs = fig.add_gridspec(3, 3, width_ratios=[2.2, 0.55, 0.9], height_ratios=[1, 1, 0.42],
                          hspace=0.7, wspace=0.3)
    a_src, a_dst, a_w = (fig.add_subplot(gs[i, 0]) for i in range(3))
    a_s = fig.add_subplot(gs[:, 1])
    a_f = fig.add_subplot(gs[0:2, 2])
    row, k = trace["row"], trace["k"]
    t0, k0 = (row // 16) * 16, (k // 64) * 64
    lane = trace["lane"]

    # (a) logical tile, cells shaded by the lane byte (A..D) they travel in
    rr, kk = np.meshgrid(np.arange(16), np.arange(64), indexing="ij")
    jgrid = 2 * (((kk // 2) % 8) // 4) + rr // 8
    sns.heatmap(jgrid, ax=a_src, cmap=list(LANE_COLORS), cbar=False, alpha=0.22, xticklabels=8, yticklabels=4)
    c_base = (k % 64) // 2 - 4 * lane["c4"]  # the lane's byte c; its bytes are c and c+4
    for j in range(4):
        _outline(a_src, 2 * (c_base + 4 * (j // 2)), lane["r"] + 8 * (j % 2), w=2, color=LANE_COLORS[j], lw=2)
        a_src.text(2 * (c_base + 4 * (j // 2)) - 0.4, lane["r"] + 8 * (j % 2) + 0.5, "ABCD"[j],
                   ha="right", va="center", fontsize=8, color=LANE_COLORS[j], weight="bold")
    _outline(a_src, k - k0, row - t0, color="black", lw=3)
    a_src.set_title(f"(a) logical tile rows {t0}..{t0 + 15}, k {k0}..{k0 + 63}: element (row {row}, k {k}) "
                    f"in black;\n     colored boxes: the 4 source bytes (A B C D) of its lane word", loc="left", fontsize=9)
    a_src.set_xlabel("k in tile")
    a_src.set_ylabel("row in tile")

    # (b) interleaved tile (16 rows x 32 bytes)
    sns.heatmap(np.zeros((16, 32)), ax=a_dst, cmap=["#f4f4f4"], cbar=False, linewidths=0.3, linecolor="white",
                xticklabels=4, yticklabels=4)
    dr = trace["dst_row"] - t0
    for b in range(4):
        a_dst.add_patch(Rectangle((trace["dst_byte"][b] % 32, dr), 1, 1, color=LANE_COLORS[b], alpha=0.5))
    word0 = (trace["dst_byte"][0] % 32) // 4 * 4
    _outline(a_dst, word0, dr, w=4, color="black", lw=2)
    for x in range(4, 32, 4):
        a_dst.axvline(x, color="gray", lw=0.6)
    rev_in_tile = reverse is not None and reverse["dst_row"] // 16 * 16 == t0 and \
        reverse["dst_byte"] // 32 == trace["dst_byte"][0] // 32
    if rev_in_tile:
        _outline(a_dst, reverse["dst_byte"] % 32, reverse["dst_row"] - t0, color="magenta", lw=2, ls="--")
    a_dst.set_title(f"(b) interleaved tile: row {trace['dst_row']}, byte(s) {sorted(set(trace['dst_byte']))} "
                    f"(black box: its 32-bit word)", loc="left", fontsize=9)
    a_dst.set_xlabel("byte in tile row (gray lines: 32-bit words)")
    a_dst.set_ylabel("row in tile")

    # (c) the destination word, bit 31 on the left
    a_w.set_xlim(-0.5, 31.5)
    a_w.set_ylim(0, 1)
    for x in range(32):
        a_w.add_patch(Rectangle((x - 0.45, 0.15), 0.9, 0.6, color="#eeeeee"))
        a_w.text(x, 0.02, str(31 - x), ha="center", fontsize=6, color="gray")
    for b, name in enumerate(("m0", "e0", "e1", "s")):
        x = 31 - trace["dst_word_bit"][b]
        a_w.add_patch(Rectangle((x - 0.45, 0.15), 0.9, 0.6, color=LANE_COLORS[b]))
        a_w.text(x, 0.45, name, ha="center", va="center", fontsize=7, color="white", weight="bold")
    if rev_in_tile and reverse["dst_row"] == trace["dst_row"] and reverse["dst_byte"] // 4 == trace["dst_byte"][0] // 4:
        x = 31 - (8 * (reverse["dst_byte"] % 4) + reverse["dst_bit"])
        _outline(a_w, x - 0.45, 0.15, w=0.9, h=0.6, color="magenta", lw=2, ls="--")
    for x in (7.5, 15.5, 23.5):
        a_w.axvline(x, color="gray", lw=0.8, ls=":")
    a_w.axis("off")
    a_w.set_title(f"(c) that word, bits 31..0: code bits m0 e0 e1 s -> bits {trace['dst_word_bit']}\n"
                  f"     (from source word bits {trace['src_word_bit']})", loc="left", fontsize=9)

    # (d, e) scales
    sc, sf = trace["scale"], trace["scale_fold"]
    pal = list(sns.color_palette("Set2", 4))
    sns.heatmap(np.repeat(np.arange(64)[:, None] // 16, 4, axis=1), ax=a_s, cmap=pal, cbar=False, alpha=0.5,
                yticklabels=8)
    _outline(a_s, sc["group"] % 4, sc["row"] % 64, color="black", lw=2.5)
    a_s.set_title(f"(d) scale s[{sc['row']}, {sc['group']}]\n64x4 block", fontsize=9)
    a_s.set_xlabel("group")
    sns.heatmap(np.tile(np.arange(16)[None, :] // 4, (16, 1)), ax=a_f, cmap=pal, cbar=False, alpha=0.5,
                square=True, xticklabels=4, yticklabels=4)
    _outline(a_f, sf["col"], sf["frow"], color="black", lw=2.5)
    a_f.set_title(f"(e) folded block [{sf['block']}, {sf['k128']}]\nrow {sf['frow']}, col {sf['col']}", fontsize=9)
    head = f"expert {trace['expert']}: "
    if trace.get("ckpt_row") is not None:
        pre = trace.get("pre") or {}
        half = f" ({pre['half']})" if pre.get("half") else ""
        head += f"checkpoint row {trace['ckpt_row']}{half} -> "
    fig.suptitle(head + f"fc1 row {row}, k {k}  ->  SM90 row {trace['dst_row']}, byte(s) "
                 f"{sorted(set(trace['dst_byte']))};  scale -> folded [{sf['block']}, {sf['k128']}, "
                 f"{sf['frow']}, {sf['col']}]", fontsize=11)
    return fig


def close_all(figs: Sequence[plt.Figure] = ()) -> None:
    """Close the given figures (all when empty) -- keeps long notebook/report runs lean."""
    if figs:
        for f in figs:
            plt.close(f)
    else:
        plt.close("all")


# ============================================================================================
# Accuracy: MXFP4 error vs the bf16 origin (notebook 02)
# ============================================================================================
RULE_ORDER, DIST_ORDER = ACCURACY_RULES, ACCURACY_DISTS


def _order(values, preferred) -> list:
    vals = list(dict.fromkeys(values))
    return [v for v in preferred if v in vals] + [v for v in vals if v not in preferred]


def plot_accuracy_heatmap(quant: pd.DataFrame, *, figsize=(14, 4.2)) -> plt.Figure:
    """Rule x distribution heatmaps of :func:`mxfp4lab.experiments.accuracy_quantization` (mean over
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
    backends (log scale; 'exact' = bit-identical)."""
    model = ", ".join(layer["model"].unique())
    fig, (a, b) = plt.subplots(1, 2, figsize=figsize, gridspec_kw=dict(width_ratios=[1.2, 1]))
    d = layer[(layer["path"] == "mxfp4 kernel") & (layer["reference"] == "origin fp32")].copy()
    d["case"] = d["dist"] + np.where(d["clamp"], "", " (no clamp)")
    sns.barplot(data=d, x="rule", y="rel_err", hue="case", ax=a, order=_order(d["rule"], RULE_ORDER))
    a.set_title("MXFP4 layer (kernel rounding) vs bf16 origin fp32", fontsize=10)
    a.set_ylabel("relative error of the layer output")
    a.legend(fontsize=8, title="distribution")
    small = layer[~((layer["reference"] == "origin fp32") & (layer["path"] != "origin kernel"))].copy()
    small["comparison"] = small["path"] + "\nvs " + small["reference"]
    agg = small.groupby(["comparison", "rule"], as_index=False)["rel_err"].max()
    floor = 1e-7
    agg["shown"] = agg["rel_err"].clip(lower=floor)
    hue_order = _order(agg["rule"], ("bf16",) + RULE_ORDER)
    comps = list(dict.fromkeys(agg["comparison"]))
    width = 0.8 / len(hue_order)
    pal = sns.color_palette()
    labeled = set()
    for j, rule in enumerate(hue_order):
        for i, comp in enumerate(comps):
            v = agg[(agg["comparison"] == comp) & (agg["rule"] == rule)]
            if v.empty:
                continue
            x = i - 0.4 + width * (j + 0.5)
            b.bar(x, v["shown"].iloc[0], width, color=pal[j], label=None if rule in labeled else rule)
            labeled.add(rule)
            val = v["rel_err"].iloc[0]
            b.text(x, v["shown"].iloc[0] * 1.3, "exact" if val == 0 else f"{val:.1e}", ha="center", va="bottom",
                   fontsize=7, rotation=90)
    b.set_xticks(range(len(comps)), comps)
    b.set_yscale("log")
    b.set_ylim(floor / 2, 1)
    b.set_title("rounding / layout differences (max over distributions, clamp)", fontsize=10)
    b.set_ylabel("relative error (log)")
    b.set_xlabel("")
    b.tick_params(axis="x", labelsize=8)
    b.legend(fontsize=8, title="rule")
    fig.suptitle(f"MoE layer output error ({model})", fontsize=11)
    fig.tight_layout()
    return fig


def plot_accuracy_depth(depth: pd.DataFrame, *, figsize=(15, 4.5)) -> plt.Figure:
    """Error of the hidden state vs depth (left), each layer's own output error (middle) and routing
    agreement with the truth path (right), one line per path."""
    d = depth[depth["path"] != "origin fp32"]
    fig, axes = plt.subplots(1, 3, figsize=figsize)
    for ax, (col, title) in zip(axes, (("rel_err_hidden", "hidden state vs truth"),
                                        ("rel_err_out", "this layer's MoE output vs truth"),
                                        ("routing_agreement", "tokens routed like the truth path"))):
        sns.lineplot(data=d, x="layer", y=col, hue="path", style="model" if d["model"].nunique() > 1 else None,
                     marker="o", ax=ax, legend=ax is axes[0])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer")
    axes[0].set_ylabel("relative error")
    axes[1].set_ylabel("relative error")
    axes[2].set_ylabel("fraction of tokens")
    axes[2].set_ylim(-0.02, 1.02)
    if axes[0].get_legend():
        axes[0].legend(fontsize=8)
    fig.suptitle(f"Error through a stack of MoE layers (truth: bf16 origin, fp32; "
                 f"{', '.join(depth['model'].unique())}, {', '.join(depth['dist'].unique())})", fontsize=11)
    fig.tight_layout()
    return fig


# ============================================================================================
# Latency: tokens M vs backend, roofline (notebook 03)
# ============================================================================================
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
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=pal[i], label=b) for b, i in code.items()], bbox_to_anchor=(1.01, 1),
              loc="upper left", fontsize=8, title="fastest")
    ax.set_xlabel("tokens M (annotation: runner-up time / fastest time)")
    ax.set_ylabel("")
    fig.suptitle(f"Dispatch table: fastest recorded backend ({routing} routing)\n{label}", fontsize=11)
    fig.tight_layout()
    return fig
