"""Persisted GEMM tactics of the restricted module, so a new process runs tuned kernels without re-tuning.

FlashInfer's autotuner picks, per token-count bucket, one tactic for each of the two grouped GEMMs of
``cutlass_fused_moe``. A tactic is an INDEX into the module's candidate list (GEMM1 indices first, then
GEMM2's), so it means something only for the build that produced it (the build key covers the
candidate list), on the GPU it was timed on, for the layer shape it was timed with. This module stores
those picks in one JSON file per build and hands them back as ``profile_ids`` for
``cutlass_fused_moe(..., profile_ids=[gemm1, gemm2])``, which skips the autotuner entirely.

Key of one entry: :class:`TacticKey` = (GPU, build key, :class:`LayerShape`, bucket). The bucket is
FlashInfer's own token-count bucket (``flashinfer.fused_moe.utils.map_to_hybrid_bucket``: powers of
two to 256, then steps of 256 / 512, then powers of two, capped at ``tune_max_num_tokens``, which is
therefore part of the key); the caller passes the mapped bucket in, so the rule lives in one place
(FlashInfer).

File: ``<build root>/tactics.json`` (beside the library; :func:`tactics_path`)::

    {"format": 1, "build_key": "496e8c444770d38a",
     "entries": {"<gpu>|<shape>|max8192": {
         "tune_max_num_tokens": 8192, "gemm1_count": 10, "gemm2_count": 10,
         "buckets": {"1": [3, 14], "2": [3, 14], ...}, "tuned": "<UTC time>"}}}

Writes are atomic (temporary file + ``os.replace``) and merge with what another process wrote since
this one read the file. A malformed file, a file of another build, or a tactic outside the module's
lists raises :class:`TacticCacheError` naming the file and the rule: a wrong tactic is never run
silently. Standard library only.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union

#: Bump when the file's meaning changes (a file of another format is refused, not reinterpreted).
TACTICS_FORMAT = 1
TACTICS_FILE = "tactics.json"
#: FlashInfer's custom-op names of the two GEMM stages of cutlass_fused_moe (FlashInfer 0.7.2).
GEMM_OPS = ("trtllm::fused_moe::gemm1", "trtllm::fused_moe::gemm2")


class TacticCacheError(ValueError):
    """A tactics file or entry breaks a rule; the message names the file (or key) and the rule."""


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """Everything besides the token count that decides which tactic wins (and which are valid).

    ``num_experts`` = local experts E, ``hidden`` = padded H (GEMM1 K, GEMM2 N), ``inter`` = padded I
    (GEMM1 N = 2 * inter, GEMM2 K), ``top_k``, the TP / EP sizes, whether GEMM1 / GEMM2 have a bias
    (``bias`` / ``bias2``; ``bias2`` None = same as ``bias``), and ``fused_finalize`` (FlashInfer's
    ``use_fused_finalize``: GEMM2 with or without the fused epilogue).
    """

    num_experts: int
    hidden: int
    inter: int
    top_k: int
    tp_size: int = 1
    ep_size: int = 1
    bias: bool = False
    fused_finalize: bool = True
    bias2: Optional[bool] = None

    def __post_init__(self) -> None:
        if self.bias2 is None:
            object.__setattr__(self, "bias2", self.bias)
        for f in ("num_experts", "hidden", "inter", "top_k", "tp_size", "ep_size"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise TacticCacheError(f"LayerShape.{f} must be a positive int, got {v!r}")

    @property
    def key(self) -> str:
        """``"E128_H2944_I2944_k4_tp1_ep1_bias11_ff1"``."""
        return (
            f"E{self.num_experts}_H{self.hidden}_I{self.inter}_k{self.top_k}_tp{self.tp_size}"
            f"_ep{self.ep_size}_bias{int(self.bias)}{int(self.bias2)}_ff{int(self.fused_finalize)}"
        )

    def weight_shapes(self) -> Tuple[Tuple[int, ...], ...]:
        """FlashInfer's profile of the four weight inputs (``[w13, w13_bias, w2, w2_bias]``, packed FP4
        bytes: K/2 per row; an absent bias profiles as ``(0,)``)."""
        e, h, i = self.num_experts, self.hidden, self.inter
        return (
            (e, 2 * i, h // 2),
            (e, 2 * i) if self.bias else (0,),
            (e, h, i // 2),
            (e, h) if self.bias2 else (0,),
        )


def entry_name(gpu: str, shape: LayerShape, max_tokens: int) -> str:
    """A file entry's name: ``"<gpu>|<shape key>|max<tune_max_num_tokens>"`` (the limit decides the bucket
    list; the build key names the file)."""
    return f"{gpu}|{shape.key}|max{int(max_tokens)}"


@dataclasses.dataclass(frozen=True)
class TacticKey:
    """(GPU, build key, layer shape, bucket of ``max_tokens``' list): one persisted pair of tactics."""

    gpu: str
    build_key: str
    shape: LayerShape
    bucket: int
    max_tokens: int = 8192

    @property
    def entry(self) -> str:
        return entry_name(self.gpu, self.shape, self.max_tokens)


def gpu_identity(name: str, sm_count: int, capability: Tuple[int, int]) -> str:
    """``"NVIDIA H200/sm90/132"``: the device name, compute capability and SM count (tactics are timed
    per GPU model; the SM count tells apart parts of one name)."""
    if not name or "|" in name:
        raise TacticCacheError(f"gpu name {name!r} must be non-empty and must not contain '|'")
    return f"{name}/sm{capability[0]}{capability[1]}/{int(sm_count)}"


def tactics_path(build_root: Union[str, os.PathLike]) -> Path:
    """``<build root>/tactics.json``: the tactics live beside the library they index into."""
    return Path(build_root) / TACTICS_FILE


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


class TacticCache:
    """The tactics of one build (one file). ``lookup`` / ``record`` / ``save``; ``load`` on creation."""

    def __init__(self, path: Union[str, os.PathLike], build_key: str):
        if not build_key:
            raise TacticCacheError("build_key must be the restricted module's cache key, got an empty string")
        self.path = Path(path)
        self.build_key = build_key
        self.entries: Dict[str, Dict[str, Any]] = self._read()

    # ------------------------------------------------------------------ file
    def _read(self) -> Dict[str, Dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text())
        except ValueError as exc:
            raise TacticCacheError(f"{self.path}: not valid JSON ({exc}); delete it to re-tune") from exc
        return self._validate(doc)

    def _validate(self, doc: Any) -> Dict[str, Dict[str, Any]]:
        where = str(self.path)
        if not isinstance(doc, dict) or doc.get("format") != TACTICS_FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise TacticCacheError(
                f"{where}: format {got!r}, this mxfp4lab reads tactics format {TACTICS_FORMAT}"
            )
        if doc.get("build_key") != self.build_key:
            raise TacticCacheError(
                f"{where}: tactics of build {doc.get('build_key')!r}, not of this build {self.build_key!r} "
                "(tactics index the build's own candidate list)"
            )
        entries = doc.get("entries")
        if not isinstance(entries, dict):
            raise TacticCacheError(f"{where}: 'entries' must be an object")
        for name, ent in entries.items():
            _check_entry(ent, f"{where} entry {name!r}")
        return entries

    def save(self) -> Path:
        """Merge this cache's entries into the file (another process may have added some) atomically."""
        on_disk = self._read()
        for name, ent in self.entries.items():
            merged = dict(on_disk.get(name, {}))
            merged.update({k: v for k, v in ent.items() if k != "buckets"})
            merged["buckets"] = {**on_disk.get(name, {}).get("buckets", {}), **ent["buckets"]}
            on_disk[name] = merged
        doc = {
            "format": TACTICS_FORMAT,
            "build_key": self.build_key,
            "entries": dict(sorted(on_disk.items())),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(doc, indent=1) + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.entries = on_disk
        return self.path

    # ------------------------------------------------------------------ entries
    def _entry(self, key: TacticKey) -> Optional[Dict[str, Any]]:
        if key.build_key != self.build_key:
            raise TacticCacheError(
                f"key of build {key.build_key!r} asked of the tactics of build {self.build_key!r}"
            )
        return self.entries.get(key.entry)

    def lookup(self, key: TacticKey) -> Optional[Tuple[int, int]]:
        """``(gemm1, gemm2)`` for this key, or None when it was never tuned."""
        ent = self._entry(key)
        pair = None if ent is None else ent["buckets"].get(str(key.bucket))
        return None if pair is None else (int(pair[0]), int(pair[1]))

    def covers(self, gpu: str, shape: LayerShape, *, tune_max_num_tokens: int) -> bool:
        """True when this (GPU, shape) has a tuned table for ``tune_max_num_tokens``."""
        return bool(self.entries.get(entry_name(gpu, shape, tune_max_num_tokens), {}).get("buckets"))

    def record(
        self,
        gpu: str,
        shape: LayerShape,
        table: Mapping[int, Tuple[int, int]],
        *,
        tune_max_num_tokens: int,
        gemm1_count: int,
        gemm2_count: int,
    ) -> None:
        """Put a whole bucket table (``{bucket: (gemm1, gemm2)}``) for one (GPU, shape); :meth:`save`
        writes it."""
        ent = {
            "tune_max_num_tokens": int(tune_max_num_tokens),
            "gemm1_count": int(gemm1_count),
            "gemm2_count": int(gemm2_count),
            "buckets": {str(int(b)): [int(t[0]), int(t[1])] for b, t in sorted(table.items())},
            "tuned": _utc_now(),
        }
        name = entry_name(gpu, shape, tune_max_num_tokens)
        _check_entry(ent, f"new entry {name}")
        self.entries[name] = ent


def _check_entry(ent: Any, where: str) -> None:
    """An entry's rules: counts >= 1; every bucket a positive int; GEMM1 tactic in ``[0, gemm1_count)``,
    GEMM2 tactic in ``[gemm1_count, gemm1_count + gemm2_count)`` (FlashInfer numbers GEMM2 after GEMM1);
    -1 is FlashInfer's default tactic (what the autotuner returns when no tactic could be profiled)."""
    if not isinstance(ent, dict):
        raise TacticCacheError(f"{where}: must be an object")
    for f in ("tune_max_num_tokens", "gemm1_count", "gemm2_count", "buckets"):
        if f not in ent:
            raise TacticCacheError(f"{where}: missing {f!r}")
    g1, g2 = ent["gemm1_count"], ent["gemm2_count"]
    if not (isinstance(g1, int) and isinstance(g2, int) and g1 >= 1 and g2 >= 1):
        raise TacticCacheError(
            f"{where}: gemm1_count / gemm2_count must be positive ints, got {g1!r} / {g2!r}"
        )
    if not isinstance(ent["buckets"], dict):
        raise TacticCacheError(f"{where}: 'buckets' must be an object bucket -> [gemm1, gemm2]")
    for b, pair in ent["buckets"].items():
        if not (b.isdigit() and int(b) >= 1):
            raise TacticCacheError(f"{where}: bucket {b!r} is not a positive token count")
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, int) for t in pair)):
            raise TacticCacheError(f"{where}: bucket {b}: tactics must be [gemm1, gemm2] ints, got {pair!r}")
        if not ((pair[0] == -1 or 0 <= pair[0] < g1) and (pair[1] == -1 or g1 <= pair[1] < g1 + g2)):
            raise TacticCacheError(
                f"{where}: bucket {b}: tactics {pair} outside GEMM1 [0, {g1}) / GEMM2 [{g1}, {g1 + g2}) "
                "(tuned for another build?)"
            )


