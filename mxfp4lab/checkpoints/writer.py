"""Writing safetensors checkpoints: atomic, overwrite-safe, size-limited shards with an index, and the bf16
origin beside them.

Nothing a writer does loses or mixes data:

* **Atomic.** :class:`StagedCheckpoint` writes every file into a temporary sibling directory
  (``.<name>.tmp-*``) and moves it into place with one ``rename`` only when all of it is written; a failure
  leaves the target as it was.
* **Refuses a non-empty target** unless ``overwrite=True``; a single ``*.safetensors`` file target likewise
  refuses an existing file.
* **Overwriting removes exactly what it owns.** A directory checkpoint carries :data:`MANIFEST_FILENAME`
  listing its files; ``overwrite=True`` replaces those files (no stale shard, index or origin survives) and
  keeps everything else in the directory. It refuses a directory holding ``*.safetensors`` or index files
  that no manifest lists (another tool's checkpoint, a user's file).

:class:`ShardWriter` accumulates tensors and flushes a shard whenever adding one would pass
``max_shard_bytes`` (or writes one file); :func:`write_origin` / :func:`read_origin` store the logical bf16
origin of a synthetic checkpoint as ``origin.safetensors`` (names ``layers.{L}.{key}``), which
:func:`~mxfp4lab.checkpoints.reader.open_checkpoint` never treats as part of the checkpoint, and which
:func:`read_origin` refuses when its stamp (model, seed, distribution, write id) differs from the
checkpoint's beside it. What to write comes from the format modules (``GptOssExperts.tensors()``,
``Dsv4Experts.tensors()``) and :func:`mxfp4lab.synthetic.write_synthetic`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .reader import (
    INDEX_FILENAME,
    INDEX_SUFFIX,
    ORIGIN_FILENAME,
    SAFETENSORS_SUFFIX,
    SINGLE_FILENAME,
    CheckpointError,
    PathLike,
    open_checkpoint,
    safetensors_metadata,
)

#: The file list of a checkpoint directory mxfp4lab wrote (what ``overwrite=True`` may replace).
MANIFEST_FILENAME = "mxfp4lab-checkpoint.json"
#: Metadata key stamped into every file of one write (shards, index, origin, manifest).
WRITE_ID_KEY = "mxfp4lab.write_id"
#: Stamp keys :func:`read_origin` compares between an origin file and the checkpoint beside it.
STAMP_KEYS = ("mxfp4lab.model", "mxfp4lab.seed", "mxfp4lab.dist", "mxfp4lab.std", WRITE_ID_KEY)


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


# --------------------------------------------------------------------------------------------
# Targets: refuse, stage, commit
# --------------------------------------------------------------------------------------------
def _is_checkpoint_file(name: str) -> bool:
    return name.endswith((SAFETENSORS_SUFFIX, INDEX_SUFFIX))


def _shown(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def read_manifest(directory: Path) -> dict | None:
    """The manifest of a checkpoint directory mxfp4lab wrote, or None when there is none."""
    path = Path(directory) / MANIFEST_FILENAME
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        files = doc["files"]
        if not isinstance(files, list) or not all(isinstance(f, str) and "/" not in f for f in files):
            raise TypeError("files must be a list of file names")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"unreadable checkpoint manifest {path}: {exc}; remove it by hand if the "
                              "directory is yours") from exc
    return doc


def _check_replaceable(directory: Path, overwrite: bool) -> list[str]:
    """Entries of ``directory`` that a write may not touch (kept in place); raises when the write must not
    happen at all."""
    entries = sorted(os.listdir(directory))
    if not entries:
        return []
    if not overwrite:
        raise CheckpointError(f"checkpoint target {directory} is not empty ({_shown(entries)}); pass "
                              "overwrite=True to replace the checkpoint mxfp4lab wrote there, or pick a new path")
    manifest = read_manifest(directory)
    owned = set(manifest["files"]) | {MANIFEST_FILENAME} if manifest else set()
    foreign = [n for n in entries if n not in owned and _is_checkpoint_file(n)]
    if foreign:
        why = (f"its {MANIFEST_FILENAME} does not list them" if manifest
               else f"it has no {MANIFEST_FILENAME} (not written by mxfp4lab)")
        raise CheckpointError(f"refusing to overwrite {directory}: it holds {_shown(foreign)} and {why}; "
                              "overwrite=True replaces only an mxfp4lab checkpoint's own files; move or delete "
                              "them first")
    return [n for n in entries if n not in owned]


class StagedCheckpoint:
    """One checkpoint write: check the target now, write into :attr:`dir` (a temporary sibling directory),
    then :meth:`commit` moves it into place (or :meth:`abort` removes it). A context manager: leaving the
    block by an exception aborts.

    ``path``: a directory (shards or ``model.safetensors`` + manifest inside) or a ``*.safetensors`` file.
    """

    def __init__(self, path: PathLike, *, max_shard_bytes: int | None = None, overwrite: bool = False,
                 with_origin: bool = False):
        p = Path(path)
        self.target = p
        self.overwrite = bool(overwrite)
        self.single = p.name.endswith(SAFETENSORS_SUFFIX)
        self.write_id = uuid.uuid4().hex
        if self.single:
            if max_shard_bytes is not None:
                raise ValueError(f"max_shard_bytes needs a directory path, got the file {p}")
            if p.name == ORIGIN_FILENAME:
                raise ValueError(f"{ORIGIN_FILENAME} is reserved for the origin weights")
            if with_origin:
                raise ValueError(f"save_origin needs a directory path (the origin is saved beside the checkpoint "
                                 f"as {ORIGIN_FILENAME}), got the file {p}")
            if p.is_dir():
                raise CheckpointError(f"checkpoint file target {p} is a directory")
            manifest = read_manifest(p.parent)
            if manifest is not None and p.name not in manifest["files"]:
                raise CheckpointError(f"{p.parent} is a checkpoint directory mxfp4lab wrote; a file {p.name} added "
                                      "to it would make its checkpoint ambiguous; write it elsewhere")
            if p.exists() and not self.overwrite:
                raise CheckpointError(f"checkpoint file {p} exists; pass overwrite=True to replace it")
        else:
            if max_shard_bytes is not None and (isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int)
                                                or max_shard_bytes <= 0):
                raise ValueError(f"max_shard_bytes must be a positive int (got {max_shard_bytes!r})")
            if p.exists() and not p.is_dir():
                raise CheckpointError(f"checkpoint target {p} exists and is not a directory")
            if p.is_dir():
                _check_replaceable(p, self.overwrite)
        parent = p.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.dir = Path(tempfile.mkdtemp(prefix=f".{p.name}.tmp-", dir=parent))
        except OSError as exc:
            raise CheckpointError(f"cannot write a checkpoint under {parent}: {exc.strerror or exc}") from exc
        self.files: list[Path] = []

    @property
    def single_file(self) -> Path | None:
        """Where the single-file checkpoint is written inside :attr:`dir` (None for a directory)."""
        return self.dir / self.target.name if self.single else None

    def final_path(self, staged: Path) -> Path:
        """Where a file written into :attr:`dir` is after :meth:`commit`."""
        return self.target if self.single else self.target / Path(staged).name

    def commit(self, metadata: dict[str, str] | None = None) -> Path:
        """Move the staged files into place (directory: with a manifest listing them) and return the target."""
        if self.single:
            os.replace(self.single_file, self.target)
            shutil.rmtree(self.dir, ignore_errors=True)
            return self.target
        names = sorted(n for n in os.listdir(self.dir) if not n.startswith("."))
        manifest = {"mxfp4lab_checkpoint": 1, "write_id": self.write_id, "files": names,
                    "metadata": dict(metadata or {})}
        (self.dir / MANIFEST_FILENAME).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        self.dir.chmod(0o755)
        t = self.target
        if not t.exists() or not os.listdir(t):
            os.replace(self.dir, t)  # an empty directory is replaced by rename(2)
            return t
        keep = _check_replaceable(t, self.overwrite)  # again: the directory may have changed meanwhile
        old = Path(tempfile.mkdtemp(prefix=f".{t.name}.old-", dir=t.parent))
        os.replace(t, old / t.name)
        try:
            os.replace(self.dir, t)
        except OSError:
            os.replace(old / t.name, t)
            raise
        for n in keep:  # what the old checkpoint did not own stays in the directory
            os.replace(old / t.name / n, t / n)
        shutil.rmtree(old, ignore_errors=True)
        return t

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> StagedCheckpoint:  # noqa: PYI034
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


# --------------------------------------------------------------------------------------------
# The origin beside a synthetic checkpoint
# --------------------------------------------------------------------------------------------
def write_origin(directory: Path, origins: dict[int, dict[str, torch.Tensor]], metadata: dict[str, str]) -> Path:
    """Write ``layer -> origin dict`` as ``<directory>/origin.safetensors`` (names ``layers.{L}.{key}``).
    ``metadata`` should carry the checkpoint's stamp (:data:`STAMP_KEYS`) so :func:`read_origin` can match
    them."""
    path = Path(directory) / ORIGIN_FILENAME
    flat = {f"layers.{layer}.{k}": v.contiguous() for layer, d in origins.items() for k, v in d.items()}
    save_file(flat, str(path), metadata={"format": "pt", **metadata})
    return path


def _check_origin_stamp(origin: Path, origin_meta: dict[str, str]) -> None:
    """The origin must come from the same write as the checkpoint beside it (when there is one)."""
    try:
        ck = open_checkpoint(origin.parent)
    except CheckpointError:
        return  # no (readable) checkpoint beside it: nothing to compare
    ck_meta = safetensors_metadata(ck.files[0])
    diff = [f"{k}: origin {origin_meta[k]!r}, checkpoint {ck_meta[k]!r}" for k in STAMP_KEYS
            if k in origin_meta and k in ck_meta and origin_meta[k] != ck_meta[k]]
    if diff:
        raise CheckpointError(f"origin file {origin} does not belong to the checkpoint beside it ({ck.files[0].name}): "
                              + "; ".join(diff) + " (a stale origin from another write)")


def read_origin(path: PathLike, layer: int) -> dict[str, torch.Tensor]:
    """Load the logical origin of ``layer`` from ``origin.safetensors`` (path: the file or its directory).

    Raises :class:`CheckpointError` when the file is missing or unreadable, holds nothing for ``layer``, or
    is stamped by another write than the checkpoint beside it."""
    p = Path(path)
    if p.is_dir():
        p = p / ORIGIN_FILENAME
    if not p.is_file():
        raise CheckpointError(f"no origin file at {p}")
    meta = safetensors_metadata(p)
    _check_origin_stamp(p, meta)
    prefix = f"layers.{layer}."
    try:
        with safe_open(str(p), framework="pt") as f:
            out = {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"origin file {p} is unreadable: {exc}") from exc
    if not out:
        raise CheckpointError(f"origin file {p} holds no tensors for layer {layer} (prefix {prefix!r})")
    return out
