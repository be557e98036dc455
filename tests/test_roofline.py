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
