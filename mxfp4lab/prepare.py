"""Checkpoint experts -> :class:`~mxfp4lab.moe_tensors.LogicalMoE`: kernel order, padding, TP/EP shard.

The result is LOGICAL (shapes in :mod:`mxfp4lab.moe_tensors`): halves ``[up ; gate]``, H and I padded to
multiples of 128 with zero bytes, the SwiGLU constants as fp32 ``[E_local]`` tensors. No physical layout
is applied here: each backend derives its own from these tensors (FlashInfer's SM90 interleave and scale
fold: :mod:`mxfp4lab.layout.sm90_moe`).

Sharding (:class:`~mxfp4lab.moe_tensors.ShardSpec`). Tensor parallel: rank ``r`` of ``tp`` holds the
intermediate columns ``shard.intermediate_slice(I)`` of up and gate (fc1 rows) and of fc2's K, cut in whole
32-column scale blocks (``ceil(blocks/tp)`` per rank, the last rank the rest: GPT-OSS's 2880 at TP=4 is
736, 736, 736, 672), each shard then padded to 128 on its own. The fc2 bias is added once: only rank 0 keeps it
(FlashInfer's finalize also passes the bias on rank 0 only, ``finalizeMoeRoutingKernelLauncher``).
Expert parallel: rank ``r`` of ``ep`` holds experts ``shard.expert_slice(E)`` = ``[r*E/ep, (r+1)*E/ep)``.
"""

from __future__ import annotations

from typing import Optional

import torch

from .checkpoints import Dsv4Experts, GptOssExperts
from .formats import (
    MX_BLOCK_SIZE,
    MXFormatError,
    check_dtype,
    check_multiple,
    check_scales_finite,
    e8m0_bytes,
)
from .models import FORMAT_DSV4, FORMAT_GPT_OSS, MoEConfig
from .models import SM90_PAD_MULTIPLE as PAD_MULTIPLE  # H and I padded to multiples of 128
from .models import round_up as _round_up
from .moe_tensors import LogicalMoE, ShardSpec, check_tensor, packed_rows, split_gate_up_rows, stack_up_gate
from .validate import check_param, require_tensor


def round_up(v: int, m: int = PAD_MULTIPLE) -> int:
    """:func:`mxfp4lab.models.round_up` with the SM90 padding multiple as default."""
    return _round_up(v, m)


