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

from .backends import BackendSpec
from .formats import MX_BLOCK_SIZE
from .models import STUDY_SHAPES
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
MX_GROUP = MX_BLOCK_SIZE  # elements per E8M0 scale (OCP MX v1.0, Table 1)

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
def resolve_pre_stage(pre_stage: Union[None, str, PreStage]) -> Optional[PreStage]:
    """``None`` -> no stage (rows are fc1 rows); ``"auto"`` -> :func:`mxfp4lab.prepare.trace_fc1_row`;
    a callable is used as is."""
    if pre_stage is None or callable(pre_stage):
        return pre_stage
    if pre_stage != "auto":
        raise ValueError(f"pre_stage must be None, 'auto' or a callable, got {pre_stage!r}")
    from .prepare import trace_fc1_row

    return trace_fc1_row


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


# ============================================================================================
# accuracy_*: MXFP4 error against the bf16 origin and the references (notebook 02)
# ============================================================================================
# Truth is always the bf16 "origin" weights (mxfp4lab.synthetic.make_origin_*) run through the fp32
# reference. Paths compared with it: the MXFP4-quantized weights (per scale rule) through the fp32
# reference, through the kernel-faithful reference (bf16 stores where FlashInfer rounds), through the
# CPU emulation of the prepared SM90 tensors, and -- on an H100 with FlashInfer -- through the kernel.

from typing import Tuple  # noqa: E402  (this section's own import)

ACCURACY_RULES = ("ocp", "round_up", "flashinfer")
ACCURACY_DISTS = ("gaussian", "heavy_tailed", "outlier_channels")
ACCURACY_MATRICES = ("w_gate", "w_up", "w_down")
#: Half the widest E2M1 gap (4 -> 6) in units of the block scale: the worst rounding error of a
#: block whose scaled maximum is <= 6 (round_up, flashinfer). OCP can also clip [6, 8) down to 6.
E2M1_HALF_TOP_GAP = 1.0
OCP_CLIP_BOUND = 2.0


def _as_config(config):
    from .models import MoEConfig, get_model

    return config if isinstance(config, MoEConfig) else get_model(config)


def _as_list(v) -> list:
    return [v] if isinstance(v, str) or not hasattr(v, "__iter__") else list(v)


def _quant_dequant(w: torch.Tensor, rule: str):
    """``w [..., K]`` -> (packed, scales, dequantized fp32) under ``rule``."""
    from .formats import dequantize_mxfp4, quantize_mxfp4

    packed, scales = quantize_mxfp4(w, scale_rule=rule)
    return packed, scales, dequantize_mxfp4(packed, scales, torch.float32)


def _matrix_error_stats(w: torch.Tensor, rule: str, qd=None) -> Dict[str, float]:
    """Weight-level error of one matrix ``[rows, K]`` (bf16 origin) under ``rule``; ``qd``: the
    ``_quant_dequant(w, rule)`` result when the caller already has it."""
    from .formats import decode_e8m0

    wf = w.float()
    _, scales, q = qd if qd is not None else _quant_dequant(wf, rule)
    err = q - wf
    s = decode_e8m0(scales).unsqueeze(-1)  # [rows, K/32, 1]
    eb = err.reshape(*err.shape[:-1], -1, MX_BLOCK_SIZE).abs()
    scaled = wf.reshape(eb.shape).abs() / s
    rel = (err.double().norm() / wf.double().norm()).item()
    return dict(
        rel_err=rel,
        sqnr_db=float(-20 * torch.log10(torch.tensor(max(rel, 1e-300)))),
        mean_abs_err=err.abs().mean().item(),
        max_abs_err=err.abs().max().item(),
        max_err_over_scale=(eb / s).amax().item(),
        clipped_frac=(scaled > 6.0).double().mean().item(),
        mean_scale_exp=(scales.double() - 127).mean().item(),
    )


