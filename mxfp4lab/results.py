"""The one loader and writer of recorded results (``data/results``).

One schema. Every result file is a JSON object with

* ``kind``        what was measured, one of :data:`KINDS` (e.g. ``"latency_sweep"``);
* ``schema``      :data:`SCHEMA` (bumped when the meaning of a field changes);
* ``provenance``  machine, versions, commit, date and exact command (:func:`mxfp4lab.provenance.provenance`);
* ``rows``        a list of flat-ish dicts, one per measured point (a table: ``pandas.DataFrame(rows)``);

plus free metadata (``note``, ``ceilings``, ``parts``, ...). :func:`validate` checks the four.

One naming rule: ``data/results/<study>/<gpu>.json`` (``<gpu>`` = ``h100``, ``h200``, ``cpu``, ...:
:func:`gpu_slug`). Superseded runs move to ``data/results/archive/<study>/<gpu>-<label>.json``
(:func:`archive`). ``data/results/index.json`` says what each file is (kind and one sentence); every
write into a results tree updates it, and a test keeps it equal to the files present.

Writes are atomic: the JSON goes to a temporary file in the same directory, then ``os.replace`` puts
it in place, so an earlier result is replaced only by a complete write. A run in progress writes
``<gpu>.partial.json`` beside its target (``partial=True``); the final write removes it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from .provenance import REPO_ROOT, provenance

PathLike = Union[str, os.PathLike]

SCHEMA = 1
RESULTS_DIR = REPO_ROOT / "data" / "results"
ARCHIVE_DIR = "archive"
INDEX_FILE = "index.json"
PARTIAL_SUFFIX = ".partial.json"

#: kind -> what a file of that kind holds (the index's default description).
KINDS: Dict[str, str] = {
    "latency_sweep": "MoE layer latency per backend x shape x tokens M x routing (CUDA events, median; CUDA "
                     "graphs where the backend allows), with the roofline floor and an output check before timing",
    "latency_summary": "the latency study's conclusions derived from a latency sweep: latency table, crossovers, "
                       "the original claim, dispatch speedups, the Triton kernel against its goals",
    "quantization_error": "MXFP4 weight error against the bf16 origin per scale rule, weight distribution and "
                          "matrix (CPU)",
    "layout_throughput": "CPU time of the SM90 weight interleave and scale fold (and inverses) as a ratio to clone()",
    "validation_cost": "microseconds the input and output checks add to a backend's __call__ per call at small M "
                       "(CPU unless stated), against the whole call",
    "prepare_cost": "wall time and peak memory to prepare one real layer on CPU (checkpoint -> logical tensors)",
    "flashinfer_build": "cold build of the W4A16-only FlashInfer SM90 module per config set: time, units, "
                        "library, warm load",
    "flashinfer_config_sets": "FlashInfer SM90 latency with the compact config set against the stock K-tile-128 set",
    "sm90_interleave_check": "mxfp4lab's torch SM90 weight interleave against FlashInfer's CUDA interleave, "
                             "bit for bit",
    "flashinfer_kernel_check": "FlashInfer's SM90 W4A16 MoE output against the kernel-faithful and fp32 references",
    "triton_check": "mxfp4lab's Triton MoE kernel per tile candidate: output against the references, "
                    "poisoned intermediates, determinism",
    "sharded_check": "tensor / expert parallel MoE across processes against the kernel-faithful model of the "
                     "sharded run",
    "decode_check": "mxfp4lab's decode kernel per token-group variant: output against the kernel-faithful "
                    "reference over shapes, M, routings and TP/EP shards, NaN-filled workspaces, determinism",
    "moe_launches": "one MoE forward launch by launch: duration and gap (profiler timeline of a CUDA-graph "
                    "replay) and DRAM bytes read (Nsight Compute)",
    "parallel_latency": "one MoE layer split over the GPUs of one host (TP and EP = 1, 2, 4, 8) per backend and M: "
                        "the whole layer (each rank's experts + the all-reduce of the partial outputs) with the "
                        "all-reduce's share, checked against the kernel-faithful model of the sharded run before "
                        "timing, and the sharded roofline with the all-reduce bandwidth measured in the same run",
    "peer_check": "the field's MoE libraries run as mxfp4lab backends (triton_kernels, Humming): output against "
                  "the fp32 reference with poisoned buffers, CUDA-graph replay, a first timing, their GEMM kernels",
    "sass_stalls": "Nsight Compute's sampled warp stalls and executed instructions of one kernel, summed over the "
                   "regions of its SASS (source counters): where the launch's warps wait",
    "harness_floor": "what the timing harness (CUDA events around one CUDA-graph replay, the host's submission "
                     "hidden) measures for graphs of one and of three dependent tiny kernels: its fixed cost per "
                     "replay and per launch, the same for every backend",
    "part_costs": "the decode kernel's forward timed with one part of its wide items removed (diagnostic builds, "
                  "never shipped) beside the shipped kernels in the same run: what each part holds",
    "startup_time": "time to the first MoE call: cold build of the W4A16-only FlashInfer module, "
                    "fresh-process "
                    "first tuned call with persisted tactics (warm start), with tuning and with the plain "
                    "FlashInfer import; tuned medians from the cache against the in-process autotuner",
}
#: Read in this order when a study has several GPUs' files and none is named (the study's target GPU first).
PREFERRED_GPUS = ("h200", "h100")
#: The top-level keys every result file has.
REQUIRED = ("kind", "schema", "provenance", "rows")

_GPU_PATTERNS = (("h200", re.compile(r"\bH200\b", re.I)), ("h100", re.compile(r"\bH100\b", re.I)),
                 ("h20", re.compile(r"\bH20\b", re.I)), ("gh200", re.compile(r"\bGH200\b", re.I)))


class ResultsError(ValueError):
    """A result file breaks the schema or the naming rule; the message names the file and the rule."""


@dataclass
class Result:
    """One loaded result file: the four schema fields, the free metadata, and where it came from."""

    kind: str
    rows: List[Dict[str, Any]]
    provenance: Dict[str, Any]
    meta: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None

    def frame(self):
        """``rows`` as a :class:`pandas.DataFrame`."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def runs(self) -> Dict[str, Dict[str, Any]]:
        """name -> provenance of the other runs a merged file's rows came from (rows with ``run``; ``meta["runs"]``,
        each ``{"provenance": ..., ...}``), the file's own run ("main", where listed) left out."""
        return {k: v.get("provenance") or {} for k, v in (self.meta.get("runs") or {}).items() if k != "main"}


