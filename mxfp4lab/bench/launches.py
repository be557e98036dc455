"""Where one MoE forward's time goes, launch by launch: duration, DRAM bytes read, achieved bandwidth, and
the gaps between launches. Prints a table and writes JSON.

Two sources, because no one tool gives all of it on these machines:

* **timeline** (``torch.profiler``, CUPTI): the forward is captured in a CUDA graph and replayed; for each
  replay the kernels' start/end times give each launch's duration and the idle gap before it (the first
  gap is from the replay's first kernel, so the sum of durations + gaps = the replay's device span);
* **counters** (``ncu``): this module re-runs itself under Nsight Compute (``--clock-control none``,
  the card's own clocks) with ``dram__bytes_read.sum`` and ``gpu__time_duration.sum`` per kernel, for
  the DRAM bytes each launch really read, and its warp instructions per scheduler over the scheduler's elapsed
  cycles, for its issue floor (the time its instructions take where every scheduler issues one per cycle).
  ncu serialises and replays kernels, so its durations are per-launch, with no overlap between launches.

A launch whose duration is far above both floors -- its bytes over the copy bandwidth and its issue floor --
is bound by latency (fill, drain, waits, too few warps in flight); one near its issue floor, by the instructions
it issues per weight.

    mxfp4lab bench launches --backend decode_w4a16 --shape gpt-oss-120b --m 1,64 --ncu
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
from typing import Callable, List, Optional, Sequence

import torch

NCU_METRICS = ("gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum",
               "sm__throughput.avg.pct_of_peak_sustained_elapsed",
               "smsp__issue_active.avg.pct_of_peak_sustained_active",
               # warp instructions per scheduler (SMSP) and its elapsed cycles: the launch's issue floor, the time its
               # instructions take where every scheduler issues one per cycle from start to end (:func:`parse_ncu_csv`)
               "smsp__inst_executed.avg", "smsp__cycles_elapsed.avg")
#: what a warp waits on, per issued instruction (ncu's warp-state sampling, averaged over the launch), and
#: how busy the integer (ALU) and FP32/IMAD (FMA) pipes are: read by a second ncu pass (:func:`ncu_stalls`)
STALL_REASONS = ("long_scoreboard", "short_scoreboard", "wait", "barrier", "math_pipe_throttle", "mio_throttle",
                 "lg_throttle", "not_selected", "selected", "dispatch_stall", "no_instruction", "branch_resolving",
                 "membar", "drain")
NCU_STALL_METRICS = tuple(f"smsp__average_warps_issue_stalled_{r}_per_issue_active.ratio" for r in STALL_REASONS) + (
    "sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active",
    "sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active",
    "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active",
    "smsp__warps_active.avg.per_cycle_active", "smsp__warps_eligible.avg.per_cycle_active")


def timeline(fn: Callable, inputs: tuple, replays: int = 20) -> List[dict]:
    """Per launch of one captured forward: median duration and median idle gap before it (us)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn(*inputs)
    torch.cuda.synchronize()
    from .harness import capture_graphs

    (g,) = capture_graphs(fn, [inputs])
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            g.replay()
            torch.cuda.synchronize()  # replays apart: gaps inside one forward only
    kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                      and e.name not in ("", "Memset") and "Memcpy" not in e.name),
                     key=lambda e: e.time_range.start)
    n = len(kernels) // replays
    if n == 0 or len(kernels) % replays:
        raise RuntimeError(f"profiler saw {len(kernels)} kernels for {replays} replays")
    per_launch = []
    for i in range(n):
        starts, ends, gaps = [], [], []
        for r in range(replays):
            k, k0 = kernels[r * n + i], kernels[r * n]
            starts.append(k.time_range.start - k0.time_range.start)
            ends.append(k.time_range.end - k0.time_range.start)
            # idle time before this launch: from the latest end of the launches before it (with
            # programmatic dependent launch a kernel can start before its predecessor ends: gap 0)
            prev_end = max((kernels[r * n + j].time_range.end for j in range(i)), default=k.time_range.start)
            gaps.append(max(0.0, k.time_range.start - prev_end))
        per_launch.append({"launch": i, "kernel": kernels[i].name[:160], "start_us": statistics.median(starts),
                           "end_us": statistics.median(ends),
                           "duration_us": statistics.median(ends) - statistics.median(starts),
                           "gap_before_us": statistics.median(gaps)})
    return per_launch