def accuracy_quantization(
    configs=("gpt-oss-20b", "dsv4-flash"),
    rules=ACCURACY_RULES,
    dists=ACCURACY_DISTS,
    seed: int = 0,
    *,
    expert: int = 0,
    matrices=ACCURACY_MATRICES,
    max_rows: Optional[int] = None,
) -> pd.DataFrame:
    """Weight-level MXFP4 error against the bf16 origin, one row per (model, dist, matrix, rule).

    One expert's real-size matrices (``w_gate``/``w_up`` ``[I, H]``, ``w_down`` ``[H, I]``, K the last
    axis) from :func:`mxfp4lab.synthetic.make_origin_expert`. ``max_rows`` keeps only the first rows
    of each matrix: quantization is per row (32-element blocks along K), so a row sample of the real K
    has the same statistics and costs less.

    Columns: ``model, dist, matrix, rows, K, rule, rel_err`` (Frobenius, vs origin), ``sqnr_db``,
    ``mean_abs_err, max_abs_err, max_err_over_scale`` (worst per-block error in units of that block's
    scale: <= 1 for round_up/flashinfer, <= 2 for ocp), ``clipped_frac`` (elements whose scaled
    magnitude exceeded 6 and saturated), ``mean_scale_exp``.
    """
    from .synthetic import make_origin_expert

    rows = []
    for cfg in map(_as_config, _as_list(configs)):
        for dist in _as_list(dists):
            origin = make_origin_expert(cfg, expert, seed=seed, dist=dist)
            for mat in _as_list(matrices):
                w = origin[mat] if max_rows is None else origin[mat][:max_rows]
                for rule in _as_list(rules):
                    rows.append(dict(model=cfg.name, dist=dist, matrix=mat, rows=w.shape[0], K=w.shape[1],
                                     rule=rule, **_matrix_error_stats(w, rule)))
    return pd.DataFrame(rows)


def accuracy_table(quant: pd.DataFrame, value: str = "rel_err", index: str = "rule",
                   columns: str = "dist") -> pd.DataFrame:
    """Pivot of :func:`accuracy_quantization` (mean over models/matrices): rule x dist."""
    return quant.pivot_table(index=index, columns=columns, values=value, aggfunc="mean")


def accuracy_rule_agreement(config="gpt-oss-20b", rules=ACCURACY_RULES, dists=ACCURACY_DISTS, seed: int = 0,
                            *, matrix: str = "w_gate", max_rows: int = 256, expert: int = 0) -> pd.DataFrame:
    """How often two scale rules give different results on the same weights: per pair of rules and
    distribution, the fraction of blocks with a different scale byte and of elements with a different
    dequantized value. Columns: ``dist, rule_a, rule_b, scale_diff_frac, value_diff_frac``."""
    from itertools import combinations

    from .synthetic import make_origin_expert

    cfg = _as_config(config)
    rows = []
    for dist in _as_list(dists):
        w = make_origin_expert(cfg, expert, seed=seed, dist=dist)[matrix][:max_rows].float()
        q = {r: _quant_dequant(w, r) for r in _as_list(rules)}
        for a, b in combinations(_as_list(rules), 2):
            rows.append(dict(dist=dist, rule_a=a, rule_b=b,
                             scale_diff_frac=(q[a][1] != q[b][1]).double().mean().item(),
                             value_diff_frac=(q[a][2] != q[b][2]).double().mean().item()))
    return pd.DataFrame(rows)


