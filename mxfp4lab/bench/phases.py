"""Where each CTA of the decode kernel spends one forward: the phase stamps of its traced build.

The traced twin of the decode library (``-DMXFP4LAB_DECODE_TRACE``, slots
:data:`mxfp4lab.kernels.decode_w4a16.TRACE_SLOTS`) has every CTA write the GPU's global timer when it enters,
when its routing is built, when its inputs are ready (fc2: after ``griddepcontrol.wait``, i.e. once fc1 has
finished), when warp 0's first ring step has landed, when warp 0 has consumed its last step, and when the CTA
exits. The forward is captured in a CUDA
graph and replayed (rotating input sets, so the weights come from DRAM as in the timed sweep); per replay
every stamp is taken relative to fc1's first CTA entry, and :func:`summarize` reduces the CTAs of each
launch to a few numbers, whose medians over the replays are reported:

=================  ============================================================================================
``first_entry``    the launch's first CTA enters (fc2, combine: early, with programmatic dependent launch)
``last_entry``     its last CTA enters (fc2: CTAs start only as fc1's leave the SMs)
``route``          routing built, median CTA (``routed - entry``)
``route_ids``      of which the pair ids loaded and counted per expert (``counted - entry``; the ids' load latency;
                   at most 32 pairs, where one pass builds everything, all but the closing barrier)
``ready_wait``     fc2 / combine: median CTA's wait for the previous launch (``ready - routed``)
``first_step``     median CTA's time from inputs ready to warp 0's first step in shared memory (one load latency)
``stream``         median CTA's warp 0 from its first step to its last (the streaming of its items)
``epilogue``       median CTA's last step to exit (cross-warp reduction, SwiGLU, stores)
``slowest_warp``   of which waiting for the CTA's other warps: warp 0's last step to every warp's partial sums
                   of the last item in shared memory (``gathered - streamed``)
``median_exit``    the median CTA with items leaves
``last_exit``      the launch's last CTA leaves: its end on the forward's timeline
=================  ============================================================================================

Beside the table, two views of a launch's tail: ``exit_by_load``, for each number of CTAs with items that shared
an SM, the median exit of those CTAs (an SM streaming for three CTAs ends later than one streaming for two when
the DRAM bandwidth is shared evenly among SMs); and ``late``, the phases (``entry`` from fc1's first entry, then
``route``, ``first_step``, ``stream``, ``epilogue`` as above) of the CTAs whose exit is among the latest 5 %
of the launch's busy CTAs, medians over those CTAs: which phase makes the last CTAs last.

The stamps are the traced build's, never timed: its kernels are the production kernels plus a few stores,
and the global timer ticks in steps (``timer_step_ns``, the smallest nonzero difference seen).

    mxfp4lab bench launches --backend decode_w4a16 --shape gpt-oss-120b --m 1,64 --phases
"""

from __future__ import annotations

import statistics
from typing import Dict, List, Sequence

import numpy as np

#: summary keys of one launch, in the order the table prints them
PHASE_KEYS = ("first_entry", "last_entry", "route", "route_ids", "ready_wait", "first_step", "stream", "epilogue",
              "slowest_warp", "median_exit", "last_exit")
LAUNCHES = ("fc1", "fc2", "combine")


def split_launches(trace: np.ndarray, grid: int) -> Dict[str, np.ndarray]:
    """A forward's trace ``[2 grid + combine blocks, slots]`` -> its three launches' rows."""
    return {"fc1": trace[:grid], "fc2": trace[grid:2 * grid], "combine": trace[2 * grid:]}


