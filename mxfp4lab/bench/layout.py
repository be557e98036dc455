"""CPU throughput of the SM90 weight interleave and scale fold, as a ratio to ``clone()``.

Shape: the real GPT-OSS-120b fc1 tensor, ``[128 experts, 5888 rows (2 x 2944), 1472 bytes (2944/2)]``
(1.11 GB), and its scales ``[128, 5888, 92]``. Each op runs ``--repeat`` times; the minimum is reported
(CPU timings: the minimum is the least disturbed run). Goal from the foundation issue: interleave within
8x of a clone.

    python -m mxfp4lab.bench.layout [--experts 128] [--repeat 3] [--out data/results/layout/cpu.json]
"""

from __future__ import annotations

import argparse
import time

import torch

from ..layout import deinterleave_weights_sm90, fold_scales_sm90, interleave_weights_sm90, unfold_scales_sm90
from .. import results


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        del out
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--rows", type=int, default=5888)
    ap.add_argument("--kbytes", type=int, default=1472)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(results.result_path("layout", "cpu")))
    a = ap.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    w = torch.randint(0, 256, (a.experts, a.rows, a.kbytes), dtype=torch.uint8, generator=g)
    s = torch.randint(0, 255, (a.experts, a.rows, a.kbytes * 2 // 32), dtype=torch.uint8, generator=g)
    iw = interleave_weights_sm90(w)
    fs = fold_scales_sm90(s)
    rows = []
    t_clone_w = _best(w.clone, a.repeat)
    t_clone_s = _best(s.clone, a.repeat)
    for name, fn, base, nbytes in [
        ("interleave_weights_sm90", lambda: interleave_weights_sm90(w), t_clone_w, w.numel()),
        ("deinterleave_weights_sm90", lambda: deinterleave_weights_sm90(iw), t_clone_w, w.numel()),
        ("fold_scales_sm90", lambda: fold_scales_sm90(s), t_clone_s, s.numel()),
        ("unfold_scales_sm90", lambda: unfold_scales_sm90(fs), t_clone_s, s.numel()),
    ]:
        t = _best(fn, a.repeat)
        rows.append({"op": name, "shape": list(w.shape if "weights" in name else s.shape), "bytes": nbytes,
                     "seconds": t, "clone_seconds": base, "ratio_to_clone": t / base,
                     "GB_per_s": nbytes / t / 1e9})
    print(f"{'op':28s} {'shape':>20s} {'s':>8s} {'clone s':>8s} {'x clone':>8s} {'GB/s':>6s}")
    for r in rows:
        print(f"{r['op']:28s} {str(tuple(r['shape'])):>20s} {r['seconds']:8.3f} {r['clone_seconds']:8.3f} "
              f"{r['ratio_to_clone']:8.2f} {r['GB_per_s']:6.2f}")
    print(f"torch threads: {torch.get_num_threads()}")
    path = results.write(a.out, "layout_throughput", rows, torch_threads=torch.get_num_threads(), repeat=a.repeat)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
