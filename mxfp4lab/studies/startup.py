"""The start-up study: time to the first MoE call, as recorded (``data/results/startup/<gpu>.json``, kind
``startup_time``, written by ``scripts/gpu/startup_time.py``). ``mxfp4lab build --info`` prints it."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from .. import results


def recorded_times(root: Optional[Path] = None) -> List[dict]:
    """One summary per recorded GPU: cold build, first tuned call of a fresh process with persisted tactics
    (warm start), with tuning, and with the plain ``import flashinfer``; the checks; date and commit."""
    base = Path(root) if root is not None else results.RESULTS_DIR
    out = []
    for p in sorted((base / "startup").glob("*.json")):
        if p.name.endswith(results.PARTIAL_SUFFIX):
            continue
        r = results.load(p, kind="startup_time")
        first = {row["process"]: row for row in r.rows if row.get("phase") == "first_call"}
        build = next((row for row in r.rows if row.get("phase") == "cold_build"), {})
        out.append({
            "file": f"startup/{p.name}",
            "gpu": r.provenance.get("gpu"), "cpu_count": r.provenance.get("cpu_count"),
            "date": r.provenance.get("date"), "commit": r.provenance.get("mxfp4lab_commit"),
            "configs": build.get("configs"), "cold_build_s": build.get("cold_build_s"),
            "slowest_unit": build.get("slowest_unit"), "slowest_unit_s": build.get("slowest_unit_s"),
            "first_tuned_call_s": first.get("warm", {}).get("first_tuned_call_s"),
            "first_tuned_call_tuning_s": first.get("tune", {}).get("first_tuned_call_s"),
            "first_tuned_call_full_import_s": first.get("warm_full", {}).get("first_tuned_call_s"),
            "checks": r.meta.get("checks"),
        })
    return out
