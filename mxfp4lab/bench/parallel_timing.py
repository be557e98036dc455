"""What :mod:`mxfp4lab.bench.parallel` measures on each rank, and how a point's rows are put together: the
per-GPU ceilings, the all-reduce bus bandwidth of a group, the three timings of one point, the input rotation
that keeps L2 from holding a rank's weights, the sharded roofline of a point, the slowest rank's figures.

On GPUs the timings are CUDA events (:func:`mxfp4lab.bench.harness.time_cuda`); without CUDA they are the host
wall-clock stand-in (:func:`mxfp4lab.bench.harness.time_host`), which only tests the path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from ..models import MoEConfig
from ..moe_tensors import ShardSpec
from ..roofline import expected_active_experts, sharded_roofline
from .harness import measure_ceilings, time_cuda, time_host

#: Rotated input sets read at least this many times L2's bytes of weights per GPU (so L2 cannot hold them).
L2_FACTOR = 2
#: The all-reduce that measures a group's bus bandwidth: 256 MiB on GPUs (NVLink's plateau on an HGX host),
#: 4 MiB on a CPU (gloo).
BUSBW_PROBE_BYTES = {True: 256 << 20, False: 4 << 20}


def device_ceilings(on_gpu: bool) -> dict:
    """This rank's copy bandwidth (read + write bytes) and bf16 (GPU) / fp32 (CPU stand-in) matmul rate."""
    if on_gpu:
        return dict(measure_ceilings(), device=torch.cuda.get_device_name(), timer="cuda_events")
    src = torch.empty(64 << 20, dtype=torch.uint8)
    dst = torch.empty_like(src)
    t = time_host(lambda: dst.copy_(src), [()], warmup=1, reps=5)
    a = torch.randn(512, 512)
    g = time_host(lambda: a @ a, [()], warmup=1, reps=5)
    return {"copy_bytes_per_s": 2 * src.numel() / (t.median_us * 1e-6), "bf16_flops_per_s": 2 * 512**3 / (g.median_us * 1e-6),
            "device": "cpu", "timer": "host_wall_clock", "note": "CPU stand-in (fp32 matmul): not a GPU ceiling"}


def _sync(group, device) -> Callable[[], None] | None:
    """A barrier on ``group`` through the device (an all-reduce of one element), or None for one rank."""
    if group is None:
        return None
    flag = torch.zeros(1, device=device)
    return lambda: dist.all_reduce(flag, group=group)


def _time(fn, inputs, *, on_gpu: bool, graph: bool, sync, reps: int, warmup: int):
    if on_gpu:
        return time_cuda(fn, inputs, warmup=warmup, reps=reps, graph=graph, sync=sync)
    return time_host(fn, inputs, warmup=warmup, reps=reps, sync=sync)


