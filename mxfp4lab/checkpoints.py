"""Real MXFP4 MoE checkpoint layouts (GPT-OSS, DeepSeek-V4): lazy readers, validation, synthetic writers.

Layouts (FACTS.md "Checkpoint layouts"; H = hidden, I = intermediate, E = routed experts):

GPT-OSS, layer N, prefix ``model.layers.{N}.mlp.experts.``, experts stacked on axis 0::

    gate_up_proj_blocks  uint8 [E, 2I, H/32, 16]   fc1, gate/up rows INTERLEAVED:
                                                   row 2j = gate_j, row 2j+1 = up_j
    gate_up_proj_scales  uint8 [E, 2I, H/32]       E8M0, one per 32 elements along H
    gate_up_proj_bias    bf16  [E, 2I]             interleaved like the rows
    down_proj_blocks     uint8 [E, H, I/32, 16]    fc2
    down_proj_scales     uint8 [E, H, I/32]
    down_proj_bias       bf16  [E, H]
    model.layers.{N}.mlp.router.weight  bf16 [E, H]
    model.layers.{N}.mlp.router.bias    bf16 [E]

  ``*_blocks [.., K/32, 16]`` is the packed ``[.., K/2]`` byte row reshaped: 16 bytes = 32 FP4 codes =
  one scale block; element 2i in the low nibble (see :mod:`mxfp4lab.formats`).

DeepSeek-V4, layer L, expert i, one tensor per expert and projection::

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

  ASSUMPTIONS (not in FACTS.md): the name ``ffn.gate.bias`` for the correction bias and
  ``ffn.gate.tid2eid`` for the hash table, and that hash layers have no bias (following DeepSeek's
  reference ``inference/model.py``, where the hash Gate has ``tid2eid`` instead of a bias). The
  shared expert (``ffn.shared_experts.*``, not MXFP4) is neither read nor written here.

Reading is lazy: :func:`open_checkpoint` only parses safetensors headers (or an index.json); tensors are
memory-mapped and read one by one (or one expert slice at a time) through ``safetensors.safe_open``.
Shapes and dtypes are validated from the header BEFORE any data is read.

Every validation failure raises :class:`CheckpointError` (a ``ValueError``) naming the tensor, the
rule, expected and got values, and the file(s) searched.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .formats import MX_BLOCK_SIZE, MXFormatError, ScaleRule, check_scales_finite, e8m0_bytes, quantize_mxfp4
from .models import FORMAT_DSV4, FORMAT_GPT_OSS, MoEConfig
from .moe_tensors import split_gate_up_rows

PathLike = str | os.PathLike

# --------------------------------------------------------------------------------------------
# Names and constants
# --------------------------------------------------------------------------------------------
SAFETENSORS_SUFFIX = ".safetensors"
INDEX_FILENAME = "model.safetensors.index.json"
INDEX_SUFFIX = ".safetensors.index.json"
SINGLE_FILENAME = "model.safetensors"
#: The bf16 origin (high-precision truth) saved beside a synthetic checkpoint; never part of it.
ORIGIN_FILENAME = "origin.safetensors"
#: Bytes of one "block" row in GPT-OSS ``*_blocks``: 16 bytes = 32 FP4 codes = one scale block.
BYTES_PER_MX_BLOCK = MX_BLOCK_SIZE // 2

GPT_OSS_EXPERTS_PREFIX = "model.layers.{layer}.mlp.experts."
GPT_OSS_ROUTER_PREFIX = "model.layers.{layer}.mlp.router."
DSV4_EXPERT_PREFIX = "layers.{layer}.ffn.experts.{expert}."
DSV4_GATE_PREFIX = "layers.{layer}.ffn.gate."
DSV4_PROJS = ("w1", "w3", "w2")  # gate, up, down
_DSV4_EXPERT_RE = re.compile(r"^layers\.(\d+)\.ffn\.experts\.(\d+)\.w[123]\.(weight|scale)$")

#: Scale dtypes accepted on read (viewed as uint8).
SCALE_DTYPES = (torch.uint8, torch.float8_e8m0fnu)

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

_DTYPE_FROM_ST = {
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "F8_E8M0": torch.float8_e8m0fnu,
}


class CheckpointError(ValueError):
    """A checkpoint violates its layout: missing tensor, wrong shape/dtype, expert count, bad scale.

    The message names the tensor(s), the rule, expected vs got, and the file(s) searched.
    """


class CheckpointScaleError(CheckpointError, MXFormatError):
    """A scale tensor holds E8M0 byte 255 (NaN); also an :class:`MXFormatError`."""


# --------------------------------------------------------------------------------------------
# Lazy checkpoint access
# --------------------------------------------------------------------------------------------
class Checkpoint:
    """Lazy view of a safetensors checkpoint (one file, a directory of shards, or an index.json).

    Only headers are parsed on open. ``reads`` records every tensor name whose data was materialised
    (whole tensor or slice), in order, so callers and tests can verify lazy access.
    """

    def __init__(self, source: Path, weight_map: dict[str, Path]):
        self.source = source
        self.weight_map = weight_map
        self.files: list[Path] = sorted(set(weight_map.values()))
        self.reads: list[str] = []
        self._handles: dict[Path, object] = {}

    # -- container protocol
    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def keys(self) -> list[str]:
        return list(self.weight_map)

    def __len__(self) -> int:
        return len(self.weight_map)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.source)!r}, {len(self.weight_map)} tensors, {len(self.files)} files)"

    def searched(self) -> str:
        """Human-readable list of files searched, for error messages."""
        names = ", ".join(str(f) for f in self.files)
        if self.source.is_file() and self.source.name.endswith(".json"):
            return f"index {self.source} -> [{names}]"
        return f"[{names}]"

    # -- file handles (memory-mapped; opened on first use)
    def _handle(self, path: Path):
        h = self._handles.get(path)
        if h is None:
            h = safe_open(str(path), framework="pt")
            self._handles[path] = h
        return h

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self) -> Checkpoint:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- metadata and data
    def require(self, names: Iterable[str]) -> None:
        """Raise one :class:`CheckpointError` naming every missing tensor in ``names``."""
        missing = [n for n in names if n not in self.weight_map]
        if missing:
            shown = ", ".join(missing[:20]) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
            raise CheckpointError(f"missing tensor(s) {shown}; searched {self.searched()}")

    def file_of(self, name: str) -> Path:
        self.require([name])
        return self.weight_map[name]

    def meta(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        """(shape, dtype) of ``name`` from the header, without reading data."""
        sl = self._handle(self.file_of(name)).get_slice(name)
        st = sl.get_dtype()
        if st not in _DTYPE_FROM_ST:
            raise CheckpointError(
                f"tensor {name} has unsupported safetensors dtype {st} ({self.file_of(name)})"
            )
        return tuple(int(d) for d in sl.get_shape()), _DTYPE_FROM_ST[st]

    def get(self, name: str) -> torch.Tensor:
        """Read one whole tensor."""
        handle = self._handle(self.file_of(name))
        self.reads.append(name)
        return handle.get_tensor(name)

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Read ``tensor[start:stop]`` (axis 0) only."""
        handle = self._handle(self.file_of(name))
        self.reads.append(f"{name}[{start}:{stop}]")
        return handle.get_slice(name)[start:stop]


