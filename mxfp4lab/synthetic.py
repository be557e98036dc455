"""Every generator of synthetic MoE data, returning the real types: origin weights (bf16 "truth" in logical
form), whole layers in checkpoint layout (:class:`~mxfp4lab.checkpoints.GptOssExperts` /
:class:`~mxfp4lab.checkpoints.Dsv4Experts`), routed token inputs, and synthetic checkpoints on disk.

* :func:`make_origin_expert` / :func:`make_origin_router` / :func:`make_origin_weights` -- bf16 origin of
  one expert / the router / a layer; each (seed, layer, expert) has its own deterministic stream, so any
  subset of experts is reproducible.
* :func:`quantize_origin` -- origin -> checkpoint layout under an explicit scale rule (the accuracy study).
* :func:`write_synthetic` -- a checkpoint in the exact real layout (the config's format), optionally with
  the origin saved beside it.
* :func:`random_layer` -- a random MXFP4 layer in checkpoint layout straight on a device (uniform codes,
  E8M0 bytes 118..122 as FlashInfer's own test; the latency and kernel checks).
* :func:`make_inputs` -- token sets ``(x, topk_ids, topk_weights)`` with uniform or skewed routing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoints import dsv4, gpt_oss
from .checkpoints.dsv4 import Dsv4Experts
from .checkpoints.gpt_oss import GptOssExperts
from .checkpoints.reader import SCALE_DTYPES, PathLike, _check_subset
from .checkpoints.writer import ShardWriter, prepare_target, write_origin
from .formats import ScaleRule, quantize_mxfp4
from .models import FORMAT_DSV4, FORMAT_GPT_OSS, MoEConfig
from .reference import route

#: Checkpoint format -> its module (``quantize_origin``, the Experts container).
FORMAT_MODULES = {FORMAT_GPT_OSS: gpt_oss, FORMAT_DSV4: dsv4}

# --------------------------------------------------------------------------------------------
# Origin weights
# --------------------------------------------------------------------------------------------
#: Synthetic weights: default std, bias / router std, heavy-tail df, outlier channel boost/fraction.
DEFAULT_STD = 0.02
BIAS_STD = 0.01
ROUTER_STD = 0.02
CORRECTION_BIAS_STD = 0.01
STUDENT_T_DF = 3
OUTLIER_SCALE = 10.0
OUTLIER_CHANNEL_FRACTION = 1 / 256  # at least one channel
#: Token vocabulary of the synthetic hash-routing table ``tid2eid`` (the real V is the model's vocab).
SYNTHETIC_HASH_VOCAB = 1024
DISTRIBUTIONS = ("gaussian", "heavy_tailed", "outlier_channels")

# --------------------------------------------------------------------------------------------
# Synthetic origin weights
# --------------------------------------------------------------------------------------------
_MASK63 = (1 << 63) - 1


def _generator(seed: int, layer: int, stream: int) -> torch.Generator:
    """Independent deterministic stream per (seed, layer, stream); stream = expert id, or < 0 for
    layer-wide draws (router, outlier channels)."""
    mixed = seed * 0x9E3779B97F4A7C15 + (layer + 1) * 0xBF58476D1CE4E5B9 + (stream + 7) * 0x94D049BB133111EB
    return torch.Generator().manual_seed(mixed & _MASK63)


_STREAM_ROUTER = -1
_STREAM_OUTLIERS = -2


def _draw(shape: tuple[int, ...], gen: torch.Generator, dist: str, std: float) -> torch.Tensor:
    """fp32 draw with standard deviation ``std`` (before any outlier boost)."""
    if dist in ("gaussian", "outlier_channels"):
        return torch.randn(shape, generator=gen) * std
    _check_dist(dist)  # heavy_tailed is what remains
    # Student-t(df): z / sqrt(chi2_df / df); variance df/(df-2) -> rescale to unit variance.
    z = torch.randn(shape, generator=gen)
    chi2 = torch.randn((STUDENT_T_DF,) + tuple(shape), generator=gen).square().sum(0)
    t = z / torch.sqrt(chi2 / STUDENT_T_DF)
    return t * (std / math.sqrt(STUDENT_T_DF / (STUDENT_T_DF - 2)))


def _check_dist(dist: str) -> None:
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"dist must be one of {DISTRIBUTIONS} (got {dist!r})")


def _stack_origin(per_expert: list, router: dict) -> dict[str, torch.Tensor]:
    """Per-expert origin dicts -> stacked ``[E, ...]`` tensors, plus the router tensors."""
    out = {k: torch.stack([p[k] for p in per_expert]) for k in per_expert[0]}
    out.update(router)
    return out


def outlier_channels(config: MoEConfig, layer: int, seed: int) -> dict[str, torch.Tensor]:
    """Input-channel ids boosted x10 by ``dist="outlier_channels"``: ``"hidden"`` (K of w_gate/w_up)
    and ``"intermediate"`` (K of w_down), int64, shared by all experts of the layer."""
    gen = _generator(seed, layer, _STREAM_OUTLIERS)
    out = {}
    for key, k in (("hidden", config.hidden_size), ("intermediate", config.intermediate_size)):
        n = max(1, int(k * OUTLIER_CHANNEL_FRACTION))
        out[key] = torch.randperm(k, generator=gen)[:n].sort().values
    return out


def make_origin_expert(
    config: MoEConfig,
    expert: int,
    *,
    layer: int = 0,
    seed: int = 0,
    dist: str = "gaussian",
    std: float = DEFAULT_STD,
    _outliers: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """bf16 origin weights of ONE expert in logical form: ``w_gate`` [I, H], ``w_up`` [I, H],
    ``w_down`` [H, I], plus ``b_gate`` [I], ``b_up`` [I], ``b_down`` [H] when ``config.has_bias``.
    Depends only on (seed, layer, expert, dist, std), so any subset of experts is reproducible."""
    h, i = config.hidden_size, config.intermediate_size
    gen = _generator(seed, layer, expert)
    w_gate = _draw((i, h), gen, dist, std)
    w_up = _draw((i, h), gen, dist, std)
    w_down = _draw((h, i), gen, dist, std)
    if dist == "outlier_channels":
        oc = _outliers if _outliers is not None else outlier_channels(config, layer, seed)
        w_gate[:, oc["hidden"]] *= OUTLIER_SCALE
        w_up[:, oc["hidden"]] *= OUTLIER_SCALE
        w_down[:, oc["intermediate"]] *= OUTLIER_SCALE
    out = {"w_gate": w_gate.bfloat16(), "w_up": w_up.bfloat16(), "w_down": w_down.bfloat16()}
    if config.has_bias:
        out["b_gate"] = (torch.randn(i, generator=gen) * BIAS_STD).bfloat16()
        out["b_up"] = (torch.randn(i, generator=gen) * BIAS_STD).bfloat16()
        out["b_down"] = (torch.randn(h, generator=gen) * BIAS_STD).bfloat16()
    return out


def make_origin_router(config: MoEConfig, *, layer: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    """Router origin: ``router_weight`` bf16 [E, H] and ``router_bias`` [E] (GPT-OSS: bf16 logit bias;
    DeepSeek-V4: fp32 noaux correction bias, absent on hash layers, which get ``tid2eid`` int32
    [SYNTHETIC_HASH_VOCAB, top_k] instead)."""
    gen = _generator(seed, layer, _STREAM_ROUTER)
    e, h = config.num_experts, config.hidden_size
    out = {"router_weight": (torch.randn(e, h, generator=gen) * ROUTER_STD).bfloat16()}
    bias = torch.randn(e, generator=gen) * CORRECTION_BIAS_STD
    if config.checkpoint_format == FORMAT_GPT_OSS:
        out["router_bias"] = bias.bfloat16()
    elif config.is_hash_layer(layer):
        # Each token id -> top_k distinct experts: argsort of random keys, first k.
        keys = torch.rand(SYNTHETIC_HASH_VOCAB, e, generator=gen)
        out["tid2eid"] = keys.argsort(dim=-1)[:, : config.top_k].to(torch.int32)
    else:
        out["router_bias"] = bias.float()
    return out


def make_origin_weights(
    config: MoEConfig,
    seed: int = 0,
    dist: str = "gaussian",
    *,
    layer: int = 0,
    std: float = DEFAULT_STD,
    experts: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """bf16 "origin" (high-precision truth) of one layer in LOGICAL form (E' = len(experts)):

    ``w_gate`` [E', I, H], ``w_up`` [E', I, H], ``w_down`` [E', H, I]; with biases ``b_gate`` [E', I],
    ``b_up`` [E', I], ``b_down`` [E', H]; router ``router_weight`` [E, H] and ``router_bias`` [E]
    (or ``tid2eid`` on DeepSeek-V4 hash layers).

    ``dist``: ``"gaussian"`` (N(0, std^2)), ``"heavy_tailed"`` (Student-t df=3 rescaled to std),
    ``"outlier_channels"`` (gaussian; ~1/256 of the input (K) channels x10, same channels for all
    experts of the layer). Generated expert by expert (see :func:`make_origin_expert`).
    """
    _check_dist(dist)
    ids = _check_subset(experts, config)
    oc = outlier_channels(config, layer, seed) if dist == "outlier_channels" else None
    per = [
        make_origin_expert(config, e, layer=layer, seed=seed, dist=dist, std=std, _outliers=oc) for e in ids
    ]
    return _stack_origin(per, make_origin_router(config, layer=layer, seed=seed))



# --------------------------------------------------------------------------------------------
# Checkpoint layout: quantized origin, random layers
# --------------------------------------------------------------------------------------------
def _quantizer(rule: ScaleRule, scale_dtype: torch.dtype = torch.uint8):
    def q(x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        packed, scales = quantize_mxfp4(x, scale_rule=rule, name=name)
        return packed, scales.view(scale_dtype)

    return q


def quantize_origin(origin: dict[str, torch.Tensor], config: MoEConfig, rule: ScaleRule | str, *, layer: int = 0,
                    experts: Sequence[int] = ()) -> GptOssExperts | Dsv4Experts:
    """Origin (:func:`make_origin_weights` form, stacked over experts) -> the config's checkpoint layout,
    quantized with ``rule`` (what a checkpoint reader would return for those weights)."""
    fmt = FORMAT_MODULES[config.checkpoint_format]
    return fmt.quantize_origin(origin, _quantizer(ScaleRule(rule)), layer=layer, experts=experts)


def random_layer(cfg: MoEConfig, device="cuda", seed: int = 0) -> GptOssExperts | Dsv4Experts:
    """Random MXFP4 layer in checkpoint layout, made on ``device``: uniform random FP4 bytes, E8M0 scale
    bytes in 118..122 (as FlashInfer's own test), small bf16 biases for GPT-OSS. No router tensors."""
    g = torch.Generator(device=device).manual_seed(seed)
    e, h, i = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size

    def codes(*shape):
        return torch.randint(0, 256, shape, dtype=torch.uint8, device=device, generator=g)

    def scales(*shape):
        return torch.randint(118, 123, shape, dtype=torch.uint8, device=device, generator=g)

    if cfg.checkpoint_format == FORMAT_GPT_OSS:
        return GptOssExperts(
            gate_up_blocks=codes(e, 2 * i, h // 2), gate_up_scales=scales(e, 2 * i, h // 32),
            gate_up_bias=(torch.randn(e, 2 * i, device=device, generator=g) * 0.05).to(torch.bfloat16),
            down_blocks=codes(e, h, i // 2), down_scales=scales(e, h, i // 32),
            down_bias=(torch.randn(e, h, device=device, generator=g) * 0.05).to(torch.bfloat16),
        )
    return Dsv4Experts(w1=codes(e, i, h // 2), w1_scale=scales(e, i, h // 32), w3=codes(e, i, h // 2),
                       w3_scale=scales(e, i, h // 32), w2=codes(e, h, i // 2), w2_scale=scales(e, h, i // 32))


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
#: ``make_inputs(routing=...)``: uniform random logits, or logits plus a fixed per-expert popularity.
ROUTINGS = ("uniform", "skewed")
#: std of the per-expert popularity added to the logits by ``routing="skewed"`` (a few experts take most tokens)
SKEW_STD = 3.0


def make_inputs(cfg: MoEConfig, m: int, n_sets: int, routing: str, device="cuda", seed: int = 0) -> list:
    """``n_sets`` token sets ``(x bf16 [m, H], topk_ids int32 [m, k], topk_weights fp32 [m, k])``, each with
    its own tokens and routing (from random softmax logits; ``"skewed"`` adds a fixed popularity)."""
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
    g = torch.Generator(device=device).manual_seed(seed)
    popularity = torch.randn(cfg.num_experts, device=device, generator=g) * SKEW_STD
    sets = []
    for _ in range(n_sets):
        x = torch.randn(m, cfg.hidden_size, device=device, generator=g).to(torch.bfloat16)
        logits = torch.randn(m, cfg.num_experts, device=device, generator=g)
        if routing == "skewed":
            logits = logits + popularity
        ids, w = route(logits, cfg)
        sets.append((x, ids, w))
    return sets


# --------------------------------------------------------------------------------------------
# Synthetic checkpoints on disk
# --------------------------------------------------------------------------------------------
@dataclass
class SyntheticCheckpoint:
    """What a synthetic writer produced.

    path: what to pass to :func:`open_checkpoint` (the file, or the directory).
    files: the safetensors files written (plus ``index`` when sharded).
    origin: layer -> logical bf16 origin (:func:`make_origin_weights` form), or None when not returned.
    origin_path: ``origin.safetensors`` when saved (names ``layers.{L}.{key}``).
    """

    path: Path
    files: list[Path]
    index: Path | None = None
    origin: dict[int, dict[str, torch.Tensor]] | None = None
    origin_path: Path | None = None
    config: MoEConfig | None = None
    scale_rule: ScaleRule | None = None
    layers: tuple[int, ...] = field(default_factory=tuple)



def write_synthetic(
    path: PathLike,
    config: MoEConfig,
    *,
    scale_rule: ScaleRule | str,
    layers: Sequence[int] = (0,),
    seed: int = 0,
    dist: str = "gaussian",
    std: float = DEFAULT_STD,
    max_shard_bytes: int | None = None,
    return_origin: bool = True,
    save_origin: bool = False,
    scale_dtype: torch.dtype = torch.uint8,
) -> SyntheticCheckpoint:
    """Write a synthetic checkpoint in the exact real layout of ``config.checkpoint_format``
    (:mod:`mxfp4lab.checkpoints.gpt_oss` / :mod:`~mxfp4lab.checkpoints.dsv4`).

    Origin bf16 weights (:func:`make_origin_expert`, expert by expert) are quantized with
    ``quantize_mxfp4(..., scale_rule=scale_rule)`` (required: no default rule). GPT-OSS: gate/up rows
    interleaved, experts stacked per tensor, biases and router. DeepSeek-V4: per-expert ``w1``/``w3``/``w2``
    + E8M0 scales streamed into the shards expert by expert, ``gate.weight`` bf16 [E, H], ``gate.bias``
    fp32 [E] on score layers, ``gate.tid2eid`` int32 on hash layers (< ``config.n_hash_layers``).

    Args:
        path: a directory (``model.safetensors`` inside, or shards + ``model.safetensors.index.json``
            with ``max_shard_bytes``), or a ``*.safetensors`` file path (single file).
        max_shard_bytes: start a new shard before a tensor would push the current one past this.
        return_origin: put the logical bf16 origin in the result (set False at real size: ~4 GB/layer).
        save_origin: also save it as ``origin.safetensors`` in the checkpoint directory.
        scale_dtype: uint8 (as the real checkpoints) or torch.float8_e8m0fnu.
    """
    fmt = FORMAT_MODULES[config.checkpoint_format]
    rule = ScaleRule(scale_rule)
    _check_dist(dist)
    if scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be one of {SCALE_DTYPES} (got {scale_dtype})")
    layers = tuple(int(x) for x in layers)
    directory, single = prepare_target(path, max_shard_bytes)
    meta = {"format": "pt", "mxfp4lab.model": config.name, "mxfp4lab.scale_rule": rule.value,
            "mxfp4lab.dist": dist, "mxfp4lab.seed": str(seed), "mxfp4lab.std": repr(std)}
    writer = ShardWriter(directory, max_shard_bytes, meta, single)
    q = _quantizer(rule, scale_dtype)
    keep_origin = return_origin or save_origin
    origins: dict[int, dict[str, torch.Tensor]] = {}
    for layer in layers:
        oc = outlier_channels(config, layer, seed) if dist == "outlier_channels" else None
        router = make_origin_router(config, layer=layer, seed=seed)
        writer.add_all(fmt.router_tensors(layer, router))
        kept, parts = [], []
        for e in range(config.num_experts):
            o = make_origin_expert(config, e, layer=layer, seed=seed, dist=dist, std=std, _outliers=oc)
            part = fmt.quantize_origin({k: v.unsqueeze(0) for k, v in o.items()}, q, layer=layer, experts=(e,))
            if fmt.EXPERTS_STACKED:  # one tensor over all experts: written once the layer is complete
                parts.append(part)
            else:  # one tensor per expert: into the shards now
                writer.add_all(part.tensors())
            if keep_origin:
                kept.append(o)
        if parts:
            writer.add_all(type(parts[0]).concat(parts).tensors())
        del parts
        if keep_origin:
            origins[layer] = _stack_origin(kept, router)
    files, index = writer.finish()
    origin_path = None
    if save_origin:
        origin_path = write_origin(directory, origins, {"mxfp4lab.model": config.name, "mxfp4lab.dist": dist,
                                                        "mxfp4lab.seed": str(seed)})
    return SyntheticCheckpoint(
        path=single if single is not None else directory, files=files, index=index,
        origin=origins if return_origin else None, origin_path=origin_path, config=config, scale_rule=rule,
        layers=layers,
    )
