"""Which model a checkpoint directory holds: detected from its tensor names and shapes, and from its
``config.json`` when there is one; a contradiction between the two is an error.

From the tensors (headers only, nothing is read):

* GPT-OSS: ``model.layers.{N}.mlp.experts.gate_up_proj_blocks`` ``[E, 2I, H/32, 16]`` gives E, I, H and the
  MoE layers N; the router ``model.layers.{N}.mlp.router.weight`` ``[E, H]``.
* DeepSeek-V4: ``layers.{L}.ffn.experts.{i}.w1.weight`` ``[I, H/2]`` gives I, H and the layers L;
  ``layers.{L}.ffn.gate.weight`` ``[E, H]`` gives E; leading layers whose gate holds ``tid2eid`` and no
  ``bias`` are hash-routed.

From ``config.json`` (Hugging Face or DeepSeek inference key names; the first present wins):
``model_type`` (``gpt_oss`` / ``deepseek*``), hidden (``hidden_size``, ``dim``), intermediate
(``intermediate_size`` for GPT-OSS; ``moe_intermediate_size``, ``moe_inter_dim`` for DeepSeek), experts
(``num_local_experts``, ``n_routed_experts``, ``num_experts``), top-k (``num_experts_per_tok``,
``experts_per_token``, ``n_activated_experts``), layers (``num_hidden_layers``, ``n_layers``), routed scaling
(``routed_scaling_factor``, ``route_scale``), ``swiglu_limit``, hash layers (``n_hash_layers``,
``num_hash_layers``). Without a top-k anywhere, the registered model of that format gives it.

The result is a :class:`~mxfp4lab.models.MoEConfig`: the registered model when every dimension matches one
(``gpt-oss-20b``, ``gpt-oss-120b``, ``dsv4-flash``, ``dsv4-pro``), else a copy of the format's model with the
detected dimensions, named ``<format>-h{H}-i{I}-e{E}-k{k}``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..formats import MX_BLOCK_SIZE
from ..models import DSV4_FLASH, FORMAT_DSV4, FORMAT_GPT_OSS, GPT_OSS_20B, MODELS, MoEConfig
from .reader import Checkpoint, CheckpointError, PathLike, open_checkpoint

CONFIG_JSON = "config.json"
_GPT_OSS_RE = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.gate_up_proj_blocks$")
_DSV4_RE = re.compile(r"^layers\.(\d+)\.ffn\.experts\.(\d+)\.w1\.weight$")
#: field -> config.json keys, in order of preference (module docstring)
CONFIG_KEYS = {
    "hidden_size": ("hidden_size", "dim"),
    "intermediate_size": {FORMAT_GPT_OSS: ("intermediate_size",),
                          FORMAT_DSV4: ("moe_intermediate_size", "moe_inter_dim")},
    "num_experts": ("num_local_experts", "n_routed_experts", "num_experts"),
    "top_k": ("num_experts_per_tok", "experts_per_token", "n_activated_experts"),
    "num_layers": ("num_hidden_layers", "n_layers"),
    "routed_scaling_factor": ("routed_scaling_factor", "route_scale"),
    "swiglu_limit": ("swiglu_limit",),
    "n_hash_layers": ("n_hash_layers", "num_hash_layers"),
}
_BASE = {FORMAT_GPT_OSS: GPT_OSS_20B, FORMAT_DSV4: DSV4_FLASH}


class CheckpointMismatch(CheckpointError):
    """config.json and the tensors disagree (format, a dimension, the layer count); the message names both."""


@dataclass(frozen=True)
class DetectedCheckpoint:
    """What :func:`detect_checkpoint` found. ``sources``: field -> where its value came from."""

    path: Path
    config: MoEConfig
    checkpoint_format: str
    layers: tuple[int, ...]
    hash_layers: tuple[int, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)
    config_json: dict[str, Any] | None = None

    def describe(self) -> str:
        c = self.config
        return (f"{c.name} ({self.checkpoint_format}): H={c.hidden_size}, I={c.intermediate_size}, "
                f"E={c.num_experts}, top-{c.top_k}, {len(self.layers)} MoE layers "
                f"({self.layers[0]}..{self.layers[-1]}) in {self.path}")


def _config_value(cfg: dict[str, Any], name: str, fmt: str):
    keys = CONFIG_KEYS[name]
    keys = keys[fmt] if isinstance(keys, dict) else keys
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k], k
    return None, None


def _format_of_config(cfg: dict[str, Any]) -> str | None:
    mt = str(cfg.get("model_type") or "").lower()
    if mt.startswith(("gpt_oss", "gpt-oss")):
        return FORMAT_GPT_OSS
    if mt.startswith("deepseek"):
        return FORMAT_DSV4
    return None


def _from_tensors(ck: Checkpoint) -> tuple[str, dict[str, int], tuple[int, ...], tuple[int, ...]]:
    """(format, {hidden_size, intermediate_size, num_experts}, MoE layers, hash layers) from names/shapes."""
    gpt = sorted(int(m.group(1)) for n in ck.keys() if (m := _GPT_OSS_RE.match(n)))  # noqa: SIM118 - not a dict
    ds: dict[int, int] = {}
    for n in ck.keys():  # noqa: SIM118 - Checkpoint is not iterable
        m = _DSV4_RE.match(n)
        if m:
            ds.setdefault(int(m.group(1)), 0)
    if gpt and ds:
        raise CheckpointMismatch(f"checkpoint {ck.source} holds both GPT-OSS (model.layers.N.mlp.experts.*) and "
                                 f"DeepSeek-V4 (layers.L.ffn.experts.*) expert tensors")
    if gpt:
        shape, _ = ck.meta(f"model.layers.{gpt[0]}.mlp.experts.gate_up_proj_blocks")
        if len(shape) != 4:
            raise CheckpointError(f"model.layers.{gpt[0]}.mlp.experts.gate_up_proj_blocks: expected "
                                  f"[E, 2I, H/32, 16], got {list(shape)}")
        e, two_i, hb, _ = shape
        return FORMAT_GPT_OSS, {"num_experts": e, "intermediate_size": two_i // 2, "hidden_size": hb * MX_BLOCK_SIZE}, \
            tuple(gpt), ()
    if ds:
        layers = tuple(sorted(ds))
        (i, h2), _ = ck.meta(f"layers.{layers[0]}.ffn.experts.0.w1.weight")
        gate = f"layers.{layers[0]}.ffn.gate.weight"
        if gate not in ck:
            raise CheckpointError(f"missing tensor {gate} (the router gives E); searched {ck.searched()}")
        (e, _h), _ = ck.meta(gate)
        hashed = []
        for L in layers:  # leading hash-routed layers: tid2eid and no correction bias
            if f"layers.{L}.ffn.gate.tid2eid" in ck and f"layers.{L}.ffn.gate.bias" not in ck:
                hashed.append(L)
            else:
                break
        return FORMAT_DSV4, {"num_experts": e, "intermediate_size": i, "hidden_size": 2 * h2}, layers, tuple(hashed)
    raise CheckpointError(f"no MXFP4 MoE expert tensors of a known layout in {ck.source}: expected GPT-OSS "
                          f"model.layers.N.mlp.experts.gate_up_proj_blocks or DeepSeek-V4 "
                          f"layers.L.ffn.experts.i.w1.weight (first names: {ck.keys()[:5]})")


def detect_checkpoint(path: PathLike) -> DetectedCheckpoint:
    """Detect the model of the checkpoint at ``path`` (module docstring).

    Raises:
        CheckpointMismatch: config.json contradicts the tensors (names both values and where they come from).
        CheckpointError: no known expert tensors, unreadable config.json.
    """
    p = Path(path)
    ck = open_checkpoint(p)
    fmt, dims, layers, hashed = _from_tensors(ck)
    sources = {k: "tensors" for k in dims}
    cdir = p if p.is_dir() else p.parent
    cfg_json = None
    values: dict[str, Any] = dict(dims)
    if (cdir / CONFIG_JSON).is_file():
        try:
            cfg_json = json.loads((cdir / CONFIG_JSON).read_text())
        except ValueError as exc:
            raise CheckpointError(f"cannot read {cdir / CONFIG_JSON}: {exc}") from exc
        cfmt = _format_of_config(cfg_json)
        if cfmt is not None and cfmt != fmt:
            raise CheckpointMismatch(f"{cdir / CONFIG_JSON} says model_type {cfg_json.get('model_type')!r} "
                                     f"({cfmt}), the tensor names are {fmt} ({ck.source})")
        for name in CONFIG_KEYS:
            v, key = _config_value(cfg_json, name, fmt)
            if v is None:
                continue
            if name in dims and int(v) != dims[name]:
                raise CheckpointMismatch(f"{name}: {cdir / CONFIG_JSON} says {key} = {v}, the tensors say "
                                         f"{dims[name]} ({ck.source})")
            if name == "num_layers" and layers and int(v) <= layers[-1]:
                raise CheckpointMismatch(f"num_layers: {cdir / CONFIG_JSON} says {key} = {v}, the tensors hold "
                                         f"MoE layer {layers[-1]}")
            if name == "n_hash_layers" and fmt == FORMAT_DSV4 and hashed != tuple(L for L in layers if L < int(v)):
                raise CheckpointMismatch(f"n_hash_layers: {cdir / CONFIG_JSON} says {key} = {v}, the tensors "
                                         f"have hash-routed layers {list(hashed)} of the MoE layers held "
                                         f"{list(layers[:8])}{'...' if len(layers) > 8 else ''}")
            if name not in dims:
                values[name] = v
                sources[name] = f"{CONFIG_JSON}:{key}"
    base = _BASE[fmt]
    if "top_k" not in values:
        same = [m for m in MODELS.values() if m.checkpoint_format == fmt and m.num_experts == dims["num_experts"]]
        values["top_k"] = (same[0] if same else base).top_k
        sources["top_k"] = f"registered model {(same[0] if same else base).name}"
    if fmt == FORMAT_DSV4 and "n_hash_layers" not in values:
        if len(hashed) < len(layers):  # a score-routed layer follows: the hash run is known
            values["n_hash_layers"], sources["n_hash_layers"] = (hashed[-1] + 1 if hashed else 0), "tensors"
        else:
            values["n_hash_layers"], sources["n_hash_layers"] = base.n_hash_layers, f"registered model {base.name}"
    kw = {"hidden_size": int(values["hidden_size"]), "intermediate_size": int(values["intermediate_size"]),
              "num_experts": int(values["num_experts"]), "top_k": int(values["top_k"])}
    for name, conv in (("routed_scaling_factor", float), ("swiglu_limit", float), ("n_hash_layers", int),
                       ("num_layers", int)):
        if name in values:
            kw[name] = conv(values[name])
    registered = [m for m in MODELS.values() if m.checkpoint_format == fmt and m.name != "seed-bench"
                  and all(getattr(m, k) == v for k, v in kw.items() if k != "num_layers")]
    if registered:
        config = dataclasses.replace(registered[0], **kw)
    else:
        config = dataclasses.replace(base, name=f"{fmt}-h{kw['hidden_size']}-i{kw['intermediate_size']}-"
                                                f"e{kw['num_experts']}-k{kw['top_k']}", **kw)
    return DetectedCheckpoint(path=p, config=config, checkpoint_format=fmt, layers=layers, hash_layers=hashed,
                              sources=sources, config_json=cfg_json)


def config_json_for(config: MoEConfig) -> dict[str, Any]:
    """A ``config.json`` (Hugging Face key names) describing ``config``'s MoE layers: what the synthetic
    writer puts beside a checkpoint, so synthetic checkpoints look like real ones to :func:`detect_checkpoint`."""
    if config.checkpoint_format == FORMAT_GPT_OSS:
        return {"model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"], "hidden_size": config.hidden_size,
                    "intermediate_size": config.intermediate_size, "num_local_experts": config.num_experts,
                    "num_experts_per_tok": config.top_k, "num_hidden_layers": config.num_layers,
                    "swiglu_limit": config.swiglu_limit}
    return {"model_type": "deepseek_v4", "hidden_size": config.hidden_size,
                "moe_intermediate_size": config.intermediate_size, "n_routed_experts": config.num_experts,
                "num_experts_per_tok": config.top_k, "num_hidden_layers": config.num_layers,
                "routed_scaling_factor": config.routed_scaling_factor, "n_shared_experts": config.n_shared_experts,
                "n_hash_layers": config.n_hash_layers, "swiglu_limit": config.swiglu_limit, "scoring_func": "sqrtsoftplus",
                "topk_method": "noaux_tc"}
