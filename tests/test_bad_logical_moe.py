"""Bad inputs of the data model (mxfp4lab.moe_tensors): ShardSpec, LogicalMoE (made, replaced, altered),
LogicalMoE.check_config (a config that contradicts the tensors)."""

import dataclasses

import pytest
import torch
from bad_inputs import Bad, check, ids
from conftest import GPT_OSS_SMALL

from mxfp4lab.formats import MXFormatError
from mxfp4lab.models import DSV4_FLASH
from mxfp4lab.moe_tensors import ShardSpec
from mxfp4lab.prepare import prepare_from_experts
from mxfp4lab.synthetic import random_layer
from mxfp4lab.validate import InputError

G = GPT_OSS_SMALL
LG = prepare_from_experts(random_layer(G, device="cpu", seed=0), config=G)
E = LG.num_local_experts


def rep(**kw):
    return lambda: dataclasses.replace(LG, **kw)


def with_value(name, idx, value):
    t = getattr(LG, name).clone()
    t[idx] = value
    return rep(**{name: t})


def tampered(spec: ShardSpec, field: str, value) -> ShardSpec:
    """``spec`` with a field set behind the frozen dataclass's back (``object.__setattr__``)."""
    object.__setattr__(spec, field, value)
    return spec


def altered(field, value):
    """A LogicalMoE field set behind the frozen dataclass's back, then re-checked (what a backend does)."""
    def call():
        lg = dataclasses.replace(LG)
        object.__setattr__(lg, field, value)
        lg.check()
    return call


SHARD_SPEC = [
    Bad("tp_rank out of range", lambda: ShardSpec(tp_size=2, tp_rank=2), ValueError, ["tp_rank = 2", "[0, tp_size = 2)"]),
    Bad("negative ep_rank", lambda: ShardSpec(ep_size=2, ep_rank=-1), ValueError, ["ep_rank = -1"]),
    Bad("size 0", lambda: ShardSpec(tp_size=0), ValueError, ["tp_size = 0"]),
    Bad("float size", lambda: ShardSpec(tp_size=2.0), TypeError, ["tp_size", "ints"]),
    Bad("bool rank", lambda: ShardSpec(tp_size=2, tp_rank=True), TypeError, ["ints", "True"]),
    Bad("mutation refused", lambda: setattr(ShardSpec(), "tp_rank", 5), dataclasses.FrozenInstanceError, ["tp_rank"]),
    Bad("mutation behind its back re-checked", lambda: tampered(ShardSpec(tp_size=2), "tp_rank", 5).check(),
        ValueError, ["tp_rank = 5"]),
]

