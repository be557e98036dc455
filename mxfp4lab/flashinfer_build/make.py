"""The ninja run of a restricted build, in two phases, and what it records.

1. every object except the throwing stubs, ``-j`` jobs, started in the spec's source order (longest
   compile first, :func:`mxfp4lab.flashinfer_build.w4a16_jit_spec`);
2. :func:`mxfp4lab.flashinfer_build.symbols.missing_functions` over those objects -> ``undefined_stubs.cpp``
   (rewritten only when it changes), then ninja again: that one small object and the link.

After the link: :func:`~.symbols.check_launcher_symbols` (R-AGREE) and no ``tensorrt_llm`` symbol left
undefined in the library; ``BUILD_OK`` records wall times, jobs, counts. ``.ninja_log`` keeps each unit's
start and end (:func:`unit_times`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .sources import UNDEFINED_STUBS_UNIT, UNIT_CPU_LOG, _write_if_different
from .symbols import check_launcher_symbols, missing_functions, stub_source, undefined_in_library
from .toolchain import _ninja_bin


def unit_times(root: Path) -> Dict[str, Dict[str, float]]:
    """Per object of the last build: ``{"start_s", "end_s", "seconds"}`` from ninja's ``.ninja_log`` (last
    entry per output; milliseconds since the start of ninja's run, so the two phases restart at 0), and
    ``"cpu_s"`` (user + sys of the compiler and its tools) from the launcher's log when present."""
    times: Dict[str, Dict[str, float]] = {}
    log = Path(root) / ".ninja_log"
    if not log.exists():
        return times
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if line.startswith("#") or len(parts) < 4:
            continue
        start, end = int(parts[0]) / 1000.0, int(parts[1]) / 1000.0
        times[Path(parts[3]).name] = {"start_s": start, "end_s": end, "seconds": end - start}
    cpu = Path(root) / UNIT_CPU_LOG
    if cpu.exists():
        for line in cpu.read_text().splitlines():
            rec = json.loads(line)
            if rec["output"] in times:
                times[rec["output"]]["cpu_s"] = round(rec["user_s"] + rec["sys_s"], 2)
    return times


def _ninja(spec, jobs: int, targets: Sequence[str], verbose: bool, t0: float, tag: str) -> None:
    cmd = [_ninja_bin(), "-C", str(spec.root), "-f", str(spec.ninja_path), "-j", str(jobs), *targets]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: List[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line])[-200:]
        if verbose:
            if re.match(r"\[(\d+)/(\d+)\]", line):
                print(f"[mxfp4lab build] {time.time() - t0:7.1f}s {tag} {line.rstrip()[:160]}", flush=True)
            elif "error" in line.lower():
                print(line.rstrip(), flush=True)
    rc = proc.wait()
    if rc != 0:
        raise RuntimeError(
            f"ninja failed (rc={rc}) building {spec.name} in {spec.root}:\n" + "".join(tail[-60:])
        )


def run_build(spec, *, jobs: Optional[int], verbose: bool) -> Dict[str, Any]:
    """Build ``spec`` (two phases, module docstring) and write ``BUILD_OK``; returns its record."""
    root = spec.root
    root.mkdir(parents=True, exist_ok=True)
    spec.write_ninja()
    jobs = jobs or int(os.environ.get("MAX_JOBS", "0") or 0) or (os.cpu_count() or 1)
    (root / UNIT_CPU_LOG).unlink(missing_ok=True)
    objects = spec.get_object_paths_in_root()
    stub_objs = [o for o in objects if o.name.startswith(f"src_{Path(UNDEFINED_STUBS_UNIT).stem}.")]
    if len(stub_objs) != 1:
        raise RuntimeError(
            f"build.ninja in {root} has {len(stub_objs)} objects for {UNDEFINED_STUBS_UNIT}, expected 1"
        )
    first = [o for o in objects if o not in stub_objs]
    t0 = time.time()
    if verbose:
        print(f"[mxfp4lab build] {len(spec.sources)} units, -j{jobs}, in {root}", flush=True)
    _ninja(spec, jobs, [str(o) for o in first], verbose, t0, "objects")
    t1 = time.time()
    missing = missing_functions(first)
    _write_if_different(
        root / "src" / UNDEFINED_STUBS_UNIT, stub_source(missing, spec.info.get("config_set", "custom"))
    )
    t2 = time.time()
    _ninja(spec, jobs, [], verbose, t0, "stubs+link")
    t3 = time.time()
    record: Dict[str, Any] = {
        "wall_s": t3 - t0,
        "objects_s": t1 - t0,
        "stub_scan_s": t2 - t1,
        "stubs_and_link_s": t3 - t2,
        "jobs": jobs,
        "cpu_count": os.cpu_count(),
        "time": t3,
        "stubbed_functions": len(missing),
        "stubbed_launchers": sum("sm90_generic_mixed_moe" in m for m, _ in missing),
    }
    record.update(check_launcher_symbols(objects))
    left = undefined_in_library(spec.jit_library_path)
    if left:
        raise RuntimeError(
            f"{spec.jit_library_path} still needs {len(left)} tensorrt_llm symbols: {left[:5]}"
        )
    (root / "BUILD_OK").write_text(json.dumps(record))
    if verbose:
        print(
            f"[mxfp4lab build] done in {record['wall_s']:.1f}s ({len(missing)} throwing stubs) -> "
            f"{spec.jit_library_path}",
            flush=True,
        )
    return record