def accuracy_block_errors(config="gpt-oss-20b", rules=ACCURACY_RULES, dists=ACCURACY_DISTS, seed: int = 0,
                          *, matrix: str = "w_gate", max_rows: int = 256, expert: int = 0) -> pd.DataFrame:
    """Per 32-element block: worst element error / scale and block maximum / scale.

    Columns: ``dist, rule, max_err_over_scale, amax_over_scale`` (the scaled block maximum; > 6
    means the block maximum saturated: only possible with ocp).
    """
    from .synthetic import make_origin_expert
    from .formats import decode_e8m0

    cfg = _as_config(config)
    frames = []
    for dist in _as_list(dists):
        w = make_origin_expert(cfg, expert, seed=seed, dist=dist)[matrix][:max_rows].float()
        wb = w.reshape(w.shape[0], -1, MX_BLOCK_SIZE)
        for rule in _as_list(rules):
            _, scales, q = _quant_dequant(w, rule)
            s = decode_e8m0(scales)
            err = (q.reshape(wb.shape) - wb).abs().amax(-1) / s
            frames.append(pd.DataFrame({"dist": dist, "rule": rule, "max_err_over_scale": err.reshape(-1).numpy(),
                                        "amax_over_scale": (wb.abs().amax(-1) / s).reshape(-1).numpy()}))
    return pd.concat(frames, ignore_index=True)


def accuracy_k_sweep(ks=(128, 512, 2048, 8192), rules=ACCURACY_RULES, dists="gaussian", *, rows: int = 128,
                     m: int = 16, seed: int = 0) -> pd.DataFrame:
    """Error vs the reduction length K: a ``[rows, K]`` origin matrix (``dist``), and the GEMM
    ``x @ w.T`` with bf16 activations ``x [m, K]``.

    Columns: ``dist, rule, K, rel_err`` (weights vs origin), ``gemm_rel_err`` (fp32 GEMM with MXFP4
    weights vs with origin weights), ``max_err_over_scale``.
    """
    from .synthetic import make_origin_expert
    from .models import GPT_OSS_20B

    out = []
    for dist in _as_list(dists):
        for k in _as_list(ks):
            cfg = GPT_OSS_20B.scaled(hidden=int(k), intermediate=rows, experts=1, top_k=1)
            w = make_origin_expert(cfg, 0, seed=seed, dist=dist)["w_gate"].float()
            x = torch.randn(m, int(k), generator=torch.Generator().manual_seed(seed + int(k))).bfloat16().float()
            ref = x.double() @ w.double().T
            for rule in _as_list(rules):
                qd = _quant_dequant(w, rule)
                st = _matrix_error_stats(w, rule, qd)
                q = qd[2]
                g = x @ q.T
                out.append(dict(dist=dist, rule=rule, K=int(k), rel_err=st["rel_err"],
                                gemm_rel_err=((g.double() - ref).norm() / ref.norm()).item(),
                                max_err_over_scale=st["max_err_over_scale"]))
    return pd.DataFrame(out)


# ---------------------------------------------------------------- whole layers
def _origin_expert_weights(origin: Dict[str, torch.Tensor]):
    from .reference import ExpertWeights

    f = lambda k: None if k not in origin else origin[k].float()  # noqa: E731
    return ExpertWeights(f("w_gate"), f("w_up"), f("w_down"), f("b_gate"), f("b_up"), f("b_down"))


#: The emulated backend in fp32 mode (the semantic truth on the MXFP4 weights).
EMULATED_FP32 = BackendSpec("emulated_sm90", {"mode": "fp32"})


def _quantize_layer(origin: Dict[str, torch.Tensor], config, rule: str):
    """Origin (logical bf16) -> checkpoint-layout MXFP4 tensors (as the checkpoint readers return)."""
    from .synthetic import quantize_origin

    return quantize_origin(origin, config, rule)


def _clamp_config(config, clamp: bool):
    import dataclasses

    return config if clamp else dataclasses.replace(config, swiglu_limit=None)


def _swiglu_kw(config) -> Dict[str, Any]:
    return dict(config.swiglu_kwargs, routed_scaling_factor=config.routed_scaling_factor)


def _input_scale(origin: Dict[str, torch.Tensor], preact_std: float) -> float:
    """Factor for unit-RMS inputs so that fc1 pre-activations (gate/up) have std ~ ``preact_std``."""
    row_sq = origin["w_gate"].float().square().sum(-1).mean().item()
    return preact_std / max(row_sq, 1e-30) ** 0.5