LOGICAL_MOE = [
    Bad("frozen", lambda: setattr(LG, "expert_offset", 5), dataclasses.FrozenInstanceError, ["expert_offset"]),
    Bad("no experts", rep(w13=LG.w13[:0], w13_scale=LG.w13_scale[:0], w13_bias=LG.w13_bias[:0], w2=LG.w2[:0],
                          w2_scale=LG.w2_scale[:0], w2_bias=LG.w2_bias[:0], swiglu_alpha=None, swiglu_beta=None,
                          swiglu_limit=None), MXFormatError, ["no experts", ">= 1"]),
    Bad("w13 2-D", rep(w13=LG.w13[0]), MXFormatError, ["w13 must be 3-D"]),
    Bad("NaN w13_bias", with_value("w13_bias", (1, 3), float("nan")), InputError, ["w13_bias", "NaN or inf", "(1, 3)"]),
    Bad("inf w2_bias", with_value("w2_bias", (0, 0), float("inf")), InputError, ["w2_bias", "NaN or inf"]),
    Bad("NaN swiglu_alpha", with_value("swiglu_alpha", 2, float("nan")), InputError, ["swiglu_alpha", "(2,)"]),
    Bad("limit 0", with_value("swiglu_limit", 0, 0.0), InputError, ["swiglu_limit", "> 0"]),
    Bad("limit fp64", rep(swiglu_limit=LG.swiglu_limit.double()), MXFormatError, ["swiglu_limit must be torch.float32"]),
    Bad("hidden_size float", rep(hidden_size=224.0), TypeError, ["hidden_size", "int"]),
    Bad("hidden past padding", rep(hidden_size=LG.padded_hidden + 1), MXFormatError, ["hidden_size", "H_pad"]),
    Bad("experts outside the layer", rep(expert_offset=1), MXFormatError, ["experts [1, 7)", "6 experts"]),
    Bad("EP shard contradicts offset", rep(shard=ShardSpec(ep_size=2, ep_rank=1), num_experts_total=2 * E),
        MXFormatError, ["holds experts [6, 12)", "expert_offset = 0"]),
    Bad("fc2 bias on TP rank 1", rep(shard=ShardSpec(tp_size=2, tp_rank=1)), MXFormatError,
        ["w2_bias must be zero on TP rank 1"]),
    Bad("shard not a ShardSpec", rep(shard=(1, 0)), TypeError, ["ShardSpec"]),
    Bad("shard altered behind its back", altered("shard", tampered(ShardSpec(), "ep_rank", 3)), ValueError,
        ["ep_rank = 3"]),
    Bad("offset altered behind its back", altered("expert_offset", 3), MXFormatError, ["not inside"]),
]

DSV4_LIKE = dataclasses.replace(DSV4_FLASH, name="dsv4-like", hidden_size=G.hidden_size,
                                intermediate_size=G.intermediate_size, num_experts=G.num_experts, top_k=2)
CHECK_CONFIG = [
    Bad("another model's shapes", lambda: LG.check_config(DSV4_FLASH), MXFormatError,
        ["'dsv4-flash' contradicts", "hidden_size: tensors say 224, config says 4096", "num_experts"]),
    Bad("same shapes, other SwiGLU", lambda: LG.check_config(DSV4_LIKE), MXFormatError,
        ["swiglu_alpha: tensors say [1.7020000219345093], config says 1.0", "swiglu_limit"]),
    Bad("no clamp in the tensors, config clamps", lambda: dataclasses.replace(LG, swiglu_limit=None).check_config(G),
        MXFormatError, ["swiglu_limit: tensors say None, config says 7.0"]),
    Bad("config a string", lambda: LG.check_config("gpt-oss-20b"), TypeError, ["MoEConfig"]),
    Bad("a TP shard, a config of another I",
        lambda: prepare_from_experts(random_layer(G, device="cpu", seed=0), config=G,
                                     shard=ShardSpec(tp_size=2, tp_rank=1)).check_config(
            dataclasses.replace(G, intermediate_size=256)),
        MXFormatError, ["intermediate_size: tensors say 96 on TP rank 1 of 2, config says 256",
                        "this rank's slice: 128"]),
]


@pytest.mark.parametrize("row", SHARD_SPEC + LOGICAL_MOE + CHECK_CONFIG, ids=ids)
def test_bad_input(row):
    check(row)


def test_matching_configs_pass():
    LG.check_config(G)
    LG.check_config(None)
    # TP cuts whole 32-column scale blocks: I = 160 (5 blocks) over 2 ranks is 96 + 64, each its config's slice
    g5 = G.scaled(intermediate=160)
    layer = random_layer(g5, device="cpu", seed=0)
    for r, i in ((0, 96), (1, 64)):
        shard = prepare_from_experts(layer, config=g5, shard=ShardSpec(tp_size=2, tp_rank=r))
        assert shard.intermediate_size == i
        shard.check_config(g5)
    neutral = dataclasses.replace(LG, swiglu_alpha=None, swiglu_beta=None, swiglu_limit=None)
    neutral.check_config(dataclasses.replace(G, swiglu_alpha=1.0, swiglu_beta=0.0, swiglu_limit=None))
    assert torch.equal(dataclasses.replace(LG).w13, LG.w13)
