"""Provenance for every recorded number: machine, versions, commit, date and the exact command."""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]

#: What recorded numbers depend on: the package, the GPU scripts and the notebooks. Their digest
#: (:func:`source_digest`) names the code that ran even where a checkout's git metadata is missing or stale (a
#: copied tree on a GPU host); :func:`commits_with_digest` finds the commits whose tree has that digest.
SOURCE_DIRS = ("mxfp4lab", "scripts", "notebooks")
SOURCE_SUFFIXES = (".py", ".cu", ".cuh", ".h", ".cpp", ".sh", ".ipynb", ".yaml", ".steps", ".env", ".toml")


def _version(mod: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001 - absent package
        return None


def git_commit() -> Optional[str]:
    """``$MXFP4LAB_COMMIT``, else the stamp ``.devcarry/COMMIT``, else git's HEAD (``+dirty`` with tracked changes)."""
    if os.environ.get("MXFP4LAB_COMMIT"):
        return os.environ["MXFP4LAB_COMMIT"]
    stamp = REPO_ROOT / ".devcarry" / "COMMIT"  # written before a GPU run: the device copy has no git history
    if stamp.exists():
        return stamp.read_text().strip()
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        sha = out.stdout.strip() or None
        if sha is None or len(sha) != 40:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return f"{sha}{'+dirty' if dirty else ''}" if sha else None
    except Exception:  # noqa: BLE001 - not a git checkout
        return os.environ.get("MXFP4LAB_COMMIT")


def gpu_info() -> Dict[str, Any]:
    info: Dict[str, Any] = {"gpu": None, "driver": None, "cuda": None, "sm_count": None}
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info.update(gpu=p.name, cuda=torch.version.cuda, sm_count=p.multi_processor_count,
                        capability=f"{p.major}.{p.minor}", device_count=torch.cuda.device_count())
    except Exception:  # noqa: BLE001
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )
        if out.returncode == 0:
            info["driver"] = out.stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        pass
    return info


def _selected(rel: str) -> bool:
    parts = rel.split("/")
    return (parts[0] in SOURCE_DIRS and rel.endswith(SOURCE_SUFFIXES) and "__pycache__" not in parts
            and not any(q.startswith(".") for q in parts))


def _digest(items) -> str:
    """sha256 over (path, sha256 of the bytes) in path order; the first 16 hex digits."""
    h = hashlib.sha256()
    for rel, data in sorted(items):
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def source_digest(root: Optional[Path] = None) -> str:
    """Digest of the files under :data:`SOURCE_DIRS` with :data:`SOURCE_SUFFIXES` as they are on disk (hidden
    paths and ``__pycache__`` left out), tracked or not."""
    root = Path(root or REPO_ROOT)
    items = []
    for d in SOURCE_DIRS:
        for f in (root / d).rglob("*"):
            rel = f.relative_to(root).as_posix()
            if f.is_file() and not f.is_symlink() and _selected(rel):
                items.append((rel, f.read_bytes()))
    return _digest(items)


def tree_digest(commit: str = "HEAD", root: Optional[Path] = None) -> str:
    """:func:`source_digest` of ``commit``'s tree, read from git's objects (no checkout)."""
    root = Path(root or REPO_ROOT)
    git = ["git", "-C", str(root)]
    listing = subprocess.run([*git, "ls-tree", "-r", "-z", commit, "--", *SOURCE_DIRS], capture_output=True,
                             check=True).stdout
    paths, shas = [], []
    for entry in filter(None, listing.split(b"\0")):
        meta, path = entry.split(b"\t", 1)
        mode, kind, sha = meta.split()
        rel = path.decode()
        if kind == b"blob" and mode != b"120000" and _selected(rel):
            paths.append(rel)
            shas.append(sha)
    out = subprocess.run([*git, "cat-file", "--batch"], input=b"".join(s + b"\n" for s in shas),
                         capture_output=True, check=True).stdout
    items, pos = [], 0
    for rel in paths:
        header_end = out.index(b"\n", pos)
        size = int(out[pos:header_end].split()[2])
        items.append((rel, out[header_end + 1 : header_end + 1 + size]))
        pos = header_end + 1 + size + 1
    return _digest(items)


def commits_with_digest(digest: str, *, root: Optional[Path] = None, max_count: int = 400) -> list:
    """Commits (newest first, of every branch, at most ``max_count`` looked at) whose tree has ``digest``."""
    root = Path(root or REPO_ROOT)
    revs = subprocess.run(["git", "-C", str(root), "rev-list", f"--max-count={max_count}", "--all"],
                          capture_output=True, text=True, check=True).stdout.split()
    return [c for c in revs if tree_digest(c, root) == digest]


def provenance(command: Optional[str] = None) -> Dict[str, Any]:
    """The block every result file carries (:mod:`mxfp4lab.results`)."""
    d = gpu_info()
    d.update(
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        torch=_version("torch"),
        triton=_version("triton"),
        flashinfer=_version("flashinfer-python") or _flashinfer_runtime_version(),
        mxfp4lab_commit=git_commit(),
        source_digest=process_source_digest(),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        command=command if command is not None else " ".join(getattr(sys, "orig_argv", sys.argv)),
    )
    return d


@functools.lru_cache(maxsize=1)
def process_source_digest() -> Optional[str]:
    """:func:`source_digest` of this checkout, taken once per process (the code this process loaded, not
    edits made while it runs); None when the files cannot be read."""
    try:
        return source_digest()
    except OSError:
        return None


def _flashinfer_runtime_version() -> Optional[str]:
    try:
        import flashinfer

        return getattr(flashinfer, "__version__", None)
    except Exception:  # noqa: BLE001
        return None