def _route_origin(x: torch.Tensor, origin: Dict[str, torch.Tensor], config):
    """Router of the origin layer on ``x`` (hash layers are routed by logits too, for simplicity)."""
    from .reference import route

    logits = x.float() @ origin["router_weight"].float().T
    if config.routing == "softmax_topk":
        if "router_bias" in origin:
            logits = logits + origin["router_bias"].float()
        return route(logits, config)
    return route(logits, config, correction_bias=origin.get("router_bias"))


def _clamped_fraction(x, ids, ew, config) -> float:
    """Fraction of routed fc1 pre-activations (gate > limit or |up| > limit) the SwiGLU clamp cuts."""
    lim = config.swiglu_limit
    if lim is None:
        return 0.0
    hit = tot = 0
    for e in range(ew.num_experts):
        tok = (ids.long() == e).any(-1).nonzero().flatten()
        if tok.numel() == 0:
            continue
        g = x[tok] @ ew.w_gate[e].T + (0 if ew.b_gate is None else ew.b_gate[e])
        u = x[tok] @ ew.w_up[e].T + (0 if ew.b_up is None else ew.b_up[e])
        hit += int((g > lim).sum() + (u.abs() > lim).sum())
        tot += 2 * g.numel()
    return hit / max(tot, 1)


def flashinfer_status() -> Tuple[bool, str]:
    """(available, why not): can ``flashinfer_sm90`` run here (H100/H200 + FlashInfer)?"""
    from .backends import get_backend

    return get_backend("flashinfer_sm90").available()


def _backend_out(spec, moe, config, x, ids, w) -> torch.Tensor:
    """Run a backend (a registry name or a :class:`~mxfp4lab.backends.BackendSpec`) -> fp32 CPU."""
    from .backends import BackendSpec, get_backend

    spec = BackendSpec.of(spec)
    dev = "cuda" if get_backend(spec.name).gpu_only else "cpu"
    be = spec.make(moe.to(dev), config)
    y = be(x.to(dev).bfloat16(), ids.to(dev), w.to(dev))
    return y.float().cpu()


