"""MoE layer latency under tensor / expert parallelism on the GPUs of one host (:func:`run_rank`).

    torchrun --nproc-per-node gpu -m mxfp4lab bench parallel --out OUT/parallel.json     # one rank per GPU
    mxfp4lab bench parallel --worlds 1 --shapes gpt-oss-120b --tokens 1,64 --out OUT/p1.json   # one GPU
    mxfp4lab bench parallel --spawn 4 --scaled --backends emulated_sm90 --tokens 3,17   # CPU, gloo

One process per GPU. For each shape, each world size ``w`` in ``worlds`` (1, 2, 4, 8; sizes above the launched
ranks are skipped and listed in the result) and each of TP and EP (one run for ``w = 1``, ``parallel: "none"``),
ranks ``0 .. w-1`` prepare their shard of the same random layer (:func:`mxfp4lab.synthetic.random_layer`, one
seed; every rank checks that it holds the same bytes) and build every backend on it, while the other ranks wait.
Per M (uniform routing; rank 0's tokens and routing broadcast to the group):

1. **Check** the layer -- each rank's experts, then the all-reduce of the partial outputs -- against the
   kernel-faithful model of the sharded run: each rank's ``moe_reference(mode="kernel")`` partial of its own
   shard (bf16, as the kernel's), summed by the same all-reduce. Also recorded, on rank 0: the error against the
   same backend on the unsharded layer (this run's ``w = 1``) and against the unsharded fp32 reference. A point
   whose error is not below :data:`mxfp4lab.bench.moe.CHECK_TOL` is recorded with ``error`` and not timed.
2. **Time** on every rank (:mod:`.parallel_timing`), a device-side barrier before each sample: ``experts`` (the
   rank's backend call), ``layer`` (backend call + all-reduce: the whole layer, one CUDA graph where the backend
   allows, NCCL captured in it) and ``allreduce`` (the all-reduce of an ``[M, H]`` buffer alone). A row holds
   the slowest rank's medians, ``allreduce_share = allreduce_us / layer_us`` and ``comm_in_layer_us =
   layer_us - experts_us``; input sets rotate so that each GPU's rotated weights are at least twice its L2.
3. **Roofline** (:func:`mxfp4lab.roofline.sharded_roofline`): each rank's weight bytes (its shard, the experts
   the routing really hit) over the per-GPU copy bandwidth, plus the all-reduce's bytes over the all-reduce bus
   bandwidth measured for that group at the start of the same run (NVLink on an HGX host).

The all-reduce sums bf16 partials by default, as serving engines reduce the bf16 hidden states
(``reduce_dtype="fp32"``: fp32, as ``mxfp4lab distributed`` checks). This EP is the all-reduce form (every rank
sees every token: EP inside a TP group), not the all-to-all dispatch of DP + EP (DeepEP); that is not measured.

Timers: CUDA events on GPUs (``timer: "cuda_events"``). Without CUDA the whole path runs over gloo with
:func:`mxfp4lab.bench.harness.time_host` (``timer: "host_wall_clock"``): CPU stand-ins that test the path, never
results. Ranks sharing a GPU (a dry run on one GPU: ``--dist-backend gloo``) are refused timing: ``check_only``.
NVLink multicast stays off: ``NCCL_NVLS_ENABLE=0`` is set before the process group starts (:func:`run`).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

from .. import distributed as mxdist
from ..backends import BackendSpec
from ..models import get_model
from ..moe_tensors import ShardSpec
from ..prepare import prepare_from_experts
from ..reference import expert_weights_from_logical, moe_reference, relative_error
from ..synthetic import make_inputs, random_layer
from . import parallel_timing as pt
from .moe import CHECK_TOL

RESULT_KIND = "parallel_latency"
STUDY = "parallel_latency"
DEFAULT_SHAPES = ("gpt-oss-120b", "dsv4-flash")
DEFAULT_M = (1, 16, 64, 256, 1024, 4096)
DEFAULT_WORLDS = (1, 2, 4, 8)
PARALLELS = ("tp", "ep")
#: Every backend that runs on a TP or EP shard (each derives its layout from the shard's logical tensors).
DEFAULT_BACKENDS = ("flashinfer_sm90", "marlin_mxfp4", "triton_w4a16", "triton_kernels", "humming", "decode_w4a16")
CPU_BACKENDS = ("emulated_sm90", "torch_naive")
REDUCE_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
#: The NCCL settings this benchmark runs under (NVLink multicast off: the lent hosts require it).
NCCL_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
#: Collectives wait this long before a process group gives up (idle ranks wait while others build backends).
PG_TIMEOUT = timedelta(hours=1)


def _config(shape: str, scaled: bool):
    cfg = get_model(shape)
    if scaled:  # small enough for a CPU test: I = 320 is 10 scale blocks, so TP=4 is uneven (96 x 3 + 32)
        cfg = cfg.scaled(hidden=256, intermediate=320, experts=8, top_k=min(cfg.top_k, 4))
    return cfg


def shard_spec(parallel: str, world: int, rank: int) -> ShardSpec:
    if parallel == "none" or world == 1:
        return ShardSpec()
    if parallel not in PARALLELS:
        raise ValueError(f"parallel must be one of {PARALLELS} (or 'none' for one rank), got {parallel!r}")
    return ShardSpec(tp_size=world, tp_rank=rank) if parallel == "tp" else ShardSpec(ep_size=world, ep_rank=rank)


def _gather(obj, group) -> list:
    """Every rank's ``obj`` (over a gloo control group: no device synchronisation)."""
    out = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def _first_error(errors: Sequence) -> str | None:
    bad = [(r, e) for r, e in enumerate(errors) if e]
    return None if not bad else "; ".join(f"rank {r}: {e}" for r, e in bad[:2])


