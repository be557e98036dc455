"""What the latency study's times contain besides a backend's work, and what each part of the decode kernel holds.

* :func:`latency_harness_floor` -- the timing harness's own cost (``scripts/gpu/harness_floor.py``: CUDA graphs of one
  and of three tiny kernels, timed as every backend is), in every measured time alike;
* :func:`latency_part_costs` -- the decode kernel's wide items timed with one part removed (diagnostic builds beside
  the shipped kernels in the same run; ``docs/gpu.md``, section 5): the share of the forward each part holds.

Both read a recorded file (or the one given), return None when nothing is recorded, and raise ``ValueError`` naming
the file when it cannot say what it should. The latency report states both as findings (notebook 03 records them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import results
from .latency import display_path, latency_source_label


#: where ``scripts/gpu/harness_floor.py`` records what the timing harness itself measures
HARNESS_STUDY = "harness"


def latency_harness_floor(path=None) -> dict[str, Any] | None:
    """What the timing harness measures with nothing of a backend in it (``scripts/gpu/harness_floor.py``): a CUDA
    graph of one tiny kernel (``one_kernel_us``), each further dependent launch (``per_launch_us``: half the three-kernel
    graph's extra time), the graph's entry and exit (``entry_exit_us``: the one-kernel graph less one launch), and
    ``source``; None where nothing is recorded. Raises ``ValueError`` naming the file when it lacks either graph."""
    p = Path(path) if path is not None else results.find(HARNESS_STUDY)
    if p is None or not p.is_file():
        return None
    r = results.load(p, kind="harness_floor")
    us = {int(x["kernels"]): float(x["median_us"]) for x in r.rows}
    if not {1, 3} <= set(us):
        raise ValueError(f"{display_path(p)}: needs the rows of 1 and 3 kernels (kernels = 1, 3), has {sorted(us)}")
    per = (us[3] - us[1]) / 2
    return {"one_kernel_us": us[1], "per_launch_us": per, "entry_exit_us": us[1] - per,
            "source": f"{display_path(p)}, {latency_source_label(r.provenance)}"}


#: where the decode kernel's wide items timed with one part removed are recorded (kind ``part_costs``)
PART_COSTS_STUDY = "part_costs"
#: the parts a ``part_costs`` row may name as removed, in the order the report lists them
PARTS = ("wgmma", "token_tiles", "half_token_tiles", "epilogue", "decode")


def latency_part_costs(path=None) -> dict[str, Any] | None:
    """What each part of the decode kernel's wide items holds (kind ``part_costs``: each row a diagnostic build's
    forward beside the shipped kernels' in the same run): ``rows`` of ``variant, m, removed`` (one of :data:`PARTS`),
    ``saved_lo`` / ``saved_hi`` (the least and most of the forward's time the removal saved, 1 - ablated / shipped,
    over the shapes and rounds) and ``points``, largest M first; and ``source``. None where nothing is recorded.
    Raises ``ValueError`` naming the file for a part it does not know or a time that is not positive."""
    p = Path(path) if path is not None else results.find(PART_COSTS_STUDY)
    if p is None or not p.is_file():
        return None
    r = results.load(p, kind="part_costs")
    saved: dict[tuple, list[float]] = {}
    for x in r.rows:
        if x.get("removed") not in PARTS:
            raise ValueError(f"{display_path(p)}: removed = {x.get('removed')!r} is not one of {PARTS}")
        us, shipped = float(x["median_us"]), float(x["shipped_us"])
        if not (us > 0 and shipped > 0):
            raise ValueError(f"{display_path(p)}: times must be > 0, got {us} and shipped {shipped} for "
                             f"variant {x['variant']} M = {x['m']} without its {x['removed']}")
        saved.setdefault((int(x["variant"]), int(x["m"]), x["removed"]), []).append(1 - us / shipped)
    rows = [{"variant": v, "m": m, "removed": part, "saved_lo": min(f), "saved_hi": max(f), "points": len(f)}
            for (v, m, part), f in sorted(saved.items(), key=lambda kv: (-kv[0][1], kv[0][0], PARTS.index(kv[0][2])))]
    return {"rows": rows, "source": f"{display_path(p)}, {latency_source_label(r.provenance)}"}
