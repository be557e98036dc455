"""Wall time and peak memory to prepare one REAL layer on CPU (checkpoint layout -> SM90 tensors).

Each model runs in a fresh subprocess so peak RSS (``ru_maxrss``) belongs to that model alone; the
input is a random layer in the checkpoint layout (uniform codes, scale bytes 118..122), which costs
the same to prepare as real weights. Reported: input bytes, output bytes, baseline RSS (after the
input exists), peak RSS, and the wall time of ``prepare_from_experts`` (pad, [up ; gate], interleave,
fold, SwiGLU tensors).

    python -m mxfp4lab.bench.prepare [--models gpt-oss-120b,dsv4-flash] [--out data/results/prepare/cpu.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from .. import results


def _child(model: str) -> dict:
    import torch

    from ..synthetic import random_layer
    from ..models import get_model
    from ..prepare import prepare_from_experts

    cfg = get_model(model)
    layer = random_layer(cfg, device="cpu", seed=0)
    in_bytes = sum(t.numel() * t.element_size() for t in vars(layer).values())
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    prep = prepare_from_experts(layer, config=cfg)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"model": model, "seconds": wall, "input_bytes": in_bytes, "output_bytes": prep.nbytes(),
            "rss_before_bytes": base, "peak_rss_bytes": peak, "peak_extra_bytes": peak - base,
            "torch_threads": torch.get_num_threads()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gpt-oss-120b,dsv4-flash")
    ap.add_argument("--out", default=str(results.result_path("prepare", "cpu")))
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._child:
        print(json.dumps(_child(a._child)))
        return 0
    rows = []
    for m in a.models.split(","):
        print(f"preparing one {m} layer on CPU ...", flush=True)
        out = subprocess.run([sys.executable, "-m", "mxfp4lab.bench.prepare", "--_child", m],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'model':14s} {'seconds':>8s} {'in GB':>7s} {'out GB':>7s} {'peak RSS GB':>12s} {'extra GB':>9s}")
    for r in rows:
        print(f"{r['model']:14s} {r['seconds']:8.2f} {r['input_bytes'] / 1e9:7.2f} {r['output_bytes'] / 1e9:7.2f} "
              f"{r['peak_rss_bytes'] / 1e9:12.2f} {r['peak_extra_bytes'] / 1e9:9.2f}")
    print(f"wrote {results.write(a.out, 'prepare_cost', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