# --------------------------------------------------------------------------------------------
# Naming
# --------------------------------------------------------------------------------------------
def gpu_slug(gpu: Optional[str]) -> str:
    """A device name (``"NVIDIA H100 80GB HBM3"``) -> its file stem (``"h100"``); None -> ``"cpu"``."""
    if not gpu:
        return "cpu"
    for slug, pat in _GPU_PATTERNS:
        if pat.search(gpu):
            return slug
    return re.sub(r"[^a-z0-9]+", "_", gpu.lower()).strip("_")


def result_path(study: str, gpu: str, root: Optional[PathLike] = None) -> Path:
    """``<root>/<study>/<gpu>.json`` (root: ``data/results``)."""
    for what, v in (("study", study), ("gpu", gpu)):
        if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", v or ""):
            raise ResultsError(f"{what} {v!r} must be lower-case letters, digits and '_' (naming rule "
                               "data/results/<study>/<gpu>.json)")
    return Path(root or RESULTS_DIR) / study / f"{gpu}.json"


def find(study: str, gpus: Sequence[str] = PREFERRED_GPUS, root: Optional[PathLike] = None) -> Optional[Path]:
    """The first of ``<study>/<gpu>.json`` for ``gpus`` (in order) that exists, or None."""
    for g in gpus:
        p = result_path(study, g, root)
        if p.is_file():
            return p
    return None


def _tree_root(path: Path) -> Path:
    """The results root a file ``<root>/<study>/<gpu>.json`` (or ``<root>/archive/<study>/...``) lives in."""
    root = path.parent.parent
    return root.parent if root.name == ARCHIVE_DIR else root


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def validate(doc: Any, where: str = "result") -> None:
    """The schema of the module docstring; :class:`ResultsError` naming ``where`` and the rule."""
    if not isinstance(doc, dict):
        raise ResultsError(f"{where}: a result file holds one JSON object, got {type(doc).__name__}")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise ResultsError(f"{where}: missing top-level key(s) {missing} (every result has {list(REQUIRED)})")
    if doc["kind"] not in KINDS:
        raise ResultsError(f"{where}: kind {doc['kind']!r} is not one of {sorted(KINDS)}")
    if doc["schema"] != SCHEMA:
        raise ResultsError(f"{where}: schema {doc['schema']!r}, this mxfp4lab reads schema {SCHEMA}")
    if not isinstance(doc["provenance"], dict) or not isinstance(doc["rows"], list):
        raise ResultsError(f"{where}: provenance must be an object and rows a list")
    bad = [i for i, r in enumerate(doc["rows"]) if not isinstance(r, dict)]
    if bad:
        raise ResultsError(f"{where}: rows {bad[:5]} are not objects (each row is one measured point)")


