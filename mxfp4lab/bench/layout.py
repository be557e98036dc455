"""CPU throughput of the SM90 weight interleave and scale fold, as a ratio to ``clone()``.

Shape: the real GPT-OSS-120b fc1 tensor, ``[128 experts, 5888 rows (2 x 2944), 1472 bytes (2944/2)]``
(1.11 GB), and its scales ``[128, 5888, 92]``. Each op runs ``--repeat`` times; the minimum is reported
(CPU timings: the minimum is the least disturbed run). Goal: the interleave within
8x of a clone.

    mxfp4lab bench layout [--experts 128] [--repeat 3] [--out data/results/layout/cpu.json]
"""

from __future__ import annotations

import time

import torch

from ..layout import deinterleave_weights_sm90, fold_scales_sm90, interleave_weights_sm90, unfold_scales_sm90


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        del out
    return best


def layout_throughput(experts: int = 128, rows: int = 5888, kbytes: int = 1472, repeat: int = 3) -> list:
    """One row per op (interleave, deinterleave, fold, unfold): ``op, shape, bytes, seconds,
    clone_seconds, ratio_to_clone, GB_per_s`` (random bytes of the given fc1 shape, best of ``repeat``)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randint(0, 256, (experts, rows, kbytes), dtype=torch.uint8, generator=g)
    s = torch.randint(0, 255, (experts, rows, kbytes * 2 // 32), dtype=torch.uint8, generator=g)
    iw = interleave_weights_sm90(w)
    fs = fold_scales_sm90(s)
    out = []
    t_clone_w = _best(w.clone, repeat)
    t_clone_s = _best(s.clone, repeat)
    for name, fn, base, nbytes in [
        ("interleave_weights_sm90", lambda: interleave_weights_sm90(w), t_clone_w, w.numel()),
        ("deinterleave_weights_sm90", lambda: deinterleave_weights_sm90(iw), t_clone_w, w.numel()),
        ("fold_scales_sm90", lambda: fold_scales_sm90(s), t_clone_s, s.numel()),
        ("unfold_scales_sm90", lambda: unfold_scales_sm90(fs), t_clone_s, s.numel()),
    ]:
        t = _best(fn, repeat)
        out.append({"op": name, "shape": list(w.shape if "weights" in name else s.shape), "bytes": nbytes,
                    "seconds": t, "clone_seconds": base, "ratio_to_clone": t / base, "GB_per_s": nbytes / t / 1e9})
    return out
