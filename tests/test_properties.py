"""Property tests (hypothesis): round trips hold for every valid input, and nothing is silently NaN --
every public path either returns finite values or raises an InputError naming the input and the rule."""

import math

import pytest
import torch
from conftest import GPT_OSS_SMALL
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mxfp4lab.backends import make_backend
from mxfp4lab.formats import (
    MX_BLOCK_SIZE,
    ScaleRule,
    dequantize_mxfp4,
    mx_block_error_bound,
    pack_fp4,
    quantize_mxfp4,
    unpack_fp4,
)
from mxfp4lab.layout.sm90_moe import from_sm90, to_sm90
from mxfp4lab.prepare import prepare_from_experts
from mxfp4lab.reference import expert_weights_from_logical, moe_reference, relative_error
from mxfp4lab.synthetic import random_layer
from mxfp4lab.validate import InputError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RULES = st.sampled_from(list(ScaleRule))
FP32_MAX = torch.finfo(torch.float32).max


def finite_floats(max_abs: float = FP32_MAX):
    m = float(torch.tensor(max_abs, dtype=torch.float32))  # exactly representable in fp32
    return st.floats(min_value=-m, max_value=m, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def blocks(draw, max_abs=FP32_MAX):
    """[rows, K] fp32 with K a multiple of 32: values from every binade (subnormals to the fp32 maximum),
    zeros, and blocks scaled as a whole."""
    rows = draw(st.integers(1, 3))
    nblk = draw(st.integers(1, 3))
    vals = draw(st.lists(finite_floats(max_abs), min_size=rows * nblk * 32, max_size=rows * nblk * 32))
    return torch.tensor(vals, dtype=torch.float32).reshape(rows, nblk * MX_BLOCK_SIZE)


@FAST
@given(x=blocks(), rule=RULES, as_bf16=st.booleans())
def test_quantize_round_trip_is_finite_and_within_the_bound(x, rule, as_bf16):
    """quantize -> dequantize: finite for every finite input (also at the fp32 / bf16 maximum), and each
    element within the rule's per-block error bound."""
    if as_bf16:  # (fp32 values past the bf16 maximum would round to inf: clamp first)
        bf_max = torch.finfo(torch.bfloat16).max
        x = x.clamp(-bf_max, bf_max).to(torch.bfloat16)
    packed, scales = quantize_mxfp4(x, scale_rule=rule)
    y = dequantize_mxfp4(packed, scales, torch.float64)
    assert torch.isfinite(y).all() and torch.isfinite(dequantize_mxfp4(packed, scales, x.dtype)).all()
    xd = x.double().reshape(x.shape[0], -1, MX_BLOCK_SIZE)
    err = (y.reshape(xd.shape) - xd).abs().amax(-1)
    assert (err <= mx_block_error_bound(xd.abs().amax(-1).float(), rule)).all()


@FAST
@given(codes=st.lists(st.integers(0, 15), min_size=2, max_size=64).filter(lambda v: len(v) % 2 == 0))
def test_pack_unpack_round_trip(codes):
    c = torch.tensor(codes, dtype=torch.uint8)
    assert torch.equal(unpack_fp4(pack_fp4(c)), c)


@FAST
@given(data=st.data(), rule=RULES)
def test_dequantized_values_requantize_to_themselves(data, rule):
    """Values MXFP4 can represent survive a second quantization unchanged (scale bytes 1..250: code *
    2**(byte - 127) then fits every rule's exponent range)."""
    nblk = data.draw(st.integers(1, 3))
    codes = torch.tensor(data.draw(st.lists(st.integers(0, 15), min_size=32 * nblk, max_size=32 * nblk)),
                         dtype=torch.uint8).reshape(1, -1)
    scales = torch.tensor([data.draw(st.lists(st.integers(1, 250), min_size=nblk, max_size=nblk))], dtype=torch.uint8)
    v = dequantize_mxfp4(pack_fp4(codes), scales)
    p2, s2 = quantize_mxfp4(v, scale_rule=rule)
    assert torch.equal(dequantize_mxfp4(p2, s2), v)


# --------------------------------------------------------------------------------------------
# Layers: the SM90 layout round trip, and the forward never silently NaN
# --------------------------------------------------------------------------------------------
G = GPT_OSS_SMALL
MOE = prepare_from_experts(random_layer(G, device="cpu", seed=11), config=G)
EW = expert_weights_from_logical(MOE)
BACKENDS = {n: make_backend(n, MOE, G) for n in ("emulated_sm90", "torch_naive")}


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), tp=st.sampled_from([1, 2, 3]))
def test_sm90_layout_round_trip_is_bit_exact(seed, tp):
    rank = seed % tp
    from mxfp4lab.moe_tensors import ShardSpec

    lg = prepare_from_experts(random_layer(G, device="cpu", seed=seed), config=G,
                              shard=ShardSpec(tp_size=tp, tp_rank=rank))
    back = from_sm90(to_sm90(lg))
    for f in ("w13", "w13_scale", "w13_bias", "w2", "w2_scale", "w2_bias"):
        assert torch.equal(getattr(back, f), getattr(lg, f)), f


SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def routed_inputs(draw):
    """(x, ids, weights): finite or poisoned x / weights, ids in or out of [0, E), magnitudes up to the
    bf16 maximum (where the arithmetic overflows)."""
    m = draw(st.integers(1, 4))
    k = draw(st.integers(1, 3))
    scale = draw(st.sampled_from([1.0, 1e3, 1e20, 3e38]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = (torch.randn(m, G.hidden_size, generator=g) * scale).clamp(-3e38, 3e38).to(torch.bfloat16)
    ids = torch.randint(0, G.num_experts, (m, k), generator=g, dtype=torch.int32)
    w = torch.rand(m, k, generator=g)
    if draw(st.booleans()):
        x[draw(st.integers(0, m - 1)), draw(st.integers(0, G.hidden_size - 1))] = draw(SPECIAL)
    if draw(st.booleans()):
        w[draw(st.integers(0, m - 1)), draw(st.integers(0, k - 1))] = draw(SPECIAL)
    if draw(st.booleans()):
        ids[draw(st.integers(0, m - 1)), draw(st.integers(0, k - 1))] = draw(
            st.sampled_from([-1, G.num_experts, 2**31 - 1]))
    return x, ids, w


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inp=routed_inputs(), which=st.sampled_from(["emulated_sm90", "torch_naive", "fp32", "kernel"]))
def test_forward_is_finite_or_refuses(inp, which):
    x, ids, w = inp
    try:
        if which in ("fp32", "kernel"):
            y = moe_reference(x, ids, w, EW, mode=which, **MOE.swiglu_kwargs())
        else:
            y = BACKENDS[which](x, ids, w)
    except InputError as exc:
        msg = str(exc)
        assert any(n in msg for n in ("x holds", "topk_weights holds", "topk_ids must", "output holds")), msg
        return
    assert torch.isfinite(y).all()
    inputs_ok = torch.isfinite(x).all() and torch.isfinite(w).all() and ((ids >= 0) & (ids < G.num_experts)).all()
    assert inputs_ok  # a bad input never comes back as a result


@settings(max_examples=30, deadline=None)
@given(a=st.lists(finite_floats(1e30), min_size=1, max_size=8), poison=st.one_of(st.none(), SPECIAL),
       where=st.booleans())
def test_relative_error_is_finite_or_inf_never_nan(a, poison, where):
    out = torch.tensor(a)
    ref = out.flip(0).clone()
    if poison is not None:
        (out if where else ref)[0] = poison
    e = relative_error(out, ref)
    assert not math.isnan(e)
    assert (e == math.inf) == (poison is not None)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backends_agree_with_the_reference_on_valid_input(name):
    """The checks change no result: a valid call gives the reference's value (bf16 kernel-faithful)."""
    from conftest import tokens

    x, ids, w = tokens(G, m=6, seed=3)
    ref = moe_reference(x, ids, w, EW, mode="kernel", **MOE.swiglu_kwargs())
    assume(torch.isfinite(ref).all())
    # bf16 stores at the kernel's rounding points; torch_naive rounds elsewhere (a few bf16 ulps)
    assert relative_error(BACKENDS[name](x, ids, w), ref) < 2e-2
