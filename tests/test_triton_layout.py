"""Layout of the Triton W4A16 kernel (mxfp4lab.layout.triton_w4a16): pure torch, exact inverse, bad inputs."""

import dataclasses

import pytest
import torch
from conftest import DSV4_SMALL, GPT_OSS_SMALL, rand_u8

from mxfp4lab.formats import MXFormatError, dequantize_mxfp4
from mxfp4lab.layout.triton_w4a16 import (
    from_triton_layout,
    to_triton_layout,
    weight_from_triton,
    weight_to_triton,
)
from mxfp4lab.moe_tensors import ShardSpec
from mxfp4lab.prepare import prepare_from_experts
from mxfp4lab.synthetic import random_layer


@pytest.mark.parametrize("cfg", [GPT_OSS_SMALL, DSV4_SMALL], ids=lambda c: c.name)
@pytest.mark.parametrize("shard", [ShardSpec(), ShardSpec(tp_size=2, tp_rank=1), ShardSpec(ep_size=2, ep_rank=1)],
                         ids=["full", "tp2r1", "ep2r1"])
def test_round_trip_exact_and_shapes(cfg, shard):
    logical = prepare_from_experts(random_layer(cfg, device="cpu", seed=3), config=cfg, shard=shard)
    lay = to_triton_layout(logical)
    e, rows13, hb = logical.w13.shape
    h_pad, i_pad = hb * 2, rows13 // 2
    assert lay.w13.shape == (e, h_pad // 2, 2 * i_pad) and lay.w13_scale.shape == (e, h_pad // 32, 2 * i_pad)
    assert lay.w2.shape == (e, i_pad // 2, h_pad) and lay.w2_scale.shape == (e, i_pad // 32, h_pad)
    assert (lay.padded_hidden, lay.padded_intermediate, lay.num_local_experts) == (h_pad, i_pad, e)
    assert all(t.is_contiguous() for t in (lay.w13, lay.w13_scale, lay.w2, lay.w2_scale))
    assert lay.expert_offset == logical.expert_offset and lay.num_experts_total == cfg.num_experts
    back = from_triton_layout(lay, shard=logical.shard)
    for f in ("w13", "w13_scale", "w13_bias", "w2", "w2_scale", "w2_bias"):
        a, b = getattr(back, f), getattr(logical, f)
        assert (a is None) == (b is None), f
        if a is not None:
            assert a.dtype == b.dtype and torch.equal(a, b), f
    assert dataclasses.astuple(back.shard) == dataclasses.astuple(logical.shard)
    assert lay.nbytes() == sum(t.numel() * t.element_size() for t in (
        logical.w13, logical.w13_scale, logical.w2, logical.w2_scale)) + sum(
        t.numel() * 2 for t in (logical.w13_bias, logical.w2_bias) if t is not None)


def test_byte_and_scale_positions():
    """Byte [e, kp, n] holds K elements 2kp (low nibble) and 2kp+1 (high) of row n; scale [e, kg, n]."""
    w, s = rand_u8(2, 48, 64, seed=1), rand_u8(2, 48, 4, seed=2, lo=118, hi=123)
    wt, st = weight_to_triton(w, s)
    assert wt.shape == (2, 64, 48) and st.shape == (2, 4, 48)
    for e, n, kp in [(0, 0, 0), (1, 47, 63), (1, 5, 17)]:
        assert wt[e, kp, n] == w[e, n, kp]
        assert st[e, kp * 2 // 32, n] == s[e, n, kp * 2 // 32]
    # dequantized: the Triton tile [K, N] is the transpose of the logical [N, K] rows
    ref = dequantize_mxfp4(w, s)  # [E, N, K]
    codes = torch.stack((wt & 15, wt >> 4), dim=2).flatten(1, 2)  # [E, K, N], row 2kp = low nibble
    vals = torch.tensor([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6])[codes.long()]
    scl = torch.ldexp(torch.ones(st.shape), st.int() - 127).repeat_interleave(32, dim=1)
    assert torch.equal(vals * scl, ref.transpose(1, 2))
    w2, s2 = weight_from_triton(wt, st)
    assert torch.equal(w2, w) and torch.equal(s2, s)


def test_bad_inputs_have_clear_errors():
    w, s = rand_u8(2, 48, 64), rand_u8(2, 48, 4)
    with pytest.raises(MXFormatError, match="w must be torch.uint8"):
        weight_to_triton(w.to(torch.int16), s)
    with pytest.raises(MXFormatError, match=r"w_scale has shape \(2, 48, 3\), expected \(2, 48, 4\)"):
        weight_to_triton(w, s[..., :3])
    with pytest.raises(MXFormatError, match="multiple of 32"):
        weight_to_triton(w[..., :8], s[..., :1])
    with pytest.raises(MXFormatError, match="3-D"):
        weight_to_triton(w[0], s[0])
    with pytest.raises(MXFormatError, match=r"triton \[E, K/32, N\]"):
        weight_from_triton(w.transpose(1, 2).contiguous(), s)  # logical scales given with triton weights
    # a malformed LogicalMoE never reaches to_triton_layout: it is refused when made (tests/test_moe_tensors.py)


def test_tune_rejects_a_fast_candidate_that_disagrees(monkeypatch):
    """tune() keeps the fastest candidate whose output agrees with the bucket's explicit-decode tile;
    a faster one that disagrees (a wrong decode) is dropped. Kernel and timer are stand-ins (no GPU)."""
    import types

    from mxfp4lab.backends import triton_w4a16 as T
    from mxfp4lab.kernels.tiles import DECODE_N32, DECODE_N64, DequantPath

    ptx = DequantPath.PTX
    table = {16: (DECODE_N64, DECODE_N32.with_path(ptx), DECODE_N64.with_path(ptx), DECODE_N32)}
    good = torch.ones(2, 8)
    outs = {table[16][0]: good, table[16][1]: -good, table[16][2]: good * (1 + 1e-4), table[16][3]: good}
    times = {table[16][0]: 3.0, table[16][1]: 1.0, table[16][2]: 2.0, table[16][3]: 2.5}

    fake = types.SimpleNamespace(fused_moe_w4a16=lambda x, ids, w, layout, config, **kw: outs[config])
    be = T.TritonW4A16.__new__(T.TritonW4A16)
    be._k, be.chosen, be.tune_log, be.swiglu = fake, {}, [], {}
    be.layout = types.SimpleNamespace(padded_hidden=256, padded_intermediate=256)
    monkeypatch.setattr(T, "TILE_TABLE", table)
    monkeypatch.setattr(T.TritonW4A16, "_can_tune", staticmethod(lambda x: True))
    timed_sets = []

    def fake_time(fn, sets):
        timed_sets.append(sets)
        return times[fn.keywords["config"]]

    monkeypatch.setattr(T, "_time_us", fake_time)
    be.moe = types.SimpleNamespace(expert_offset=0, num_local_experts=8)
    ids = torch.tensor([[0, 1], [2, 3], [4, 5]], dtype=torch.int32)
    be.tune(torch.zeros(3, 8), ids, torch.ones(3, 2))
    assert be.chosen[16] == table[16][2]
    # every timed candidate over the given set and 3 with its ids under permutations of the experts
    assert timed_sets and all(len(s) == 4 and s[0][1] is ids for s in timed_sets)
    assert any("rejected" in line and str(tuple(table[16][1].as_list())) in line for line in be.tune_log)