def allreduce_busbw(group, world: int, device, on_gpu: bool, *, reps: int = 10) -> dict:
    """Bus bandwidth of an all-reduce over ``group`` (:data:`BUSBW_PROBE_BYTES`, bf16, eager): nccl-tests'
    convention ``busbw = 2 (w - 1) / w * bytes / time``, the per-GPU link traffic of a ring all-reduce."""
    nbytes = BUSBW_PROBE_BYTES[on_gpu]
    buf = torch.zeros(nbytes // 2, dtype=torch.bfloat16, device=device)
    t = _time(lambda b: dist.all_reduce(b, group=group), [(buf,)], on_gpu=on_gpu, graph=False,
              sync=_sync(group, device), reps=reps, warmup=3)
    return {"bytes": nbytes, "median_us": t.median_us, "timer": "cuda_events" if on_gpu else "host_wall_clock",
            "busbw_bytes_per_s": 2 * (world - 1) / world * nbytes / (t.median_us * 1e-6)}


def rotation(cfg: MoEConfig, m: int, world: int, device, rotate: int, max_rotate: int, on_gpu: bool) -> int:
    """Input sets to rotate through: at least ``rotate``, and enough (up to ``max_rotate``) that the weights one
    GPU reads over the rotation (expected under uniform routing: active experts x expert bytes / world) are
    :data:`L2_FACTOR` times its L2 (a TP=8 rank reads 1/8 of each expert: at M = 1 four sets would fit in L2)."""
    l2 = torch.cuda.get_device_properties(device).L2_cache_size if on_gpu else 0
    per_set = expected_active_experts(cfg, m) * cfg.weight_bytes_per_expert(padded=True) / world
    return int(min(max_rotate, max(rotate, math.ceil(L2_FACTOR * l2 / per_set))))


def routing_load(cfg: MoEConfig, specs: Sequence[ShardSpec], ids_sets: Sequence[torch.Tensor]):
    """Per rank, mean over the input sets: distinct experts of its own the routing hit, and (token, expert) pairs
    it computes. ``ids_sets``: the sets' ``topk_ids [M, k]``."""
    active, pairs = [], []
    for spec in specs:
        lo, hi = spec.expert_slice(cfg.num_experts)
        a = p = 0.0
        for ids in ids_sets:
            mine = ids[(ids >= lo) & (ids < hi)]
            a += torch.unique(mine).numel()
            p += mine.numel()
        active.append(a / len(ids_sets))
        pairs.append(p / len(ids_sets))
    return active, pairs


def roofline_fields(cfg: MoEConfig, m: int, specs: Sequence[ShardSpec], ids_sets, ceilings: dict,
                    reduce_dtype: torch.dtype) -> dict:
    """The row fields of :func:`mxfp4lab.roofline.sharded_roofline` for one point (``specs``: every rank's)."""
    world = len(specs)
    inter = [b - a for a, b in (s.intermediate_slice(cfg.intermediate_size) for s in specs)]
    active, pairs = routing_load(cfg, specs, ids_sets)
    busbw = ceilings.get("allreduce_busbw_bytes_per_s", {}).get(str(world))
    r = sharded_roofline(cfg, m, rank_intermediate=inter, rank_active_experts=active, rank_pairs=pairs,
                         bandwidth=ceilings["copy_bytes_per_s"], flops_rate=ceilings["bf16_flops_per_s"],
                         allreduce_busbw=busbw, reduce_bytes=torch.finfo(reduce_dtype).bits // 8)
    s = r.slowest
    return {"roofline_us": r.floor_us, "roofline_gpu_us": r.gpu_us, "roofline_allreduce_us": r.allreduce_us,
            "roofline_bound": r.bound, "bytes_per_gpu": s.bytes, "flops_per_gpu": s.flops,
            "active_experts_per_gpu": s.active_experts, "active_experts_by_rank": active, "pairs_by_rank": pairs,
            "intermediate_by_rank": inter, "allreduce_bytes": r.allreduce_bytes, "allreduce_busbw_bytes_per_s": busbw}


def time_rank(backend, layer: Callable, sets, group, reduce_dtype: torch.dtype, device, on_gpu: bool, *,
              reps: int, warmup: int, graph: bool = True) -> dict:
    """This rank's three timings of one point (each :meth:`~mxfp4lab.bench.harness.Timing.as_dict`):
    ``experts`` (the backend call), ``layer`` (the backend call and the all-reduce; for one rank the experts
    timing itself) and ``allreduce`` (an all-reduce of an ``[M, H]`` ``reduce_dtype`` buffer alone; None for
    one rank). Every rank of ``group`` must call this at the same point (the timings hold collectives)."""
    kw = {"on_gpu": on_gpu, "sync": _sync(group, device), "reps": reps, "warmup": warmup}
    capture = graph and backend.graph_capturable
    out = {"experts": _time(backend, sets, graph=capture, **kw).as_dict(), "allreduce": None}
    if group is None:
        out["layer"] = out["experts"]
        return out
    out["layer"] = _time(layer, sets, graph=capture, **kw).as_dict()
    m, h = sets[0][0].shape
    buf = torch.zeros(m, h, dtype=reduce_dtype, device=device)  # zeros stay zeros however often summed
    out["allreduce"] = _time(lambda b: dist.all_reduce(b, group=group), [(buf,)], graph=graph, **kw).as_dict()
    return out


def aggregate(per_rank: Sequence[dict]) -> dict:
    """Row fields from every rank's :func:`time_rank`: the layer waits for the slowest rank, so each figure is
    the slowest rank's median (its p10/p90 for the layer); per-rank medians are kept."""
    def med(part):
        return [r[part]["median_us"] for r in per_rank]

    layer, experts = med("layer"), med("experts")
    slow = max(range(len(layer)), key=layer.__getitem__)
    out = {"layer_us": layer[slow], "layer_p10_us": per_rank[slow]["layer"]["p10_us"],
           "layer_p90_us": per_rank[slow]["layer"]["p90_us"], "experts_us": max(experts),
           "experts_min_us": min(experts), "allreduce_us": 0.0, "reps": per_rank[0]["layer"]["reps"],
           "graph": all(r["layer"]["graph"] and r["experts"]["graph"] for r in per_rank),
           "per_rank_layer_us": layer, "per_rank_experts_us": experts}
    if per_rank[0]["allreduce"] is not None:
        ar = med("allreduce")
        out.update(allreduce_us=max(ar), per_rank_allreduce_us=ar)
    out["allreduce_share"] = out["allreduce_us"] / out["layer_us"]
    out["comm_in_layer_us"] = out["layer_us"] - out["experts_us"]
    notes = sorted({t["note"] for r in per_rank for t in r.values() if t and t.get("note")})
    if notes:
        out["note"] = "; ".join(notes)
    return out


def fmt_row(r: dict) -> str:
    head = f"{r['shape']:14s} {r['backend']:16s} {r['parallel']:>4s}{r['world']:<2d} M={r['m']:>5}"
    if "error" in r:
        return f"{head} ERROR {r['error']}"
    err = f"err={r.get('rel_err_vs_sharded_kernel_ref', float('nan')):.2e}"
    if "layer_us" not in r:
        return f"{head} checked {err}"
    floor = f" floor {r['roofline_us']:8.1f} ({r['roofline_bound'][:3]})" if "roofline_us" in r else ""
    return (f"{head} layer {r['layer_us']:9.1f} us  experts {r['experts_us']:9.1f}  all-reduce {r['allreduce_us']:7.1f}"
            f" ({100 * r['allreduce_share']:4.1f}%){floor} {err}")
