"""The layout study: where logical MXFP4 elements and scales land in the SM90 CUTLASS layout, as tidy
:class:`pandas.DataFrame` s and dicts (notebook 01, :mod:`mxfp4lab.widgets`, ``mxfp4lab layout --example``).

Built from :mod:`mxfp4lab.layout.explain` (element <-> bit lookups) and cross-checked against the real
transforms by :func:`layout_tile_check`. Pure functions, cheap on a 2-core CPU; figures are in
:mod:`.layout_figures`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Union

import pandas as pd
import torch

from ..formats import MX_BLOCK_SIZE
from ..layout import explain as _explain
from ..layout.sm90_scales import SCALE_BLOCK_K, SCALE_BLOCK_ROWS, fold_scales_sm90
from ..layout.sm90_weights import SM90_FP4_BIT_PERM, TILE_BYTES, TILE_K, TILE_ROWS, interleave_weights_sm90
from ..models import get_model
from ..prepare import trace_fc1_row

#: Names of the 4 source bytes of one lane word (word byte j = 0..3), as in sm90_weights' docstring:
#: A = (row r, byte c), B = (row r+8, byte c), C = (row r, byte c+4), D = (row r+8, byte c+4).
LANE_BYTE_NAMES = ("A", "B", "C", "D")
#: Short names of the E2M1 code bits 0..3 (bit 3 = sign).
CODE_BIT_SHORT = ("m0", "e0", "e1", "s")
MX_GROUP = MX_BLOCK_SIZE  # elements per E8M0 scale (OCP MX v1.0, Table 1)

#: A pre-stage maps a checkpoint row to the logical fc1 row (``[up ; gate]`` stacking + padding).
#: Contract: ``pre_stage(ckpt_row: int, config) -> dict`` with ``"w13_row"`` (the row of the logical
#: ``w13``, as :func:`mxfp4lab.prepare.trace_fc1_row` returns), or just that int; optional keys
#: ``"half"`` ("up"/"gate"), ``"j"`` (index in the half), ``"note"``.
PreStage = Callable[[int, Any], Union[int, Dict[str, Any]]]


def layout_tile_map(row0: int = 0, k0: int = 0, rows: int = TILE_ROWS, k: int = TILE_K) -> pd.DataFrame:
    """One row per logical element of a ``rows x k`` window (default: one 16x64 interleave tile).

    Columns: ``row, k`` (logical, absolute), ``tile_row, tile_k`` (inside the 16x64 tile),
    ``src_byte`` (= k // 2), ``nibble`` (0 low / 1 high), ``word_byte`` (j, 0..3), ``lane_byte``
    ("A".."D"), ``dst_row``, ``dst_tile_row``, ``dst_word`` (32-bit word index inside the 32-byte
    tile row, 0..7), ``dst_byte_m0 .. dst_byte_s`` and ``dst_bit_m0 .. dst_bit_s`` (physical byte
    column, absolute, and bit for each code bit), ``row_moved`` (dst_row != row).
    """
    rr, kk = torch.meshgrid(torch.arange(row0, row0 + rows), torch.arange(k0, k0 + k), indexing="ij")
    d = _explain.weight_element_destination(rr, kk)
    out = {
        "row": rr.reshape(-1),
        "k": kk.reshape(-1),
        "tile_row": (rr % TILE_ROWS).reshape(-1),
        "tile_k": (kk % TILE_K).reshape(-1),
        "src_byte": (kk // 2).reshape(-1),
        "nibble": (kk % 2).reshape(-1),
        "word_byte": d["word_byte"].reshape(-1),
        "dst_row": d["dst_row"].reshape(-1),
        "dst_tile_row": (d["dst_row"] % TILE_ROWS).reshape(-1),
        "dst_word": ((d["dst_byte"][..., 0] % TILE_BYTES) // 4).reshape(-1),
    }
    for b, name in enumerate(CODE_BIT_SHORT):
        out[f"dst_byte_{name}"] = d["dst_byte"][..., b].reshape(-1)
        out[f"dst_bit_{name}"] = d["dst_bit"][..., b].reshape(-1)
    df = pd.DataFrame({key: v.numpy() for key, v in out.items()})
    df.insert(7, "lane_byte", df["word_byte"].map(dict(enumerate(LANE_BYTE_NAMES))))
    df["row_moved"] = df["dst_row"] != df["row"]
    return df


def layout_bit_permutation() -> pd.DataFrame:
    """The 32-bit lane-word permutation, one row per source bit (32 rows).

    Columns: ``src_bit``, ``dst_bit`` (``SM90_FP4_BIT_PERM``), ``word_byte`` (j), ``lane_byte``
    ("A".."D"), ``nibble`` (0/1: element 2i / 2i+1 of that byte), ``code_bit`` (0..3), ``code_bit_name``,
    ``label`` (e.g. ``"B1.s"`` = sign of B's high-nibble code), ``src_row_offset`` (0 or 8),
    ``src_byte_offset`` (0 or 4): where the source byte sits relative to the lane's (r, c).
    """
    rows = []
    for i, d in enumerate(SM90_FP4_BIT_PERM):
        j, within = divmod(i, 8)
        nib, b = divmod(within, 4)
        rows.append(
            dict(
                src_bit=i,
                dst_bit=d,
                word_byte=j,
                lane_byte=LANE_BYTE_NAMES[j],
                nibble=nib,
                code_bit=b,
                code_bit_name=_explain.CODE_BIT_NAMES[b],
                label=f"{LANE_BYTE_NAMES[j]}{nib}.{CODE_BIT_SHORT[b]}",
                src_row_offset=8 * (j % 2),
                src_byte_offset=4 * (j // 2),
            )
        )
    return pd.DataFrame(rows)


def layout_scale_fold(rows: int = SCALE_BLOCK_ROWS, groups: int = SCALE_BLOCK_K // MX_GROUP) -> pd.DataFrame:
    """One row per logical scale of a ``rows x groups`` window (default one 64-row x 128-K block).

    Columns: ``row, group`` (logical scale index [row, K/32]), ``block, k128, frow, col`` (folded
    index ``[b, q, f, c]`` of ``[E, rows/64, K/128, 16, 16]``), ``slice`` (= row % 64 // 16, the
    16-row slice that becomes columns 4s..4s+3), ``group_in_k128`` (= group % 4).
    """
    rr, gg = torch.meshgrid(torch.arange(rows), torch.arange(groups), indexing="ij")
    d = _explain.scale_destination(rr, gg)
    df = pd.DataFrame(
        {
            "row": rr.reshape(-1).numpy(),
            "group": gg.reshape(-1).numpy(),
            **{key: d[key].reshape(-1).numpy() for key in ("block", "k128", "frow", "col")},
        }
    )
    df["slice"] = (df["row"] % SCALE_BLOCK_ROWS) // (SCALE_BLOCK_ROWS // 4)
    df["group_in_k128"] = df["group"] % (SCALE_BLOCK_K // MX_GROUP)
    return df


def layout_reverse(dst_row: int, dst_byte: int, dst_bit: int) -> Dict[str, int]:
    """Physical bit (dst_row, dst_byte, dst_bit) of one expert's SM90 weight -> logical element.

    Returns ``row, k, code_bit, code_bit_name, src_byte, nibble`` (all plain ints/str).
    """
    s = _explain.weight_bit_source(dst_row, dst_byte, dst_bit)
    row, k, b = int(s["row"]), int(s["k"]), int(s["code_bit"])
    return dict(row=row, k=k, code_bit=b, code_bit_name=_explain.CODE_BIT_NAMES[b], src_byte=k // 2, nibble=k % 2)


# ---------------------------------------------------------------- pre-stage ([up ; gate] + padding)
def resolve_pre_stage(pre_stage: Union[None, str, PreStage]) -> Optional[PreStage]:
    """``None`` -> no stage (rows are fc1 rows); ``"auto"`` -> :func:`mxfp4lab.prepare.trace_fc1_row`;
    a callable is used as is."""
    if pre_stage is None or callable(pre_stage):
        return pre_stage
    if pre_stage != "auto":
        raise ValueError(f"pre_stage must be None, 'auto' or a callable, got {pre_stage!r}")
    return trace_fc1_row


def normalize_stage(result: Union[int, Dict[str, Any]]) -> Dict[str, Any]:
    """A pre-stage's answer (:data:`PreStage`) as a dict with an int ``"w13_row"`` and a ``"note"``."""
    if isinstance(result, dict):
        if result.get("w13_row") is None:
            raise ValueError(f"pre_stage returned no 'w13_row' (the logical fc1 row): {result!r}")
        out = dict(result)
    else:
        out = {"w13_row": result}
    out["w13_row"] = int(out["w13_row"])
    if "note" not in out and out.get("half") is not None:
        out["note"] = f"{out['half']}_{out.get('j', '?')} -> fc1 row {out['w13_row']} ([up ; gate], padded)"
    return out


def layout_trace(
    row: int,
    k: int,
    expert: int = 0,
    config=None,
    pre_stage: Union[None, str, PreStage] = None,
) -> Dict[str, Any]:
    """The full path of one logical FP4 element (and its scale) into the SM90 tensors.

    Args:
        row: fc1 weight row (or, with a ``pre_stage``, the checkpoint row it maps from).
        k: element index along K (hidden for fc1).
        expert: expert index (adds the per-expert byte offset when ``config`` is given).
        config: a :class:`mxfp4lab.models.MoEConfig` (optional) giving the fc1 shape
            ``[E, 2 I_pad, H_pad/2]`` for flat byte offsets and padding notes.
        pre_stage: ``None`` / ``"auto"`` / callable (see :data:`PreStage`).

    Returns a dict: ``expert, ckpt_row (or None), row (fc1 row), k, pre (stage dict or None),
    src_byte, nibble, tile (t, p), lane (r, m, c4, lane4, word_byte), dst_row, dst_byte[4], dst_bit[4],
    src_word_bit[4], dst_word_bit[4], scale (row, group), scale_fold (block, k128, frow, col),
    offsets (flat byte offsets when config is given), stages`` -- ``stages`` is a list of
    ``(stage, tensor index, note)`` tuples for text/tables.
    """
    stage_fn = resolve_pre_stage(pre_stage)
    pre = None
    ckpt_row = None
    if stage_fn is not None:
        ckpt_row = int(row)
        if config is None:
            raise ValueError("a pre_stage needs config (the model's MoEConfig) for I and I_pad")
        pre = normalize_stage(stage_fn(ckpt_row, config))
        pre["source"] = getattr(stage_fn, "__module__", "") + "." + getattr(stage_fn, "__name__", "")
        row = pre["w13_row"]
    row, k, expert = int(row), int(k), int(expert)
    d = _explain.weight_element_destination(row, k)
    col = k // 2
    t, rin = divmod(row, TILE_ROWS)
    p, cc = divmod(col, TILE_BYTES)
    m, c4, lane4 = cc // 8, (cc % 8) // 4, cc % 4
    h, r = divmod(rin, 8)
    group = k // MX_GROUP
    sd = _explain.scale_destination(row, group)
    tr = dict(
        expert=expert, ckpt_row=ckpt_row, row=row, k=k, pre=pre, src_byte=col, nibble=k % 2,
        tile=dict(t=t, p=p), lane=dict(r=r, h=h, m=m, c4=c4, lane4=lane4, word_byte=int(d["word_byte"])),
        dst_row=int(d["dst_row"]),
        dst_byte=[int(x) for x in d["dst_byte"]], dst_bit=[int(x) for x in d["dst_bit"]],
        src_word_bit=[int(x) for x in d["src_word_bit"]], dst_word_bit=[int(x) for x in d["dst_word_bit"]],
        scale=dict(row=row, group=group),
        scale_fold={key: int(v) for key, v in sd.items()},
        offsets=None,
    )
    j = tr["lane"]["word_byte"]
    stages: List[tuple] = []
    if pre is not None:
        blk = f"gate_up_proj_blocks[{expert}, {ckpt_row}, {k // MX_GROUP}, {(k % MX_GROUP) // 2}]"
        stages.append(("checkpoint", blk, f"nibble {k % 2}"))
        stages.append(("[up ; gate] + pad", f"fc1 row {row}", pre.get("note", "")))
    stages.append(("logical fc1", f"w[{expert}, {row}, {col}]", f"{'high' if k % 2 else 'low'} nibble (k={k})"))
    stages.append((
        "interleave: lane word",
        f"tile (rows {16 * t}..{16 * t + 15}, bytes {32 * p}..{32 * p + 31})",
        f"word byte {j} = {LANE_BYTE_NAMES[j]} (row r{'+8' if h else ''}, byte c{'+4' if c4 else ''}), "
        f"source word bits {tr['src_word_bit'][0]}..{tr['src_word_bit'][3]}",
    ))
    bits = ", ".join(
        f"{CODE_BIT_SHORT[b]}->byte {tr['dst_byte'][b]} bit {tr['dst_bit'][b]}" for b in range(4)
    )
    stages.append(("interleave: bits", f"w_sm90[{expert}, {tr['dst_row']}, ...]", bits))
    stages.append(("scale (logical)", f"s[{expert}, {row}, {group}]", f"one E8M0 per 32 k: k {32 * group}..{32 * group + 31}"))
    sf = tr["scale_fold"]
    stages.append((
        "scale fold",
        f"s_sm90[{expert}, {sf['block']}, {sf['k128']}, {sf['frow']}, {sf['col']}]",
        f"64x128 block {sf['block']},{sf['k128']}: row {row % 64} -> folded row {sf['frow']}, column {sf['col']}",
    ))
    if config is not None:
        rows_total, kb_total = 2 * config.padded_intermediate, config.padded_hidden // 2
        n_groups = config.padded_hidden // MX_GROUP
        tr["offsets"] = dict(
            weight_rows=rows_total, weight_bytes_per_row=kb_total,
            weight_byte=[(expert * rows_total + tr["dst_row"]) * kb_total + b for b in tr["dst_byte"]],
            scale_byte=(expert * rows_total + row) * n_groups + group,
            folded_scale_byte=(((expert * (rows_total // 64) + sf["block"]) * (n_groups // 4) + sf["k128"]) * 16
                               + sf["frow"]) * 16 + sf["col"],
            k_is_padding=k >= config.hidden_size,
        )
        if k >= config.hidden_size:
            stages.append(("padding", f"k={k}", f"k >= H={config.hidden_size}: a zero pad element"))
    tr["stages"] = stages
    return tr


def layout_trace_table(trace: Dict[str, Any]) -> pd.DataFrame:
    """The ``stages`` of :func:`layout_trace` as a DataFrame (stage, where, note)."""
    return pd.DataFrame(trace["stages"], columns=["stage", "where", "note"])


def layout_compare_triton(row: int, k: int) -> pd.DataFrame:
    """One logical fc1 element (row, k) in the two physical layouts mxfp4lab produces.

    SM90 CUTLASS (:mod:`mxfp4lab.layout.sm90_weights`): its 4 code bits land in up to 2 bytes of a
    (possibly different) row, bit positions permuted. Triton W4A16 (:mod:`mxfp4lab.layout.triton_w4a16`):
    a transpose, ``[E, N, K/2] -> [E, K/2, N]``: the byte moves, the nibble keeps its bits.
    Columns: ``layout, code_bit, row, byte, bit`` (for Triton, ``row`` is the K/2 byte-row and ``byte``
    the N column).
    """
    d = _explain.weight_element_destination(row, k)
    out = []
    for b in range(4):
        out.append({"layout": "sm90_cutlass", "code_bit": CODE_BIT_SHORT[b], "row": int(d["dst_row"]),
                    "byte": int(d["dst_byte"][b]), "bit": int(d["dst_bit"][b])})
    for b in range(4):
        out.append({"layout": "triton_w4a16", "code_bit": CODE_BIT_SHORT[b], "row": k // 2, "byte": row,
                    "bit": 4 * (k % 2) + b})
    return pd.DataFrame(out)


def layout_tile_check(rows: int = 2 * TILE_ROWS, k: int = 2 * TILE_K, seed: int = 0) -> Dict[str, int]:
    """Cross-check the element tracing against the real interleave on random bytes.

    Quantization-free: random uint8 ``[1, rows, k/2]`` -> :func:`interleave_weights_sm90`; for every
    element and code bit, read the bit at the traced destination and compare with the source bit.
    Returns ``elements``, ``bits_checked``, ``bit_mismatches`` (0 when tracing == transform).
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(0, 256, (1, rows, k // 2), dtype=torch.uint8, generator=g)
    phys = interleave_weights_sm90(w)[0].long()
    rr, kk = torch.meshgrid(torch.arange(rows), torch.arange(k), indexing="ij")
    d = _explain.weight_element_destination(rr, kk)
    codes = (w[0].long()[rr, kk // 2] >> (4 * (kk % 2))) & 0xF
    b = torch.arange(4)
    src_bits = (codes.unsqueeze(-1) >> b) & 1
    dst_bits = (phys[d["dst_row"].unsqueeze(-1).expand_as(d["dst_byte"]), d["dst_byte"]] >> d["dst_bit"]) & 1
    mism = int((src_bits != dst_bits).sum())
    # scales: fold one-hot-free random bytes and compare by index
    s = torch.randint(0, 256, (1, SCALE_BLOCK_ROWS, 2 * SCALE_BLOCK_K // MX_GROUP), dtype=torch.uint8, generator=g)
    f = fold_scales_sm90(s)[0]
    sr, sg = torch.meshgrid(torch.arange(s.shape[1]), torch.arange(s.shape[2]), indexing="ij")
    sd = _explain.scale_destination(sr, sg)
    smism = int((f[sd["block"], sd["k128"], sd["frow"], sd["col"]] != s[0][sr, sg]).sum())
    return dict(elements=rows * k, bits_checked=int(src_bits.numel()), bit_mismatches=mism,
                scales_checked=int(s.numel()), scale_mismatches=smism)


# ---------------------------------------------------------------- the terminal walk-through
def layout_example_text(row: int = 8, k: int = 45, model: Optional[str] = None) -> str:
    """The plain-text layout walk-through ``mxfp4lab layout --example`` prints."""
    lines: List[str] = []
    add = lines.append
    tile = layout_tile_map()
    by_byte = tile[tile.nibble == 0].set_index(["tile_row", "src_byte"])
    add("=" * 100)
    add("1. SM90 FP4 weight interleave: one 16-row x 64-element tile (32 bytes per row)")
    add("   Each logical byte (2 FP4 codes) travels in one lane's 32-bit word; per source byte:")
    add("   destination row (hex) / destination 32-bit word in the row (0-7) / its slot in the word (A-D)")
    add("=" * 100)
    header = "   byte " + " ".join(f"{c:>3}" for c in range(32))
    add(header)
    for r in range(16):
        cells = []
        for c in range(32):
            e = by_byte.loc[(r, c)]
            cells.append(f"{int(e.dst_tile_row):x}{int(e.dst_word)}{e.lane_byte}")
        add(f"   r{r:<3}  " + " ".join(cells))
    add("   (e.g. '83B' = row 8, word 3, slot B). Slots: A=(r, c) B=(r+8, c) C=(r, c+4) D=(r+8, c+4),")
    add("   c = 8m + l: lane (r, m, l) stores its word at row r + 8(m % 2), bytes 16(m // 2) + 4l .. +3.")
    moved = tile.row_moved.mean()
    add(f"   {100 * moved:.0f}% of the elements change row: bytes 8-15, 24-31 of rows 0-7 go to rows 8-15, and "
        "bytes 0-7, 16-23 of rows 8-15 to rows 0-7.")
    add("")
    add("=" * 100)
    add("2. The bit permutation inside one 32-bit lane word (SM90_FP4_BIT_PERM)")
    add("   Source word = bytes A B C D little-endian; label Xn.b = byte X, nibble n (element 2i+n),")
    add("   code bit b (m0 e0 e1 = magnitude, s = sign)")
    add("=" * 100)
    perm = layout_bit_permutation()
    src_lbl = dict(zip(perm.src_bit, perm.label))
    dst_lbl = dict(zip(perm.dst_bit, perm.label))
    for title, lbl in (("source     ", src_lbl), ("destination", dst_lbl)):
        for half in (1, 0):
            bits = range(16 * half + 15, 16 * half - 1, -1)
            add(f"   {title} bits {16 * half + 15:>2}..{16 * half:<2}: " + " ".join(f"{lbl[b]:>5}" for b in bits))
        title = ""
    add("   per half-word: magnitudes of C, B, A -> bits 0-2, 3-5, 6-8; signs of C, B, A -> 9, 12, 15;")
    add("   D: m0 -> 13, e0 e1 -> 10 11, s -> 14.  src bit -> dst bit:")
    for j in range(4):
        seg = perm[perm.word_byte == j]
        add("     " + "  ".join(f"{s:>2}->{d:<2}" for s, d in zip(seg.src_bit, seg.dst_bit)))
    add("")
    add("=" * 100)
    add("3. Scale fold: one 64-row x 128-K block of E8M0 scales [64, 4] -> [16, 16] bytes")
    add("   folded[f, 4s + g] = s[16s + f, g]: folded row f holds rows f, f+16, f+32, f+48 (labels row.group)")
    add("=" * 100)
    fold = layout_scale_fold()
    g = fold.set_index(["frow", "col"])
    add("   f\\col " + "".join(f"{c:>6}" for c in range(16)))
    for f in range(16):
        add(f"   {f:>4}  " + "".join(f"{int(g.loc[(f, c)].row):>4}.{int(g.loc[(f, c)].group_in_k128)}"
                                      for c in range(16)))
    add("")
    add("=" * 100)
    config = get_model(model) if model else None
    if config is not None and not (0 <= row < 2 * config.intermediate_size and 0 <= k < config.hidden_size):
        raise ValueError(f"--row {row} / --k {k} must lie in {config.name}'s fc1: row in [0, "
                         f"{2 * config.intermediate_size}), k in [0, {config.hidden_size})")
    tr = layout_trace(row, k, config=config, pre_stage="auto" if config is not None else None)
    add(f"4. The path of one element: {'checkpoint' if config is not None else 'fc1'} row {row}, k {k}"
        + (f" ({config.name})" if config is not None else ""))
    add("=" * 100)
    for stage, where, note in tr["stages"]:
        add(f"   {stage:<22} {where:<40} {note}")
    rv = layout_reverse(tr["dst_row"], tr["dst_byte"][3], tr["dst_bit"][3])
    add(f"   reverse: w_sm90[{tr['dst_row']}, {tr['dst_byte'][3]}] bit {tr['dst_bit'][3]} <- "
        f"{rv['code_bit_name']} of (row {rv['row']}, k {rv['k']})")
    chk = layout_tile_check()
    add(f"   check vs the real transforms: {chk['bits_checked']} bits, {chk['bit_mismatches']} mismatches; "
        f"{chk['scales_checked']} scales, {chk['scale_mismatches']} mismatches")
    return "\n".join(lines)


# ---------------------------------------------------------------- mxfp4lab's decode kernel layout
def layout_decode_tile_map(rows: int = 16, k: int = 64) -> pd.DataFrame:
    """Every element of one 16 x 64 tile in the decode kernel's layout (:mod:`mxfp4lab.layout.decode_w4a16`):
    which lane's 16-byte copy holds it, which 32-bit word (= ``mma.m16n8k16`` step), which register and
    where in that MMA's A fragment it sits. Columns: ``row, k, lane, word, register, half, frag_row,
    frag_k, sign_bit``."""
    from ..layout.decode_w4a16 import element_location

    out = []
    for r in range(rows):
        for kk in range(k):
            loc = element_location(r, kk)
            out.append({"row": r, "k": kk, **{c: loc[c] for c in ("lane", "word", "register", "half", "frag_row",
                                                                  "frag_k", "sign_bit")}})
    return pd.DataFrame(out)


def layout_compare_decode(row: int, k: int) -> pd.DataFrame:
    """One logical element ``(row, k)``: its 4 code bits in the SM90 CUTLASS layout (destination row, byte,
    bit of the interleaved matrix) beside the decode kernel's (lane, byte of the lane's 16-byte copy, bit).
    Columns: ``layout, code_bit, where, byte, bit``."""
    from ..layout.decode_w4a16 import element_location

    d = _explain.weight_element_destination(row, k)
    loc = element_location(row, k)
    out = []
    for b in range(4):
        out.append({"layout": "sm90_cutlass", "code_bit": CODE_BIT_SHORT[b], "where": f"row {int(d['dst_row'])}",
                    "byte": int(d["dst_byte"][b]), "bit": int(d["dst_bit"][b])})
    bits = loc["mag_bits"] + [loc["sign_bit"]]  # m0, e0, e1, s
    for b in range(4):
        out.append({"layout": "decode_w4a16", "code_bit": CODE_BIT_SHORT[b],
                    "where": f"tile {loc['tile']} chunk {loc['chunk']} lane {loc['lane']} {loc['register']}",
                    "byte": 4 * loc["word"] + bits[b] // 8, "bit": bits[b] % 8})
    return pd.DataFrame(out)
