"""MoEConfig instances against FACTS.md, size helpers, scaled copies, registry."""

import dataclasses

import pytest

from mxfp4lab.models import (
    DSV4_FLASH,
    DSV4_PRO,
    GPT_OSS_20B,
    GPT_OSS_120B,
    MODELS,
    SEED_BENCH,
    MoEConfig,
    get_model,
    round_up,
)

H100_BYTES_PER_S = 3.0e12  # FACTS "Roofline floor"


@pytest.mark.parametrize(
    "cfg, h, i, e, k, layers",
    [
        (GPT_OSS_20B, 2880, 2880, 32, 4, 24),
        (GPT_OSS_120B, 2880, 2880, 128, 4, 36),
        (DSV4_FLASH, 4096, 2048, 256, 6, 43),
        (DSV4_PRO, 7168, 3072, 384, 6, None),
        (SEED_BENCH, 4096, 2048, 256, 6, 1),
    ],
)
def test_shapes_match_facts(cfg, h, i, e, k, layers):
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_experts, cfg.top_k, cfg.num_layers) == (
        h,
        i,
        e,
        k,
        layers,
    )


def test_gpt_oss_numerics():
    for cfg in (GPT_OSS_20B, GPT_OSS_120B):
        assert (cfg.swiglu_alpha, cfg.swiglu_beta, cfg.swiglu_limit) == (1.702, 1.0, 7.0)
        assert cfg.routing == "softmax_topk" and cfg.routed_scaling_factor == 1.0
        assert cfg.has_bias and cfg.checkpoint_format == "gpt_oss"
        assert cfg.n_shared_experts == 0 and cfg.n_hash_layers == 0


def test_dsv4_numerics():
    for cfg in (DSV4_FLASH, DSV4_PRO, SEED_BENCH):
        assert (cfg.swiglu_alpha, cfg.swiglu_beta, cfg.swiglu_limit) == (1.0, 0.0, 10.0)
        assert cfg.routing == "sqrtsoftplus_noaux" and cfg.routed_scaling_factor == 1.5
        assert not cfg.has_bias and cfg.checkpoint_format == "dsv4" and cfg.n_shared_experts == 1
    assert DSV4_FLASH.n_hash_layers == 3
    assert [DSV4_FLASH.is_hash_layer(x) for x in range(5)] == [True, True, True, False, False]


def test_padding():
    assert round_up(2880, 128) == 2944 and round_up(128, 128) == 128
    assert (GPT_OSS_20B.padded_hidden, GPT_OSS_20B.padded_intermediate) == (2944, 2944)
    assert (DSV4_FLASH.padded_hidden, DSV4_FLASH.padded_intermediate) == (4096, 2048)
    assert (DSV4_PRO.padded_hidden, DSV4_PRO.padded_intermediate) == (7168, 3072)


def test_weight_bytes_are_4_25_bits_per_param():
    cfg = GPT_OSS_120B
    params = 3 * 2880 * 2880
    assert cfg.params_per_expert() == params
    assert cfg.weight_bytes_per_expert() * 8 == params * 4.25
    assert cfg.weight_bytes_per_expert(padded=True) * 8 == 3 * 2944 * 2944 * 4.25
    assert cfg.bias_bytes_per_expert() == (2 * 2880 + 2880) * 2
    assert DSV4_FLASH.bias_bytes_per_expert() == 0
    assert DSV4_FLASH.weight_bytes_per_layer() == 256 * 3 * 4096 * 2048 * 17 // 32


@pytest.mark.parametrize(
    "cfg, m, floor_us",
    [
        (GPT_OSS_20B, 1, 18),
        (GPT_OSS_20B, 64, 148),
        (GPT_OSS_120B, 256, 590),
        (DSV4_FLASH, 1, 27),
        (DSV4_FLASH, 64, 891),
        (SEED_BENCH, 16, 360),
    ],
)
def test_roofline_bytes_reproduce_facts_table(cfg, m, floor_us):
    # FACTS' table counts weights only; biases add < 0.2 %.
    us = cfg.active_weight_bytes(m) / H100_BYTES_PER_S * 1e6
    assert us == pytest.approx(floor_us, rel=0.01, abs=1.0)


def test_expected_active_experts_limits():
    assert DSV4_FLASH.expected_active_experts(0) == 0
    assert DSV4_FLASH.expected_active_experts(1) == pytest.approx(6)
    assert DSV4_FLASH.expected_active_experts(100000) == pytest.approx(256)
    assert DSV4_FLASH.flops(10) == 2 * 10 * 6 * 3 * 4096 * 2048


def test_scaled_copy():
    small = GPT_OSS_120B.scaled(hidden=64, intermediate=96, experts=8)
    assert small.name.startswith("gpt-oss-120b") and small.name != GPT_OSS_120B.name
    assert (small.hidden_size, small.intermediate_size, small.num_experts, small.top_k) == (64, 96, 8, 4)
    assert small.swiglu_alpha == 1.702 and small.has_bias and small.checkpoint_format == "gpt_oss"
    assert DSV4_FLASH.scaled(experts=4).top_k == 4  # clamped to E
    assert DSV4_FLASH.scaled(experts=8, top_k=2).top_k == 2
    assert DSV4_FLASH.scaled(experts=8).n_hash_layers == 3
    assert GPT_OSS_20B.scaled() == dataclasses.replace(GPT_OSS_20B, name=GPT_OSS_20B.scaled().name)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        GPT_OSS_20B.num_experts = 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden": 48}, "hidden_size = 48 must be a multiple of 32"),
        ({"intermediate": 0}, "intermediate_size must be a positive int"),
        ({"experts": 4, "top_k": 5}, "top_k = 5 exceeds num_experts = 4"),
    ],
)
def test_scaled_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPT_OSS_20B.scaled(**kwargs)


def test_bad_routing_and_format():
    with pytest.raises(ValueError, match="routing must be one of"):
        dataclasses.replace(GPT_OSS_20B, routing="sigmoid")
    with pytest.raises(ValueError, match="checkpoint_format must be one of"):
        dataclasses.replace(GPT_OSS_20B, checkpoint_format="gguf")
    with pytest.raises(ValueError, match="swiglu_limit"):
        dataclasses.replace(GPT_OSS_20B, swiglu_limit=0.0)


def test_registry():
    assert set(MODELS) == {"gpt-oss-20b", "gpt-oss-120b", "dsv4-flash", "dsv4-pro", "seed-bench"}
    for name, cfg in MODELS.items():
        assert get_model(name) is cfg and isinstance(cfg, MoEConfig)
    with pytest.raises(KeyError) as info:
        get_model("gpt-oss-7b")
    msg = str(info.value)
    assert "gpt-oss-7b" in msg
    for name in MODELS:
        assert name in msg
