"""The accuracy study: MXFP4 error against the bf16 origin and the references, as tidy DataFrames
(notebook 02, ``mxfp4lab bench accuracy``); figures in :mod:`.accuracy_figures`.

Truth is always the bf16 "origin" weights (:mod:`mxfp4lab.synthetic`) run through the fp32 reference.
Paths compared with it: the MXFP4-quantized weights (per scale rule) through the fp32 reference, through
the kernel-faithful reference (bf16 stores where FlashInfer rounds), through the emulated backend, and --
on an H100/H200 with FlashInfer -- through the kernel.

Weight level (:func:`accuracy_quantization`, :func:`accuracy_rule_agreement`, :func:`accuracy_block_errors`,
:func:`accuracy_k_sweep`), one MoE layer (:func:`accuracy_layer`) and a stack of layers
(:func:`accuracy_depth`). Backends are named by a registry name or a
:class:`~mxfp4lab.backends.BackendSpec` (e.g. :data:`EMULATED_FP32`); their rows carry the spec's label.
"""

from __future__ import annotations

import dataclasses
import functools
from itertools import combinations
from typing import Any, Dict, Optional, Tuple

import pandas as pd
import torch

from ..backends import BackendSpec, get_backend
from ..formats import MX_BLOCK_SIZE, decode_e8m0, dequantize_mxfp4, quantize_mxfp4
from ..models import GPT_OSS_20B, get_model
from ..prepare import prepare_from_experts
from ..reference import ExpertWeights, expert_weights_from_logical, moe_reference, relative_error, route
from ..synthetic import make_origin_expert, make_origin_weights, quantize_origin
from .common import as_list

ACCURACY_RULES = ("ocp", "round_up", "flashinfer")
ACCURACY_DISTS = ("gaussian", "heavy_tailed", "outlier_channels")
ACCURACY_MATRICES = ("w_gate", "w_up", "w_down")
#: Half the widest E2M1 gap (4 -> 6) in units of the block scale: the worst rounding error of a
#: block whose scaled maximum is <= 6 (round_up, flashinfer). OCP can also clip [6, 8) down to 6.
E2M1_HALF_TOP_GAP = 1.0
OCP_CLIP_BOUND = 2.0


@functools.lru_cache(maxsize=8)
def _origin_expert(cfg, expert: int, seed: int, dist: str) -> Dict[str, torch.Tensor]:
    """:func:`make_origin_expert`, kept for the next weight-level function (the real-size draws are the
    slow part of notebook 02; callers never modify the tensors)."""
    return make_origin_expert(cfg, expert, seed=seed, dist=dist)


def _quant_dequant(w: torch.Tensor, rule: str):
    """``w [..., K]`` -> (packed, scales, dequantized fp32) under ``rule``."""
    packed, scales = quantize_mxfp4(w, scale_rule=rule)
    return packed, scales, dequantize_mxfp4(packed, scales, torch.float32)


def _matrix_error_stats(w: torch.Tensor, rule: str, qd=None) -> Dict[str, float]:
    """Weight-level error of one matrix ``[rows, K]`` (bf16 origin) under ``rule``; ``qd``: the
    ``_quant_dequant(w, rule)`` result when the caller already has it."""
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
    rows = []
    for cfg in map(get_model, as_list(configs)):
        for dist in as_list(dists):
            origin = _origin_expert(cfg, expert, seed, dist)
            for mat in as_list(matrices):
                w = origin[mat] if max_rows is None else origin[mat][:max_rows]
                for rule in as_list(rules):
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
    cfg = get_model(config)
    rows = []
    for dist in as_list(dists):
        w = _origin_expert(cfg, expert, seed, dist)[matrix][:max_rows].float()
        q = {r: _quant_dequant(w, r) for r in as_list(rules)}
        for a, b in combinations(as_list(rules), 2):
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
    cfg = get_model(config)
    frames = []
    for dist in as_list(dists):
        w = _origin_expert(cfg, expert, seed, dist)[matrix][:max_rows].float()
        wb = w.reshape(w.shape[0], -1, MX_BLOCK_SIZE)
        for rule in as_list(rules):
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
    out = []
    for dist in as_list(dists):
        for k in as_list(ks):
            cfg = GPT_OSS_20B.scaled(hidden=int(k), intermediate=rows, experts=1, top_k=1)
            w = make_origin_expert(cfg, 0, seed=seed, dist=dist)["w_gate"].float()
            x = torch.randn(m, int(k), generator=torch.Generator().manual_seed(seed + int(k))).bfloat16().float()
            ref = x.double() @ w.double().T
            for rule in as_list(rules):
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
    f = lambda k: None if k not in origin else origin[k].float()  # noqa: E731
    return ExpertWeights(f("w_gate"), f("w_up"), f("w_down"), f("b_gate"), f("b_up"), f("b_down"))


