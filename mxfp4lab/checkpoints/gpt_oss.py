"""GPT-OSS MoE checkpoint layout: names, shapes, the :class:`GptOssExperts` container, the validated reader.

Layer N, prefix ``model.layers.{N}.mlp.experts.``, experts stacked on axis 0 (H = hidden, I = intermediate,
E = routed experts)::

    gate_up_proj_blocks  uint8 [E, 2I, H/32, 16]   fc1, gate/up rows INTERLEAVED:
                                                   row 2j = gate_j, row 2j+1 = up_j
    gate_up_proj_scales  uint8 [E, 2I, H/32]       E8M0, one per 32 elements along H
    gate_up_proj_bias    bf16  [E, 2I]             interleaved like the rows
    down_proj_blocks     uint8 [E, H, I/32, 16]    fc2
    down_proj_scales     uint8 [E, H, I/32]
    down_proj_bias       bf16  [E, H]
    model.layers.{N}.mlp.router.weight  bf16 [E, H]
    model.layers.{N}.mlp.router.bias    bf16 [E]

``*_blocks [.., K/32, 16]`` is the packed ``[.., K/2]`` byte row reshaped: 16 bytes = 32 FP4 codes = one
scale block; element 2i in the low nibble (see :mod:`mxfp4lab.formats`). Scales may be stored as uint8 or
as ``torch.float8_e8m0fnu``; both are read and returned as uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..formats import MX_BLOCK_SIZE
from ..models import FORMAT_GPT_OSS, MoEConfig
from ..moe_tensors import merge_gate_up_rows, split_gate_up_rows
from .reader import (
    SCALE_DTYPES,
    Checkpoint,
    LayerExperts,
    PathLike,
    Quantizer,
    _as_checkpoint,
    _check_expert_count,
    _check_format,
    _check_meta,
    _check_subset,
    _runs,
    _scales_u8,
)

#: Bytes of one "block" row in GPT-OSS ``*_blocks``: 16 bytes = 32 FP4 codes = one scale block.
BYTES_PER_MX_BLOCK = MX_BLOCK_SIZE // 2

GPT_OSS_EXPERTS_PREFIX = "model.layers.{layer}.mlp.experts."
GPT_OSS_ROUTER_PREFIX = "model.layers.{layer}.mlp.router."

def gpt_oss_names(layer: int) -> dict[str, str]:
    """Field -> tensor name for one GPT-OSS layer."""
    e = GPT_OSS_EXPERTS_PREFIX.format(layer=layer)
    r = GPT_OSS_ROUTER_PREFIX.format(layer=layer)
    return {
        "gate_up_blocks": e + "gate_up_proj_blocks",
        "gate_up_scales": e + "gate_up_proj_scales",
        "gate_up_bias": e + "gate_up_proj_bias",
        "down_blocks": e + "down_proj_blocks",
        "down_scales": e + "down_proj_scales",
        "down_bias": e + "down_proj_bias",
        "router_weight": r + "weight",
        "router_bias": r + "bias",
    }


def gpt_oss_shapes(config: MoEConfig, num_experts: int | None = None) -> dict[str, tuple[int, ...]]:
    """Field -> checkpoint shape (experts on axis 0; router always has all E)."""
    e = config.num_experts if num_experts is None else num_experts
    h, i = config.hidden_size, config.intermediate_size
    E = config.num_experts
    return {
        "gate_up_blocks": (e, 2 * i, h // MX_BLOCK_SIZE, BYTES_PER_MX_BLOCK),
        "gate_up_scales": (e, 2 * i, h // MX_BLOCK_SIZE),
        "gate_up_bias": (e, 2 * i),
        "down_blocks": (e, h, i // MX_BLOCK_SIZE, BYTES_PER_MX_BLOCK),
        "down_scales": (e, h, i // MX_BLOCK_SIZE),
        "down_bias": (e, h),
        "router_weight": (E, h),
        "router_bias": (E,),
    }


_GPT_OSS_DTYPES = {
    "gate_up_blocks": (torch.uint8,),
    "gate_up_scales": SCALE_DTYPES,
    "gate_up_bias": (torch.bfloat16,),
    "down_blocks": (torch.uint8,),
    "down_scales": SCALE_DTYPES,
    "down_bias": (torch.bfloat16,),
    "router_weight": (torch.bfloat16,),
    "router_bias": (torch.bfloat16,),
}
_GPT_OSS_EXPERT_FIELDS = (
    "gate_up_blocks",
    "gate_up_scales",
    "gate_up_bias",
    "down_blocks",
    "down_scales",
    "down_bias",
)


@dataclass
class GptOssExperts(LayerExperts):
    """One GPT-OSS MoE layer in checkpoint layout (E' = len(experts), the experts held).

    gate_up_blocks uint8 [E', 2I, H/32, 16] (rows interleaved gate_0, up_0, gate_1, ...; a flat
    [E', 2I, H/2] is accepted too), gate_up_scales uint8 [E', 2I, H/32], gate_up_bias bf16 [E', 2I],
    down_blocks uint8 [E', H, I/32, 16], down_scales uint8 [E', H, I/32], down_bias bf16 [E', H];
    router_weight bf16 [E, H], router_bias bf16 [E] (all experts; None when not read / not made).
    ``experts``: the global ids held (default ``0 .. E'-1``).
    """

    gate_up_blocks: torch.Tensor
    gate_up_scales: torch.Tensor
    gate_up_bias: torch.Tensor | None
    down_blocks: torch.Tensor
    down_scales: torch.Tensor
    down_bias: torch.Tensor | None
    router_weight: torch.Tensor | None = None
    router_bias: torch.Tensor | None = None

    def __post_init__(self):
        self._number_experts(self.gate_up_blocks.shape[0])

    @property
    def gate_up_packed(self) -> torch.Tensor:
        """uint8 [E', 2I, H/2]: the blocks as packed FP4 rows (a view)."""
        return self.gate_up_blocks.flatten(-2)

    @property
    def down_packed(self) -> torch.Tensor:
        """uint8 [E', H, I/2]."""
        return self.down_blocks.flatten(-2)

    def split_gate_up(self) -> dict[str, torch.Tensor]:
        """De-interleave fc1: ``w_gate``/``w_up`` packed [E', I, H/2], ``*_scales`` [E', I, H/32],
        ``b_gate``/``b_up`` bf16 [E', I] (strided views; row 2j -> gate_j, row 2j+1 -> up_j)."""
        out = {}
        for key, t in (("w_{}", self.gate_up_packed), ("w_{}_scales", self.gate_up_scales), ("b_{}", self.gate_up_bias)):
            out[key.format("gate")], out[key.format("up")] = split_gate_up_rows(t, "gate_up")
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        """Checkpoint name -> tensor for this layer (router tensors only when held)."""
        names = gpt_oss_names(self.layer)
        out = {names[f]: getattr(self, f) for f in _GPT_OSS_EXPERT_FIELDS if getattr(self, f) is not None}
        return {**out, **router_tensors(self.layer, {"router_weight": self.router_weight,
                                                     "router_bias": self.router_bias})}

    @classmethod
    def concat(cls, parts: Sequence[GptOssExperts]) -> GptOssExperts:
        """Experts of several parts of one layer, stacked in order (router tensors from the first)."""
        cat = {f: None if getattr(parts[0], f) is None else torch.cat([getattr(p, f) for p in parts])
               for f in _GPT_OSS_EXPERT_FIELDS}
        return cls(**cat, router_weight=parts[0].router_weight, router_bias=parts[0].router_bias,
                   layer=parts[0].layer, experts=tuple(e for p in parts for e in p.experts))


#: Experts are stacked on axis 0 of each tensor: a writer collects a layer's experts first.
EXPERTS_STACKED = True


def router_tensors(layer: int, router: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Router origin (``router_weight`` [E, H], ``router_bias`` [E]) -> checkpoint name -> tensor."""
    names = gpt_oss_names(layer)
    return {names[k]: router[k] for k in ("router_weight", "router_bias") if router.get(k) is not None}


def quantize_origin(origin: dict[str, torch.Tensor], quantize: Quantizer, *, layer: int = 0,
                    experts: Sequence[int] = ()) -> GptOssExperts:
    """Logical origin (``w_gate``/``w_up`` [E', I, H], ``w_down`` [E', H, I], biases ``b_*``, optional
    ``router_weight``/``router_bias``) -> checkpoint layout. Gate/up rows are interleaved before
    quantizing; quantization is per row, so that equals interleaving separately quantized rows."""
    names = gpt_oss_names(layer)
    e, i, h = origin["w_gate"].shape
    gub, gus = quantize(merge_gate_up_rows(origin["w_gate"], origin["w_up"]), names["gate_up_blocks"])
    db, ds = quantize(origin["w_down"], names["down_blocks"])
    bias = None if "b_gate" not in origin else merge_gate_up_rows(origin["b_gate"], origin["b_up"])
    return GptOssExperts(
        gate_up_blocks=gub.reshape(e, 2 * i, h // MX_BLOCK_SIZE, BYTES_PER_MX_BLOCK), gate_up_scales=gus,
        gate_up_bias=bias, down_blocks=db.reshape(e, h, i // MX_BLOCK_SIZE, BYTES_PER_MX_BLOCK),
        down_scales=ds, down_bias=origin.get("b_down"), router_weight=origin.get("router_weight"),
        router_bias=origin.get("router_bias"), layer=layer, experts=tuple(experts),
    )


def read_gpt_oss_layer(
    ckpt: Checkpoint | PathLike,
    layer: int,
    config: MoEConfig,
    experts: Sequence[int] | None = None,
) -> GptOssExperts:
    """Read and validate one GPT-OSS MoE layer.

    Args:
        ckpt: a :class:`Checkpoint` or a path for :func:`open_checkpoint`.
        layer: layer index N.
        config: shapes to validate against (``checkpoint_format == "gpt_oss"``).
        experts: optional expert ids to read (e.g. an EP shard); only their rows of the stacked
            tensors are read (one slice per consecutive run). Router tensors are always read whole.

    Raises:
        CheckpointError: missing tensor(s), wrong dtype/shape, E mismatch, scale byte 255.
    """
    _check_format(config, FORMAT_GPT_OSS)
    ck = _as_checkpoint(ckpt)
    names = gpt_oss_names(layer)
    ck.require(names.values())
    shapes = gpt_oss_shapes(config)
    where = f"GPT-OSS layer {layer}"
    for fld in _GPT_OSS_EXPERT_FIELDS + ("router_weight", "router_bias"):
        _check_expert_count(ck, names[fld], config, where)
    for fld, name in names.items():
        _check_meta(ck, name, shapes[fld], _GPT_OSS_DTYPES[fld])
    ids = _check_subset(experts, config)
    out: dict[str, torch.Tensor] = {}
    for fld in _GPT_OSS_EXPERT_FIELDS:
        name = names[fld]
        if experts is None:
            t = ck.get(name)
        else:
            t = torch.cat([ck.get_rows(name, a, b) for a, b in _runs(ids)], dim=0)
        if fld.endswith("scales"):
            t = _scales_u8(t, name, ck)
        out[fld] = t
    out["router_weight"] = ck.get(names["router_weight"])
    out["router_bias"] = ck.get(names["router_bias"])
    return GptOssExperts(layer=layer, experts=ids, **out)

