"""Provenance for every recorded number: machine, versions, commit, date and the exact command."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]


def _version(mod: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001 - absent package
        return None


def _git_commit() -> Optional[str]:
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
        mxfp4lab_commit=_git_commit(),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        command=command if command is not None else " ".join(getattr(sys, "orig_argv", sys.argv)),
    )
    return d


def _flashinfer_runtime_version() -> Optional[str]:
    try:
        import flashinfer

        return getattr(flashinfer, "__version__", None)
    except Exception:  # noqa: BLE001
        return None
