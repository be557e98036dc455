"""What importing FlashInfer costs, and what the W4A16 path needs of it (``mxfp4lab build --import-cost``).

Each measurement runs a fresh interpreter with ``-X importtime`` and reads its per-module cumulative
microseconds: ``full`` is ``import flashinfer``; ``lean`` imports only the W4A16 modules through
:func:`.lean_import.import_lean`. The report groups the cost by top-level package (``torch``,
``flashinfer``, ``cutlass`` = nvidia-cutlass-dsl, ...) and lists FlashInfer's heaviest subpackages.
Standard library only.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any, Dict, List, Optional

_SNIPPETS = {
    "torch": "import torch",
    "full": "import torch, flashinfer",
    "lean": "import torch; from mxfp4lab.flashinfer_build.lean_import import import_lean; import_lean()",
}
_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def parse_importtime(stderr: str) -> List[Dict[str, Any]]:
    """``-X importtime`` lines -> ``[{"module", "self_s", "cumulative_s", "depth"}]`` in print order."""
    rows = []
    for ln in stderr.splitlines():
        m = _LINE.match(ln)
        if m:
            rows.append(
                {
                    "module": m.group(4),
                    "self_s": int(m.group(1)) / 1e6,
                    "cumulative_s": int(m.group(2)) / 1e6,
                    "depth": (len(m.group(3)) - 1) // 2,
                }
            )
    return rows


def summarize(rows: List[Dict[str, Any]], top: int = 12) -> Dict[str, Any]:
    """Self time per top-level package, total, and the heaviest ``flashinfer.*`` subpackages (cumulative)."""
    by_pkg: Dict[str, float] = {}
    for r in rows:
        pkg = r["module"].split(".")[0]
        by_pkg[pkg] = by_pkg.get(pkg, 0.0) + r["self_s"]
    fi = {}
    for r in rows:
        parts = r["module"].split(".")
        if parts[0] == "flashinfer" and len(parts) == 2:
            fi[r["module"]] = max(fi.get(r["module"], 0.0), r["cumulative_s"])
    return {
        "total_s": sum(r["self_s"] for r in rows),
        "by_package_s": dict(sorted(by_pkg.items(), key=lambda kv: -kv[1])[:top]),
        "flashinfer_subpackages_s": dict(sorted(fi.items(), key=lambda kv: -kv[1])[:top]),
        "modules": len(rows),
        "flashinfer_modules": sum(r["module"].startswith("flashinfer") for r in rows),
    }


def measure(mode: str, *, python: Optional[str] = None, cwd: Optional[str] = None) -> Dict[str, Any]:
    """One fresh interpreter importing ``mode`` (``"torch"``, ``"full"`` or ``"lean"``): the summary."""
    if mode not in _SNIPPETS:
        raise ValueError(f"mode must be one of {sorted(_SNIPPETS)}, got {mode!r}")
    out = subprocess.run(
        [python or sys.executable, "-X", "importtime", "-c", _SNIPPETS[mode]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"importing ({mode}) failed:\n{out.stderr[-2000:]}")
    return {"mode": mode, **summarize(parse_importtime(out.stderr))}


def report(results: List[Dict[str, Any]]) -> str:
    """A plain-text table of :func:`measure` results."""
    lines = [f"{'mode':6s} {'total s':>8s} {'modules':>8s}  top packages (self time, s)"]
    for r in results:
        pk = ", ".join(f"{k} {v:.2f}" for k, v in list(r["by_package_s"].items())[:5])
        lines.append(f"{r['mode']:6s} {r['total_s']:8.2f} {r['modules']:8d}  {pk}")
    full = next((r for r in results if r["mode"] == "full"), None)
    if full:
        lines.append(
            "heaviest flashinfer subpackages of `import flashinfer` (cumulative s): "
            + ", ".join(f"{k.split('.', 1)[1]} {v:.2f}" for k, v in full["flashinfer_subpackages_s"].items())
        )
    return "\n".join(lines)
