"""Roofline floor of one MoE layer on H100 (W4A16 MXFP4, uniform top-k routing), and of one layer split over
several GPUs (:func:`sharded_roofline`: the slowest GPU's shard plus the all-reduce of the partial outputs).

Bytes: the expected number of distinct active experts times one expert's weights at 4.25 bits/param
(4-bit codes + one E8M0 byte per 32), with padded shapes, plus bf16 activations in and out
(``2 * M * H * 2`` bytes). FLOPs: ``2 * M * k * 3 * H_pad * I_pad`` (GEMM1 2I x H, GEMM2 H x I; the kernel runs padded shapes).
Expected distinct experts for M tokens with k distinct picks out of E, uniform:
``E * (1 - (1 - k/E)**M)``.

Floor = max(bytes / bandwidth, FLOPs / rate), with bandwidth and rate MEASURED on the device
(:func:`mxfp4lab.bench.harness.measure_ceilings`); the defaults are round H100 numbers (3.0 TB/s
device-to-device copy, 800 TFLOP/s bf16 dense on random data; the recorded H100 sweep measured 2.91 TB/s and
746 TFLOP/s: ``ceilings`` in ``data/results/latency/h100.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from .models import SM90_PAD_MULTIPLE, MoEConfig, round_up

H100_COPY_BW = 3.0e12  # bytes/s, read + write, device-to-device copy on an H100 (rounded)
H100_BF16_FLOPS = 800e12  # FLOP/s, 8192^3 bf16 GEMM on random data on an H100 (rounded)
BITS_PER_PARAM = 4.25


@dataclass
class RooflinePoint:
    m: int
    active_experts: float
    bytes: float
    flops: float
    memory_us: float
    compute_us: float

    @property
    def floor_us(self) -> float:
        return max(self.memory_us, self.compute_us)

    @property
    def bound(self) -> str:
        return "memory" if self.memory_us >= self.compute_us else "compute"


def ceiling_rates(ceilings: dict | None = None) -> tuple[float, float]:
    """(copy bandwidth bytes/s, bf16 FLOP/s) from measured ``ceilings`` (a result file's ``ceilings``:
    ``copy_bytes_per_s``, ``bf16_flops_per_s``); the H100 defaults above where a value is missing."""
    c = ceilings or {}
    return c.get("copy_bytes_per_s") or H100_COPY_BW, c.get("bf16_flops_per_s") or H100_BF16_FLOPS


def expected_active_experts(cfg: MoEConfig, m: int) -> float:
    e, k = cfg.num_experts, cfg.top_k
    return e * (1.0 - (1.0 - k / e) ** m)


def roofline(cfg: MoEConfig, m: int, *, bandwidth: float = H100_COPY_BW, flops_rate: float = H100_BF16_FLOPS,
             padded: bool = True, active_experts: Optional[float] = None) -> RooflinePoint:
    """``active_experts``: the number of distinct experts the routing actually hit (e.g. the mean
    over a benchmark's input sets); default: the expectation under uniform random top-k routing,
    which overstates the bytes of a skewed routing."""
    h = cfg.padded_hidden if padded else cfg.hidden_size
    i = cfg.padded_intermediate if padded else cfg.intermediate_size
    act = expected_active_experts(cfg, m) if active_experts is None else float(active_experts)
    return _gpu_point(m, cfg.hidden_size, h, i, act, m * cfg.top_k, bandwidth, flops_rate)


def _gpu_point(m: int, hidden: int, h: int, i: int, active: float, pairs: float, bandwidth: float,
               flops_rate: float) -> RooflinePoint:
    """One GPU's floor: ``active`` experts of (padded) ``h`` x ``i`` read once at 4.25 bits/param plus bf16
    activations in and out; ``pairs`` (token, expert) products of fc1 (2I x H) and fc2 (H x I)."""
    params = 3 * h * i  # fc1 (2I x H) + fc2 (H x I)
    nbytes = active * params * BITS_PER_PARAM / 8 + 2 * m * hidden * 2
    flops = 2.0 * pairs * 3 * h * i  # the kernel multiplies the padded shapes
    return RooflinePoint(m, active, nbytes, flops, nbytes / bandwidth * 1e6, flops / flops_rate * 1e6)


@dataclass
class ShardedRooflinePoint:
    """The floor of one layer split over ``world`` GPUs (TP or EP), partial outputs summed by an all-reduce.

    ``ranks``: each GPU's own floor (:class:`RooflinePoint` of its shard: its weight bytes over the per-GPU
    bandwidth, its FLOPs over the per-GPU rate); the layer waits for the slowest. ``allreduce_bytes``: the
    ``[M, H]`` partial output in the reduce dtype; ``allreduce_us``: what a ring all-reduce moves per GPU,
    ``2 (world - 1) / world * allreduce_bytes``, over the all-reduce bus bandwidth measured in the same run
    (0 for one GPU). The floor is the slowest GPU's plus the all-reduce's (they run one after the other).
    """

    m: int
    world: int
    ranks: list[RooflinePoint]
    allreduce_bytes: float
    allreduce_us: float

    @property
    def slowest(self) -> RooflinePoint:
        return max(self.ranks, key=lambda r: r.floor_us)

    @property
    def gpu_us(self) -> float:
        return self.slowest.floor_us

    @property
    def floor_us(self) -> float:
        return self.gpu_us + self.allreduce_us

    @property
    def bound(self) -> str:
        """``memory`` / ``compute`` (the slowest GPU's experts), or ``allreduce`` when that part is larger."""
        return "allreduce" if self.allreduce_us > self.gpu_us else self.slowest.bound


def sharded_roofline(cfg: MoEConfig, m: int, *, rank_intermediate: Sequence[int], rank_active_experts:
                     Sequence[float], rank_pairs: Sequence[float], bandwidth: float, flops_rate: float,
                     allreduce_busbw: float | None, reduce_bytes: int = 2) -> ShardedRooflinePoint:
    """:class:`ShardedRooflinePoint` from each rank's shard: ``rank_intermediate`` its unpadded I (TP: its
    slice; EP: the whole I), ``rank_active_experts`` the distinct experts of its own it reads, ``rank_pairs``
    the (token, expert) pairs it computes (TP: ``M * k`` each; EP: those routed to its experts).
    ``allreduce_busbw``: bytes/s (nccl-tests' "bus bandwidth" convention); None only for one rank."""
    n = len(rank_intermediate)
    if not n or len(rank_active_experts) != n or len(rank_pairs) != n:
        raise ValueError(f"rank_intermediate, rank_active_experts and rank_pairs must have one entry per rank "
                         f"(got {len(rank_intermediate)}, {len(rank_active_experts)}, {len(rank_pairs)})")
    ranks = [_gpu_point(m, cfg.hidden_size, cfg.padded_hidden, round_up(i, SM90_PAD_MULTIPLE), a, p, bandwidth,
                        flops_rate) for i, a, p in zip(rank_intermediate, rank_active_experts, rank_pairs)]
    ar_bytes = float(m * cfg.hidden_size * reduce_bytes)
    if n == 1:
        ar_us = 0.0
    elif not allreduce_busbw or allreduce_busbw <= 0:
        raise ValueError(f"allreduce_busbw must be a measured bandwidth > 0 for {n} ranks, got {allreduce_busbw}")
    else:
        ar_us = 2.0 * (n - 1) / n * ar_bytes / allreduce_busbw * 1e6
    return ShardedRooflinePoint(m, n, ranks, ar_bytes, ar_us)