def _index_weight_map(index_path: Path) -> dict[str, Path]:
    try:
        index = json.loads(index_path.read_text())
        raw = index["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot read weight_map from index {index_path}: {exc}") from exc
    out = {}
    for name, fname in raw.items():
        path = index_path.parent / fname
        if not path.is_file():
            raise CheckpointError(f"index {index_path} maps tensor {name} to missing file {path}")
        out[name] = path
    return out


def _scan_files(files: Sequence[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open handle, not a dict)
                if name in out:
                    raise CheckpointError(f"tensor {name} appears in both {out[name]} and {path}")
                out[name] = path
    return out


def open_checkpoint(path: PathLike) -> Checkpoint:
    """Open a checkpoint lazily.

    ``path`` may be a single ``.safetensors`` file, a ``*.safetensors.index.json`` file, or a directory.
    A directory uses its ``model.safetensors.index.json`` (or the only ``*.safetensors.index.json``) when
    present, else every ``*.safetensors`` in it except ``origin.safetensors``.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint path {p} does not exist")
    if p.is_file():
        if p.name.endswith(".json"):
            return Checkpoint(p, _index_weight_map(p))
        return Checkpoint(p, _scan_files([p]))
    index = p / INDEX_FILENAME
    if not index.is_file():
        candidates = sorted(p.glob("*" + INDEX_SUFFIX))
        if len(candidates) > 1:
            raise CheckpointError(f"directory {p} holds several index files {candidates}; pass one")
        index = candidates[0] if candidates else None
    if index is not None:
        return Checkpoint(index, _index_weight_map(index))
    files = sorted(f for f in p.glob("*" + SAFETENSORS_SUFFIX) if f.name != ORIGIN_FILENAME)
    if not files:
        raise CheckpointError(f"directory {p} holds no *.safetensors file (origin.safetensors excluded)")
    return Checkpoint(p, _scan_files(files))


def _as_checkpoint(ckpt: Checkpoint | PathLike) -> Checkpoint:
    return ckpt if isinstance(ckpt, Checkpoint) else open_checkpoint(ckpt)


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------
def _check_meta(
    ckpt: Checkpoint, name: str, shape: tuple[int, ...], dtypes: tuple[torch.dtype, ...]
) -> torch.dtype:
    got_shape, got_dtype = ckpt.meta(name)
    if got_dtype not in dtypes:
        want = " or ".join(str(d) for d in dtypes)
        raise CheckpointError(
            f"tensor {name}: dtype must be {want}, got {got_dtype} (file {ckpt.weight_map[name]})"
        )
    if got_shape != tuple(shape):
        raise CheckpointError(
            f"tensor {name}: shape must be {list(shape)}, got {list(got_shape)} (file {ckpt.weight_map[name]})"
        )
    return got_dtype


def _check_expert_count(ckpt: Checkpoint, name: str, config: MoEConfig, where: str) -> None:
    got_shape, _ = ckpt.meta(name)
    if not got_shape or got_shape[0] != config.num_experts:
        got = got_shape[0] if got_shape else "a scalar"
        raise CheckpointError(
            f"expert count mismatch: tensor {name} holds {got} experts (axis 0 of {list(got_shape)}), "
            f"config {config.name!r} says num_experts = {config.num_experts} ({where})"
        )


def _scales_u8(t: torch.Tensor, name: str, ckpt: Checkpoint) -> torch.Tensor:
    """View an E8M0 scale tensor as uint8 and refuse byte 255 (NaN)."""
    t = e8m0_bytes(t)
    try:
        check_scales_finite(t, name)
    except MXFormatError as exc:
        raise CheckpointScaleError(f"{exc} (file {ckpt.weight_map.get(name, '?')})") from exc
    return t


def _check_subset(experts: Sequence[int] | None, config: MoEConfig) -> tuple[int, ...]:
    if experts is None:
        return tuple(range(config.num_experts))
    ids = tuple(int(e) for e in experts)
    bad = [e for e in ids if not 0 <= e < config.num_experts]
    if bad:
        raise CheckpointError(
            f"expert ids {bad} out of range 0..{config.num_experts - 1} for {config.name!r}"
        )
    if len(set(ids)) != len(ids):
        raise CheckpointError(f"expert ids {list(ids)} contain duplicates")
    return ids


def _runs(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive runs of ids as [start, stop) pairs, in the given order."""
    runs: list[tuple[int, int]] = []
    for e in ids:
        if runs and runs[-1][1] == e:
            runs[-1] = (runs[-1][0], e + 1)
        else:
            runs.append((e, e + 1))
    return runs


def _check_format(config: MoEConfig, fmt: str) -> None:
    if config.checkpoint_format != fmt:
        raise CheckpointError(
            f"config {config.name!r} has checkpoint_format {config.checkpoint_format!r}, this reader/writer is "
            f"for {fmt!r}"
        )


# --------------------------------------------------------------------------------------------
# GPT-OSS
# --------------------------------------------------------------------------------------------
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
class GptOssExperts:
    """One GPT-OSS MoE layer in checkpoint layout (E' = len(experts), the experts read).

    gate_up_blocks uint8 [E', 2I, H/32, 16] (rows interleaved gate_0, up_0, gate_1, ...),
    gate_up_scales uint8 [E', 2I, H/32], gate_up_bias bf16 [E', 2I],
    down_blocks uint8 [E', H, I/32, 16], down_scales uint8 [E', H, I/32], down_bias bf16 [E', H],
    router_weight bf16 [E, H], router_bias bf16 [E] (all experts).
    """

    layer: int
    experts: tuple[int, ...]
    gate_up_blocks: torch.Tensor
    gate_up_scales: torch.Tensor
    gate_up_bias: torch.Tensor
    down_blocks: torch.Tensor
    down_scales: torch.Tensor
    down_bias: torch.Tensor
    router_weight: torch.Tensor
    router_bias: torch.Tensor

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


# --------------------------------------------------------------------------------------------
# DeepSeek-V4
# --------------------------------------------------------------------------------------------
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
class Dsv4Experts:
    """One DeepSeek-V4 MoE layer in checkpoint layout, per-expert tensors stacked (E' = len(experts)).

    w1 (gate) uint8 [E', I, H/2], w1_scale uint8 [E', I, H/32]; w3 (up) same shapes;
    w2 (down) uint8 [E', H, I/2], w2_scale uint8 [E', H, I/32];
    gate_weight bf16/fp32 [E, H]; gate_bias fp32 [E] (None on hash layers);
    tid2eid int [V, top_k] on hash layers (None otherwise, or when absent).
    """

    layer: int
    experts: tuple[int, ...]
    w1: torch.Tensor
    w1_scale: torch.Tensor
    w3: torch.Tensor
    w3_scale: torch.Tensor
    w2: torch.Tensor
    w2_scale: torch.Tensor
    gate_weight: torch.Tensor
    gate_bias: torch.Tensor | None
    tid2eid: torch.Tensor | None = None


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
# Synthetic writers
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


class _ShardWriter:
    """Accumulates tensors; flushes a shard whenever adding one would pass ``max_shard_bytes``.

    Shards are written under temporary names, renamed to ``model-0000i-of-0000N.safetensors`` at the end.
    """

    def __init__(
        self, directory: Path, max_shard_bytes: int | None, metadata: dict[str, str], single_file: Path | None
    ):
        self.dir = directory
        self.max = max_shard_bytes
        self.meta = metadata
        self.single = single_file
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.tmp_files: list[tuple[Path, list[str], int]] = []

    def add(self, name: str, t: torch.Tensor) -> None:
        nbytes = t.numel() * t.element_size()
        if self.max is not None and self.pending and self.pending_bytes + nbytes > self.max:
            self._flush()
        self.pending[name] = t.contiguous()
        self.pending_bytes += nbytes

    def _flush(self) -> None:
        tmp = self.dir / f".tmp-shard-{len(self.tmp_files):05d}{SAFETENSORS_SUFFIX}"
        save_file(self.pending, str(tmp), metadata=self.meta)
        self.tmp_files.append((tmp, list(self.pending), self.pending_bytes))
        self.pending, self.pending_bytes = {}, 0

    def finish(self) -> tuple[list[Path], Path | None]:
        if self.max is None:
            target = self.single or (self.dir / SINGLE_FILENAME)
            save_file(self.pending, str(target), metadata=self.meta)
            return [target], None
        if self.pending or not self.tmp_files:
            self._flush()
        n = len(self.tmp_files)
        files, weight_map, total = [], {}, 0
        for j, (tmp, names, nbytes) in enumerate(self.tmp_files):
            final = self.dir / f"model-{j + 1:05d}-of-{n:05d}{SAFETENSORS_SUFFIX}"
            tmp.replace(final)
            files.append(final)
            weight_map.update({name: final.name for name in names})
            total += nbytes
        index = self.dir / INDEX_FILENAME
        index.write_text(
            json.dumps(
                {"metadata": {"total_size": total, **self.meta}, "weight_map": weight_map},
                indent=1,
                sort_keys=True,
            )
        )
        return files, index


def _prepare_target(path: PathLike, max_shard_bytes: int | None) -> tuple[Path, Path | None]:
    """-> (directory, single file or None). A path ending in .safetensors is one file (no sharding)."""
    p = Path(path)
    if p.name.endswith(SAFETENSORS_SUFFIX):
        if max_shard_bytes is not None:
            raise ValueError(f"max_shard_bytes needs a directory path, got the file {p}")
        if p.name == ORIGIN_FILENAME:
            raise ValueError(f"{ORIGIN_FILENAME} is reserved for the origin weights")
        p.parent.mkdir(parents=True, exist_ok=True)
        return p.parent, p
    if max_shard_bytes is not None and max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive (got {max_shard_bytes})")
    p.mkdir(parents=True, exist_ok=True)
    return p, None


def _write_synthetic(
    path: PathLike,
    config: MoEConfig,
    fmt: str,
    *,
    layers: Sequence[int],
    seed: int,
    scale_rule,
    dist: str,
    std: float,
    max_shard_bytes: int | None,
    return_origin: bool,
    save_origin: bool,
    scale_dtype: torch.dtype,
) -> SyntheticCheckpoint:
    _check_format(config, fmt)
    rule = ScaleRule(scale_rule)
    _check_dist(dist)
    if scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be one of {SCALE_DTYPES} (got {scale_dtype})")
    layers = tuple(int(x) for x in layers)
    directory, single = _prepare_target(path, max_shard_bytes)
    meta = {
        "format": "pt",
        "mxfp4lab.model": config.name,
        "mxfp4lab.scale_rule": rule.value,
        "mxfp4lab.dist": dist,
        "mxfp4lab.seed": str(seed),
        "mxfp4lab.std": repr(std),
    }
    writer = _ShardWriter(directory, max_shard_bytes, meta, single)
    origins: dict[int, dict[str, torch.Tensor]] = {}
    keep_origin = return_origin or save_origin
    h, i, E = config.hidden_size, config.intermediate_size, config.num_experts

    def q(x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        packed, scales = quantize_mxfp4(x, scale_rule=rule, name=name)
        return packed, scales.view(scale_dtype)

    for layer in layers:
        oc = outlier_channels(config, layer, seed) if dist == "outlier_channels" else None
        router = make_origin_router(config, layer=layer, seed=seed)
        per_expert_origin: list[dict[str, torch.Tensor]] = []
        if fmt == FORMAT_GPT_OSS:
            names = gpt_oss_names(layer)
            gu_blocks = torch.empty((E, 2 * i, h // MX_BLOCK_SIZE, BYTES_PER_MX_BLOCK), dtype=torch.uint8)
            gu_scales = torch.empty((E, 2 * i, h // MX_BLOCK_SIZE), dtype=scale_dtype)
            gu_bias = torch.empty((E, 2 * i), dtype=torch.bfloat16)
            dn_blocks = torch.empty((E, h, i // MX_BLOCK_SIZE, BYTES_PER_MX_BLOCK), dtype=torch.uint8)
            dn_scales = torch.empty((E, h, i // MX_BLOCK_SIZE), dtype=scale_dtype)
            dn_bias = torch.empty((E, h), dtype=torch.bfloat16)
            for e in range(E):
                o = make_origin_expert(config, e, layer=layer, seed=seed, dist=dist, std=std, _outliers=oc)
                # Interleave rows: 2j = gate_j, 2j+1 = up_j. Quantization is per row, so this equals
                # interleaving the separately quantized gate and up rows.
                gate_up = torch.stack((o["w_gate"], o["w_up"]), dim=1).reshape(2 * i, h)
                packed, scales = q(gate_up, f"{names['gate_up_blocks']}[{e}]")
                gu_blocks[e] = packed.reshape(2 * i, h // MX_BLOCK_SIZE, BYTES_PER_MX_BLOCK)
                gu_scales[e] = scales
                gu_bias[e] = torch.stack((o["b_gate"], o["b_up"]), dim=1).reshape(2 * i)
                packed, scales = q(o["w_down"], f"{names['down_blocks']}[{e}]")
                dn_blocks[e] = packed.reshape(h, i // MX_BLOCK_SIZE, BYTES_PER_MX_BLOCK)
                dn_scales[e] = scales
                dn_bias[e] = o["b_down"]
                if keep_origin:
                    per_expert_origin.append(o)
            for fld, t in (
                ("gate_up_blocks", gu_blocks),
                ("gate_up_scales", gu_scales),
                ("gate_up_bias", gu_bias),
                ("down_blocks", dn_blocks),
                ("down_scales", dn_scales),
                ("down_bias", dn_bias),
                ("router_weight", router["router_weight"]),
                ("router_bias", router["router_bias"]),
            ):
                writer.add(names[fld], t)
            del gu_blocks, gu_scales, dn_blocks, dn_scales
        else:
            gnames = dsv4_gate_names(layer)
            writer.add(gnames["gate_weight"], router["router_weight"])
            if "router_bias" in router:
                writer.add(gnames["gate_bias"], router["router_bias"])
            if "tid2eid" in router:
                writer.add(gnames["tid2eid"], router["tid2eid"])
            for e in range(E):
                o = make_origin_expert(config, e, layer=layer, seed=seed, dist=dist, std=std, _outliers=oc)
                names = dsv4_expert_names(layer, e)
                for w, key in (("w1", "w_gate"), ("w3", "w_up"), ("w2", "w_down")):
                    packed, scales = q(o[key], names[w])
                    writer.add(names[w], packed)
                    writer.add(names[f"{w}_scale"], scales)
                if keep_origin:
                    per_expert_origin.append(o)
        if keep_origin:
            origins[layer] = _stack_origin(per_expert_origin, router)
        del per_expert_origin

    files, index = writer.finish()
    origin_path = None
    if save_origin:
        origin_path = directory / ORIGIN_FILENAME
        flat = {f"layers.{layer}.{k}": v.contiguous() for layer, d in origins.items() for k, v in d.items()}
        save_file(
            flat,
            str(origin_path),
            metadata={
                "format": "pt",
                "mxfp4lab.model": config.name,
                "mxfp4lab.dist": dist,
                "mxfp4lab.seed": str(seed),
            },
        )
    result_path = single if single is not None else directory
    return SyntheticCheckpoint(
        path=result_path,
        files=files,
        index=index,
        origin=origins if return_origin else None,
        origin_path=origin_path,
        config=config,
        scale_rule=rule,
        layers=layers,
    )


def write_synthetic_gpt_oss(
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
    """Write a synthetic GPT-OSS checkpoint in the exact real layout (module docstring).

    Origin bf16 weights (:func:`make_origin_weights`, expert by expert) are quantized with
    ``quantize_mxfp4(..., scale_rule=scale_rule)`` (required: no default rule), gate/up rows
    interleaved; biases and router drawn small.

    Args:
        path: a directory (``model.safetensors`` inside, or shards + ``model.safetensors.index.json``
            with ``max_shard_bytes``), or a ``*.safetensors`` file path (single file).
        max_shard_bytes: start a new shard before a tensor would push the current one past this.
        return_origin: put the logical bf16 origin in the result (set False at real size: ~4 GB/layer).
        save_origin: also save it as ``origin.safetensors`` in the checkpoint directory.
        scale_dtype: uint8 (as the real checkpoints) or torch.float8_e8m0fnu.
    """
    return _write_synthetic(
        path,
        config,
        FORMAT_GPT_OSS,
        layers=layers,
        seed=seed,
        scale_rule=scale_rule,
        dist=dist,
        std=std,
        max_shard_bytes=max_shard_bytes,
        return_origin=return_origin,
        save_origin=save_origin,
        scale_dtype=scale_dtype,
    )


def write_synthetic_dsv4(
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
    """Write a synthetic DeepSeek-V4 checkpoint in the exact real layout (module docstring): per expert
    ``w1``/``w3``/``w2`` packed FP4 + E8M0 scales, ``gate.weight`` bf16 [E, H], ``gate.bias`` fp32 [E]
    on score layers, ``gate.tid2eid`` int32 on hash layers (< ``config.n_hash_layers``).
    Arguments as :func:`write_synthetic_gpt_oss`; tensors stream into shards expert by expert."""
    return _write_synthetic(
        path,
        config,
        FORMAT_DSV4,
        layers=layers,
        seed=seed,
        scale_rule=scale_rule,
        dist=dist,
        std=std,
        max_shard_bytes=max_shard_bytes,
        return_origin=return_origin,
        save_origin=save_origin,
        scale_dtype=scale_dtype,
    )


def read_origin(path: PathLike, layer: int) -> dict[str, torch.Tensor]:
    """Load the logical origin of ``layer`` from ``origin.safetensors`` (path: the file or its directory)."""
    p = Path(path)
    if p.is_dir():
        p = p / ORIGIN_FILENAME
    if not p.is_file():
        raise CheckpointError(f"no origin file at {p}")
    prefix = f"layers.{layer}."
    with safe_open(str(p), framework="pt") as f:
        out = {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118
    if not out:
        raise CheckpointError(f"origin file {p} holds no tensors for layer {layer} (prefix {prefix!r})")
    return out


__all__ = [
    "INDEX_FILENAME",
    "ORIGIN_FILENAME",
    "Checkpoint",
    "CheckpointError",
    "CheckpointScaleError",
    "Dsv4Experts",
    "GptOssExperts",
    "SyntheticCheckpoint",
    "dsv4_expert_names",
    "dsv4_expert_shapes",
    "dsv4_gate_names",
    "gpt_oss_names",
    "gpt_oss_shapes",
    "make_origin_expert",
    "make_origin_router",
    "make_origin_weights",
    "open_checkpoint",
    "outlier_channels",
    "read_dsv4_layer",
    "read_gpt_oss_layer",
    "read_origin",
    "write_synthetic_dsv4",
    "write_synthetic_gpt_oss",
]