def accuracy_layer(
    config="gpt-oss-20b",
    rules=ACCURACY_RULES,
    dists=ACCURACY_DISTS,
    clamp=(True, False),
    m: int = 32,
    backends=("emulated_sm90", EMULATED_FP32),
    seed: int = 0,
    *,
    preact_std: float = 3.0,
    layer: int = 0,
) -> pd.DataFrame:
    """MoE layer output error: MXFP4 paths vs the bf16-origin fp32 reference and vs each other.

    Per (dist, clamp): origin layer (bf16, :func:`make_origin_weights`), bf16 tokens scaled so fc1
    pre-activations have std ``preact_std`` (so the SwiGLU clamp matters), routed by the origin
    router. ``clamp=False`` sets ``swiglu_limit=None`` everywhere (truth included). Per rule the
    origin is quantized into the checkpoint layout and prepared for SM90 (:mod:`mxfp4lab.prepare`).

    One row per comparison ``path`` vs ``reference``:

    * ``origin kernel`` vs ``origin fp32`` (rule ``bf16``): bf16 activation rounding alone
    * ``mxfp4 fp32`` / ``mxfp4 kernel`` vs ``origin fp32``: the quantization error (+ rounding)
    * ``mxfp4 kernel`` vs ``mxfp4 fp32``: the kernel's bf16 stores on MXFP4 weights
    * each backend (a registry name or a :class:`~mxfp4lab.backends.BackendSpec`, e.g. ``emulated_sm90``
      = kernel mode, :data:`EMULATED_FP32`, ``flashinfer_sm90``), labelled by its spec's label, vs
      ``mxfp4 kernel`` and vs ``origin fp32``.

    Columns: ``model, dist, clamp, limit, rule, path, reference, rel_err, clamped_frac``.
    """
    from .synthetic import make_origin_weights
    from .prepare import prepare_from_experts
    from .reference import expert_weights_from_logical, moe_reference, relative_error

    base_cfg = _as_config(config)
    rows = []
    for dist in _as_list(dists):
        origin = make_origin_weights(base_cfg, seed, dist, layer=layer)
        ow = _origin_expert_weights(origin)
        g = torch.Generator().manual_seed(seed + 1)
        x = (torch.randn(m, base_cfg.hidden_size, generator=g) * _input_scale(origin, preact_std)).bfloat16().float()
        ids, w = _route_origin(x, origin, base_cfg)
        frac = _clamped_fraction(x, ids, ow, base_cfg)  # (independent of the clamp setting)
        quantized = {rule: _quantize_layer(origin, base_cfg, rule) for rule in _as_list(rules)}
        for cl in _as_list(clamp):
            cfg = _clamp_config(base_cfg, bool(cl))
            kw = _swiglu_kw(cfg)
            common = dict(model=base_cfg.name, dist=dist, clamp=bool(cl), limit=cfg.swiglu_limit, clamped_frac=frac)
            truth = moe_reference(x, ids, w, ow, mode="fp32", **kw)
            o_k = moe_reference(x, ids, w, ow, mode="kernel", **kw)
            rows.append(dict(common, rule="bf16", path="origin kernel", reference="origin fp32",
                             rel_err=relative_error(o_k, truth)))
            for rule in _as_list(rules):
                prepared = prepare_from_experts(quantized[rule], config=cfg)
                qw = expert_weights_from_logical(prepared)
                q32 = moe_reference(x, ids, w, qw, mode="fp32", **kw)
                qk = moe_reference(x, ids, w, qw, mode="kernel", **kw)
                r = dict(common, rule=rule)
                rows += [dict(r, path="mxfp4 fp32", reference="origin fp32", rel_err=relative_error(q32, truth)),
                         dict(r, path="mxfp4 kernel", reference="origin fp32", rel_err=relative_error(qk, truth)),
                         dict(r, path="mxfp4 kernel", reference="mxfp4 fp32", rel_err=relative_error(qk, q32))]
                for b in _as_list(backends):
                    y = _backend_out(b, prepared, cfg, x, ids, w)
                    lbl = BackendSpec.of(b).label
                    rows += [dict(r, path=lbl, reference="mxfp4 kernel", rel_err=relative_error(y, qk)),
                             dict(r, path=lbl, reference="origin fp32", rel_err=relative_error(y, truth))]
    return pd.DataFrame(rows)


def _rms_norm(h: torch.Tensor) -> torch.Tensor:
    return h / h.float().square().mean(-1, keepdim=True).add(1e-6).sqrt()


