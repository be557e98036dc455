"""Wall time and peak memory to prepare one REAL layer on CPU (checkpoint layout -> SM90 tensors).

Each model runs in a fresh subprocess so peak RSS (``ru_maxrss``) belongs to that model alone; the
input is a random layer in the checkpoint layout (uniform codes, scale bytes 118..122), which costs
the same to prepare as real weights. Reported: input bytes, output bytes, baseline RSS (after the
input exists), peak RSS, and the wall time of ``prepare_from_experts`` (pad, [up ; gate], interleave,
fold, SwiGLU tensors).

    mxfp4lab bench prepare [--models gpt-oss-120b,dsv4-flash] [--out data/results/prepare/cpu.json]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def measure(model: str) -> dict:
    """Prepare one random real-size layer of ``model`` in THIS process: wall time and RSS."""
    import torch

    from ..models import get_model
    from ..prepare import prepare_from_experts
    from ..synthetic import random_layer

    cfg = get_model(model)
    layer = random_layer(cfg, device="cpu", seed=0)
    in_bytes = sum(t.numel() * t.element_size() for t in vars(layer).values() if isinstance(t, torch.Tensor))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    prep = prepare_from_experts(layer, config=cfg)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"model": model, "seconds": wall, "input_bytes": in_bytes, "output_bytes": prep.nbytes(),
            "rss_before_bytes": base, "peak_rss_bytes": peak, "peak_extra_bytes": peak - base,
            "torch_threads": torch.get_num_threads()}


def measure_isolated(models) -> list:
    """:func:`measure` for each model in a fresh interpreter (so each peak RSS is that model's alone)."""
    rows = []
    for m in models:
        print(f"preparing one {m} layer on CPU ...", flush=True)
        out = subprocess.run([sys.executable, "-m", "mxfp4lab.bench.prepare", m], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"preparing {m} failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


if __name__ == "__main__":  # the child process of measure_isolated (one model name; not a user command)
    print(json.dumps(measure(sys.argv[1])))
