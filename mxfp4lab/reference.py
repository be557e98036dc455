"""Routing, clamped SwiGLU and the MoE reference forward, in pure torch (any device).

Two references over the same dequantized weights:

* ``mode="fp32"`` (default ``dtype=torch.float32``; pass ``torch.float64`` for a tighter truth): the
  semantic output, no intermediate rounding.
* ``mode="kernel"``: rounds where FlashInfer's SM90 W4A16 path rounds. Assumed rounding points, read
  from ``fused_moe/cutlass_backend/cutlass_fused_moe_kernels.cuh`` (installed package) and checked on
  the GPU by comparing the kernel against both references (``scripts/gpu``):

  1. input ``x`` is bf16; weights are FP4 * 2**e, exact in bf16, so GEMM1 is exact-operand bf16 MMA with
     fp32 accumulation; its output (no bias) is stored as bf16  [round 1]
  2. ``doActivationKernel``: fc1 values -> fp32, + bf16 bias in fp32, SwiGLU in fp32, stored bf16 [round 2]
  3. GEMM2: bf16 x exact weights, fp32 accumulate, stored bf16  [round 3]
  4. ``finalizeMoeRoutingKernel``: per token, for k = 0..top_k-1 in order:
     ``acc += scale_k * (fp32(y_k) + fc2_bias)`` in fp32 (fc2 bias on TP rank 0 only), stored bf16 [round 4]

  The summation order inside each GEMM differs from torch's, so kernel vs ``mode="kernel"`` agree to
  a few bf16 ulps, not bit-exactly.

Clamped SwiGLU (FlashInfer ``SwigluBiasAdaptor``; GPT-OSS and DeepSeek-V4 both use it)::

    gate' = min(gate, limit);  up' = clamp(up, -limit, limit)
    out   = gate' * sigmoid(alpha * gate') * (up' + beta)

GPT-OSS: alpha 1.702, beta 1.0, limit 7.0. DeepSeek-V4: alpha 1, beta 0, limit 10 (= up * silu(gate)).

Routing:
* GPT-OSS (``softmax_topk``): top-k of the router logits, softmax over the k selected logits.
* DeepSeek-V4 (``sqrtsoftplus_noaux``): scores = sqrt(softplus(logits)); experts chosen by top-k of
  ``scores + correction_bias`` (noaux_tc: the bias steers selection only); weights = selected scores /
  their sum. ``routed_scaling_factor`` (1.5) multiplies the MoE output OUTSIDE the kernel. Group-limited
  selection and the hash-routed first layers are not modelled (routing ids can always be passed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .formats import dequantize_mxfp4, e8m0_bytes
from .models import MoEConfig
from .moe_tensors import LogicalMoE, packed_rows, split_gate_up_rows, unstack_up_gate
from .validate import InputError, check_finite, check_output, check_param, check_routed_inputs, require_tensor


# --------------------------------------------------------------------------------------------
# Dequantized logical weights
# --------------------------------------------------------------------------------------------
@dataclass
class ExpertWeights:
    """Float expert weights in logical orientation (unpadded, one rank's shard).

    ``w_gate``/``w_up`` ``[E, I, H]``, ``w_down`` ``[E, H, I]``, biases ``[E, I]`` / ``[E, H]`` or None.
    Experts ``[expert_offset, expert_offset + E)`` of ``num_experts_total``.
    """

    w_gate: torch.Tensor
    w_up: torch.Tensor
    w_down: torch.Tensor
    b_gate: Optional[torch.Tensor] = None
    b_up: Optional[torch.Tensor] = None
    b_down: Optional[torch.Tensor] = None
    expert_offset: int = 0
    num_experts_total: Optional[int] = None

    @property
    def num_experts(self) -> int:
        return self.w_gate.shape[0]


def _f(t, dtype):
    return None if t is None else t.to(dtype)


def expert_weights_from_gpt_oss(experts, dtype=torch.float32) -> ExpertWeights:
    """Straight from GPT-OSS checkpoint tensors (``GptOssExperts`` or anything with the same fields)."""
    gub, db = packed_rows(experts.gate_up_blocks), packed_rows(experts.down_blocks)
    w13 = dequantize_mxfp4(gub, experts.gate_up_scales, dtype)
    gate, up = split_gate_up_rows(w13)
    bg = bu = None
    if experts.gate_up_bias is not None:
        bg, bu = split_gate_up_rows(experts.gate_up_bias)
    return ExpertWeights(gate.contiguous(), up.contiguous(), dequantize_mxfp4(db, experts.down_scales, dtype),
                         _f(bg, dtype), _f(bu, dtype), _f(experts.down_bias, dtype),
                         0, gub.shape[0])


def expert_weights_from_dsv4(experts, dtype=torch.float32) -> ExpertWeights:
    """Straight from stacked DeepSeek-V4 tensors (``Dsv4Experts``: w1/w3/w2 + scales)."""
    return ExpertWeights(
        dequantize_mxfp4(experts.w1, e8m0_bytes(experts.w1_scale), dtype),
        dequantize_mxfp4(experts.w3, e8m0_bytes(experts.w3_scale), dtype),
        dequantize_mxfp4(experts.w2, e8m0_bytes(experts.w2_scale), dtype),
        expert_offset=0, num_experts_total=experts.w1.shape[0],
    )


def expert_weights_from_logical(logical: LogicalMoE, dtype=torch.float32) -> ExpertWeights:
    """From the kernel-ordered, padded logical stage: dequantize, split [up ; gate], trim padding."""
    if not isinstance(logical, LogicalMoE):
        raise TypeError(f"expert_weights_from_logical takes a LogicalMoE, got {type(logical).__name__}")
    h, i = logical.hidden_size, logical.intermediate_size
    e, dev = logical.num_local_experts, logical.w13.device
    gate = torch.empty(e, i, h, dtype=dtype, device=dev)
    up = torch.empty(e, i, h, dtype=dtype, device=dev)
    down = torch.empty(e, h, i, dtype=dtype, device=dev)
    for x in range(e):  # expert by expert: bounded temporaries at real size
        w13 = dequantize_mxfp4(logical.w13[x], logical.w13_scale[x], dtype)
        u, g = unstack_up_gate(w13.unsqueeze(0))
        up[x], gate[x] = u[0, :i, :h], g[0, :i, :h]
        down[x] = dequantize_mxfp4(logical.w2[x], logical.w2_scale[x], dtype)[:h, :i]
    bu = bg = bd = None
    if logical.w13_bias is not None:
        bu, bg = unstack_up_gate(logical.w13_bias)
        bu, bg = bu[:, :i].to(dtype), bg[:, :i].to(dtype)
    if logical.w2_bias is not None:
        bd = logical.w2_bias[:, :h].to(dtype)
    return ExpertWeights(gate, up, down, bg, bu, bd, logical.expert_offset, logical.num_experts_total)



# --------------------------------------------------------------------------------------------
# Routing and activation
# --------------------------------------------------------------------------------------------
def route(
    logits: torch.Tensor, config: MoEConfig, correction_bias: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Router logits ``[M, E]`` -> (``topk_ids`` int32 ``[M, k]``, ``topk_weights`` fp32 ``[M, k]``).

    The DeepSeek-V4 weights exclude ``routed_scaling_factor`` (applied outside the kernel). ``logits``
    must be finite (a NaN logit would pick arbitrary experts and NaN weights).
    """
    if not isinstance(config, MoEConfig):
        raise TypeError(f"config must be a mxfp4lab.models.MoEConfig, got {type(config).__name__}")
    require_tensor(logits, "logits")
    if logits.dim() != 2 or logits.shape[1] != config.num_experts or not logits.dtype.is_floating_point:
        raise InputError(f"logits must be floating point [M, E={config.num_experts}] ({config.name!r}), got "
                         f"{logits.dtype} {tuple(logits.shape)}")
    check_finite(logits, "logits")
    if correction_bias is not None:
        require_tensor(correction_bias, "correction_bias")
        if tuple(correction_bias.shape) != (config.num_experts,):
            raise InputError(f"correction_bias must be [E={config.num_experts}], got {tuple(correction_bias.shape)}")
        check_finite(correction_bias, "correction_bias")
    k = config.top_k
    lf = logits.float()
    if config.routing == "softmax_topk":
        vals, ids = torch.topk(lf, k, dim=-1)
        w = torch.softmax(vals, dim=-1)
    elif config.routing == "sqrtsoftplus_noaux":
        scores = torch.sqrt(torch.nn.functional.softplus(lf))
        sel = scores if correction_bias is None else scores + correction_bias.float()
        _, ids = torch.topk(sel, k, dim=-1)
        s = scores.gather(-1, ids)
        w = s / s.sum(-1, keepdim=True)
    else:
        raise ValueError(f"unknown routing {config.routing!r}")
    return ids.to(torch.int32), w.to(torch.float32)


def swiglu(gate, up, alpha=1.0, beta=0.0, limit=None):
    """Clamped SwiGLU (module docstring); alpha/beta/limit scalars or tensors broadcastable to gate.

    An elementwise primitive inside the forward loops: its parameters are checked where they enter
    (:func:`moe_reference`, :class:`~mxfp4lab.moe_tensors.LogicalMoE`, :mod:`mxfp4lab.prepare`), not here."""
    if limit is not None:
        gate = torch.minimum(gate, torch.as_tensor(limit, dtype=gate.dtype, device=gate.device))
        lim = torch.as_tensor(limit, dtype=up.dtype, device=up.device)
        up = torch.maximum(torch.minimum(up, lim), -lim)
    return gate * torch.sigmoid(gate * alpha) * (up + beta)


# --------------------------------------------------------------------------------------------
# MoE forward
# --------------------------------------------------------------------------------------------
def moe_reference(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    weights: ExpertWeights,
    *,
    swiglu_alpha: float = 1.0,
    swiglu_beta: float = 0.0,
    swiglu_limit: Optional[float] = None,
    mode: str = "fp32",
    dtype: torch.dtype = torch.float32,
    routed_scaling_factor: float = 1.0,
    check: bool = True,
) -> torch.Tensor:
    """MoE layer output ``[M, H]``.

    Args:
        x: ``[M, H]`` activations (``mode="kernel"`` rounds them to bf16 first).
        topk_ids: int ``[M, k]`` GLOBAL expert ids; ids outside this shard's experts contribute nothing.
        topk_weights: fp32 ``[M, k]``.
        weights: :class:`ExpertWeights` (one TP/EP shard, or the whole layer).
        mode: ``"fp32"`` (semantic, computed in ``dtype``) or ``"kernel"`` (module docstring; returns bf16).
        routed_scaling_factor: applied to the output after the experts (DeepSeek-V4: 1.5).
        check: validate the inputs (:func:`mxfp4lab.validate.check_routed_inputs`: ids in
            ``[0, num_experts_total)``, finite x and weights; finite SwiGLU constants, limit > 0). A backend
            whose ``__call__`` already checked them passes False (each rule is checked once).
    Returns:
        ``dtype`` (fp32 mode) or bf16 (kernel mode) ``[M, H]``.
    """
    if mode not in ("fp32", "kernel"):
        raise ValueError(f"mode must be 'fp32' or 'kernel', got {mode!r}")
    if isinstance(weights, LogicalMoE):
        raise TypeError("moe_reference takes ExpertWeights; for a LogicalMoE pass "
                        "expert_weights_from_logical(moe)")
    if not isinstance(weights, ExpertWeights):
        raise TypeError(f"weights must be mxfp4lab.reference.ExpertWeights, got {type(weights).__name__}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    h = weights.w_gate.shape[2]
    if check:
        total = weights.num_experts_total
        total = weights.expert_offset + weights.num_experts if total is None else total
        check_routed_inputs(x, topk_ids, topk_weights, hidden_size=h, num_experts=total)
        check_param(swiglu_alpha, "swiglu_alpha")
        check_param(swiglu_beta, "swiglu_beta")
        check_param(swiglu_limit, "swiglu_limit", positive=True, allow_none=True)
        check_param(routed_scaling_factor, "routed_scaling_factor")
    m = x.shape[0]
    kernel = mode == "kernel"
    cd = torch.float32 if kernel else dtype
    xin = x.to(torch.bfloat16).to(cd) if kernel else x.to(cd)
    k = topk_ids.shape[1]
    ids = topk_ids.long() - weights.expert_offset
    # per (token, slot) expert output, [M, k, H]; zeros for slots routed to other shards
    y = torch.zeros(m, k, h, dtype=cd, device=x.device)

    def rnd(t):  # a bf16 store in the kernel
        return t.to(torch.bfloat16).to(cd) if kernel else t

    for e in range(weights.num_experts):
        tok, slot = (ids == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        xe = xin[tok]
        g = rnd(xe @ weights.w_gate[e].to(cd).T)
        u = rnd(xe @ weights.w_up[e].to(cd).T)
        if weights.b_gate is not None:
            g = g + weights.b_gate[e].to(cd)
            u = u + weights.b_up[e].to(cd)
        a = rnd(swiglu(g, u, _pick(swiglu_alpha, e), _pick(swiglu_beta, e), _pick(swiglu_limit, e)))
        ye = rnd(a @ weights.w_down[e].to(cd).T)
        if weights.b_down is not None:
            ye = ye + weights.b_down[e].to(cd)
        y[tok, slot] = ye
    w = topk_weights.to(cd)
    if kernel:
        acc = torch.zeros(m, h, dtype=cd, device=x.device)
        for j in range(k):  # the kernel's finalize sums k = 0..top_k-1 in order, in fp32
            acc = acc + w[:, j : j + 1] * y[:, j]
        out = acc.to(torch.bfloat16)
        out = out if routed_scaling_factor == 1.0 else (out.float() * routed_scaling_factor).to(torch.bfloat16)
    else:
        out = (w.unsqueeze(-1) * y).sum(1)
        out = out * routed_scaling_factor if routed_scaling_factor != 1.0 else out
    if check:
        check_output(out, "moe_reference", x)
    return out


def _pick(v, e):
    """Per-expert parameter: a scalar, or a tensor indexed by local expert."""
    if isinstance(v, torch.Tensor):
        return v[e].item() if v.dim() else v.item()
    return v


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in fp64, for two tensors of one shape (no broadcasting: a shape mismatch is
    an :class:`~mxfp4lab.validate.InputError`). NaN or inf in either never passes: returns inf. Two empty
    or two all-zero tensors give 0."""
    require_tensor(out, "out")
    require_tensor(ref, "ref")
    if out.shape != ref.shape:
        raise InputError(f"relative_error: out {tuple(out.shape)} and ref {tuple(ref.shape)} must have the same "
                         "shape (no broadcasting)")
    o, r = out.double(), ref.double()
    if not (bool(torch.isfinite(o).all()) and bool(torch.isfinite(r).all())):
        return float("inf")
    return ((o - r).norm() / r.norm().clamp_min(1e-300)).item()
