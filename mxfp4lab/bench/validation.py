"""What the input checks cost a backend's ``__call__``: microseconds per call at small M, against the call.

For each study shape (its real hidden size H and top-k; few experts and a small I, since the checks read
only ``x``, ``topk_ids``, ``topk_weights`` and the output, whose sizes depend on M, H and k) and each M:

* ``meta_us``   -- :func:`mxfp4lab.validate.check_routed_inputs` with ``values=False`` (types, shapes, dtypes,
  devices: no data read)
* ``values_us`` -- the same with ``values=True`` (adds one pass over x / weights / ids and one host read)
* ``output_us`` -- :func:`mxfp4lab.validate.check_output` on the ``[M, H]`` output
* ``call_us`` / ``unchecked_us`` -- the whole ``backend(x, ids, w)`` with ``check_values`` True / False
* ``checks_us`` = ``meta_us + values_us + output_us`` and ``checks_frac`` = ``checks_us / call_us``

Each time is the median of ``repeat`` batches of ``n`` calls (per call; ``n / 10`` for whole calls). On a
CPU the run uses ``threads`` torch threads (default 1: at M = 1 nothing is worth splitting, and a busy
machine's thread hand-offs otherwise add milliseconds of noise to a 2 ms call). On a CUDA device every
timed batch ends with a synchronisation, and ``values_us`` / ``output_us`` include the host read they need.

    mxfp4lab bench validation [--backends emulated_sm90,torch_naive] [--m 1,64] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

from ..backends import make_backend
from ..models import STUDY_SHAPES, get_model
from ..prepare import prepare_from_experts
from ..synthetic import make_inputs, random_layer
from ..validate import check_output, check_routed_inputs

#: experts and intermediate size of the small layer the checks are timed on (they do not read weights)
SMALL_EXPERTS, SMALL_INTER = 8, 256


def _per_call_us(fn: Callable[[], object], n: int, repeat: int, device: torch.device) -> float:
    """Median over ``repeat`` batches of the per-call time of ``n`` calls, in microseconds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


def validation_cost(backends: Sequence[str] = ("emulated_sm90", "torch_naive"), shapes: Sequence[str] = STUDY_SHAPES,
                    ms: Sequence[int] = (1, 64), *, n: int = 200, repeat: int = 7, device: str = "cpu",
                    threads: int | None = 1) -> list:
    """One row per (shape, backend, M): the columns of the module docstring (``threads`` None: leave torch's
    setting)."""
    dev = torch.device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    rows = []
    for shape in shapes:
        real = get_model(shape)
        cfg = real.scaled(intermediate=SMALL_INTER, experts=SMALL_EXPERTS, top_k=min(real.top_k, SMALL_EXPERTS))
        moe = prepare_from_experts(random_layer(cfg, device="cpu", seed=0), config=cfg).to(dev)
        for name in backends:
            be = make_backend(name, moe, cfg)
            for m in ms:
                rows.append({"shape": shape, **_measure(be, cfg, m, dev, n, repeat)})
    return rows


def _measure(be, cfg, m: int, dev: torch.device, n: int, repeat: int) -> dict:
    """The row of one backend at one M (module docstring)."""
    ((x, ids, w),) = make_inputs(cfg, m, 1, "uniform", device=dev, seed=m)
    y = be(x, ids, w)
    kw = {"hidden_size": cfg.hidden_size, "num_experts": cfg.num_experts, "x_dtypes": (torch.bfloat16,)}
    meta = _per_call_us(lambda: check_routed_inputs(x, ids, w, values=False, **kw), n, repeat, dev)
    full = _per_call_us(lambda: check_routed_inputs(x, ids, w, values=True, **kw), n, repeat, dev)
    out = _per_call_us(lambda: check_output(y, be.name, x), n, repeat, dev)
    calls = {}
    for checked in (True, False):
        be.check_values = checked
        calls[checked] = _per_call_us(lambda: be(x, ids, w), max(n // 10, 5), repeat, dev)
    be.check_values = True
    checks = full + out
    return {"hidden_size": cfg.hidden_size, "top_k": cfg.top_k, "backend": be.name, "m": m, "device": str(dev),
            "meta_us": meta, "values_us": full - meta, "output_us": out, "checks_us": checks,
            "call_us": calls[True], "unchecked_us": calls[False], "checks_frac": checks / calls[True]}


def format_table(rows: list) -> str:
    head = (f"{'shape':13s} {'H':>5s} {'k':>2s} {'backend':14s} {'M':>4s} {'meta us':>8s} {'values us':>9s} "
            f"{'output us':>9s} {'checks us':>9s} {'call us':>9s} {'unchecked':>9s} {'checks/call':>11s}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['shape']:13s} {r['hidden_size']:5d} {r['top_k']:2d} {r['backend']:14s} {r['m']:4d} "
                     f"{r['meta_us']:8.1f} {r['values_us']:9.1f} {r['output_us']:9.1f} {r['checks_us']:9.1f} "
                     f"{r['call_us']:9.1f} {r['unchecked_us']:9.1f} {100 * r['checks_frac']:10.2f}%")
    return "\n".join(lines)