def accuracy_depth(
    config="gpt-oss-20b",
    layers: int = 8,
    rules=("ocp", "flashinfer"),
    dist: str = "gaussian",
    m: int = 32,
    seed: int = 0,
    *,
    clamp: bool = True,
    preact_std: float = 3.0,
    residual: bool = True,
    branch_scale: Optional[float] = None,
    backends=(),
) -> pd.DataFrame:
    """Error growth through a stack of MoE layers (each layer its own origin weights, ``layer=l``).

    Every path carries its own hidden state ``h`` (``h_0`` random bf16, shared): layer ``l`` routes
    ``x = rms_norm(h) * scale`` with its origin router, runs the MoE, and ``h <- h + moe(x)``
    (``residual=False``: ``h <- moe(x)``). Paths: ``origin fp32`` (truth), ``origin kernel`` (bf16
    origin, kernel rounding), ``mxfp4 <rule>`` (MXFP4 weights, kernel-faithful reference, bf16
    hidden state) and ``<backend> <rule>`` for each backend given (e.g. ``flashinfer_sm90`` on a GPU).
    Routing is recomputed on each path's own state, so routing flips propagate. ``branch_scale``:
    multiply layer l's MoE output (every path by the same constant) so that on the truth path its RMS
    is ``branch_scale`` times the residual stream's (None: no rescaling, the MoE branch dominates).

    Columns: ``model, dist, rule, path, layer`` (1-based: after layer l), ``rel_err_hidden`` (h vs
    truth), ``rel_err_out`` (this layer's MoE output vs truth's), ``routing_agreement`` (tokens whose
    top-k expert set equals the truth's).
    """
    from .synthetic import make_origin_weights
    from .prepare import prepare_from_experts
    from .reference import expert_weights_from_logical, moe_reference, relative_error

    base = _as_config(config)
    cfg = _clamp_config(base, clamp)
    kw = _swiglu_kw(cfg)
    h0 = torch.randn(m, cfg.hidden_size, generator=torch.Generator().manual_seed(seed + 2)).bfloat16().float()
    paths = ["origin fp32", "origin kernel"] + [f"mxfp4 {r}" for r in _as_list(rules)]
    paths += [f"{b} {r}" for b in _as_list(backends) for r in _as_list(rules)]
    state = {p: h0.clone() for p in paths}
    rows = []
    for l in range(layers):
        origin = make_origin_weights(base, seed, dist, layer=l)
        ow = _origin_expert_weights(origin)
        scale = _input_scale(origin, preact_std)
        prepared = {r: prepare_from_experts(_quantize_layer(origin, base, r), config=cfg) for r in _as_list(rules)}
        qws = {r: expert_weights_from_logical(p) for r, p in prepared.items()}
        outs, sets = {}, {}
        for p in paths:
            x = (_rms_norm(state[p]) * scale)
            x = x if p == "origin fp32" else x.bfloat16().float()
            ids, w = _route_origin(x, origin, base)
            sets[p] = ids.long().sort(-1).values
            if p == "origin fp32":
                y = moe_reference(x, ids, w, ow, mode="fp32", **kw)
            elif p == "origin kernel":
                y = moe_reference(x, ids, w, ow, mode="kernel", **kw).float()
            elif p.startswith("mxfp4 "):
                y = moe_reference(x, ids, w, qws[p.split(" ", 1)[1]], mode="kernel", **kw).float()
            else:
                b, r = p.rsplit(" ", 1)
                y = _backend_out(b, prepared[r], cfg, x, ids, w)
            outs[p] = y
        c = 1.0
        if branch_scale is not None:
            rms = lambda t: t.double().square().mean().sqrt().item()  # noqa: E731
            c = branch_scale * rms(state["origin fp32"]) / max(rms(outs["origin fp32"]), 1e-30)
        for p in paths:
            new = state[p] + c * outs[p] if residual else c * outs[p]
            state[p] = new if p == "origin fp32" else new.bfloat16().float()
        for p in paths:
            rule = p.rsplit(" ", 1)[1] if p.rsplit(" ", 1)[1] in _as_list(rules) else "bf16"
            rows.append(dict(model=base.name, dist=dist, rule=rule if p != "origin fp32" else "none", path=p,
                             layer=l + 1, rel_err_hidden=relative_error(state[p], state["origin fp32"]),
                             rel_err_out=relative_error(outs[p], outs["origin fp32"]),
                             routing_agreement=(sets[p] == sets["origin fp32"]).all(-1).double().mean().item()))
    return pd.DataFrame(rows)


# ============================================================================================
# latency_*: MoE latency vs tokens M per backend, crossovers, roofline (notebook 03)
# ============================================================================================
# Input: the JSON of mxfp4lab.bench.moe (recorded on an H100 under data/results/); every function
# works on the tidy row frame of latency_load, so synthetic frames test them without a GPU.