def harvest(
    winners: Iterable[Tuple[Any, Any]], shape: LayerShape, buckets: Optional[Iterable[int]] = None
) -> Dict[int, Tuple[int, int]]:
    """The bucket table ``{bucket: (gemm1, gemm2)}`` of ``shape`` from FlashInfer's autotuner winners.

    ``winners``: ``AutoTuner.get().profiling_cache.items()`` (FlashInfer 0.7.2): keys with ``custom_op``
    (:data:`GEMM_OPS`), ``runner_class_name`` and ``nearest_profile`` (the profile shapes: input 0 is
    ``[bucket, hidden]``, inputs 1-4 the weights); values ``(tactic, profile)``. Entries of other ops or
    shapes are skipped; a bucket tuned for one GEMM only is left out (the caller re-tunes). ``buckets``:
    keep only these (the bucket list of the caller's ``tune_max_num_tokens``; FlashInfer's keys do not
    carry it, so one layer tuned with two limits holds both lists).
    """
    weights = shape.weight_shapes()
    # MoERunner.get_cache_key_extras (FlashInfer 0.7.2): (x, weight, output dtypes, top_k, tp_size, ep_size,
    # cluster_size, enable_alltoall, ..., use_fused_finalize at index 16)
    want = {3: shape.top_k, 4: shape.tp_size, 5: shape.ep_size, 16: shape.fused_finalize}
    got: Dict[str, Dict[int, int]] = {op: {} for op in GEMM_OPS}
    for key, value in winners:
        op = getattr(key, "custom_op", None)
        if op not in got or getattr(key, "runner_class_name", None) != "MoERunner":
            continue
        prof = tuple(tuple(s) for s in key.nearest_profile)
        if len(prof) != 5 or prof[1:] != weights or prof[0][1:] != (shape.hidden,):
            continue
        extras = tuple(getattr(key, "extras", ()) or ())
        if any(len(extras) > i and extras[i] != v for i, v in want.items()):
            continue
        tactic = value[0] if isinstance(value, (tuple, list)) else value
        got[op][int(prof[0][0])] = int(tactic)
    g1, g2 = got[GEMM_OPS[0]], got[GEMM_OPS[1]]
    keep = set(g1) & set(g2) if buckets is None else set(g1) & set(g2) & {int(b) for b in buckets}
    return {b: (g1[b], g2[b]) for b in sorted(keep)}
