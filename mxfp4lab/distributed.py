"""Tensor / expert parallel MoE across processes: each rank prepares and runs its shard, the partial
outputs are summed with an all-reduce (NCCL on GPUs, gloo on CPU), and rank 0 compares the result with
the kernel-faithful model of the sharded run (each shard's ``moe_reference(mode="kernel")`` output, a bf16
partial like the kernel's, summed in fp32 and rounded once: the tight check), with the unsharded layer
(TP=1 through the same backend: differs by the extra bf16 rounding of the partials) and the fp32 reference.

    torchrun --nproc-per-node 2 -m mxfp4lab distributed --kind tp --model gpt-oss-120b \
        --backend flashinfer_sm90 --out OUT/tp2.json            # two H100s
    mxfp4lab distributed --spawn 2 --kind ep --model gpt-oss-20b --scaled \
        --backend emulated_sm90 --out /tmp/ep2.json             # CPU, gloo (what the tests run)

NVLink multicast stays off (``NCCL_NVLS_ENABLE=0``; the lent hosts require it).

Sharding (see :mod:`mxfp4lab.prepare`): TP splits the intermediate dimension (fc2 bias on rank 0 only);
EP gives each rank a contiguous block of experts; every rank sees all tokens and the same routing.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import torch
import torch.distributed as dist

from .models import get_model
from .moe_tensors import ShardSpec
from .prepare import prepare_from_experts
from .reference import expert_weights_from_logical, moe_reference, relative_error

for _k, _v in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ.setdefault(_k, _v)


def _config(model: str, scaled: bool):
    cfg = get_model(model)
    if scaled:  # small enough for a CPU test, I/2 a multiple of 32, E divisible by 2
        cfg = cfg.scaled(hidden=256, intermediate=256, experts=8, top_k=min(cfg.top_k, 4))
    return cfg


def _spec(kind: str, world: int, rank: int) -> ShardSpec:
    return ShardSpec(tp_size=world, tp_rank=rank) if kind == "tp" else ShardSpec(ep_size=world, ep_rank=rank)


def run_rank(rank: int, world: int, *, kind: str, model: str, backend: str, ms=(16, 256), scaled: bool = False,
             seed: int = 7, out: Optional[str] = None) -> Optional[dict]:
    """Body of one rank (process group already initialized). Returns the result dict on rank 0."""
    from .backends import get_backend
    from .synthetic import make_inputs, random_layer

    device = f"cuda:{rank}" if torch.cuda.is_available() else "cpu"
    if device != "cpu":
        torch.cuda.set_device(rank)
    cfg = _config(model, scaled)
    layer = random_layer(cfg, device=device, seed=seed)  # identical on every rank (same seed)
    shard = prepare_from_experts(layer, config=cfg, shard=_spec(kind, world, rank))
    be = get_backend(backend)(shard, cfg)
    result = {"kind": kind, "world": world, "model": cfg.name, "backend": backend, "points": []}
    if rank == 0:
        full = prepare_from_experts(layer, config=cfg)
        be_full = get_backend(backend)(full, cfg)
        ref_w = expert_weights_from_logical(full)
        # the kernel-faithful model of the sharded run: each rank's bf16 partial, summed in fp32, -> bf16
        shard_w = [expert_weights_from_logical(
            shard if r == rank else prepare_from_experts(layer, config=cfg, shard=_spec(kind, world, r)))
            for r in range(world)]
    for m in ms:
        x, ids, w = make_inputs(cfg, m, 1, "uniform", device=device, seed=1000 + m)[0]
        be.tune(x, ids, w)
        part = be(x, ids, w)  # [M, H] bf16 partial output of this rank (routed scaling applied)
        acc = part.float()
        dist.all_reduce(acc)
        y = acc.to(torch.bfloat16)
        if rank == 0:
            be_full.tune(x, ids, w)
            y1 = be_full(x, ids, w)
            ref = moe_reference(x, ids, w, ref_w, **cfg.swiglu_kwargs,
                                routed_scaling_factor=cfg.routed_scaling_factor)
            ref_k = sum(moe_reference(x, ids, w, sw, **cfg.swiglu_kwargs, mode="kernel",
                                      routed_scaling_factor=cfg.routed_scaling_factor).float()
                        for sw in shard_w).to(torch.bfloat16)
            pt = {"m": m, "rel_err_vs_sharded_kernel_ref": relative_error(y, ref_k),
                  "rel_err_vs_unsharded_same_backend": relative_error(y, y1),
                  "rel_err_vs_fp32_ref": relative_error(y, ref),
                  "unsharded_rel_err_vs_fp32_ref": relative_error(y1, ref)}
            result["points"].append(pt)
            print(json.dumps(pt), flush=True)
    if rank == 0:
        if out:
            from . import results

            rows = [dict(p, parallel=kind, world=world) for p in result["points"]]
            results.write(out, "sharded_check", rows, runs={f"{kind}{world}": {
                k: v for k, v in result.items() if k != "points"}})
        return result
    return None


def _spawn_entry(rank, world, port, kw, target=None, timeout=None):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # the ranks share this CPU's cores
    extra = {} if timeout is None else {"timeout": timeout}
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}", **extra)
    try:
        (target or run_rank)(rank, world, **kw)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a process group's rendezvous on this machine)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_cpu(world: int, port: Optional[int] = None, *, target=None, timeout=None, **kw) -> None:
    """Run ``world`` gloo ranks on this CPU (tests, laptops); ``port`` None: a free one. ``target``: the body of
    a rank, ``target(rank, world, **kw)`` (a module-level function; default :func:`run_rank`); ``timeout``: the
    process group's (a :class:`datetime.timedelta`; default torch's)."""
    import torch.multiprocessing as mp

    mp.spawn(_spawn_entry, args=(world, port or free_port(), kw, target, timeout), nprocs=world, join=True)


def run(*, spawn: int = 0, **kw) -> None:
    """``spawn`` > 0: that many gloo ranks here (:func:`spawn_cpu`); else this process is one rank of a
    ``torchrun`` job (NCCL on GPUs, gloo otherwise). ``kw``: :func:`run_rank`'s keywords."""
    if spawn:
        spawn_cpu(spawn, **kw)
        return
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        run_rank(dist.get_rank(), dist.get_world_size(), **kw)
    finally:
        dist.destroy_process_group()