LATENCY_SHAPES = STUDY_SHAPES
#: The recorded sweep read when no file is given: ``data/results/latency/<gpu>.json``
#: (:data:`mxfp4lab.results.PREFERRED_GPUS` order).
LATENCY_STUDY = "latency"
#: The original SGLang claim on the seed shape (H100, kernel level).
SEED_CLAIM = (
    dict(regime="M<=64", m_max=64, m_min=None, claim="Marlin 12-15% faster", lo=-0.15, hi=-0.12),
    dict(regime="M~256", m_max=256, m_min=256, claim="tie", lo=-0.05, hi=0.05),
    dict(regime="M>=1024", m_max=None, m_min=1024, claim="FlashInfer 24-36% faster", lo=0.24, hi=0.36),
)


def latency_results_path(path=None):
    """``path``, or the first recorded ``data/results/latency/<gpu>.json`` (the H100 one's path when none
    exists)."""
    from pathlib import Path

    from . import results

    if path:
        return Path(path)
    return results.find(LATENCY_STUDY) or results.result_path(LATENCY_STUDY, results.PREFERRED_GPUS[0])


def latency_load(path=None) -> Tuple[pd.DataFrame, Optional[Dict[str, Any]]]:
    """Recorded latency sweep -> (rows, provenance); ``(empty frame, None)`` when there is no file.

    The frame has one row per JSON row (``shape, backend, m, routing, median_us, ...``) plus ``ok``
    (timed, no error). ``df.attrs`` holds ``ceilings`` and ``path``.
    """
    from . import results

    p = latency_results_path(path)
    if not p.is_file():
        df = pd.DataFrame(columns=["shape", "backend", "m", "routing", "median_us", "roofline_us", "ok"])
        df.attrs.update(path=str(p), ceilings={})
        return df, None
    res = results.load(p, kind="latency_sweep")
    df = _latency_frame(res.rows)
    df.attrs.update(path=str(p), ceilings=res.meta.get("ceilings") or {})
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


def latency_source_label(prov: Optional[Dict[str, Any]]) -> str:
    """'recorded on <gpu> <date>, commit <sha>' (for plot titles), or a no-data note."""
    if not prov:
        return "no recorded H100 latency results yet: roofline floor only"
    commit = (prov.get("mxfp4lab_commit") or "unknown")[:10]
    date = (prov.get("date") or "unknown date")[:10]
    return f"recorded on {prov.get('gpu') or 'unknown GPU'} {date}, commit {commit}"


def latency_roofline(shapes=LATENCY_SHAPES, ms=(1, 4, 16, 64, 256, 1024, 4096, 8192), *, ceilings=None) -> pd.DataFrame:
    """Roofline floor per (shape, M) (:func:`mxfp4lab.bench.roofline.roofline`; ``ceilings`` as in the
    results JSON, default FACTS' H100 numbers). Columns: ``shape, m, floor_us, memory_us, compute_us,
    bound, active_experts, bytes, flops``."""
    from .bench.roofline import H100_BF16_FLOPS, H100_COPY_BW, roofline

    bw = (ceilings or {}).get("copy_bytes_per_s") or H100_COPY_BW
    fr = (ceilings or {}).get("bf16_flops_per_s") or H100_BF16_FLOPS
    rows = []
    for s in _as_list(shapes):
        cfg = _as_config(s)
        for m in _as_list(ms):
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
    import numpy as np

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
    """The original claim (FACTS.md) against the recorded sweep on ``shape``.

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
        from .bench.harness import measure_ceilings
        from .bench.moe import sweep
        from .provenance import provenance

        ceil = measure_ceilings()
        df = _latency_frame(sweep(list(backends), list(shapes), list(ms), [routing], reps=reps, ceilings=ceil))
        df.attrs.update(ceilings=ceil, path="(measured in this run)")
        prov, measured = provenance("notebooks/03_latency_crossover (measure=True)"), True
    else:
        if measure:
            print("measure=True but no CUDA GPU here: reading recorded results instead.")
        df, prov = latency_load(results_file)
    label = latency_source_label(prov) + (" (measured in this run)" if measured else "")
    return df, prov, label, bool(prov is not None and df["ok"].any())


def latency_all_crossovers(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`latency_crossovers` for every pair of timed backends (empty frame if fewer than two)."""
    import itertools

    names = sorted(df.loc[df["ok"].astype(bool), "backend"].dropna().unique()) if len(df) else []
    parts = [latency_crossovers(df, a, b) for a, b in itertools.combinations(names, 2)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["shape", "routing", "a", "b", "crossing", "crossover_m", "m_lo", "m_hi", "faster_below",
                 "faster_above", "n_crossings"])


