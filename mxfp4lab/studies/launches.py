"""Where one MoE forward's time goes, launch by launch, from recorded breakdowns (``mxfp4lab bench launches``:
``data/results/launches/<gpu>.json``); the figure is :func:`mxfp4lab.studies.latency_figures.plot_launches`."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .. import results
from ..bench.launches import top_stalls


def _sweep_of(path):
    """The latency sweep of the GPU of the launches file at ``path``, in the same results tree
    (``<root>/latency/<gpu>.json``), loaded, or None where there is none."""
    p = Path(path)
    sweep = p.parent.parent / "latency" / p.name
    return results.load(sweep) if sweep.is_file() else None


def _bandwidth_of(sweep) -> float | None:
    return None if sweep is None else (sweep.meta.get("ceilings") or {}).get("copy_bytes_per_s")


def copy_bandwidth(path) -> float | None:
    """The copy bandwidth (bytes/s) measured on the GPU of the launches file at ``path``: the ``ceilings`` of the
    latency sweep of the same GPU in the same results tree (``<root>/latency/<gpu>.json``), or None where there
    is none."""
    return _bandwidth_of(_sweep_of(path))


def _launch_variant(describe) -> int | None:
    """The launch variant a backend's ``describe`` names (decode_w4a16's ``launch.variant``), or None."""
    v = ((describe or {}).get("launch") or {}).get("variant")
    return None if v is None else int(v)


def _variants_of(sweep) -> dict:
    out = {}
    for r in sweep.rows if sweep is not None else []:
        v = _launch_variant(r)
        if v is not None and r.get("routing", "uniform") == "uniform":
            out[(r["backend"], r["shape"], int(r["m"]))] = v
    return out


def sweep_variants(path) -> dict:
    """(backend, shape, m) -> the launch variant the latency sweep of the same GPU (:func:`_sweep_of`) ran at that
    point with uniform routing -- what its tuner picked -- for the backends that name one."""
    return _variants_of(_sweep_of(path))


def latency_launches(path=None) -> pd.DataFrame:
    """Launch-by-launch breakdown of recorded forwards (``mxfp4lab bench launches``; default
    ``data/results/launches/<gpu>.json``): one row per (backend, shape, M, launch) with the graph-replay
    timeline (``start_us``, ``end_us``) and, where ncu ran, its serialised ``ncu_us``, ``dram_read_MB``,
    ``dram_read_GBps`` and ``issue_active_pct``, and where the stall pass ran ``top_stalls`` (the four largest
    warp-stall reasons, warps per issued instruction), ``alu_pipe_pct`` and ``tensor_pipe_pct``. The floors of
    each launch: ``dram_floor_us`` (its DRAM bytes over the copy bandwidth measured in the latency sweep of the
    same GPU, :func:`copy_bandwidth`), ``issue_floor_us`` (its instructions with every scheduler issuing one per
    cycle; runs that recorded the instruction counters), ``alu_floor_us`` (the ALU pipe's busy share times the
    duration: its logic and shift instructions back to back -- the decode's LOP3 and funnel shifts, two
    cycles per warp instruction on that pipe), ``tensor_floor_us`` (the tensor pipe's busy share of the
    launch's active cycles times its duration: its MMAs back to back, padding tokens included), ``floor_us``
    (the largest), ``bound`` ("DRAM", "issue", "ALU" or "tensor") and ``floor_frac`` (``floor_us`` / ``ncu_us``: near 1,
    the launch runs at its bound; far below, latency -- fill, drain, waits, too few warps in flight -- takes the
    rest). ncu's launches are matched to the
    timeline's by order within the first forward ncu profiled (:func:`first_forward`); ncu profiles its own
    process, whose tuner may pick another launch variant, so ``ncu_kernel`` names what ncu measured and
    ``ncu_same_kernel`` says whether it is the timeline's kernel. ``variant``: the launch variant the breakdown ran
    (decode_w4a16; else None), ``sweep_variant``: the one the latency sweep of the same GPU ran at that point
    (:func:`sweep_variants`; None where it names none) -- where they differ, the breakdown is of another kernel than
    the sweep's time. ``run``: the run a row was merged from (None: the file's own). ``attrs["provenance"]``: the
    file's; ``attrs["runs"]``: each other run's provenance. Empty frame when nothing is recorded."""
    doc = _launches_doc(path)
    if doc is None:
        return pd.DataFrame(columns=["backend", "shape", "m", "launch", "kernel", "start_us", "end_us"])
    rows = []
    p = doc.path
    sweep = _sweep_of(p)  # (read once: its bandwidth and its picks)
    bw, picks = _bandwidth_of(sweep), _variants_of(sweep)
    for entry in doc.rows:
        variant = _launch_variant(entry.get("describe"))
        picked = picks.get((entry["backend"], entry["shape"], int(entry["m"])))
        tl = entry.get("timeline", [])
        ncu = first_forward(entry.get("ncu", []), tl)
        stalls = first_forward(entry.get("ncu_stalls", []), tl)
        for i, x in enumerate(tl):
            r = {"backend": entry["backend"], "shape": entry["shape"], "m": entry["m"], "launch": i,
                 "kernel": x["kernel"], "start_us": x["start_us"], "end_us": x["end_us"], "run": entry.get("run"),
                 "variant": variant, "sweep_variant": picked}
            if i < len(ncu):
                n = ncu[i]
                r.update(ncu_kernel=n["kernel"], ncu_same_kernel=_kernel_key(n["kernel"]) == _kernel_key(x["kernel"]),
                         ncu_us=n.get("duration_us"), dram_read_MB=n.get("dram__bytes_read.sum", 0) / 1e6,
                         dram_read_GBps=n.get("dram_read_GBps"),
                         issue_active_pct=n.get("smsp__issue_active.avg.pct_of_peak_sustained_active"),
                         issue_floor_us=n.get("issue_floor_us"))
                if bw:
                    r["dram_floor_us"] = n.get("dram__bytes_read.sum", 0) / bw * 1e6
            if i < len(stalls):
                r.update(top_stalls=top_stalls(stalls[i]),
                         alu_pipe_pct=stalls[i].get("sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active"),
                         tensor_pipe_pct=stalls[i].get("sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active"))
                for pipe in ("alu", "tensor"):  # a pipe's busy share of the launch, as time
                    if r.get("ncu_us") is not None and r[f"{pipe}_pipe_pct"] is not None:
                        r[f"{pipe}_floor_us"] = r["ncu_us"] * r[f"{pipe}_pipe_pct"] / 100.0
            rows.append(r)
    out = pd.DataFrame(rows)
    if "ncu_us" in out:
        names = {"dram_floor_us": "DRAM", "issue_floor_us": "issue", "alu_floor_us": "ALU", "tensor_floor_us": "tensor"}
        floors = out.reindex(columns=list(names)).astype(float)
        out["floor_us"] = floors.max(axis=1, skipna=True)
        def bound(f: dict):  # the name of the largest floor recorded, or None
            present = {names[k]: v for k, v in f.items() if pd.notna(v)}
            return max(present, key=present.get) if present else None

        out["bound"] = [bound(f) for f in floors.to_dict("records")]
        out["floor_frac"] = out["floor_us"] / out["ncu_us"]
    out.attrs["provenance"] = doc.provenance
    out.attrs["runs"] = doc.runs()
    out.attrs["copy_bytes_per_s"] = bw
    return out


def launch_bounds(launches: pd.DataFrame, backend: str = "decode_w4a16") -> list[dict]:
    """The GEMM launches of ``backend``'s recorded forwards (:func:`latency_launches`; every launch but the combine:
    fc1 and fc2, or the one grid that runs both) with a floor: ``shape, m, launch, bound, floor_frac, variant,
    sweep_variant`` records, for the report's findings."""
    need = {"bound", "floor_frac", "kernel"}
    if launches.empty or not need <= set(launches):
        return []
    gemm = ~launches["kernel"].astype(str).str.contains("combine_kernel")
    d = launches[(launches["backend"] == backend) & gemm & launches["floor_frac"].notna()]
    def num(v):
        return None if v is None or pd.isna(v) else int(v)

    return [{"shape": r["shape"], "m": int(r["m"]), "launch": int(r["launch"]), "bound": r["bound"],
             "floor_frac": round(float(r["floor_frac"]), 3), "variant": num(r.get("variant")),
             "sweep_variant": num(r.get("sweep_variant"))} for _, r in d.iterrows()]


