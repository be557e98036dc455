"""Checkpoint -> logical MoE tensors (and the SM90 layout derived from them): each step, both models,
TP/EP shards, bad inputs."""

import pytest
import torch
from conftest import DSV4_SMALL, GPT_OSS_SMALL, tokens

from mxfp4lab import prepare as P
from mxfp4lab.backends import get_backend
from mxfp4lab.formats import MXFormatError
from mxfp4lab.layout import fold_scales_sm90, from_sm90, interleave_weights_sm90, to_sm90
from mxfp4lab.moe_tensors import (
    LogicalMoE,
    ShardSpec,
    merge_gate_up_rows,
    split_gate_up_rows,
    stack_up_gate,
    unstack_up_gate,
)
from mxfp4lab.reference import (
    expert_weights_from_dsv4,
    expert_weights_from_gpt_oss,
    expert_weights_from_logical,
    moe_reference,
)


def direct_weights(cfg, ex, dtype=torch.float32):
    f = expert_weights_from_gpt_oss if cfg.checkpoint_format == "gpt_oss" else expert_weights_from_dsv4
    return f(ex, dtype)


def test_prepared_shapes_and_dtypes(small_layer):
    cfg, ex = small_layer
    p = P.prepare_from_experts(ex, config=cfg)
    assert isinstance(p, LogicalMoE)
    e, hp, ip = cfg.num_experts, P.round_up(cfg.hidden_size), P.round_up(cfg.intermediate_size)
    assert (p.padded_hidden, p.padded_intermediate) == (hp, ip)
    assert p.w13.shape == (e, 2 * ip, hp // 2) and p.w13.dtype == torch.uint8
    assert p.w2.shape == (e, hp, ip // 2)
    assert p.w13_scale.shape == (e, 2 * ip, hp // 32) and p.w13_scale.dtype == torch.uint8
    assert p.w2_scale.shape == (e, hp, ip // 32)
    sm = to_sm90(p)
    assert sm.w13_scale.shape == (e, 2 * ip // 64, hp // 128, 16, 16) and sm.w13_scale.dtype == torch.uint8
    assert sm.w2_scale.shape == (e, hp // 64, ip // 128, 16, 16)
    q = sm.quant_scales()
    assert q[0].dtype == torch.int32 and q[0].shape == (e, 2 * ip // 64, hp // 128, 16, 4)
    for n in ("swiglu_alpha", "swiglu_beta", "swiglu_limit"):
        t = getattr(p, n)
        assert t.dtype == torch.float32 and t.shape == (e,)
    assert torch.equal(p.swiglu_alpha, torch.full((e,), cfg.swiglu_alpha))
    if cfg.has_bias:
        assert p.w13_bias.shape == (e, 2 * ip) and p.w13_bias.dtype == torch.bfloat16
        assert p.w2_bias.shape == (e, hp)
    else:
        assert p.w13_bias is None and p.w2_bias is None


def test_sm90_is_interleave_and_fold_of_logical_with_exact_inverse(small_layer):
    cfg, ex = small_layer
    lg = P.prepare_from_experts(ex, config=cfg)
    ph = to_sm90(lg)
    assert torch.equal(ph.w13, interleave_weights_sm90(lg.w13))
    assert torch.equal(ph.w2, interleave_weights_sm90(lg.w2))
    assert torch.equal(ph.w13_scale, fold_scales_sm90(lg.w13_scale))
    back = from_sm90(ph)
    for n in ("w13", "w13_scale", "w13_bias", "w2", "w2_scale", "w2_bias", "swiglu_alpha", "swiglu_beta",
              "swiglu_limit"):
        a, b = getattr(back, n), getattr(lg, n)
        assert (a is None and b is None) or torch.equal(a, b), n
    assert (back.hidden_size, back.intermediate_size, back.num_experts_total, back.expert_offset, back.shard) == (
        lg.hidden_size, lg.intermediate_size, lg.num_experts_total, lg.expert_offset, lg.shard)


def test_up_gate_order_and_zero_padding(small_layer):
    cfg, ex = small_layer
    lg = P.prepare_from_experts(ex, config=cfg)
    i, ip, h = cfg.intermediate_size, lg.padded_intermediate, cfg.hidden_size
    if cfg.checkpoint_format == "gpt_oss":
        gate_ck, up_ck = ex.gate_up_blocks.flatten(2)[:, 0::2], ex.gate_up_blocks.flatten(2)[:, 1::2]
    else:
        gate_ck, up_ck = ex.w1, ex.w3
    assert torch.equal(lg.w13[:, :i, : h // 2], up_ck)  # first half = up (w3)
    assert torch.equal(lg.w13[:, ip : ip + i, : h // 2], gate_ck)  # second half = gate (w1)
    # padding is zero bytes in weights, scales and biases
    assert lg.w13[:, i:ip].eq(0).all() and lg.w13[:, :, h // 2 :].eq(0).all()
    assert lg.w13_scale[:, :, h // 32 :].eq(0).all() and lg.w2[:, h:].eq(0).all()
    if lg.w13_bias is not None:
        assert lg.w13_bias[:, i:ip].eq(0).all() and lg.w2_bias[:, h:].eq(0).all()


def test_gate_up_split_merge_inverse():
    t = torch.arange(2 * 3 * 10).reshape(2, 10, 3)
    g, u = split_gate_up_rows(t)
    assert torch.equal(g[:, 1], t[:, 2]) and torch.equal(u[:, 1], t[:, 3])
    assert torch.equal(merge_gate_up_rows(g, u), t)
    up, gate = unstack_up_gate(stack_up_gate(u, g))
    assert torch.equal(up, u) and torch.equal(gate, g)


@pytest.mark.parametrize("mode", ["fp32", "kernel"])
def test_emulated_equals_reference_bit_exact(small_layer, mode):
    """checkpoint -> logical (reordered, padded) -> emulated == reference on the checkpoint."""
    cfg, ex = small_layer
    p = P.prepare_from_experts(ex, config=cfg)
    direct = direct_weights(cfg, ex)
    emul_w = expert_weights_from_logical(p)
    for n in ("w_gate", "w_up", "w_down", "b_gate", "b_up", "b_down"):
        a, b = getattr(direct, n), getattr(emul_w, n)
        assert (a is None and b is None) or torch.equal(a, b), n
    x, ids, w = tokens(cfg)
    ref = moe_reference(x, ids, w, direct, mode=mode, **cfg.swiglu_kwargs)
    be = get_backend("emulated_sm90")(p, cfg, mode=mode)
    out = be.forward(x, ids, w)  # experts only
    assert torch.equal(out, ref.to(torch.bfloat16))
    # routed scaling (DeepSeek-V4: 1.5) is applied outside the experts, on the bf16 output
    scaled = (out.float() * cfg.routed_scaling_factor).to(torch.bfloat16)
    assert torch.equal(be(x, ids, w), scaled if cfg.routed_scaling_factor != 1 else out)


@pytest.mark.parametrize("tp", [2, 3])
def test_tp_shards_sum_to_unsharded(small_layer, tp):
    cfg, ex = small_layer
    x, ids, w = tokens(cfg, seed=tp)
    full = moe_reference(x, ids, w, direct_weights(cfg, ex, torch.float64), dtype=torch.float64, **cfg.swiglu_kwargs)
    total = torch.zeros_like(full)
    for r in range(tp):
        p = P.prepare_from_experts(ex, config=cfg, shard=ShardSpec(tp_size=tp, tp_rank=r))
        assert p.intermediate_size == cfg.intermediate_size // tp
        assert p.padded_intermediate == P.round_up(cfg.intermediate_size // tp)
        part = moe_reference(x, ids, w, expert_weights_from_logical(p, torch.float64), dtype=torch.float64,
                             **cfg.swiglu_kwargs)
        total += part
    # fp64 sums in a different order: agreement to ~1e-15 relative; 1e-12 leaves room, a wrong shard is O(1)
    assert ((total - full).norm() / full.norm()).item() < 1e-12


@pytest.mark.parametrize("tp,sizes", [(4, [64, 64, 64]), (5, [64, 64, 64])])
def test_uneven_tp_shards_cut_whole_scale_blocks(small_layer, tp, sizes):
    """192 = 6 scale blocks: TP=4 and TP=5 give ceil(6/tp) = 2 blocks per rank and leave the last ranks empty;
    the ranks that hold columns cover I exactly, each padded on its own, and their outputs sum to the layer."""
    cfg, ex = small_layer
    x, ids, w = tokens(cfg, seed=20 + tp)
    full = moe_reference(x, ids, w, direct_weights(cfg, ex, torch.float64), dtype=torch.float64, **cfg.swiglu_kwargs)
    total, got = torch.zeros_like(full), []
    for r in range(len(sizes)):
        p = P.prepare_from_experts(ex, config=cfg, shard=ShardSpec(tp_size=tp, tp_rank=r))
        got.append(p.intermediate_size)
        assert p.padded_intermediate == P.round_up(p.intermediate_size)
        total += moe_reference(x, ids, w, expert_weights_from_logical(p, torch.float64), dtype=torch.float64,
                               **cfg.swiglu_kwargs)
    assert got == sizes
    # fp64, different summation order; a wrong cut (a split scale block, a lost column) is O(1)
    assert ((total - full).norm() / full.norm()).item() < 1e-12


@pytest.mark.parametrize("ep", [2, 3])
def test_ep_shards_sum_to_unsharded(small_layer, ep):
    cfg, ex = small_layer
    x, ids, w = tokens(cfg, seed=10 + ep)
    full = moe_reference(x, ids, w, direct_weights(cfg, ex, torch.float64), dtype=torch.float64, **cfg.swiglu_kwargs)
    total = torch.zeros_like(full)
    per = cfg.num_experts // ep
    for r in range(ep):
        p = P.prepare_from_experts(ex, config=cfg, shard=ShardSpec(ep_size=ep, ep_rank=r))
        assert p.num_local_experts == per and p.expert_offset == r * per
        total += moe_reference(x, ids, w, expert_weights_from_logical(p, torch.float64), dtype=torch.float64,
                               **cfg.swiglu_kwargs)
    # fp64, different summation grouping over the k experts of a token
    assert ((total - full).norm() / full.norm()).item() < 1e-12


def test_tp_rank_nonzero_drops_fc2_bias():
    cfg = GPT_OSS_SMALL
    e, h, i = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size
    args = _gpt_oss_zero_args(e, h, i)
    args["down_bias"] = torch.ones(e, h, dtype=torch.bfloat16)
    p1 = P.prepare_gpt_oss(**args, config=cfg, shard=ShardSpec(tp_size=2, tp_rank=1))
    p0 = P.prepare_gpt_oss(**args, config=cfg, shard=ShardSpec(tp_size=2, tp_rank=0))
    assert p1.w2_bias.eq(0).all() and p0.w2_bias[:, :h].eq(1).all()


def _gpt_oss_zero_args(e, h, i):
    return dict(
        gate_up_blocks=torch.zeros(e, 2 * i, h // 32, 16, dtype=torch.uint8),
        gate_up_scales=torch.full((e, 2 * i, h // 32), 127, dtype=torch.uint8),
        gate_up_bias=torch.zeros(e, 2 * i, dtype=torch.bfloat16),
        down_blocks=torch.zeros(e, h, i // 32, 16, dtype=torch.uint8),
        down_scales=torch.full((e, h, i // 32), 127, dtype=torch.uint8),
        down_bias=torch.zeros(e, h, dtype=torch.bfloat16),
    )


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: a.update(gate_up_scales=a["gate_up_scales"].to(torch.int8)), "gate_up_proj_scales must be torch.uint8"),
        (lambda a: a.update(down_scales=a["down_scales"][:, :, :-1]), "down_proj_scales has shape"),
        (lambda a: a.update(gate_up_bias=a["gate_up_bias"].float()), "gate_up_proj_bias must be torch.bfloat16"),
        (lambda a: a["down_scales"].view(-1)[5].fill_(255), "down_proj_scales holds E8M0 byte 255"),
        (lambda a: a.update(gate_up_blocks=a["gate_up_blocks"][:, :-1]), "must be even"),
    ],
)
def test_gpt_oss_bad_inputs(mutate, match):
    cfg = GPT_OSS_SMALL
    args = _gpt_oss_zero_args(cfg.num_experts, cfg.hidden_size, cfg.intermediate_size)
    mutate(args)
    with pytest.raises(MXFormatError, match=match):
        P.prepare_gpt_oss(**args, config=cfg)


def test_expert_count_mismatch_names_both():
    cfg = GPT_OSS_SMALL
    args = _gpt_oss_zero_args(cfg.num_experts + 2, cfg.hidden_size, cfg.intermediate_size)
    with pytest.raises(MXFormatError, match=r"num_experts: tensors say 8, config .* says 6"):
        P.prepare_gpt_oss(**args, config=cfg)


def test_bad_shards():
    cfg = GPT_OSS_SMALL
    args = _gpt_oss_zero_args(cfg.num_experts, cfg.hidden_size, cfg.intermediate_size)
    # 192 = 6 scale blocks; TP=4 takes 2 blocks per rank, so rank 3 would hold nothing
    assert P.prepare_gpt_oss(**args, shard=ShardSpec(tp_size=4, tp_rank=2)).intermediate_size == 64
    with pytest.raises(MXFormatError, match="tp_rank 3 of 4 would hold no column"):
        P.prepare_gpt_oss(**args, shard=ShardSpec(tp_size=4, tp_rank=3))
    with pytest.raises(MXFormatError, match="num_experts = 6 is not divisible by 4"):
        P.prepare_gpt_oss(**args, shard=ShardSpec(ep_size=4))
    with pytest.raises(ValueError, match="tp_rank"):
        ShardSpec(tp_size=2, tp_rank=2)


def test_dsv4_bad_inputs():
    cfg = DSV4_SMALL
    e, h, i = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size
    w = lambda *s: torch.zeros(*s, dtype=torch.uint8)  # noqa: E731
    ok = dict(w1=w(e, i, h // 2), w1_scale=w(e, i, h // 32), w3=w(e, i, h // 2), w3_scale=w(e, i, h // 32),
              w2=w(e, h, i // 2), w2_scale=w(e, h, i // 32))
    P.prepare_dsv4(**ok, config=cfg)
    with pytest.raises(MXFormatError, match="w3.weight has shape"):
        P.prepare_dsv4(**{**ok, "w3": w(e, i + 32, h // 2)}, config=cfg)
    bad = w(e, h, i // 32)
    bad[0, 0, 0] = 255
    with pytest.raises(MXFormatError, match="w2.scale holds E8M0 byte 255"):
        P.prepare_dsv4(**{**ok, "w2_scale": bad}, config=cfg)
    if hasattr(torch, "float8_e8m0fnu"):  # scales stored as float8_e8m0fnu are accepted
        P.prepare_dsv4(**{**ok, "w1_scale": ok["w1_scale"].view(torch.float8_e8m0fnu)}, config=cfg)


def test_trace_fc1_row():
    cfg = GPT_OSS_SMALL
    ip = P.round_up(cfg.intermediate_size)
    assert P.trace_fc1_row(7, cfg) == {"half": "up", "j": 3, "w13_row": 3, "padded_rows": 2 * ip}
    assert P.trace_fc1_row(6, cfg)["w13_row"] == ip + 3
    assert P.trace_fc1_row(5, DSV4_SMALL, "w1")["w13_row"] == P.round_up(DSV4_SMALL.intermediate_size) + 5
