"""Figures of the layout study (seaborn/matplotlib): each function takes data from :mod:`.layout` (a
DataFrame or a trace dict), returns the :class:`matplotlib.figure.Figure` it drew (or draws into given
axes), and computes nothing beyond reshaping for display.

:func:`plot_tile_destinations`, :func:`plot_bit_permutation`, :func:`plot_scale_fold`,
:func:`plot_element_path` (also the :mod:`mxfp4lab.widgets` explorer's canvas).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Patch, Rectangle

#: One color per lane-word source byte A, B, C, D (also used for code bits m0, e0, e1, s).
LANE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
HIGHLIGHT = "#d62728"


def _grid(df: pd.DataFrame, index: str, columns: str, values: str) -> pd.DataFrame:
    return df.pivot(index=index, columns=columns, values=values).sort_index().sort_index(axis=1)


def _outline(ax, x: float, y: float, w: float = 1, h: float = 1, color: str = HIGHLIGHT, lw: float = 2.5, **kw):
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=lw, **kw))


def plot_tile_destinations(tile: pd.DataFrame, *, figsize=(13, 10)) -> plt.Figure:
    """Three heatmaps over one 16x64 tile of logical elements (from ``layout_tile_map``).

    (a) the destination row inside the tile, (b) the destination 32-bit word inside the 32-byte tile
    row, (c) the lane-word source byte (A..D) each element travels in.
    """
    fig, axes = plt.subplots(3, 1, figsize=figsize, constrained_layout=True)
    panels = [  # (column, title, colours: one per value 0..n-1, tick labels)
        ("dst_tile_row", "(a) destination row in tile (0..15): rows r and r+8 swap in byte groups",
         sns.color_palette("viridis", 16), [str(i) for i in range(16)]),
        ("dst_word", "(b) destination 32-bit word in the tile row (0..7)", sns.color_palette("tab10", 8),
         [str(i) for i in range(8)]),
        ("word_byte", "(c) lane-word source byte j: A=(r,c)  B=(r+8,c)  C=(r,c+4)  D=(r+8,c+4)", list(LANE_COLORS),
         ["A", "B", "C", "D"]),
    ]
    for ax, (col, title, colors, names) in zip(axes, panels):
        g = _grid(tile, "tile_row", "tile_k", col)
        n = len(colors)  # a discrete colour bar: exactly one colour (and one tick) per value
        sns.heatmap(g, ax=ax, cmap=list(colors), vmin=-0.5, vmax=n - 0.5, cbar=True, linewidths=0.2,
                    linecolor="white", xticklabels=8, yticklabels=2, cbar_kws={"ticks": list(range(n))})
        ax.collections[0].colorbar.set_ticklabels(names)
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


#: Label size in the scale-fold panels: readable where the report shows the figure scaled to ~1100 px.
FOLD_LABEL_PT = (9, 11)


def plot_scale_fold(fold: pd.DataFrame, *, figsize=(13, 17)) -> plt.Figure:
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
    sns.heatmap(g1, ax=a1, cmap=cmap, cbar=False, annot=ann1.values, fmt="", annot_kws={"fontsize": FOLD_LABEL_PT[0]},
                linewidths=0.3, linecolor="white", yticklabels=4)
    a1.set_title("(a) logical scales s[row, group]\n64 rows x 4 groups (= 128 K); label: folded row,col",
                 loc="left", fontsize=10)
    a1.set_xlabel("K-group in the 128-K block (32 elements each)")
    a1.set_ylabel("row in the 64-row block")
    g2 = _grid(blk, "frow", "col", "slice")
    ann2 = blk.assign(t=lambda d: d.row.astype(str) + "." + d.group_in_k128.astype(str)).pivot(
        index="frow", columns="col", values="t").sort_index()
    sns.heatmap(g2, ax=a2, cmap=cmap, cbar=False, annot=ann2.values, fmt="", annot_kws={"fontsize": FOLD_LABEL_PT[1]},
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


def plot_decode_lanes(tile: pd.DataFrame, *, highlight: Optional[tuple] = None, figsize=(14, 5.5)) -> plt.Figure:
    """The decode kernel's 16 x 64 tile (:func:`mxfp4lab.studies.layout.layout_decode_tile_map`). Left: which
    lane's 16-byte copy holds each element (the number in each block; lanes 4g..4g+3 share rows g and g+8,
    lane 4g+t takes K 16t..16t+15). Right: the 32-bit word (= ``mma.m16n8k16`` step) of that copy: K is
    permuted inside the chunk so each step's B operand is 4 consecutive activations per lane.
    ``highlight``: (row, k) outlined in both."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    fig, axes = plt.subplots(1, 2, figsize=figsize, constrained_layout=True)
    quarter = tile.assign(t=tile["lane"] % 4)
    qcmap = ListedColormap(sns.color_palette("pastel", 4))
    sns.heatmap(_grid(quarter, "row", "k", "t"), ax=axes[0], cmap=qcmap, cbar=False, xticklabels=8, yticklabels=1)
    for (r, lane), grp in tile.groupby(["row", "lane"]):
        axes[0].text(grp["k"].mean() + 0.5, r + 0.5, str(lane), ha="center", va="center", fontsize=9)
    axes[0].set_title("lane holding each element (16 bytes = 32 codes per chunk)", fontsize=12)
    wcols = sns.color_palette("Set2", 4)
    sns.heatmap(_grid(tile, "row", "k", "word"), ax=axes[1], cmap=ListedColormap(wcols),
                norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5, 3.5], 4), cbar=False, xticklabels=8, yticklabels=1)
    axes[1].legend(handles=[Patch(color=wcols[w], label=f"word {w}") for w in range(4)], loc="upper center",
                   bbox_to_anchor=(0.5, -0.12), ncol=4, frameon=False, fontsize=10)
    axes[1].set_title("word = MMA step (K permuted inside the chunk)", fontsize=12)
    for ax in axes:
        ax.set_xlabel("K within the chunk", fontsize=11)
        ax.set_ylabel("row within the tile", fontsize=11)
        if highlight is not None:
            _outline(ax, highlight[1], highlight[0])
    return fig