def _launches_doc(path=None):
    """The launches file at ``path`` (default ``data/results/launches/<gpu>.json``), or None where there is none."""
    p = Path(path) if path is not None else results.find("launches")
    if p is None or not Path(p).is_file():
        return None
    return results.load(p, kind="moe_launches")


def _traced_launches(doc, names):
    """(backend, shape, m, variant, launch) and the phase summary of each launch in ``names`` of every traced
    forward of a launches file."""
    for entry in doc.rows:
        ph = entry.get("phases")
        for name in names if ph else ():
            s = ph["launches"].get(name)
            if s:
                # the run the stamps come from: a row re-measured without stamps keeps its predecessor's (phases_run)
                run = entry["phases_run"] if "phases_run" in entry else entry.get("run")
                yield {"backend": entry["backend"], "shape": entry["shape"], "m": entry["m"],
                       "variant": ph["variant"], "launch": name, "run": run}, s


def latency_phases(path=None) -> pd.DataFrame:
    """Per recorded forward and launch, the decode kernel's phase stamps (``mxfp4lab bench launches --phases``,
    :mod:`mxfp4lab.bench.phases`): one row per (backend, shape, M, launch) with the launch variant and
    :data:`~mxfp4lab.bench.phases.PHASE_KEYS` in microseconds from fc1's first CTA entry (medians over replays).
    Empty frame when no forward was traced."""
    from ..bench.phases import LAUNCHES, PHASE_KEYS

    cols = ["backend", "shape", "m", "variant", "launch", "run", *PHASE_KEYS, "ctas", "busy", "max_items"]
    doc = _launches_doc(path)
    if doc is None:
        return pd.DataFrame(columns=cols)
    rows = [{**key, **{k: s.get(k) for k in cols[6:]}} for key, s in _traced_launches(doc, LAUNCHES)]
    out = pd.DataFrame(rows, columns=cols)
    for c in ("ctas", "busy", "max_items"):  # counts (medians over replays of whole numbers)
        out[c] = out[c].round().astype("Int64")
    out.attrs["provenance"] = doc.provenance
    out.attrs["runs"] = doc.runs()
    return out