def _exc(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _reduce(part: torch.Tensor, group, dtype: torch.dtype) -> torch.Tensor:
    """The layer's all-reduce: the ``[M, H]`` partial summed over ``group`` in ``dtype``, returned bf16 (one
    rank: the partial itself). In place for a contiguous bf16 partial, as serving engines reduce the MoE output;
    a strided one (a backend that trims its padding, ``out[:, :h]``) is copied first: NCCL refuses a strided
    tensor, and gloo returned a wrong sum for one, silently (the test with a strided backend output)."""
    if group is None:
        return part
    buf = part.contiguous().to(dtype)
    dist.all_reduce(buf, group=group)
    return buf.to(torch.bfloat16)


def _layer_fn(backend, group, dtype):
    return lambda x, ids, w: _reduce(backend(x, ids, w), group, dtype)


def _layer_checksum(layer) -> list[int]:
    """Sum of every tensor's bytes (int64): equal on every rank iff the random layer is (to a checksum)."""
    return [int(t.contiguous().view(torch.uint8).sum(dtype=torch.int64)) for t in vars(layer).values()
            if isinstance(t, torch.Tensor)]


class _Run:
    """One rank's view of the whole run: device, groups, ceilings, the rows (rank 0)."""

    def __init__(self, rank: int, size: int, *, worlds, check_only: bool, reduce_dtype: str, log):
        self.rank, self.size, self.log = rank, size, log
        self.on_gpu = torch.cuda.is_available()
        n_dev = torch.cuda.device_count() if self.on_gpu else 0
        local = int(os.environ.get("LOCAL_RANK", rank))
        self.device = torch.device(f"cuda:{local % n_dev}") if self.on_gpu else torch.device("cpu")
        if self.on_gpu:
            torch.cuda.set_device(self.device)
        self.ranks_per_gpu = -(-size // n_dev) if self.on_gpu else 1
        self.check_only = bool(check_only or self.ranks_per_gpu > 1)
        self.timer = "cuda_events" if self.on_gpu else "host_wall_clock"
        if not worlds or any(not isinstance(w, int) or w < 1 for w in worlds):
            raise ValueError(f"worlds must be GPU counts >= 1, got {list(worlds)}")
        if reduce_dtype not in REDUCE_DTYPES:
            raise ValueError(f"reduce_dtype must be one of {sorted(REDUCE_DTYPES)}, got {reduce_dtype!r}")
        self.reduce_name, self.reduce_dtype = reduce_dtype, REDUCE_DTYPES[reduce_dtype]
        self.worlds = [w for w in worlds if w <= size]
        self.skipped_worlds = [w for w in worlds if w > size]
        # every new_group is collective over all launched ranks: make them all now, in one order
        self.ctl_all = dist.new_group(list(range(size)), backend="gloo", timeout=PG_TIMEOUT)
        self.ctl = {w: dist.new_group(list(range(w)), backend="gloo", timeout=PG_TIMEOUT) for w in self.worlds}
        self.data = {w: dist.new_group(list(range(w)), timeout=PG_TIMEOUT) if w > 1 else None for w in self.worlds}
        self.ceilings: dict = {}
        self.rows: list[dict] = []
        self.on_rows = None  # rank 0: called after rows are added (writes the run in progress)

    def add(self, rows: list[dict]) -> None:
        """Rows of finished points (kept on rank 0, which writes them at once: a run cut off keeps them)."""
        if self.rank == 0 and rows:
            self.rows.extend(rows)
            if self.on_rows is not None:
                self.on_rows()

    def member(self, w: int) -> bool:
        return self.rank < w

    def measure_ceilings(self) -> None:
        """Per-GPU copy bandwidth and bf16 rate (every rank; the slowest counts), then the all-reduce bus
        bandwidth of each group."""
        mine = pt.device_ceilings(self.on_gpu)
        every = _gather(mine, self.ctl_all)
        self.ceilings = {"copy_bytes_per_s": min(c["copy_bytes_per_s"] for c in every),
                         "bf16_flops_per_s": min(c["bf16_flops_per_s"] for c in every),
                         "per_rank": every, "timer": self.timer, "allreduce_busbw_bytes_per_s": {}}
        for w in self.worlds:
            if w > 1 and self.member(w):
                t = pt.allreduce_busbw(self.data[w], w, self.device, self.on_gpu)
                slowest = max(_gather(t, self.ctl[w]), key=lambda r: r["median_us"])
                self.ceilings["allreduce_busbw_bytes_per_s"][str(w)] = slowest["busbw_bytes_per_s"]
                self.ceilings.setdefault("allreduce_probe", {})[str(w)] = slowest
            dist.barrier(group=self.ctl_all)


def run_rank(rank: int, size: int, *, shapes=DEFAULT_SHAPES, backends=None, ms=DEFAULT_M, worlds=DEFAULT_WORLDS,
             parallels=PARALLELS, reduce_dtype: str = "bf16", reps: int = 30, warmup: int = 5, rotate: int = 4,
             max_rotate: int = 32, graph: bool = True, check_only: bool = False, scaled: bool = False, seed: int = 7,
             out: str | None = None, log=print) -> list[dict] | None:
    """Body of one rank (the default process group already started: :func:`run`). Returns the rows on rank 0
    (and writes ``out`` there: as a run in progress, ``<stem>.partial.json``, after every M of every shard
    configuration; complete at the end)."""
    bad = [p for p in parallels if p not in PARALLELS]
    if bad or not parallels:
        raise ValueError(f"parallels must be some of {PARALLELS}, got {list(parallels)}")
    run = _Run(rank, size, worlds=worlds, check_only=check_only, reduce_dtype=reduce_dtype,
               log=log if rank == 0 else (lambda *a, **k: None))
    specs = [BackendSpec.of(b) for b in (backends or (DEFAULT_BACKENDS if run.on_gpu else CPU_BACKENDS))]
    if not run.check_only:
        run.measure_ceilings()
    opts = {"reps": reps, "warmup": warmup, "rotate": rotate, "max_rotate": max_rotate, "graph": graph}
    meta = dict(timer=run.timer, check_only=run.check_only, reduce_dtype=run.reduce_name, launched_ranks=size,
                ranks_per_gpu=run.ranks_per_gpu, worlds=run.worlds, skipped_worlds=run.skipped_worlds,
                parallels=list(parallels), ceilings=run.ceilings, check_tol=CHECK_TOL,
                nccl_env={k: os.environ.get(k) for k in NCCL_ENV}, backends=[s.label for s in specs], **opts)
    if run.skipped_worlds:
        run.log(f"worlds {run.skipped_worlds} skipped: only {size} ranks launched")

    def save(done: bool):
        if rank == 0 and out:
            from .. import results

            return results.write(out, RESULT_KIND, run.rows, partial=not done, complete=done, **meta)
        return None

    run.on_rows = lambda: save(done=False)
    for shape in shapes:
        cfg = _config(shape, scaled)
        layer = random_layer(cfg, device=run.device, seed=seed)
        sums = _gather(_layer_checksum(layer), run.ctl_all)
        if any(s != sums[0] for s in sums):
            raise RuntimeError(f"[{cfg.name}] the random layer differs between ranks (byte sums {sums}): every rank "
                               "must generate the same layer from the same seed")
        baseline: dict = {}  # rank 0: (label, m) -> unsharded output of that backend; ("fp32", m) -> fp32 reference
        for w in run.worlds:
            for par in (["none"] if w == 1 else list(parallels)):
                if run.member(w):
                    _run_shard(run, cfg, layer, w, par, specs, ms, baseline, opts)
                gc.collect()  # the shard's backends and reference weights, before the next shard's
                if run.on_gpu:
                    torch.cuda.empty_cache()
                dist.barrier(group=run.ctl_all)
        del layer, baseline
    path = save(done=True)
    if path:
        run.log(f"wrote {path}")
    return run.rows if rank == 0 else None


def _run_shard(run: _Run, cfg, layer, w: int, par: str, specs, ms, baseline: dict, opts: dict) -> None:
    """Every backend x M on one shard configuration, on ranks 0 .. w-1 (rows to :meth:`_Run.add`, per M)."""
    ctl, data = run.ctl[w], run.data[w]
    spec = shard_spec(par, w, run.rank)
    base = {"shape": cfg.name, "parallel": par, "world": w, "routing": "uniform", "reduce_dtype": run.reduce_name,
            "timer": run.timer}
    err = None
    try:
        shard = prepare_from_experts(layer, config=cfg, shard=spec)
        ref_w = expert_weights_from_logical(shard)
    except Exception as exc:  # noqa: BLE001 - recorded; the other shards still run
        err = _exc(exc)
    err = _first_error(_gather(err, ctl))
    if err:
        run.log(f"[{cfg.name}] {par}{w}: cannot shard: {err}")
        run.add([dict(base, backend=s.label, m=m, error=f"shard: {err}") for s in specs for m in ms])
        return
    built = {}
    for s in specs:
        err = None
        try:
            be = s.make(shard, cfg)
        except Exception as exc:  # noqa: BLE001
            err = _exc(exc)
        err = _first_error(_gather(err, ctl))
        if err:
            run.log(f"[{cfg.name}] {par}{w} {s.label}: unavailable: {err}")
            run.add([dict(base, backend=s.label, m=m, error=f"backend: {err}") for m in ms])
        else:
            built[s.label] = be
    for m in ms:
        n_sets = 1 if run.check_only else pt.rotation(cfg, m, w, run.device, opts["rotate"], opts["max_rotate"],
                                                      run.on_gpu)
        sets = make_inputs(cfg, m, n_sets, "uniform", device=run.device, seed=1000 + m)
        if data is not None:  # one set of tokens and routing for the whole group
            for t in (t for st in sets for t in st):
                dist.broadcast(t, src=0, group=data)
        x, ids, wts = sets[0]
        kw = dict(cfg.swiglu_kwargs, routed_scaling_factor=cfg.routed_scaling_factor)
        ref_k = _reduce(moe_reference(x, ids, wts, ref_w, mode="kernel", **kw), data, run.reduce_dtype)
        if run.rank == 0 and w == 1:
            baseline["fp32", m] = moe_reference(x, ids, wts, ref_w, **kw)
        roof = {} if run.check_only else pt.roofline_fields(
            cfg, m, [shard_spec(par, w, r) for r in range(w)], [st[1] for st in sets], run.ceilings, run.reduce_dtype)
        rows = []
        for label, be in built.items():
            row = dict(base, backend=label, m=m, rotate=n_sets, **roof)
            rows.append(row)
            _check_and_time(run, row, be, sets, ref_k, baseline, w, data, ctl, opts)
            run.log(pt.fmt_row(row))
        run.add(rows)


def _check_and_time(run: _Run, row: dict, be, sets, ref_k, baseline: dict, w: int, data, ctl, opts: dict) -> None:
    """Fill ``row``: the check (every rank agrees before any collective that could wait forever), then the
    timings (unless check-only)."""
    x, ids, wts = sets[0]
    part, err = None, None
    try:
        be.tune(x, ids, wts)  # first, so that the check covers the timed configuration
        part = be(x, ids, wts)
    except Exception as exc:  # noqa: BLE001
        err = _exc(exc)
    err = _first_error(_gather(err, ctl))
    if err:
        row["error"] = f"forward: {err}"
        return
    y = _reduce(part, data, run.reduce_dtype)
    row["rel_err_vs_sharded_kernel_ref"] = e = relative_error(y, ref_k)  # the same tensors on every rank
    if run.rank == 0:
        key = (row["backend"], row["m"])
        if w == 1:
            baseline[key] = y
        if key in baseline:
            row["rel_err_vs_unsharded_same_backend"] = relative_error(y, baseline[key])
        if ("fp32", row["m"]) in baseline:
            row["rel_err_vs_fp32_ref"] = relative_error(y, baseline["fp32", row["m"]])
    if not all(_gather(e < CHECK_TOL, ctl)):
        row["error"] = f"output check failed: rel err vs the sharded kernel model {e:.3g} >= {CHECK_TOL}"
        return
    if run.check_only:
        return
    err, mine = None, None
    try:
        mine = pt.time_rank(be, _layer_fn(be, data, run.reduce_dtype), sets, data, run.reduce_dtype,
                            run.device, run.on_gpu, reps=opts["reps"], warmup=opts["warmup"], graph=opts["graph"])
    except Exception as exc:  # noqa: BLE001
        err = _exc(exc)
    every = _gather((err, mine), ctl)
    err = _first_error([e for e, _ in every])
    if err:
        row["error"] = f"timing: {err}"
        return
    row.update(pt.aggregate([t for _, t in every]))
    if "roofline_us" in row:
        row["fraction_of_roofline"] = row["roofline_us"] / row["layer_us"]


def run(*, spawn: int = 0, dist_backend: str | None = None, **kw) -> list[dict] | None:
    """``spawn`` > 0: that many gloo ranks on this CPU; else this process is one rank of a ``torchrun`` job (NCCL
    on GPUs, gloo otherwise, or ``dist_backend``), or, started without torchrun, a job of one rank.
    ``kw``: :func:`run_rank`'s keywords. Sets :data:`NCCL_ENV` first."""
    os.environ.update(NCCL_ENV)
    if spawn:
        mxdist.spawn_cpu(spawn, target=run_rank, timeout=PG_TIMEOUT, **kw)
        return None
    backend = dist_backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():  # before the process group, so that NCCL binds each rank to its own GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if "RANK" in os.environ:
        dist.init_process_group(backend, timeout=PG_TIMEOUT)
    else:  # one process, no launcher: a job of one rank (world 1 only)
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{mxdist.free_port()}", rank=0, world_size=1,
                                timeout=PG_TIMEOUT)
    try:
        return run_rank(dist.get_rank(), dist.get_world_size(), **kw)
    finally:
        dist.destroy_process_group()


def merge(paths: Sequence[str], out: str) -> str:
    """Several runs' files (e.g. one per shape, each its own job step) -> one result file: the rows of all,
    ``parts`` = each run's path, provenance and metadata; ``complete`` only if every part is. The top-level
    provenance is the first part's (each row names its part: ``part``, an index into ``parts``)."""
    from .. import results

    loaded = [results.load(p, kind=RESULT_KIND) for p in paths]
    if not loaded:
        raise ValueError("merge needs at least one result file")
    rows = [dict(r, part=i) for i, res in enumerate(loaded) for r in res.rows]
    parts = [{"path": str(res.path), "provenance": res.provenance, **res.meta} for res in loaded]
    timers = {res.meta.get("timer") for res in loaded}
    return str(results.write(out, RESULT_KIND, rows, prov=loaded[0].provenance, parts=parts,
                             complete=all(res.meta.get("complete") for res in loaded),
                             launched_ranks=max(res.meta.get("launched_ranks") or 0 for res in loaded),
                             timer=timers.pop() if len(timers) == 1 else sorted(map(str, timers))))


__all__ = ["CPU_BACKENDS", "DEFAULT_BACKENDS", "DEFAULT_M", "DEFAULT_SHAPES", "DEFAULT_WORLDS", "NCCL_ENV",
           "PARALLELS", "RESULT_KIND", "STUDY", "merge", "run", "run_rank", "shard_spec"]