def summarize(trace: np.ndarray, grid: int) -> Dict[str, dict]:
    """One replay's trace (int64 ns, :data:`~mxfp4lab.kernels.decode_w4a16.TRACE_SLOTS` per row) -> per launch
    :data:`PHASE_KEYS` in microseconds from fc1's first entry, plus ``ctas`` (rows that ran), ``busy`` (with
    items) and ``max_items``. Phases a launch does not have (fc1's wait, the combine's streaming) are None."""
    from ..kernels.decode_w4a16 import TRACE_SLOTS

    ix = {k: i for i, k in enumerate(TRACE_SLOTS)}
    parts = split_launches(np.asarray(trace, dtype=np.int64), grid)
    ran = parts["fc1"][:, ix["entry"]] > 0
    if not ran.any():
        raise ValueError("no fc1 CTA stamped its entry: not a trace of the traced build")
    t0 = parts["fc1"][ran, ix["entry"]].min()
    out = {}
    for name, rows in parts.items():
        rows = rows[rows[:, ix["entry"]] > 0]
        if len(rows) == 0:
            out[name] = None
            continue
        us = lambda col: (rows[:, ix[col]] - t0) / 1e3  # noqa: E731
        busy = rows[:, ix["items"]] > 0 if name != "combine" else np.ones(len(rows), bool)

        def med(a, b, mask=None):
            m = busy if mask is None else mask
            sel = m & (rows[:, ix[a]] > 0) & (rows[:, ix[b]] > 0)
            return float(np.median((rows[sel, ix[b]] - rows[sel, ix[a]]) / 1e3)) if sel.any() else None

        gemm = name != "combine"
        every = np.ones(len(rows), bool)
        out[name] = {
            "first_entry": float(us("entry").min()), "last_entry": float(us("entry").max()),
            "route": med("entry", "routed", every) if gemm else None,
            "route_ids": med("entry", "counted", every) if gemm else None,
            "ready_wait": (med("routed", "ready", every) if gemm else med("entry", "ready", every))
            if name != "fc1" else None,
            "first_step": med("ready", "first_step") if gemm else None,
            "stream": med("first_step", "streamed") if gemm else None,
            "epilogue": med("streamed", "exit") if gemm else None,
            "slowest_warp": med("streamed", "gathered") if gemm and "gathered" in ix else None,
            "median_exit": float(np.median(us("exit")[busy])) if busy.any() else None,
            "last_exit": float(us("exit").max()),
            "ctas": int(len(rows)), "busy": int(busy.sum()), "sms": int(len(np.unique(rows[:, ix["sm"]]))),
            "max_items": int(rows[:, ix["items"]].max()) if gemm else None,
            "exit_by_load": _exit_by_load(rows[:, ix["sm"]], us("exit"), busy) if gemm else None,
        }
        if gemm and busy.any():
            ex = us("exit")
            late = busy & (ex >= np.quantile(ex[busy], 0.95))
            out[name]["late"] = {"entry": float(np.median(us("entry")[late])), "route": med("entry", "routed", late),
                                 "first_step": med("ready", "first_step", late), "stream": med("first_step", "streamed", late),
                                 "epilogue": med("streamed", "exit", late)}
        else:
            out[name]["late"] = None
    return out


def _exit_by_load(sm: np.ndarray, exit_us: np.ndarray, busy: np.ndarray) -> Dict[int, float]:
    """{CTAs with items on one SM: median exit of those CTAs}."""
    sms, inv = np.unique(sm, return_inverse=True)
    load = np.bincount(inv, weights=busy.astype(float), minlength=len(sms)).astype(int)[inv]
    return {int(n): float(np.median(exit_us[busy & (load == n)])) for n in np.unique(load[busy])}


def timer_step_ns(traces: Sequence[np.ndarray]) -> int:
    """The smallest nonzero difference between any two stamps of any replay (the global timer's tick)."""
    best = None
    for t in traces:
        v = np.unique(np.asarray(t)[:, :6][np.asarray(t)[:, :6] > 0])
        if len(v) > 1:
            d = int(np.diff(v).min())
            best = d if best is None else min(best, d)
    return best or 0


