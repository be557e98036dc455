"""The goals mxfp4lab's own kernels were written to, checked per (shape, M) against a latency table
(:func:`mxfp4lab.studies.latency.latency_table`: one row per point, one column per backend's median, the floor):
the Triton kernel's (:func:`triton_goals`) and the decode kernel's (:func:`decode_goals`), with their counts for
the report's findings."""

from __future__ import annotations

from typing import Any, Dict, Optional

import pandas as pd

FI, MARLIN, TRITON = "flashinfer_sm90", "marlin_mxfp4", "triton_w4a16"
#: The Triton kernel's goals: at M <= 64 within 1.25x of the roofline floor and faster than Marlin;
#: at M >= 1024 within 1.2x of FlashInfer.
TRITON_SMALL_M, TRITON_SMALL_FLOOR_X = 64, 1.25
TRITON_LARGE_M, TRITON_LARGE_FI_X = 1024, 1.2


def triton_goals(table: pd.DataFrame) -> pd.DataFrame:
    """The Triton kernel's goals (:data:`TRITON_SMALL_M` ...) per (shape, M) where Triton was timed."""
    rows = []
    for _, r in table.iterrows():
        if TRITON not in r or pd.isna(r.get(TRITON)):
            continue
        t = r[TRITON]
        row = dict(shape=r["shape"], m=int(r["m"]), triton_us=t, x_floor=t / r["floor_us"],
                   x_marlin=t / r[MARLIN] if MARLIN in r and pd.notna(r.get(MARLIN)) else float("nan"),
                   x_flashinfer=t / r[FI] if FI in r and pd.notna(r.get(FI)) else float("nan"))
        if row["m"] <= TRITON_SMALL_M:
            row["goal"] = f"<= {TRITON_SMALL_FLOOR_X}x floor and faster than Marlin"
            row["met"] = bool(row["x_floor"] <= TRITON_SMALL_FLOOR_X and row["x_marlin"] < 1)
        elif row["m"] >= TRITON_LARGE_M:
            row["goal"] = f"<= {TRITON_LARGE_FI_X}x FlashInfer"
            row["met"] = bool(row["x_flashinfer"] <= TRITON_LARGE_FI_X)
        else:
            row["goal"], row["met"] = "(none stated)", None
        rows.append(row)
    return pd.DataFrame(rows)


DECODE = "decode_w4a16"
#: The field's Hopper W4A16 MXFP4 MoE kernels mxfp4lab's decode kernel is measured against
DECODE_PEERS = (MARLIN, FI, "triton_kernels", "humming")
#: The decode kernel's goals: at M <= 64 at least 1.15x faster than the best peer; at M = 1 at most 2x the
#: floor; at M = 4..64 at least 60 % of the floor (floor / time); at M >= 1024 within 1.1x of the best peer.
DECODE_SMALL_M, DECODE_SPEEDUP = 64, 1.15
DECODE_M1_FLOOR_X, DECODE_FLOOR_FRACTION, DECODE_LARGE_M, DECODE_LARGE_X = 2.0, 0.60, 1024, 1.1
#: A speedup goal met or missed by less than this share is decided by noise: one kernel's median moves by 1-2 %
#: between leases on the H200 (decode_w4a16 variant 82 pinned, 2026-12-05: 171.1 and 169.2 us)
DECODE_NARROW = 0.02


def decode_goals(table: pd.DataFrame) -> pd.DataFrame:
    """mxfp4lab's decode kernel against its goals (:data:`DECODE_SPEEDUP` ...) per (shape, M) of
    :func:`latency_table` where it and at least one peer were timed: its time, the best peer and its time,
    the speedup, the floor and ``floor / time``, the goals of that M in words, and ``met`` (all of them)."""
    rows = []
    for _, r in table.iterrows():
        d = r.get(DECODE)
        peers = {b: r[b] for b in DECODE_PEERS if b in r and pd.notna(r.get(b))}
        if d is None or pd.isna(d) or not peers:
            continue
        best = min(peers, key=peers.get)
        m = int(r["m"])
        row = dict(shape=r["shape"], m=m, decode_us=d, best_peer=best, peer_us=peers[best],
                   speedup=peers[best] / d, floor_us=r["floor_us"], floor_fraction=r["floor_us"] / d)
        goals, met = [], []
        if m <= DECODE_SMALL_M:
            goals.append(f">= {DECODE_SPEEDUP}x the best peer")
            met.append(row["speedup"] >= DECODE_SPEEDUP)
            if m == 1:
                goals.append(f"<= {DECODE_M1_FLOOR_X}x the floor")
                met.append(d <= DECODE_M1_FLOOR_X * r["floor_us"])
            elif m >= 4:
                goals.append(f">= {DECODE_FLOOR_FRACTION:.0%} of the floor")
                met.append(row["floor_fraction"] >= DECODE_FLOOR_FRACTION)
        elif m >= DECODE_LARGE_M:
            goals.append(f"within {DECODE_LARGE_X}x of the best peer")
            met.append(d <= DECODE_LARGE_X * peers[best])
        row["goal"] = "; ".join(goals) or "(none stated)"
        row["met"] = bool(all(met)) if met else None
        rows.append(row)
    return pd.DataFrame(rows)


def latency_decode_goal_counts(goals: pd.DataFrame) -> Optional[Dict[str, Any]]:
    """``{"met", "count", "fastest", "small_m", "narrow"}`` over the (shape, M) points of :func:`decode_goals`
    with a stated goal (``fastest``: points with M <= 64 where the kernel beats every peer; ``narrow``: the points
    with M <= 64 whose speedup is within :data:`DECODE_NARROW` of :data:`DECODE_SPEEDUP`, either side, as
    ``"shape M"``); None without rows."""
    if goals is None or not len(goals):
        return None
    g = goals[goals["met"].notna()]
    small = goals[goals["m"] <= DECODE_SMALL_M]
    near = small[(small["speedup"] / DECODE_SPEEDUP - 1).abs() < DECODE_NARROW]
    return {"met": int(g["met"].astype(bool).sum()), "count": int(len(g)),
            "fastest": int((small["speedup"] > 1).sum()), "small_m": int(len(small)),
            "narrow": [f"{r.shape} M {int(r.m)}" for r in near.itertuples()]}


def latency_triton_goal_counts(goals: pd.DataFrame) -> Optional[Dict[str, int]]:
    """``{"met", "count"}`` over the (shape, M) points with a stated goal; None without Triton rows."""
    if goals is None or not len(goals) or "met" not in goals:
        return None
    g = goals[goals["met"].notna()]
    return {"met": int(g["met"].astype(bool).sum()), "count": int(len(g))}
