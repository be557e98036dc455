"""Pick the fastest MoE backend per (shape, tokens M) from a recorded latency sweep.

    d = Dispatch.from_results("data/results/latency/h200.json")
    d.choose("seed-bench", 300)              # -> e.g. "flashinfer_sm90"
    d.speedup_vs(always="torch_naive")       # geomean / worst speedup of dispatching over always-X

The table is built from the timed rows of a ``latency_sweep`` result (:mod:`mxfp4lab.results`) (one routing, default
``"uniform"``). For an M that was not recorded, ``policy="at_or_above"`` (default) uses the nearest
recorded M at or above it (the largest recorded M beyond the sweep); ``policy="interpolate"``
interpolates each backend's log latency linearly in log M between the neighbouring recorded M and
picks the smallest. Only backends with a time at the M(s) used are candidates.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

POLICIES = ("at_or_above", "interpolate")


@dataclass
class Dispatch:
    """``times[shape][m][backend] = median_us`` (recorded), and the lookup policy."""

    times: Dict[str, Dict[int, Dict[str, float]]]
    policy: str = "at_or_above"
    routing: str = "uniform"
    provenance: Dict = field(default_factory=dict)

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_rows(cls, rows: List[dict], *, routing: str = "uniform", policy: str = "at_or_above",
                  provenance: Optional[dict] = None) -> "Dispatch":
        """From result rows (dicts with shape, backend, m, routing, median_us; error rows skipped). Only the
        CUDA-graph timings count (rows of another timing ``mode``, e.g. GEMM kernels alone, are what a serving
        engine never sees). Repeated (shape, m, backend) rows keep the smallest median."""
        times: Dict[str, Dict[int, Dict[str, float]]] = {}
        for r in rows:
            t = r.get("median_us")
            err = r.get("error")
            if (isinstance(err, str) and err) or t is None or r.get("m") is None \
                    or (r.get("routing") or "uniform") != routing:  # (error NaN: a DataFrame's empty cell)
                continue
            if (r.get("mode") or "graph") != "graph":
                continue
            if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
                continue
            per_b = times.setdefault(str(r["shape"]), {}).setdefault(int(r["m"]), {})
            per_b[r["backend"]] = min(float(t), per_b.get(r["backend"], math.inf))
        if not times:
            raise ValueError(f"no timed rows with routing {routing!r}")
        return cls(times, policy=policy, routing=routing, provenance=provenance or {})

    @classmethod
    def from_results(cls, path: Union[str, Path, None] = None, *, routing: str = "uniform",
                     policy: str = "at_or_above") -> "Dispatch":
        """From a recorded ``latency_sweep`` (default: ``data/results/latency/h200.json``, else ``h100``)."""
        from . import results

        if path is None:
            path = results.find("latency")
            if path is None:
                raise FileNotFoundError("no recorded latency sweep under data/results/latency/")
        res = results.load(Path(path), kind="latency_sweep")
        return cls.from_rows(res.rows, routing=routing, policy=policy, provenance=res.provenance)

    # ------------------------------------------------------------------ queries
    @property
    def shapes(self) -> List[str]:
        return sorted(self.times)

    def backends(self, shape: Optional[str] = None) -> List[str]:
        shapes = [shape] if shape else self.shapes
        return sorted({b for s in shapes for per in self._shape(s).values() for b in per})

    def recorded_m(self, shape: str) -> List[int]:
        return sorted(self._shape(shape))

    def _shape(self, shape) -> Dict[int, Dict[str, float]]:
        name = getattr(shape, "name", shape)
        try:
            return self.times[name]
        except KeyError:
            raise KeyError(f"no recorded results for shape {name!r}; recorded: {self.shapes}") from None

    def estimate(self, shape: str, m: int) -> Dict[str, float]:
        """Estimated latency (us) of every candidate backend at ``m`` under the policy."""
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        per = self._shape(shape)
        ms = sorted(per)
        i = bisect.bisect_left(ms, m)
        if i == len(ms):  # beyond the sweep: the largest recorded M
            return dict(per[ms[-1]])
        if ms[i] == m or self.policy == "at_or_above" or i == 0:
            return dict(per[ms[i]])
        lo, hi = ms[i - 1], ms[i]
        f = (math.log(m) - math.log(lo)) / (math.log(hi) - math.log(lo))
        both = set(per[lo]) & set(per[hi])
        return {b: math.exp((1 - f) * math.log(per[lo][b]) + f * math.log(per[hi][b])) for b in both}

    def choose(self, shape, m: int) -> str:
        """Name of the fastest backend for ``m`` tokens on ``shape`` (a name or MoEConfig)."""
        est = self.estimate(shape, m)
        if not est:
            raise ValueError(f"no backend has a time near M={m} on {getattr(shape, 'name', shape)!r}")
        return min(sorted(est), key=est.__getitem__)

    def table(self, shape: Optional[str] = None) -> List[dict]:
        """Per recorded (shape, M): the chosen backend and its time."""
        out = []
        for s in ([shape] if shape else self.shapes):
            for m in self.recorded_m(s):
                b = self.choose(s, m)
                out.append(dict(shape=s, m=m, backend=b, median_us=self._shape(s)[m][b]))
        return out

    def speedup_vs(self, always: str, shape: Optional[str] = None) -> Dict[str, dict]:
        """Dispatching vs always running ``always``, over the recorded M sweep of each shape.

        Per shape, at each recorded M where ``always`` has a time: ``t_always / t_dispatch`` (>= 1).
        Returns ``{shape: {"geomean", "worst", "best", "n_m", "worst_m", "skipped_m"}}`` plus an
        ``"all"`` entry over every (shape, M) pair. ``skipped_m``: recorded M without an ``always`` time.
        """
        out: Dict[str, dict] = {}
        pooled: List[float] = []
        for s in ([shape] if shape else self.shapes):
            ratios, ms, skipped = [], [], []
            for m in self.recorded_m(s):
                per = self._shape(s)[m]
                if always not in per:
                    skipped.append(m)
                    continue
                ratios.append(per[always] / per[self.choose(s, m)])
                ms.append(m)
            if not ratios:
                out[s] = dict(geomean=float("nan"), worst=float("nan"), best=float("nan"), n_m=0, worst_m=None,
                              skipped_m=skipped)
                continue
            k = min(range(len(ratios)), key=ratios.__getitem__)
            out[s] = dict(geomean=_geomean(ratios), worst=min(ratios), best=max(ratios), n_m=len(ratios),
                          worst_m=ms[k], skipped_m=skipped)
            pooled += ratios
        if pooled:
            out["all"] = dict(geomean=_geomean(pooled), worst=min(pooled), best=max(pooled), n_m=len(pooled),
                              worst_m=None, skipped_m=[])
        return out


def _geomean(xs: List[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


__all__ = ["Dispatch", "POLICIES"]