def latency_dispatch_speedups(df: pd.DataFrame, routing: str = "uniform") -> pd.DataFrame:
    """Dispatching the fastest recorded backend per (shape, M) vs always running one backend:
    one row per (always, shape) plus ``shape == "all"``: ``geomean, worst, best, n_m`` of
    ``t_always / t_dispatch`` (in-sample: the policy is scored on the rows it was built from)."""
    from .dispatch import Dispatch

    d = Dispatch.from_rows(df[df["ok"].astype(bool)].to_dict("records"), routing=routing)
    rows = [dict(always=b, shape=s, **{k: v[k] for k in ("geomean", "worst", "best", "n_m")})
            for b in d.backends() for s, v in d.speedup_vs(always=b).items()]
    return pd.DataFrame(rows)


FI, MARLIN, TRITON = "flashinfer_sm90", "marlin_mxfp4", "triton_w4a16"
#: issue 6's goals
TRITON_SMALL_M, TRITON_SMALL_FLOOR_X = 64, 1.25
TRITON_LARGE_M, TRITON_LARGE_FI_X = 1024, 1.2


def latency_table(df: pd.DataFrame, routing: str = "uniform") -> pd.DataFrame:
    """One row per (shape, M): each backend's median (us), the floor, best backend and its fraction."""
    d = _ok(df)
    d = d[d["routing"] == routing]
    p = d.pivot_table(index=["shape", "m"], columns="backend", values="median_us", aggfunc="median")
    floor = d.groupby(["shape", "m"])["roofline_us"].first()
    backends = list(p.columns)
    out = p.copy()
    out["floor_us"] = floor
    out["best"] = p[backends].idxmin(axis=1)
    out["best_fraction_of_floor"] = floor / p[backends].min(axis=1)
    return out.reset_index()


def triton_goals(table: pd.DataFrame) -> pd.DataFrame:
    """Issue 6's goals per (shape, M) where Triton was timed."""
    rows = []
    for _, r in table.iterrows():
        if TRITON not in r or pd.isna(r.get(TRITON)):
            continue
        t = r[TRITON]
        row = dict(shape=r["shape"], m=int(r["m"]), triton_us=t, x_floor=t / r["floor_us"],
                   x_marlin=t / r[MARLIN] if MARLIN in r and pd.notna(r.get(MARLIN)) else float("nan"),
                   x_flashinfer=t / r[FI] if FI in r and pd.notna(r.get(FI)) else float("nan"))
        if row["m"] <= TRITON_SMALL_M:
            row["goal"] = f"<= {TRITON_SMALL_FLOOR_X}x floor and faster than Marlin"
            row["met"] = bool(row["x_floor"] <= TRITON_SMALL_FLOOR_X and row["x_marlin"] < 1)
        elif row["m"] >= TRITON_LARGE_M:
            row["goal"] = f"<= {TRITON_LARGE_FI_X}x FlashInfer"
            row["met"] = bool(row["x_flashinfer"] <= TRITON_LARGE_FI_X)
        else:
            row["goal"], row["met"] = "(none stated)", None
        rows.append(row)
    return pd.DataFrame(rows)


def latency_triton_goals(df: pd.DataFrame, routing: str = "uniform") -> pd.DataFrame:
    """mxfp4lab's Triton kernel against issue 6's goals per (shape, M): :func:`triton_goals` of :func:`latency_table`."""
    return triton_goals(latency_table(df, routing=routing))