def first_forward(ncu: list, timeline: list) -> list:
    """ncu's rows of the first profiled forward: ``len(timeline)`` rows from the first one whose kernel has the
    name of the timeline's first kernel, template arguments aside (ncu also profiles what runs around the
    forward: the input checks, copies, the reference); [] when none has."""
    if not timeline:
        return []
    base = _kernel_key(timeline[0]["kernel"]).split("<")[0]
    for i, n in enumerate(ncu):
        if _kernel_key(n["kernel"]).split("<")[0] == base:
            return ncu[i : i + len(timeline)]
    return []


def _kernel_key(name: str) -> str:
    """A kernel name without namespaces, argument list and spaces, ``true``/``false`` as 1/0: ncu and the
    profiler spell the same template differently."""
    head = name.split("(")[0].replace("void ", "").replace(" ", "")
    head = re.sub(r"\b\w+::", "", head)
    return head.replace("true", "1").replace("false", "0")


def latency_tails(path=None) -> pd.DataFrame:
    """Where each recorded launch's tail comes from (``mxfp4lab bench launches --phases``; see
    :mod:`mxfp4lab.bench.phases`): one row per (backend, shape, M, launch) of the GEMMs with ``median_exit`` and
    ``last_exit``, the median CTA's ``first_step``, ``stream`` and ``epilogue`` beside those of the latest 5 % of
    CTAs (``late_*``, and ``late_entry``: when they entered), and ``exit_by_load`` ("n: us" per number of busy
    CTAs on an SM). Empty frame when no recorded forward has these views (files before they were recorded)."""
    cols = ["backend", "shape", "m", "variant", "launch", "run", "median_exit", "last_exit", "late_entry", "first_step",
            "late_first_step", "stream", "late_stream", "epilogue", "late_epilogue", "exit_by_load"]
    doc = _launches_doc(path)
    if doc is None:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, s in _traced_launches(doc, ("fc1", "fc2")):
        late, loads = s.get("late"), s.get("exit_by_load") or {}
        if not late:
            continue
        rows.append({**key, "median_exit": s.get("median_exit"), "last_exit": s["last_exit"],
                     "late_entry": late.get("entry"), "first_step": s["first_step"],
                     "late_first_step": late.get("first_step"), "stream": s["stream"],
                     "late_stream": late.get("stream"), "epilogue": s["epilogue"],
                     "late_epilogue": late.get("epilogue"),
                     "exit_by_load": ", ".join(f"{n}: {t:.1f}" for n, t in sorted(loads.items(),
                                                                               key=lambda kv: int(kv[0])))})
    out = pd.DataFrame(rows, columns=cols)
    out.attrs["provenance"] = doc.provenance
    out.attrs["runs"] = doc.runs()
    return out
