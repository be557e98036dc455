#!/usr/bin/env python3
"""What the timing harness measures for CUDA graphs of tiny kernels: its own cost, in every backend's number.

    python3 scripts/gpu/harness_floor.py --out data/results/harness/h200.json

Times a CUDA graph of one tiny kernel (``x.add_(1)`` on 8 floats) and of three dependent ones exactly as the latency
sweep times a backend (:func:`mxfp4lab.bench.harness.time_cuda`: CUDA events around one replay, the host's submission
hidden behind a GPU spin), median of ``--reps`` samples. The difference is the cost of one more dependent launch that
nothing overlaps; the one-kernel graph less that is the graph's entry and exit. Writes a ``harness_floor`` result
(:mod:`mxfp4lab.results`) with provenance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def measure(reps: int = 400, warmup: int = 20) -> list:
    import torch

    from mxfp4lab.bench.harness import time_cuda

    x = torch.zeros(8, device="cuda")
    cases = (("x.add_(1) on 8 floats", 1, lambda: x.add_(1)),  # (what the graph runs, dependent kernels, the call)
             ("x.add_(1), x.mul_(1), x.add_(-1) on 8 floats", 3, lambda: (x.add_(1), x.mul_(1), x.add_(-1))))
    rows = []
    for name, kernels, call in cases:
        t = time_cuda(call, [()], warmup=warmup, reps=reps)
        rows.append({"kernel_calls": name, "kernels": kernels, **t.as_dict()})
        print(f"{kernels} kernel(s): {t.median_us:.2f} us (p10 {t.p10_us:.2f}, p90 {t.p90_us:.2f})", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="result file, e.g. data/results/harness/h200.json")
    p.add_argument("--reps", type=int, default=400)
    p.add_argument("--warmup", type=int, default=20)
    args = p.parse_args(argv)
    from mxfp4lab import results

    rows = measure(args.reps, args.warmup)
    results.write(args.out, "harness_floor", rows,
                  note="mxfp4lab.bench.harness.time_cuda as every latency sweep times a backend: one CUDA graph per "
                       f"sample replayed between two CUDA events behind a GPU spin, median of {args.reps} samples "
                       f"after {args.warmup} warm-up calls.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
