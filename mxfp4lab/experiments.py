"""Experiments: tidy :class:`pandas.DataFrame` builders that the notebooks and plots consume.

One section per notebook; each function is pure (inputs -> DataFrame / dict), cheap with its defaults
on a 2-core CPU, and never plots.

* ``layout_*``   -- where logical MXFP4 elements and scales land in the SM90 physical layout
  (notebook 01, :mod:`mxfp4lab.widgets`, ``mxfp4lab layout --example``). Built from
  :mod:`mxfp4lab.layout.explain`, and cross-checked against the real transforms by
  :func:`layout_tile_check`.

(Accuracy and latency sections follow below, added by their notebooks' authors.)
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Union

import pandas as pd
import torch

from .layout import explain as _explain
from .layout.sm90_scales import SCALE_BLOCK_K, SCALE_BLOCK_ROWS, fold_scales_sm90
from .layout.sm90_weights import (
    SM90_FP4_BIT_PERM,
    TILE_BYTES,
    TILE_K,
    TILE_ROWS,
    interleave_weights_sm90,
)

# ============================================================================================
# layout_*: the SM90 weight interleave and scale fold, element by element
# ============================================================================================

#: Names of the 4 source bytes of one lane word (word byte j = 0..3), as in sm90_weights' docstring:
#: A = (row r, byte c), B = (row r+8, byte c), C = (row r, byte c+4), D = (row r+8, byte c+4).
LANE_BYTE_NAMES = ("A", "B", "C", "D")
#: Short names of the E2M1 code bits 0..3 (bit 3 = sign).
CODE_BIT_SHORT = ("m0", "e0", "e1", "s")
MX_GROUP = 32  # elements per E8M0 scale (OCP MX v1.0, Table 1)

#: A pre-stage maps a checkpoint row to the logical fc1 row (``[up ; gate]`` stacking + padding).
#: Contract: ``pre_stage(ckpt_row: int, config) -> dict`` with at least ``"fc1_row"`` (an int is
#: accepted too); optional keys ``"half"`` ("up"/"gate"), ``"j"`` (index in the half), ``"note"``.
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
def fc1_stage_from_facts(ckpt_row: int, config) -> Dict[str, Any]:
    """GPT-OSS ``gate_up_proj`` checkpoint row -> logical fc1 row of the SM90 ``[up ; gate]`` weight.

    Stand-in until :mod:`mxfp4lab.prepare` provides ``trace_fc1_row``; follows FACTS ("Checkpoint
    layouts", "The SM90 path"): checkpoint row ``2j`` is gate_j, ``2j+1`` is up_j; fc1 rows
    ``[0, I_pad)`` are up, ``[I_pad, 2 I_pad)`` gate; rows ``I..I_pad`` of each half are zero padding.
    """
    i_real, i_pad = config.intermediate_size, config.padded_intermediate
    if not 0 <= ckpt_row < 2 * i_real:
        raise ValueError(f"checkpoint row {ckpt_row} outside [0, 2*I) = [0, {2 * i_real})")
    j, is_up = divmod(ckpt_row, 2)
    half = "up" if is_up else "gate"
    fc1_row = j if is_up else i_pad + j
    return dict(
        fc1_row=fc1_row, half=half, j=j,
        note=f"checkpoint row {ckpt_row} = {half}_{j} -> fc1 row {fc1_row} "
             f"({half} half starts at {0 if is_up else i_pad}; I={i_real} padded to {i_pad})",
    )


def resolve_pre_stage(pre_stage: Union[None, str, PreStage]) -> Optional[PreStage]:
    """``None`` -> no stage (rows are fc1 rows); ``"auto"`` -> ``mxfp4lab.prepare.trace_fc1_row``
    when that exists, else :func:`fc1_stage_from_facts`; a callable is used as is."""
    if pre_stage is None or callable(pre_stage):
        return pre_stage
    if pre_stage != "auto":
        raise ValueError(f"pre_stage must be None, 'auto' or a callable, got {pre_stage!r}")
    try:  # the real stage, once mxfp4lab.prepare has it
        from . import prepare  # noqa: WPS433 (optional, written separately)

        fn = getattr(prepare, "trace_fc1_row", None)
        if callable(fn):
            return fn
    except Exception:
        pass
    return fc1_stage_from_facts


def _normalize_stage(result) -> Dict[str, Any]:
    if isinstance(result, dict):
        out = dict(result)
        for key in ("fc1_row", "w13_row", "row"):  # prepare.trace_fc1_row names it "w13_row"
            if out.get(key) is not None:
                out["fc1_row"] = out[key]
                break
        else:
            raise ValueError(f"pre_stage returned no fc1 row: {result!r}")
    elif isinstance(result, (tuple, list)):
        out = {"fc1_row": result[0]}
    else:
        out = {"fc1_row": result}
    out["fc1_row"] = int(out["fc1_row"])
    if "note" not in out and out.get("half") is not None:
        out["note"] = f"{out['half']}_{out.get('j', '?')} -> fc1 row {out['fc1_row']} ([up ; gate], padded)"
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
        pre = _normalize_stage(stage_fn(ckpt_row, config))
        pre["source"] = getattr(stage_fn, "__module__", "") + "." + getattr(stage_fn, "__name__", "")
        row = pre["fc1_row"]
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