def median_summary(per_replay: List[Dict[str, dict]]) -> Dict[str, dict]:
    """Per launch and key, the median over replays (keys that are None in any replay stay None)."""
    out = {}
    for name in LAUNCHES:
        reps = [r[name] for r in per_replay if r.get(name)]
        if not reps:
            out[name] = None
            continue
        out[name] = {k: (None if any(r.get(k) is None for r in reps) else statistics.median(r[k] for r in reps))
                     for k in reps[0] if k not in ("exit_by_load", "late")}
        for k in ("exit_by_load", "late"):  # per inner key, the median over the replays that have it
            ds = [r.get(k) for r in reps]
            vals = {}
            for d in ds if all(ds) else ():
                for n, v in d.items():
                    if v is not None:
                        vals.setdefault(n, []).append(v)
            out[name][k] = {n: statistics.median(vals[n]) for n in sorted(vals, key=str)} or None
    return out


def trace_phases(backend, inputs: Sequence[tuple], *, replays: int = 20) -> dict:
    """Replay the decode backend's forward from CUDA graphs (one per input set, rotated) through the traced
    build, at the launch configuration the backend runs at this M; return ``{"launches": median summary,
    "timer_step_ns", "replays", "grid", "variant"}``."""
    import torch

    from ..kernels import decode_w4a16 as k

    m = inputs[0][0].shape[0]
    cfg = backend.launch_config(m)
    dev = inputs[0][0].device
    props = torch.cuda.get_device_properties(dev)
    grid = cfg.grid or k.VARIANTS[cfg.variant].ctas_per_sm * props.multi_processor_count
    rows = k.trace_rows(grid, m, backend.layout.hidden_size)
    bufs = [torch.zeros(rows, len(k.TRACE_SLOTS), dtype=torch.int64, device=dev) for _ in inputs]

    from .harness import capture_graphs

    def call(i):
        x, ids, w = inputs[i]
        return k.forward(x, ids, w, backend.layout, cfg, trace=bufs[i],
                         routed_scaling_factor=backend.routed_scaling_factor)

    graphs = capture_graphs(call, [(i,) for i in range(len(inputs))])  # (warms each input set first)
    traces, per_replay = [], []
    for r in range(replays + len(inputs)):
        i = r % len(inputs)
        bufs[i].zero_()
        torch.cuda.synchronize()
        graphs[i].replay()
        torch.cuda.synchronize()
        if r >= len(inputs):  # the first round warms the graphs
            t = bufs[i].cpu().numpy()
            traces.append(t)
            per_replay.append(summarize(t, grid))
    return {"launches": median_summary(per_replay), "timer_step_ns": timer_step_ns(traces), "replays": replays,
            "grid": grid, "variant": cfg.variant}


def format_phases(ph: dict) -> List[str]:
    """Table lines of :func:`trace_phases`' result."""
    head = f"  {'launch':8s}" + "".join(f"{k:>12s}" for k in PHASE_KEYS) + "   CTAs  SMs busy items"
    lines = [f"  phases (us from fc1's first CTA entry; medians of {ph['replays']} replays, grid {ph['grid']}, "
             f"variant {ph['variant']}, timer step {ph['timer_step_ns']} ns)", head]
    for name in LAUNCHES:
        s = ph["launches"].get(name)
        if not s:
            continue
        cells = "".join(f"{'-' if s[k] is None else format(s[k], '.2f'):>12s}" for k in PHASE_KEYS)
        lines.append(f"  {name:8s}{cells}   {s['ctas']:4.0f} {s.get('sms', '-'):>4} {s['busy']:4.0f} {s['max_items'] or '-'}")
    for name in LAUNCHES:
        s = ph["launches"].get(name) or {}
        if s.get("exit_by_load"):
            lines.append(f"  {name} exits by CTAs with items per SM: " + ", ".join(
                f"{n}: {t:.2f} us" for n, t in sorted(s["exit_by_load"].items())))
        if s.get("late"):
            lines.append(f"  {name} latest 5 % of CTAs: " + ", ".join(
                f"{k} {s['late'][k]:.2f}" for k in ("entry", "route", "first_step", "stream", "epilogue")
                if s["late"].get(k) is not None) + " us")
    return lines
