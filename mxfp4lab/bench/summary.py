"""The latency study's conclusions, derived from a recorded sweep (no GPU needed).

    python -m mxfp4lab.bench.summary [--results data/results/latency/h100.json] [--out PATH]

Reads the rows :mod:`mxfp4lab.bench.moe` wrote and prints, per shape (uniform routing):

1. the latency table (each backend's median, the roofline floor, the best backend's fraction of it);
2. the FlashInfer / Marlin crossover M (:func:`mxfp4lab.experiments.latency_crossovers`);
3. the original claim on the seed shape against the numbers (:func:`~mxfp4lab.experiments.latency_claim_check`);
4. the dispatch policy's speedup over always-FlashInfer and always-Marlin (:class:`mxfp4lab.dispatch.Dispatch`;
   in-sample: the policy is built from the same rows it is scored on);
5. the Triton kernel against issue 6's goals: at M <= 64 within 1.25x of the floor and faster than
   Marlin; at M >= 1024 within 1.2x of FlashInfer.

and writes the same as a ``latency_summary`` result (default ``data/results/latency_summary/<gpu>.json``,
rows = the latency table), carrying this command's provenance and the sweep's.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional

import pandas as pd

from ..experiments import FI, MARLIN, TRITON, latency_table, triton_goals  # noqa: F401 (re-exported)
def _f(v) -> Optional[float]:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def summarize(results: Optional[str] = None) -> dict:
    from .. import experiments as X

    df, prov = X.latency_load(results)
    if df.empty:
        raise FileNotFoundError(f"no recorded sweep at {df.attrs.get('path')}")
    table = latency_table(df)
    cross = X.latency_crossovers(df, FI, MARLIN)
    claim = X.latency_claim_check(df)
    return dict(source=df.attrs["path"], provenance=prov, table=table, crossovers=cross, claim=claim,
                claim_note=claim.attrs.get("note"), dispatch=X.latency_dispatch_speedups(df),
                triton_goals=triton_goals(table))


def _print(s: dict) -> None:
    pd.set_option("display.width", 220)
    pd.set_option("display.max_rows", 500)
    prov = s["provenance"] or {}
    print(f"source: {s['source']} ({prov.get('gpu')}, {str(prov.get('date'))[:10]}, commit "
          f"{str(prov.get('mxfp4lab_commit'))[:10]})\n")
    t = s["table"].copy()
    print("latency (us, median), uniform routing; best_fraction_of_floor = floor / best")
    print(t.round(3).to_string(index=False), "\n")
    c = s["crossovers"]
    print(f"FlashInfer vs Marlin crossovers (log-log interpolation between recorded M)")
    print(c[["shape", "routing", "crossing", "crossover_m", "m_lo", "m_hi", "faster_below", "faster_above"]]
          .round(1).to_string(index=False), "\n")
    print(f"claim check ({s['claim_note']}); fi_faster = t_marlin / t_flashinfer - 1")
    print(s["claim"].round(3).to_string(index=False), "\n")
    print("dispatch (fastest recorded backend per (shape, M)) vs always-X: t_X / t_dispatch")
    for a in s["dispatch"][s["dispatch"]["shape"] == "all"].itertuples():
        print(f"  always {a.always:16s} geomean {a.geomean:.3f}x  best {a.best:.3f}x  over {a.n_m} (shape, M) points")
    g = s["triton_goals"]
    if not g.empty:
        print("\nTriton vs issue 6's goals")
        print(g.round(2).to_string(index=False))


def _jsonable(s: dict) -> dict:
    out = {k: v for k, v in s.items() if not isinstance(v, pd.DataFrame)}
    for k in ("table", "crossovers", "claim", "dispatch", "triton_goals"):
        df = s[k]
        out[k] = [{c: (_f(v) if isinstance(v, float) else v) for c, v in r.items()} for r in df.to_dict("records")]
    return out


def main(argv=None) -> int:
    from .. import results

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=None, help="sweep (default: data/results/latency/h100.json, else h200)")
    ap.add_argument("--out", default=None, help="summary (default data/results/latency_summary/<gpu>.json)")
    a = ap.parse_args(argv)
    s = summarize(a.results)
    _print(s)
    src = Path(s["source"])
    out = Path(a.out) if a.out else results.result_path("latency_summary", src.stem)
    payload = _jsonable(s)
    sweep_prov = payload.pop("provenance")
    table = payload.pop("table")
    try:
        payload["source"] = src.resolve().relative_to(results.RESULTS_DIR.resolve()).as_posix()
    except ValueError:  # a sweep outside data/results: keep its path
        pass
    path = results.write(out, "latency_summary", table, sweep_provenance=sweep_prov, **payload)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