#: The emulated backend in fp32 mode (the semantic truth on the MXFP4 weights).
EMULATED_FP32 = BackendSpec("emulated_sm90", {"mode": "fp32"})


def _clamp_config(config, clamp: bool):
    return config if clamp else dataclasses.replace(config, swiglu_limit=None)


def _swiglu_kw(config) -> Dict[str, Any]:
    return dict(config.swiglu_kwargs, routed_scaling_factor=config.routed_scaling_factor)


def _input_scale(origin: Dict[str, torch.Tensor], preact_std: float) -> float:
    """Factor for unit-RMS inputs so that fc1 pre-activations (gate/up) have std ~ ``preact_std``."""
    row_sq = origin["w_gate"].float().square().sum(-1).mean().item()
    return preact_std / max(row_sq, 1e-30) ** 0.5


def _route_origin(x: torch.Tensor, origin: Dict[str, torch.Tensor], config):
    """Router of the origin layer on ``x`` (hash layers are routed by logits too, for simplicity)."""
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
    return get_backend("flashinfer_sm90").available()


def _backend_out(spec, moe, config, x, ids, w) -> torch.Tensor:
    """Run a backend (a registry name or a :class:`~mxfp4lab.backends.BackendSpec`) -> fp32 CPU."""
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
    base_cfg = get_model(config)
    rows = []
    for dist in as_list(dists):
        origin = make_origin_weights(base_cfg, seed, dist, layer=layer)
        ow = _origin_expert_weights(origin)
        g = torch.Generator().manual_seed(seed + 1)
        x = (torch.randn(m, base_cfg.hidden_size, generator=g) * _input_scale(origin, preact_std)).bfloat16().float()
        ids, w = _route_origin(x, origin, base_cfg)
        frac = _clamped_fraction(x, ids, ow, base_cfg)  # (independent of the clamp setting)
        quantized = {rule: quantize_origin(origin, base_cfg, rule) for rule in as_list(rules)}
        for cl in as_list(clamp):
            cfg = _clamp_config(base_cfg, bool(cl))
            kw = _swiglu_kw(cfg)
            common = dict(model=base_cfg.name, dist=dist, clamp=bool(cl), limit=cfg.swiglu_limit, clamped_frac=frac)
            truth = moe_reference(x, ids, w, ow, mode="fp32", **kw)
            o_k = moe_reference(x, ids, w, ow, mode="kernel", **kw)
            rows.append(dict(common, rule="bf16", path="origin kernel", reference="origin fp32",
                             rel_err=relative_error(o_k, truth)))
            for rule in as_list(rules):
                prepared = prepare_from_experts(quantized[rule], config=cfg)
                qw = expert_weights_from_logical(prepared)
                q32 = moe_reference(x, ids, w, qw, mode="fp32", **kw)
                qk = moe_reference(x, ids, w, qw, mode="kernel", **kw)
                r = dict(common, rule=rule)
                rows += [dict(r, path="mxfp4 fp32", reference="origin fp32", rel_err=relative_error(q32, truth)),
                         dict(r, path="mxfp4 kernel", reference="origin fp32", rel_err=relative_error(qk, truth)),
                         dict(r, path="mxfp4 kernel", reference="mxfp4 fp32", rel_err=relative_error(qk, q32))]
                for b in as_list(backends):
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
    base = get_model(config)
    cfg = _clamp_config(base, clamp)
    kw = _swiglu_kw(cfg)
    h0 = torch.randn(m, cfg.hidden_size, generator=torch.Generator().manual_seed(seed + 2)).bfloat16().float()
    rules = as_list(rules)
    # path label -> (what runs it, its scale rule): the truth, the origin with kernel roundings, the
    # kernel-faithful reference on each rule's MXFP4 weights, and each backend on each rule's weights
    paths = {"origin fp32": ("truth", "none"), "origin kernel": ("origin kernel", "bf16")}
    paths.update({f"mxfp4 {r}": ("reference", r) for r in rules})
    paths.update({f"{BackendSpec.of(b).label} {r}": (BackendSpec.of(b), r) for b in as_list(backends)
                  for r in rules})
    state = {p: h0.clone() for p in paths}
    rows = []
    for layer in range(layers):
        origin = make_origin_weights(base, seed, dist, layer=layer)
        ow = _origin_expert_weights(origin)
        scale = _input_scale(origin, preact_std)
        logical = {r: prepare_from_experts(quantize_origin(origin, base, r), config=cfg) for r in rules}
        qws = {r: expert_weights_from_logical(lg) for r, lg in logical.items()}
        outs, sets = {}, {}
        for p, (runner, rule) in paths.items():
            x = (_rms_norm(state[p]) * scale)
            x = x if runner == "truth" else x.bfloat16().float()
            ids, w = _route_origin(x, origin, base)
            sets[p] = ids.long().sort(-1).values
            if runner == "truth":
                y = moe_reference(x, ids, w, ow, mode="fp32", **kw)
            elif runner == "origin kernel":
                y = moe_reference(x, ids, w, ow, mode="kernel", **kw).float()
            elif runner == "reference":
                y = moe_reference(x, ids, w, qws[rule], mode="kernel", **kw).float()
            else:
                y = _backend_out(runner, logical[rule], cfg, x, ids, w)
            outs[p] = y
        c = 1.0
        if branch_scale is not None:
            rms = lambda t: t.double().square().mean().sqrt().item()  # noqa: E731
            c = branch_scale * rms(state["origin fp32"]) / max(rms(outs["origin fp32"]), 1e-30)
        for p, (runner, _) in paths.items():
            new = state[p] + c * outs[p] if residual else c * outs[p]
            state[p] = new if runner == "truth" else new.bfloat16().float()
        for p, (_, rule) in paths.items():
            rows.append(dict(model=base.name, dist=dist, rule=rule, path=p,
                             layer=layer + 1, rel_err_hidden=relative_error(state[p], state["origin fp32"]),
                             rel_err_out=relative_error(outs[p], outs["origin fp32"]),
                             routing_agreement=(sets[p] == sets["origin fp32"]).all(-1).double().mean().item()))
    return pd.DataFrame(rows)


def depth_summary(depth: pd.DataFrame) -> Dict[str, Dict[str, float]]:
    """After the last layer of :func:`accuracy_depth` frames (several ``seed`` s concatenated): per path the
    mean / min / max over seeds (and models) of the hidden-state error and of the routing agreement."""
    last = depth[depth["layer"] == depth["layer"].max()]
    out = {}
    for p, g in last.groupby("path", sort=False):
        out[p] = dict(mean=g.rel_err_hidden.mean(), min=g.rel_err_hidden.min(), max=g.rel_err_hidden.max(),
                      agree_mean=g.routing_agreement.mean(), agree_min=g.routing_agreement.min(),
                      agree_max=g.routing_agreement.max(), n=int(len(g)))
    return out
