"""Writing safetensors checkpoints: size-limited shards with an index, and the bf16 origin beside them.

:class:`ShardWriter` accumulates tensors and flushes a shard whenever adding one would pass
``max_shard_bytes`` (or writes one file); :func:`write_origin` / :func:`read_origin` store the logical
bf16 origin of a synthetic checkpoint as ``origin.safetensors`` (names ``layers.{L}.{key}``), which
:func:`~mxfp4lab.checkpoints.reader.open_checkpoint` never treats as part of the checkpoint. What to
write comes from the format modules (``GptOssExperts.tensors()``, ``Dsv4Experts.tensors()``) and
:func:`mxfp4lab.synthetic.write_synthetic`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .reader import (
    INDEX_FILENAME,
    ORIGIN_FILENAME,
    SAFETENSORS_SUFFIX,
    SINGLE_FILENAME,
    CheckpointError,
    PathLike,
)


class ShardWriter:
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

    def add_all(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, t in tensors.items():
            self.add(name, t)

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


def prepare_target(path: PathLike, max_shard_bytes: int | None) -> tuple[Path, Path | None]:
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



def write_origin(directory: Path, origins: dict[int, dict[str, torch.Tensor]], metadata: dict[str, str]) -> Path:
    """Write ``layer -> origin dict`` as ``<directory>/origin.safetensors`` (names ``layers.{L}.{key}``)."""
    path = Path(directory) / ORIGIN_FILENAME
    flat = {f"layers.{layer}.{k}": v.contiguous() for layer, d in origins.items() for k, v in d.items()}
    save_file(flat, str(path), metadata={"format": "pt", **metadata})
    return path


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

