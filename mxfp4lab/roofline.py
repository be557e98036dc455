"""Roofline floor of one MoE layer on H100 (W4A16 MXFP4, uniform top-k routing).

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

from dataclasses import dataclass
from typing import Optional

from .models import MoEConfig

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
    params = 3 * h * i  # fc1 (2I x H) + fc2 (H x I)
    nbytes = act * params * BITS_PER_PARAM / 8 + 2 * m * cfg.hidden_size * 2
    flops = 2.0 * m * cfg.top_k * 3 * h * i  # the kernel multiplies the padded shapes
    return RooflinePoint(m, act, nbytes, flops, nbytes / bandwidth * 1e6, flops / flops_rate * 1e6)
