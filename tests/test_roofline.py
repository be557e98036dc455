"""The roofline floor reproduces FACTS.md's H100 table (3.0 TB/s, 800 TFLOP/s, 4.25 bits/param)."""

import pytest

from mxfp4lab.models import GPT_OSS_20B, GPT_OSS_120B, SEED_BENCH
from mxfp4lab.roofline import expected_active_experts, roofline

MS = (1, 16, 64, 256, 1024, 4096, 8192)
TABLE = {  # microseconds, from FACTS.md "Roofline floor per MoE layer on H100"
    GPT_OSS_20B: (18, 130, 148, 148, 266, 1065, 2130),
    GPT_OSS_120B: (18, 235, 512, 590, 593, 1065, 2130),
    SEED_BENCH: (27, 360, 891, 1140, 1146, 1546, 3092),
}


@pytest.mark.parametrize("cfg", list(TABLE), ids=lambda c: c.name)
def test_floor_matches_facts_table(cfg):
    got = [round(roofline(cfg, m).floor_us) for m in MS]
    assert got == list(TABLE[cfg])


def test_bound_switches_from_memory_to_compute():
    assert roofline(GPT_OSS_20B, 16).bound == "memory"
    assert roofline(GPT_OSS_20B, 8192).bound == "compute"


def test_active_experts_limits():
    assert expected_active_experts(SEED_BENCH, 1) == pytest.approx(6)
    assert expected_active_experts(SEED_BENCH, 100000) == pytest.approx(256)


def test_sharded_floor_of_one_rank_is_the_layer_floor():
    from mxfp4lab.roofline import sharded_roofline

    for m in MS:
        r = roofline(GPT_OSS_120B, m)
        s = sharded_roofline(GPT_OSS_120B, m, rank_intermediate=[2880], rank_active_experts=[r.active_experts],
                             rank_pairs=[m * 4], bandwidth=3.0e12, flops_rate=800e12, allreduce_busbw=None)
        assert s.floor_us == pytest.approx(r.floor_us, rel=1e-12) and s.allreduce_us == 0.0


def test_sharded_floor_tp_and_ep_by_hand():
    from mxfp4lab.roofline import sharded_roofline

    bw, fr, bus = 4.0e12, 800e12, 360e9
    # TP=2 of GPT-OSS-120b at M=1: 1440 columns per rank, padded to 1536; 4 active experts on both ranks
    s = sharded_roofline(GPT_OSS_120B, 1, rank_intermediate=[1440, 1440], rank_active_experts=[4, 4],
                         rank_pairs=[4, 4], bandwidth=bw, flops_rate=fr, allreduce_busbw=bus)
    gpu_bytes = 4 * 3 * 2944 * 1536 * 4.25 / 8 + 2 * 2880 * 2
    assert s.gpu_us == pytest.approx(gpu_bytes / bw * 1e6, rel=1e-12) and s.bound == "memory"
    assert s.allreduce_bytes == 2880 * 2
    assert s.allreduce_us == pytest.approx(2 * 1 / 2 * 2880 * 2 / bus * 1e6, rel=1e-12)
    assert s.floor_us == pytest.approx(s.gpu_us + s.allreduce_us)
    # EP=4: the slowest rank (most active experts) sets the GPU part; fp32 partials double the reduce bytes
    e = sharded_roofline(GPT_OSS_120B, 64, rank_intermediate=[2880] * 4, rank_active_experts=[30, 41, 25, 33],
                         rank_pairs=[60, 80, 50, 66], bandwidth=bw, flops_rate=fr, allreduce_busbw=bus,
                         reduce_bytes=4)
    assert e.slowest is e.ranks[1] and e.gpu_us == e.ranks[1].floor_us
    assert e.allreduce_us == pytest.approx(2 * 3 / 4 * 64 * 2880 * 4 / bus * 1e6, rel=1e-12)
    # a starved link makes the all-reduce the bound
    assert sharded_roofline(GPT_OSS_120B, 4096, rank_intermediate=[1440, 1440], rank_active_experts=[128, 128],
                            rank_pairs=[4096 * 4] * 2, bandwidth=bw, flops_rate=fr, allreduce_busbw=1e6).bound == "allreduce"


def test_sharded_floor_refuses_missing_bandwidth_and_ragged_ranks():
    from mxfp4lab.roofline import sharded_roofline

    kw = {"bandwidth": 3e12, "flops_rate": 8e14}
    with pytest.raises(ValueError, match="allreduce_busbw must be a measured bandwidth"):
        sharded_roofline(GPT_OSS_120B, 1, rank_intermediate=[1440] * 2, rank_active_experts=[4] * 2,
                         rank_pairs=[4] * 2, allreduce_busbw=None, **kw)
    with pytest.raises(ValueError, match="one entry per rank"):
        sharded_roofline(GPT_OSS_120B, 1, rank_intermediate=[1440] * 2, rank_active_experts=[4],
                         rank_pairs=[4] * 2, allreduce_busbw=1e11, **kw)