#: ncu's unit strings: a base unit (bytes, time -> microseconds, instructions, cycles, percent) after an optional SI
#: prefix (ncu scales units by magnitude: "Mbyte", "usecond", "Kinst"; ncu 2025 writes "ns", older "nsecond")
_BASE_UNITS = {"byte": 1.0, "B": 1.0, "second": 1e6, "s": 1e6, "inst": 1.0, "cycle": 1.0, "%": 1.0, "": 1.0}
_PREFIXES = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def unit_scale(unit: str) -> float:
    """The factor from ncu's ``unit`` to bytes / microseconds / instructions / cycles / percent; ``ValueError``
    naming the unit where it is none of those."""
    if unit in _BASE_UNITS:
        return _BASE_UNITS[unit]
    if unit[:1] in _PREFIXES and unit[1:] in _BASE_UNITS and unit[1:] not in ("%", ""):
        return _PREFIXES[unit[:1]] * _BASE_UNITS[unit[1:]]
    raise ValueError(f"ncu unit {unit!r} is not a base unit ({sorted(_BASE_UNITS)}) after an SI prefix "
                     f"({sorted(_PREFIXES)})")


def parse_ncu_csv(text: str) -> List[dict]:
    """``ncu --csv --metrics ...`` output -> one dict per kernel launch (in order) with its metrics in
    base units (bytes, ns -> us)."""
    lines = [ln for ln in text.splitlines() if ln.startswith('"')]
    launches: dict = {}
    for r in csv.DictReader(io.StringIO("\n".join(lines))):
        key = int(r["ID"])
        d = launches.setdefault(key, {"launch_id": key, "kernel": r["Kernel Name"][:160]})
        unit, val = r.get("Metric Unit", ""), float(r["Metric Value"].replace(",", "") or "nan")
        try:
            scale = unit_scale(unit)
        except ValueError as exc:
            raise ValueError(f"ncu metric {r['Metric Name']!r}: {exc}") from None
        name = r["Metric Name"]
        d[{"gpu__time_duration.sum": "duration_us"}.get(name, name)] = val * scale
    rows = [launches[k] for k in sorted(launches)]
    for d in rows:
        if "dram__bytes_read.sum" in d and d.get("duration_us"):
            d["dram_read_GBps"] = d["dram__bytes_read.sum"] / d["duration_us"] / 1e3
        inst, cycles = d.get("smsp__inst_executed.avg"), d.get("smsp__cycles_elapsed.avg")
        if inst is not None and cycles and d.get("duration_us"):
            # every scheduler issuing one warp instruction per cycle: the launch's instructions over its clock
            d["issue_floor_us"] = d["duration_us"] * inst / cycles
    return rows


def _layer_backend(backend: str, shape: str):
    from ..backends import get_backend
    from ..models import get_model
    from ..prepare import prepare_from_experts
    from ..synthetic import random_layer

    cfg = get_model(shape)
    return cfg, get_backend(backend)(prepare_from_experts(random_layer(cfg), config=cfg), cfg)


def run_target(backend: str, shape: str, m: int, calls: int) -> None:
    """The process ncu profiles: one layer, warm-up, then ``calls`` forwards (only those are profiled)."""
    from ..synthetic import make_inputs

    cfg, be = _layer_backend(backend, shape)
    inputs = make_inputs(cfg, m, calls + 1, "uniform", seed=m)
    be.tune(*inputs[0])
    for _ in range(3):
        be(*inputs[0])
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    for i in range(calls):
        be(*inputs[1 + i])
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()