def load(path_or_study: Union[PathLike, str], gpu: Optional[str] = None, *, root: Optional[PathLike] = None,
         kind: Optional[str] = None) -> Result:
    """Load and validate a result: ``load(path)`` or ``load("latency", "h100")``. ``kind``: also require it."""
    p = result_path(str(path_or_study), gpu, root) if gpu is not None else Path(path_or_study)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no result file at {p}") from None
    except ValueError as exc:
        raise ResultsError(f"{p}: not valid JSON ({exc})") from exc
    validate(doc, str(p))
    if kind is not None and doc["kind"] != kind:
        raise ResultsError(f"{p}: kind {doc['kind']!r}, expected {kind!r}")
    meta = {k: v for k, v in doc.items() if k not in REQUIRED}
    return Result(doc["kind"], doc["rows"], doc["provenance"], meta, p)


def files(root: Optional[PathLike] = None) -> List[Path]:
    """Every result file under ``root`` (archive included, partial runs and the index excluded), sorted."""
    r = Path(root or RESULTS_DIR)
    return sorted(p for p in r.rglob("*.json") if p.name != INDEX_FILE and not p.name.endswith(PARTIAL_SUFFIX))


#: The index's own provenance: it is derived from the result files (each carries its measurement's block).
INDEX_PROVENANCE = {"derived": "written by mxfp4lab.results on every write into this tree; no measurement",
                    "sources": "each listed file's own provenance block"}


def read_index(root: Optional[PathLike] = None) -> Dict[str, Dict[str, str]]:
    """``index.json``'s ``files``: relative path -> ``{"kind", "what"}`` ({} when there is none)."""
    p = Path(root or RESULTS_DIR) / INDEX_FILE
    if not p.is_file():
        return {}
    doc = json.loads(p.read_text())
    return doc.get("files", {}) if "files" in doc or "provenance" in doc else doc


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dump(doc: dict) -> str:
    return json.dumps(doc, indent=2, default=str) + "\n"


def write(path: PathLike, kind: str, rows: Iterable[Dict[str, Any]], *, what: Optional[str] = None,
          command: Optional[str] = None, prov: Optional[Dict[str, Any]] = None, partial: bool = False,
          **meta) -> Path:
    """Write one result file atomically and return its path.

    Args:
        path: the target, normally :func:`result_path` (``data/results/<study>/<gpu>.json``).
        kind: one of :data:`KINDS`.  rows: the measured points.
        what: one sentence for the index (default: the kind's description).
        command: recorded in the provenance (default: this process's command line).
        prov: a provenance block to keep (e.g. a sweep's, when deriving from it); default: this machine now.
        partial: write ``<stem>.partial.json`` beside ``path`` instead (a run in progress); a final
            (``partial=False``) write removes that file.
        meta: free metadata (``note=...``, ``ceilings=...``), stored at the top level.
    """
    path = Path(path)
    clash = [k for k in REQUIRED if k in meta]
    if clash:
        raise ResultsError(f"{path}: {clash} are schema fields, not metadata")
    doc = {"kind": kind, "schema": SCHEMA, "provenance": prov if prov is not None else provenance(command),
           "rows": list(rows), **meta}
    validate(doc, str(path))
    target = path.with_name(path.stem + PARTIAL_SUFFIX) if partial else path
    _atomic_write_text(target, _dump(doc))
    if not partial:
        path.with_name(path.stem + PARTIAL_SUFFIX).unlink(missing_ok=True)
        _index_entry(path, kind, what)
    return target


def _index_entry(path: Path, kind: Optional[str], what: Optional[str]) -> None:
    """Add/refresh (or, with ``kind=None``, drop) ``path``'s entry in its tree's ``index.json``, when the
    file follows the naming rule inside a tree that has an index (``data/results`` always does)."""
    root = _tree_root(path)
    index = root / INDEX_FILE
    if not (index.is_file() or root.resolve() == RESULTS_DIR.resolve()):
        return
    entries = read_index(root)
    key = path.resolve().relative_to(root.resolve()).as_posix()
    if kind is None:
        entries.pop(key, None)
    else:
        entries[key] = {"kind": kind, "what": what or entries.get(key, {}).get("what") or KINDS[kind]}
    _atomic_write_text(index, json.dumps({"provenance": INDEX_PROVENANCE, "files": dict(sorted(entries.items()))},
                                         indent=1) + "\n")