# --------------------------------------------------------------------------------------------
# Padding (zero bytes: code 0 = +0.0, scale byte 0 = 2**-127 scales zeros)
# --------------------------------------------------------------------------------------------
def pad_dim(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Zero-pad ``t`` along ``dim`` up to ``size`` (no copy when already that size)."""
    cur = t.shape[dim]
    if cur == size:
        return t
    if cur > size:
        raise MXFormatError(f"cannot pad dim {dim} of size {cur} down to {size}")
    shape = list(t.shape)
    shape[dim] = size
    out = t.new_zeros(shape)
    out.narrow(dim, 0, cur).copy_(t)
    return out


def pad_packed(w: torch.Tensor, rows: int, k: int) -> torch.Tensor:
    """Packed FP4 ``[E, r, K/2]`` -> ``[E, rows, k/2]`` with zero bytes (codes 0 = +0.0)."""
    return pad_dim(pad_dim(w, 1, rows), 2, k // 2)


def pad_scales(s: torch.Tensor, rows: int, k: int) -> torch.Tensor:
    """E8M0 scales ``[E, r, K/32]`` -> ``[E, rows, k/32]`` with zero bytes (2**-127; they scale zeros)."""
    return pad_dim(pad_dim(s, 1, rows), 2, k // MX_BLOCK_SIZE)


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------
def _swiglu_tensors(config: Optional[MoEConfig], e_local: int, alpha, beta, limit, device):
    check_param(alpha, "swiglu_alpha", allow_none=True)
    check_param(beta, "swiglu_beta", allow_none=True)
    check_param(limit, "swiglu_limit", positive=True, allow_none=True)
    if config is not None:
        alpha = config.swiglu_alpha if alpha is None else alpha
        beta = config.swiglu_beta if beta is None else beta
        limit = config.swiglu_limit if limit is None else limit
    mk = lambda v: None if v is None else torch.full((e_local,), float(v), dtype=torch.float32, device=device)  # noqa: E731
    return mk(alpha), mk(beta), mk(limit)


def _finish(
    up_w, gate_w, up_s, gate_s, up_b, gate_b, down_w, down_s, down_b, *, hidden, inter, e_total,
    e_offset, shard, config, swiglu_alpha, swiglu_beta, swiglu_limit,
) -> LogicalMoE:
    """Pad, stack [up ; gate], attach the SwiGLU constants. Inputs are per-rank, unpadded."""
    h_pad, i_pad = round_up(hidden), round_up(inter)
    w13 = stack_up_gate(pad_packed(up_w, i_pad, h_pad), pad_packed(gate_w, i_pad, h_pad))
    s13 = stack_up_gate(pad_scales(up_s, i_pad, h_pad), pad_scales(gate_s, i_pad, h_pad))
    b13 = None
    if up_b is not None:
        b13 = stack_up_gate(pad_dim(up_b, 1, i_pad), pad_dim(gate_b, 1, i_pad))
    w2 = pad_packed(down_w, h_pad, i_pad)
    s2 = pad_scales(down_s, h_pad, i_pad)
    b2 = None if down_b is None else pad_dim(down_b, 1, h_pad)
    if b2 is not None and shard.tp_rank != 0:
        b2 = torch.zeros_like(b2)  # fc2 bias counted once across TP ranks (rank 0)
    a, b, lim = _swiglu_tensors(config, w13.shape[0], swiglu_alpha, swiglu_beta, swiglu_limit, w13.device)
    return LogicalMoE(
        w13.contiguous(), s13.contiguous(), None if b13 is None else b13.contiguous(),
        w2.contiguous(), s2.contiguous(), None if b2 is None else b2.contiguous(),
        hidden_size=hidden, intermediate_size=inter, num_experts_total=e_total, expert_offset=e_offset,
        shard=shard, swiglu_alpha=a, swiglu_beta=b, swiglu_limit=lim,
    )


# --------------------------------------------------------------------------------------------
# Model entry points
# --------------------------------------------------------------------------------------------
def prepare_gpt_oss(
    gate_up_blocks: torch.Tensor,
    gate_up_scales: torch.Tensor,
    gate_up_bias: Optional[torch.Tensor],
    down_blocks: torch.Tensor,
    down_scales: torch.Tensor,
    down_bias: Optional[torch.Tensor],
    *,
    config: Optional[MoEConfig] = None,
    shard: Optional[ShardSpec] = None,
    swiglu_alpha: Optional[float] = None,
    swiglu_beta: Optional[float] = None,
    swiglu_limit: Optional[float] = None,
) -> LogicalMoE:
    """GPT-OSS checkpoint tensors (``model.layers.N.mlp.experts.*``) -> :class:`~mxfp4lab.moe_tensors.LogicalMoE`.

    Args (checkpoint layout, E experts, H hidden, I intermediate):
        gate_up_blocks: uint8 ``[E, 2I, H/32, 16]`` (or already-flat ``[E, 2I, H/2]``), rows interleaved
            gate_0, up_0, gate_1, up_1, ...
        gate_up_scales: uint8 ``[E, 2I, H/32]``;  gate_up_bias: bf16 ``[E, 2I]`` (interleaved like rows)
        down_blocks: uint8 ``[E, H, I/32, 16]``;  down_scales: uint8 ``[E, H, I/32]``;  down_bias: bf16 ``[E, H]``
        config: supplies SwiGLU constants (GPT-OSS: alpha 1.702, beta 1.0, limit 7.0) and checks E/H/I.
        shard: TP/EP slice to prepare (module docstring).
    """
    shard = _shard(shard)
    gub = _packed_blocks(gate_up_blocks, "gate_up_proj_blocks")
    db = _packed_blocks(down_blocks, "down_proj_blocks")
    e, two_i, hb = gub.shape
    inter, hidden = two_i // 2, hb * 2
    if two_i % 2:
        raise MXFormatError(f"gate_up_proj_blocks rows = {two_i} must be even (gate/up interleaved)")
    _check_sizes(e, hidden, inter, "gate_up_proj_blocks [E, 2I, H/2]")
    check_tensor(gate_up_scales, "gate_up_proj_scales", (e, two_i, hidden // MX_BLOCK_SIZE), torch.uint8)
    check_tensor(db, "down_proj_blocks", (e, hidden, inter // 2), torch.uint8)
    check_tensor(down_scales, "down_proj_scales", (e, hidden, inter // MX_BLOCK_SIZE), torch.uint8)
    if gate_up_bias is not None or down_bias is not None:
        check_tensor(gate_up_bias, "gate_up_proj_bias", (e, two_i), torch.bfloat16)
        check_tensor(down_bias, "down_proj_bias", (e, hidden), torch.bfloat16)
        check_param(gate_up_bias, "gate_up_proj_bias")
        check_param(down_bias, "down_proj_bias")
    _check_config(config, e, hidden, inter, FORMAT_GPT_OSS, gate_up_bias is not None)
    check_scales_finite(gate_up_scales, "gate_up_proj_scales")
    check_scales_finite(down_scales, "down_proj_scales")

    (e0, e1), (i0, i1) = shard.expert_slice(e), shard.intermediate_slice(inter)
    gate_w, up_w = split_gate_up_rows(gub[e0:e1], "gate_up_proj_blocks")
    gate_s, up_s = split_gate_up_rows(gate_up_scales[e0:e1], "gate_up_proj_scales")
    gate_b = up_b = None
    if gate_up_bias is not None:
        gate_b, up_b = split_gate_up_rows(gate_up_bias[e0:e1], "gate_up_proj_bias")
        gate_b, up_b = gate_b[:, i0:i1], up_b[:, i0:i1]
    return _finish(
        up_w[:, i0:i1], gate_w[:, i0:i1], up_s[:, i0:i1], gate_s[:, i0:i1], up_b, gate_b,
        db[e0:e1, :, i0 // 2 : i1 // 2], down_scales[e0:e1, :, i0 // MX_BLOCK_SIZE : i1 // MX_BLOCK_SIZE],
        None if down_bias is None else down_bias[e0:e1],
        hidden=hidden, inter=i1 - i0, e_total=e, e_offset=e0, shard=shard, config=config,
        swiglu_alpha=swiglu_alpha, swiglu_beta=swiglu_beta, swiglu_limit=swiglu_limit,
    )


def prepare_dsv4(
    w1: torch.Tensor,
    w1_scale: torch.Tensor,
    w3: torch.Tensor,
    w3_scale: torch.Tensor,
    w2: torch.Tensor,
    w2_scale: torch.Tensor,
    *,
    config: Optional[MoEConfig] = None,
    shard: Optional[ShardSpec] = None,
    swiglu_alpha: Optional[float] = None,
    swiglu_beta: Optional[float] = None,
    swiglu_limit: Optional[float] = None,
) -> LogicalMoE:
    """DeepSeek-V4 experts (``layers.L.ffn.experts.i.{w1,w3,w2}``, stacked over i) -> :class:`~mxfp4lab.moe_tensors.LogicalMoE`.

    Args: ``w1`` (gate) and ``w3`` (up) uint8 ``[E, I, H/2]`` with E8M0 scales ``[E, I, H/32]``;
    ``w2`` (down) uint8 ``[E, H, I/2]`` with scales ``[E, H, I/32]``. No biases. SwiGLU for the kernel:
    alpha 1, beta 0, limit = swiglu_limit (config). Scales may arrive as ``torch.float8_e8m0fnu``.
    """
    shard = _shard(shard)
    for n, t in (("w1.scale", w1_scale), ("w3.scale", w3_scale), ("w2.scale", w2_scale)):
        require_tensor(t, n)
    w1_scale, w3_scale, w2_scale = map(e8m0_bytes, (w1_scale, w3_scale, w2_scale))
    check_dtype(w1, torch.uint8, "w1.weight")
    if w1.dim() != 3:
        raise MXFormatError(f"w1.weight must be [E, I, H/2] (stacked experts), got {tuple(w1.shape)}")
    e, inter, hb = w1.shape
    hidden = hb * 2
    _check_sizes(e, hidden, inter, "w1.weight [E, I, H/2]")
    check_tensor(w3, "w3.weight", (e, inter, hb), torch.uint8)
    check_tensor(w2, "w2.weight", (e, hidden, inter // 2), torch.uint8)
    check_tensor(w1_scale, "w1.scale", (e, inter, hidden // MX_BLOCK_SIZE), torch.uint8)
    check_tensor(w3_scale, "w3.scale", (e, inter, hidden // MX_BLOCK_SIZE), torch.uint8)
    check_tensor(w2_scale, "w2.scale", (e, hidden, inter // MX_BLOCK_SIZE), torch.uint8)
    _check_config(config, e, hidden, inter, FORMAT_DSV4, False)
    for n, s in (("w1.scale", w1_scale), ("w3.scale", w3_scale), ("w2.scale", w2_scale)):
        check_scales_finite(s, n)
    (e0, e1), (i0, i1) = shard.expert_slice(e), shard.intermediate_slice(inter)
    return _finish(
        w3[e0:e1, i0:i1], w1[e0:e1, i0:i1], w3_scale[e0:e1, i0:i1], w1_scale[e0:e1, i0:i1], None, None,
        w2[e0:e1, :, i0 // 2 : i1 // 2], w2_scale[e0:e1, :, i0 // MX_BLOCK_SIZE : i1 // MX_BLOCK_SIZE], None,
        hidden=hidden, inter=i1 - i0, e_total=e, e_offset=e0, shard=shard, config=config,
        swiglu_alpha=swiglu_alpha, swiglu_beta=swiglu_beta, swiglu_limit=swiglu_limit,
    )


_FORMAT_NAMES = {FORMAT_GPT_OSS: "GPT-OSS layer", FORMAT_DSV4: "DeepSeek-V4 layer"}


def _check_config(config: MoEConfig | None, e: int, hidden: int, inter: int, fmt: str, has_bias: bool) -> None:
    """The config must describe these tensors: format (its SwiGLU constants and routed scaling belong to
    it), E, H, I and whether the experts carry biases; one error lists every contradiction."""
    what = _FORMAT_NAMES[fmt]
    if config is None:
        return
    if not isinstance(config, MoEConfig):
        raise TypeError(f"config must be a mxfp4lab.models.MoEConfig or None, got {type(config).__name__}")
    got = {"checkpoint_format": fmt, "num_experts": e, "hidden_size": hidden, "intermediate_size": inter,
           "has_bias": has_bias}
    bad = {k: (g, getattr(config, k)) for k, g in got.items() if g != getattr(config, k)}
    if bad:
        detail = ", ".join(f"{k}: tensors say {g}, config {config.name!r} says {w}" for k, (g, w) in bad.items())
        raise MXFormatError(f"{what} does not match its config ({detail})")


def _shard(shard: ShardSpec | None) -> ShardSpec:
    if shard is None:
        return ShardSpec()
    if not isinstance(shard, ShardSpec):
        raise TypeError(f"shard must be a mxfp4lab.moe_tensors.ShardSpec or None, got {type(shard).__name__}")
    shard.check()
    return shard


def _packed_blocks(t: torch.Tensor, name: str) -> torch.Tensor:
    """GPT-OSS ``*_blocks`` ``[E, rows, K/32, 16]`` (or flat ``[E, rows, K/2]``) -> ``[E, rows, K/2]``."""
    check_dtype(t, torch.uint8, name)
    if t.dim() == 4 and t.shape[-1] != MX_BLOCK_SIZE // 2:
        raise MXFormatError(f"{name} must be [E, rows, K/32, 16] (16 bytes = one 32-element block), got "
                            f"{tuple(t.shape)}")
    if t.dim() not in (3, 4):
        raise MXFormatError(f"{name} must be [E, rows, K/32, 16] or [E, rows, K/2], got shape {tuple(t.shape)}")
    return packed_rows(t)


def _check_sizes(e: int, hidden: int, inter: int, source: str) -> None:
    """E >= 1; H and I positive multiples of 32 (otherwise the elements past the last full block would get
    the zero padding's scale byte, 2**-127, and vanish)."""
    if e < 1:
        raise MXFormatError(f"{source}: a layer needs at least one expert, got E = {e}")
    for n, v in (("hidden_size H", hidden), ("intermediate_size I", inter)):
        if v < 1:
            raise MXFormatError(f"{source}: {n} = {v} must be positive")
        check_multiple(v, MX_BLOCK_SIZE, f"{source}: {n}", "one E8M0 scale per 32 elements along K")


def prepare_from_experts(experts: GptOssExperts | Dsv4Experts, *, config: Optional[MoEConfig] = None,
                         **kw) -> LogicalMoE:
    """A checkpoint layer (:class:`~mxfp4lab.checkpoints.GptOssExperts` /
    :class:`~mxfp4lab.checkpoints.Dsv4Experts`, as read or made by :mod:`mxfp4lab.synthetic`) -> logical."""
    if isinstance(experts, GptOssExperts):
        return prepare_gpt_oss(experts.gate_up_blocks, experts.gate_up_scales, experts.gate_up_bias,
                               experts.down_blocks, experts.down_scales, experts.down_bias, config=config, **kw)
    if isinstance(experts, Dsv4Experts):
        return prepare_dsv4(experts.w1, experts.w1_scale, experts.w3, experts.w3_scale, experts.w2,
                            experts.w2_scale, config=config, **kw)
    raise TypeError(f"prepare_from_experts takes GptOssExperts or Dsv4Experts, got {type(experts).__name__}")


def trace_fc1_row(ckpt_row: int, config: MoEConfig, fmt: Optional[str] = None) -> dict:
    """Where checkpoint fc1 row ``ckpt_row`` lands in the logical ``w13`` (before the interleave).

    GPT-OSS: checkpoint row 2j is gate_j -> w13 row I_pad + j; row 2j+1 is up_j -> w13 row j.
    DeepSeek-V4: w1 (gate) row j -> I_pad + j, w3 (up) row j -> j; pass ``ckpt_row`` as j and the
    tensor in ``fmt`` ("w1"/"w3").
    """
    i_pad = config.padded_intermediate
    if config.checkpoint_format == "gpt_oss" and fmt is None:
        j, is_up = divmod(ckpt_row, 2)
        half = "up" if is_up else "gate"
    else:
        j, half = ckpt_row, {"w3": "up", "w1": "gate"}[fmt or "w1"]
    return {"half": half, "j": j, "w13_row": j + (0 if half == "up" else i_pad), "padded_rows": 2 * i_pad}