def _ncu_csv(metrics, backend: str, shape: str, m: int, calls: int, timeout: int, env: Optional[dict]) -> str:
    """``ncu --csv --metrics ...`` over a child process running :func:`run_target`; its stdout."""
    ncu = os.environ.get("NCU", shutil.which("ncu") or "/usr/local/cuda/bin/ncu")
    cmd = [ncu, "--csv", "--clock-control", "none", "--profile-from-start", "off", "--metrics", ",".join(metrics),
           sys.executable, "-m", "mxfp4lab", "bench", "launches", "--target", backend, shape, str(m), str(calls)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise RuntimeError(f"ncu failed ({r.returncode}): {r.stderr[-800:]}")
    return r.stdout


def ncu_counters(backend: str, shape: str, m: int, calls: int = 2, timeout: int = 300,
                 env: Optional[dict] = None) -> List[dict]:
    """Counters per launch from Nsight Compute, profiling a child process. ``env``: extra environment for the
    child (e.g. the launch variant the parent's tuner chose, so both measure the same kernels)."""
    return parse_ncu_csv(_ncu_csv(NCU_METRICS, backend, shape, m, calls, timeout, env))


def ncu_stalls(backend: str, shape: str, m: int, calls: int = 1, timeout: int = 300,
               env: Optional[dict] = None) -> List[dict]:
    """Per launch of ``calls`` forwards: :data:`NCU_STALL_METRICS` (a second ncu pass; values as ncu prints
    them: warps per issued instruction, percent, warps per cycle; stall reasons as ``stall_<reason>``)."""
    text = _ncu_csv(NCU_STALL_METRICS, backend, shape, m, calls, timeout, env)
    lines = [ln for ln in text.splitlines() if ln.startswith('"')]
    launches: dict = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        d = launches.setdefault(int(row["ID"]), {"launch_id": int(row["ID"]), "kernel": row["Kernel Name"][:160]})
        name = row["Metric Name"].replace("smsp__average_warps_issue_stalled_", "stall_").replace(
            "_per_issue_active.ratio", "")
        d[name] = float(row["Metric Value"].replace(",", "") or "nan")
    return [launches[k] for k in sorted(launches)]


def top_stalls(row: dict, n: int = 4) -> str:
    """The ``n`` largest ``stall_<reason>`` values of one :func:`ncu_stalls` row, largest first, as text."""
    st = sorted(((v, k[len("stall_"):]) for k, v in row.items() if k.startswith("stall_")), reverse=True)
    return ", ".join(f"{k} {v:.2f}" for v, k in st[:n])


def breakdown(backend: str, shape: str, ms: Sequence[int], *, ncu: bool = False, phases: bool = False, out=None,
              log=print) -> List[dict]:
    """Timeline (and with ``ncu``, counters; with ``phases``, the decode kernel's per-CTA phase stamps,
    :mod:`mxfp4lab.bench.phases`) per M; prints a table, writes a ``moe_launches`` result to ``out``."""
    from ..results import write
    from ..synthetic import make_inputs
    from .modes import gemm_pattern

    cfg, be = _layer_backend(backend, shape)
    rows = []
    for m in ms:
        inputs = make_inputs(cfg, m, 1, "uniform", seed=m)[0]
        be.tune(*inputs)
        tl = timeline(be, inputs)
        entry = {"backend": backend, "shape": shape, "m": m, "timeline": tl,
                 "span_us": max(x["end_us"] for x in tl), "describe": be.describe(m)}
        if phases:
            from .phases import format_phases, trace_phases

            try:
                entry["phases"] = trace_phases(be, make_inputs(cfg, m, 4, "uniform", seed=m))
            except Exception as exc:  # noqa: BLE001 - the timeline stands without the stamps
                entry["phases_error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
        if ncu:
            try:
                pin = {}
                if getattr(be, "name", "") == "decode_w4a16":  # the child runs the variant tuned here
                    lc = be.launch_config(m)
                    pin["MXFP4LAB_DECODE_VARIANT"] = str(lc.variant)
                    pin["MXFP4LAB_DECODE_COMBINE"] = "fused" if lc.fused_combine else "unfused"
                entry["ncu"] = ncu_counters(backend, shape, m, env=pin)
            except Exception as exc:  # noqa: BLE001 - the timeline stands without counters
                entry["ncu_error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
            try:
                entry["ncu_stalls"] = ncu_stalls(backend, shape, m, env=pin)
            except Exception as exc:  # noqa: BLE001 - the counters stand without stall reasons
                entry["ncu_stalls_error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
        rows.append(entry)
        log(f"{backend} {shape} M={m}: span {entry['span_us']:.1f} us")
        for x in tl:
            log(f"  #{x['launch']} {x['start_us']:8.1f} .. {x['end_us']:8.1f} us (idle before {x['gap_before_us']:5.1f})"
                f"  {x['kernel'][:90]}")
        if "phases" in entry:
            for line in format_phases(entry["phases"]):
                log(line)
        for x in entry.get("ncu_stalls", []):
            if re.search(gemm_pattern(be), x["kernel"]) or "combine" in x["kernel"]:
                alu = x.get("sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active", 0)
                log(f"  stalls #{x['launch_id']} {top_stalls(x)}; ALU {alu:.0f}% "
                    f"FMA {x.get('sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active', 0):.0f}%  "
                    f"{x['kernel'][:60]}")
        for x in entry.get("ncu", []):
            log(f"  ncu #{x['launch_id']} {x.get('duration_us', 0):8.1f} us  DRAM read "
                f"{x.get('dram__bytes_read.sum', 0) / 1e6:8.2f} MB  {x.get('dram_read_GBps', 0):7.0f} GB/s  "
                f"issue {x.get('smsp__issue_active.avg.pct_of_peak_sustained_active', 0):5.1f}%  issue floor "
                f"{x.get('issue_floor_us', float('nan')):7.1f} us  {x['kernel'][:60]}")
        if out:
            write(out, "moe_launches", rows, partial=True)
    if out:
        write(out, "moe_launches", rows)
    return rows