def _archive_path(src: Path, label: str) -> Path:
    """``<root>/archive/<study>/<gpu>-<label>.json`` for ``<root>/<study>/<gpu>.json``: a label of lower-case
    letters, digits, '_' and '-', never used before."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", label):
        raise ResultsError(f"archive label {label!r} must be lower-case letters, digits, '_' and '-'")
    dst = _tree_root(src) / ARCHIVE_DIR / src.parent.name / f"{src.stem}-{label}.json"
    if dst.exists():
        raise ResultsError(f"{dst} exists: archive labels are never reused")
    return dst


def archive(path: PathLike, label: str, *, what: Optional[str] = None) -> Path:
    """Move ``<root>/<study>/<gpu>.json`` to ``<root>/archive/<study>/<gpu>-<label>.json`` (a superseded
    run; the index follows). Returns the new path."""
    src = Path(path)
    dst = _archive_path(src, label)
    doc = load(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    _index_entry(src, None, None)
    _index_entry(dst, doc.kind, what)
    return dst


def merge_run(target: PathLike, run: PathLike, name: str, *, key: Sequence[str], label: str,
              what: Optional[str] = None, keep_meta: Sequence[str] = ("ceilings",)) -> tuple[Path, Optional[Path]]:
    """Record one run's file (``run``, e.g. what a GPU job wrote) in a study file (``target``) as the run ``name``.

    Its rows go in with ``run = name``; the rows of ``target`` with the same values of the ``key`` fields (e.g.
    backend, shape, m, routing) leave it for ``archive/<study>/<gpu>-<label>.json``, together with their runs'
    entries and ``what`` as its note and index line. ``target``'s ``runs`` gains ``name`` (the run's provenance and
    its ``keep_meta`` fields) and loses every run none of whose rows is left. Nothing is written unless both files
    validate, their kinds agree, ``name`` is new, every new row carries the key and the archive label is unused.
    Returns ``(target, archive path or None)``."""
    target, run = Path(target), Path(run)
    old, new = load(target), load(run)
    where = f"merging {run} into {target}"
    if old.kind != new.kind:
        raise ResultsError(f"{where}: kinds differ ({new.kind} into {old.kind})")
    runs = dict(old.meta.get("runs") or {})
    if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", name) or name == "main" or name in runs:
        raise ResultsError(f"{where}: run name {name!r} must be new, not 'main', lower-case letters, digits and '_'")
    if not key:
        raise ResultsError(f"{where}: name the key fields that say which rows a new row replaces")

    def row_key(row, i, src):
        missing = [k for k in key if k not in row]
        if missing:
            raise ResultsError(f"{where}: row {i} of {src} has no {missing} (the key is {list(key)})")
        return tuple(json.dumps(row[k], sort_keys=True) for k in key)

    incoming = {row_key(r, i, run): {**r, "run": name} for i, r in enumerate(new.rows)}
    if len(incoming) != len(new.rows):
        raise ResultsError(f"{where}: the run has several rows with one key {list(key)}")
    kept, gone, rows, placed = [], [], [], set()
    for i, r in enumerate(old.rows):
        k = row_key(r, i, target)
        if k not in incoming:
            kept.append(r)
            rows.append(r)
            continue
        gone.append(r)
        if k not in placed:  # the new row takes the place of the first it replaces
            rows.append(incoming[k])
            placed.add(k)
    rows += [r for k, r in incoming.items() if k not in placed]
    used = {r.get("run", "main") for r in kept} | {name}
    runs[name] = {"provenance": new.provenance, **{m: new.meta[m] for m in keep_meta if m in new.meta}}
    meta = {**old.meta, "runs": {k: v for k, v in runs.items() if k in used or k == "main"}}
    dst = None
    if gone:
        dst = _archive_path(target, label)
        gone_runs = {k: v for k, v in (old.meta.get("runs") or {}).items() if k in {r.get("run", "main") for r in gone}}
        arch = {"kind": old.kind, "schema": SCHEMA, "provenance": old.provenance, "rows": gone, "runs": gone_runs,
                "note": what or f"The rows of {target.parent.name}/{target.name} that run {name} replaced."}
        validate(arch, str(dst))
    validate({"kind": old.kind, "schema": SCHEMA, "provenance": old.provenance, "rows": rows, **meta}, str(target))
    if dst is not None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        write(dst, old.kind, gone, prov=old.provenance, what=what or arch["note"], runs=gone_runs, note=arch["note"])
    write(target, old.kind, rows, prov=old.provenance, **meta)
    return target, dst


__all__ = ["KINDS", "RESULTS_DIR", "Result", "ResultsError", "SCHEMA", "archive", "files", "find", "gpu_slug",
           "load", "merge_run", "read_index", "result_path", "validate", "write"]
