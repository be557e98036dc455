"""DeepSeek-V4 MoE checkpoint layout: names, shapes, the :class:`Dsv4Experts` container, the validated reader.

Layer L, expert i, one tensor per expert and projection (H = hidden, I = intermediate, E = routed experts)::

    layers.{L}.ffn.experts.{i}.w1.weight  uint8 [I, H/2]   gate, packed FP4
    layers.{L}.ffn.experts.{i}.w1.scale   E8M0  [I, H/32]
    layers.{L}.ffn.experts.{i}.w3.weight  uint8 [I, H/2]   up
    layers.{L}.ffn.experts.{i}.w3.scale   E8M0  [I, H/32]
    layers.{L}.ffn.experts.{i}.w2.weight  uint8 [H, I/2]   down
    layers.{L}.ffn.experts.{i}.w2.scale   E8M0  [H, I/32]
    layers.{L}.ffn.gate.weight            bf16  [E, H]     router (fp32 also accepted on read)
    layers.{L}.ffn.gate.bias              fp32  [E]        noaux_tc correction bias (score layers)
    layers.{L}.ffn.gate.tid2eid           int32 [V, top_k] token id -> experts (hash layers L < 3)

Scales may be stored as uint8 or as ``torch.float8_e8m0fnu``; both are read and returned as uint8.

ASSUMPTIONS (the published layout does not name them): ``ffn.gate.bias`` for the correction bias and
``ffn.gate.tid2eid`` for the hash table, and that hash layers have no bias (following DeepSeek's
reference ``inference/model.py``, where the hash Gate has ``tid2eid`` instead of a bias). The shared
expert (``ffn.shared_experts.*``, not MXFP4) is neither read nor written here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..formats import MX_BLOCK_SIZE
from ..models import FORMAT_DSV4, MoEConfig
from .reader import (
    SCALE_DTYPES,
    Checkpoint,
    CheckpointError,
    LayerExperts,
    PathLike,
    Quantizer,
    _as_checkpoint,
    _check_expert_count,
    _check_format,
    _check_meta,
    _check_subset,
    _scales_u8,
)

DSV4_EXPERT_PREFIX = "layers.{layer}.ffn.experts.{expert}."
DSV4_GATE_PREFIX = "layers.{layer}.ffn.gate."
DSV4_PROJS = ("w1", "w3", "w2")  # gate, up, down
_DSV4_EXPERT_RE = re.compile(r"^layers\.(\d+)\.ffn\.experts\.(\d+)\.w[123]\.(weight|scale)$")

def dsv4_expert_names(layer: int, expert: int) -> dict[str, str]:
    """``w1``, ``w1_scale``, ``w3``, ... -> tensor names of one DeepSeek-V4 expert."""
    p = DSV4_EXPERT_PREFIX.format(layer=layer, expert=expert)
    out = {}
    for w in DSV4_PROJS:
        out[w] = f"{p}{w}.weight"
        out[f"{w}_scale"] = f"{p}{w}.scale"
    return out


def dsv4_gate_names(layer: int) -> dict[str, str]:
    p = DSV4_GATE_PREFIX.format(layer=layer)
    return {"gate_weight": p + "weight", "gate_bias": p + "bias", "tid2eid": p + "tid2eid"}


def dsv4_expert_shapes(config: MoEConfig) -> dict[str, tuple[int, ...]]:
    """Per-expert shapes: w1/w3 [I, H/2], scales [I, H/32]; w2 [H, I/2], scale [H, I/32]."""
    h, i = config.hidden_size, config.intermediate_size
    return {
        "w1": (i, h // 2),
        "w1_scale": (i, h // MX_BLOCK_SIZE),
        "w3": (i, h // 2),
        "w3_scale": (i, h // MX_BLOCK_SIZE),
        "w2": (h, i // 2),
        "w2_scale": (h, i // MX_BLOCK_SIZE),
    }


@dataclass
class Dsv4Experts(LayerExperts):
    """One DeepSeek-V4 MoE layer in checkpoint layout, per-expert tensors stacked (E' = len(experts)).

    w1 (gate) uint8 [E', I, H/2], w1_scale uint8 [E', I, H/32]; w3 (up) same shapes;
    w2 (down) uint8 [E', H, I/2], w2_scale uint8 [E', H, I/32];
    gate_weight bf16/fp32 [E, H]; gate_bias fp32 [E] (None on hash layers);
    tid2eid int [V, top_k] on hash layers (None otherwise, or when absent); router tensors are None when
    not read / not made. ``experts``: the global ids held (default ``0 .. E'-1``).
    """

    w1: torch.Tensor
    w1_scale: torch.Tensor
    w3: torch.Tensor
    w3_scale: torch.Tensor
    w2: torch.Tensor
    w2_scale: torch.Tensor
    gate_weight: torch.Tensor | None = None
    gate_bias: torch.Tensor | None = None
    tid2eid: torch.Tensor | None = None

    def __post_init__(self):
        self._number_experts(self.w1.shape[0])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Checkpoint name -> tensor: one entry per (expert, projection, weight/scale), then the router
        tensors held."""
        out = {}
        for j, e in enumerate(self.experts):
            for key, name in dsv4_expert_names(self.layer, e).items():
                out[name] = getattr(self, key)[j].clone()  # its own storage (safetensors refuses shared ones)
        router = {"router_weight": self.gate_weight, "router_bias": self.gate_bias, "tid2eid": self.tid2eid}
        return {**out, **router_tensors(self.layer, router)}


#: One tensor per expert: a writer streams experts into the shards as they come.
EXPERTS_STACKED = False

#: router origin key -> gate field name (``dsv4_gate_names``)
_ROUTER_FIELDS = {"router_weight": "gate_weight", "router_bias": "gate_bias", "tid2eid": "tid2eid"}


def router_tensors(layer: int, router: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Router origin (``router_weight`` [E, H]; ``router_bias`` fp32 [E] on score layers or ``tid2eid``
    [V, top_k] on hash layers) -> checkpoint name -> tensor."""
    names = dsv4_gate_names(layer)
    return {names[f]: router[k] for k, f in _ROUTER_FIELDS.items() if router.get(k) is not None}


def quantize_origin(origin: dict[str, torch.Tensor], quantize: Quantizer, *, layer: int = 0,
                    experts: Sequence[int] = ()) -> Dsv4Experts:
    """Logical origin (``w_gate`` [E', I, H] -> w1, ``w_up`` -> w3, ``w_down`` [E', H, I] -> w2; optional
    ``router_weight`` / ``router_bias`` / ``tid2eid``) -> checkpoint layout."""
    names = dsv4_expert_names(layer, experts[0] if experts else 0)
    q = {}
    for w, key in (("w1", "w_gate"), ("w3", "w_up"), ("w2", "w_down")):
        q[w], q[f"{w}_scale"] = quantize(origin[key], names[w])
    return Dsv4Experts(**q, gate_weight=origin.get("router_weight"), gate_bias=origin.get("router_bias"),
                       tid2eid=origin.get("tid2eid"), layer=layer, experts=tuple(experts))


def dsv4_experts_in_checkpoint(ckpt: Checkpoint, layer: int) -> list[int]:
    """Sorted expert ids that have at least one tensor under ``layers.{layer}.ffn.experts.``."""
    ids = set()
    for name in ckpt.weight_map:
        m = _DSV4_EXPERT_RE.match(name)
        if m and int(m.group(1)) == layer:
            ids.add(int(m.group(2)))
    return sorted(ids)


def read_dsv4_layer(
    ckpt: Checkpoint | PathLike,
    layer: int,
    config: MoEConfig,
    experts: Sequence[int] | None = None,
) -> Dsv4Experts:
    """Read and validate one DeepSeek-V4 MoE layer, stacking per-expert tensors.

    Args:
        experts: optional expert ids to read (e.g. an EP shard); only those experts' tensors are
            touched. The router (``gate.weight``, ``gate.bias`` / ``gate.tid2eid``) is read whole.

    Raises:
        CheckpointError: missing tensor(s), wrong dtype/shape, E mismatch (router rows or expert ids
            present vs config), scale byte 255.
    """
    _check_format(config, FORMAT_DSV4)
    ck = _as_checkpoint(ckpt)
    gnames = dsv4_gate_names(layer)
    hash_layer = config.is_hash_layer(layer)
    ck.require([gnames["gate_weight"]] + ([] if hash_layer else [gnames["gate_bias"]]))

    where = f"DeepSeek-V4 layer {layer}"
    present = dsv4_experts_in_checkpoint(ck, layer)
    if present and present[-1] >= config.num_experts:
        raise CheckpointError(
            f"expert count mismatch: checkpoint has expert ids up to {present[-1]} under "
            f"{DSV4_EXPERT_PREFIX.format(layer=layer, expert='*')} ({len(present)} experts), "
            f"config {config.name!r} says num_experts = {config.num_experts} ({ck.searched()})"
        )
    _check_expert_count(ck, gnames["gate_weight"], config, where)
    h = config.hidden_size
    _check_meta(ck, gnames["gate_weight"], (config.num_experts, h), (torch.bfloat16, torch.float32))
    if not hash_layer:
        _check_expert_count(ck, gnames["gate_bias"], config, where)
        _check_meta(ck, gnames["gate_bias"], (config.num_experts,), (torch.float32,))

    ids = _check_subset(experts, config)
    per_expert = [dsv4_expert_names(layer, e) for e in ids]
    ck.require(n for names in per_expert for n in names.values())
    shapes = dsv4_expert_shapes(config)
    for names in per_expert:
        for key, name in names.items():
            _check_meta(ck, name, shapes[key], SCALE_DTYPES if key.endswith("scale") else (torch.uint8,))

    stacked: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        out = torch.empty((len(ids),) + shape, dtype=torch.uint8)
        for j, names in enumerate(per_expert):
            t = ck.get(names[key])
            if key.endswith("scale"):
                t = _scales_u8(t, names[key], ck)
            out[j] = t
        stacked[key] = out

    gate_weight = ck.get(gnames["gate_weight"])
    gate_bias = None if hash_layer else ck.get(gnames["gate_bias"])
    tid2eid = None
    if hash_layer and gnames["tid2eid"] in ck:
        tid2eid = ck.get(gnames["tid2eid"])
        if tid2eid.dim() != 2 or tid2eid.shape[1] != config.top_k:
            raise CheckpointError(
                f"tensor {gnames['tid2eid']}: shape must be [V, {config.top_k}], got {list(tid2eid.shape)} "
                f"(file {ck.weight_map[gnames['tid2eid']]})"
            )
    return Dsv4Experts(
        layer=layer, experts=ids, gate_weight=gate_weight, gate_bias=gate_bias, tid2eid=tid2eid, **stacked
    )

