"""Lazy, validated access to safetensors checkpoints (one file, a directory of shards, or an index.json).

Reading is lazy: :func:`open_checkpoint` only parses safetensors headers (or an index.json); tensors are
memory-mapped and read one by one (or one expert slice at a time) through ``safetensors.safe_open``.
Shapes and dtypes are validated from the header BEFORE any data is read (the helpers below, used by the
format modules :mod:`.gpt_oss` and :mod:`.dsv4`).

Every validation failure raises :class:`CheckpointError` (a ``ValueError``) naming the tensor, the
rule, expected and got values, and the file(s) searched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..formats import MXFormatError, check_scales_finite, e8m0_bytes
from ..models import MoEConfig

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

#: Scale dtypes accepted on read (viewed as uint8).
SCALE_DTYPES = (torch.uint8, torch.float8_e8m0fnu)

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
# Shared by the format modules
# --------------------------------------------------------------------------------------------
#: ``quantize(t [..., K], name) -> (packed [..., K/2], scales [..., K/32])`` (the tensor name for errors)
Quantizer = Callable[[torch.Tensor, str], tuple[torch.Tensor, torch.Tensor]]


@dataclass(kw_only=True)
class LayerExperts:
    """Which layer a container holds and which (global) expert ids; ``experts`` empty means ``0 .. E'-1``."""

    layer: int = 0
    experts: tuple[int, ...] = ()

    def _number_experts(self, held: int) -> None:
        if not self.experts:
            self.experts = tuple(range(held))


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

