"""Bad inputs of the preparation (mxfp4lab.prepare): prepare_gpt_oss, prepare_dsv4, prepare_from_experts.

The silent-result cases come first: H or I not multiples of 32 (elements past the last full block would
take the padding's scale 2**-127), a config of another format (its SwiGLU constants on these weights),
NaN/inf biases and SwiGLU constants, limit <= 0."""

import dataclasses

import pytest
import torch
from bad_inputs import Bad, check, ids
from conftest import DSV4_SMALL, GPT_OSS_SMALL

from mxfp4lab import prepare as P
from mxfp4lab.formats import MXFormatError
from mxfp4lab.models import DSV4_FLASH, GPT_OSS_20B
from mxfp4lab.moe_tensors import ShardSpec
from mxfp4lab.synthetic import random_layer
from mxfp4lab.validate import InputError

G = GPT_OSS_SMALL  # E 6, H 224, I 192
D = DSV4_SMALL  # E 6, H 160, I 192
GX = random_layer(G, device="cpu", seed=0)
DX = random_layer(D, device="cpu", seed=0)


def u8(*shape, v=0):
    return torch.full(shape, v, dtype=torch.uint8)


def gpt(**change):
    """prepare_gpt_oss on the small layer with some arguments replaced."""
    a = {"gate_up_blocks": GX.gate_up_blocks, "gate_up_scales": GX.gate_up_scales, "gate_up_bias": GX.gate_up_bias,
         "down_blocks": GX.down_blocks, "down_scales": GX.down_scales, "down_bias": GX.down_bias}
    kw = {k: change.pop(k) for k in ("config", "shard", "swiglu_alpha", "swiglu_beta", "swiglu_limit") if k in change}
    a.update(change)
    return lambda: P.prepare_gpt_oss(**a, **kw)


def dsv4(**change):
    a = {"w1": DX.w1, "w1_scale": DX.w1_scale, "w3": DX.w3, "w3_scale": DX.w3_scale, "w2": DX.w2,
         "w2_scale": DX.w2_scale}
    kw = {k: change.pop(k) for k in ("config", "shard", "swiglu_alpha", "swiglu_beta", "swiglu_limit") if k in change}
    a.update(change)
    return lambda: P.prepare_dsv4(**a, **kw)


def poisoned(t, idx, value):
    t = t.clone()
    t[idx] = value
    return t


def tampered(spec: ShardSpec) -> ShardSpec:
    """tp_rank = 5 set behind the frozen dataclass's back."""
    object.__setattr__(spec, "tp_rank", 5)
    return spec


E, I = 2, 64
H40 = {"gate_up_blocks": u8(E, 2 * I, 20), "gate_up_scales": u8(E, 2 * I, 1, v=127), "gate_up_bias": None,
       "down_blocks": u8(E, 40, I // 2), "down_scales": u8(E, 40, 2, v=127), "down_bias": None}
I48 = {"gate_up_blocks": u8(E, 96, 32), "gate_up_scales": u8(E, 96, 2, v=127), "gate_up_bias": None,
       "down_blocks": u8(E, 64, 24), "down_scales": u8(E, 64, 1, v=127), "down_bias": None}
#: DeepSeek-V4's SwiGLU and routing on a config with this GPT-OSS layer's shapes
DSV4_SHAPED_LIKE_G = dataclasses.replace(DSV4_FLASH, name="dsv4-as-gpt", hidden_size=G.hidden_size,
                                         intermediate_size=G.intermediate_size, num_experts=G.num_experts, top_k=2)

PREPARE_GPT_OSS = [
    # silent wrong results before
    Bad("H = 40 not a multiple of 32", lambda: P.prepare_gpt_oss(**H40), MXFormatError,
        ["hidden_size H = 40", "multiple of 32"]),
    Bad("I = 48 not a multiple of 32", lambda: P.prepare_gpt_oss(**I48), MXFormatError,
        ["intermediate_size I = 48", "multiple of 32"]),
    Bad("config of another format", gpt(config=DSV4_SHAPED_LIKE_G), MXFormatError,
        ["checkpoint_format: tensors say gpt_oss", "says dsv4", "has_bias: tensors say True"]),
    Bad("config with bias, tensors without", gpt(gate_up_bias=None, down_bias=None, config=G), MXFormatError,
        ["has_bias: tensors say False", "says True"]),
    Bad("inf gate_up bias", gpt(gate_up_bias=poisoned(GX.gate_up_bias, (3, 7), float("inf"))), InputError,
        ["gate_up_proj_bias", "NaN or inf", "(3, 7)"]),
    Bad("NaN down bias", gpt(down_bias=poisoned(GX.down_bias, (0, 1), float("nan"))), InputError,
        ["down_proj_bias", "NaN or inf", "(0, 1)"]),
    Bad("NaN swiglu_alpha", gpt(swiglu_alpha=float("nan")), InputError, ["swiglu_alpha", "finite"]),
    Bad("inf swiglu_beta", gpt(swiglu_beta=float("inf")), InputError, ["swiglu_beta", "finite"]),
    Bad("limit 0", gpt(swiglu_limit=0.0), InputError, ["swiglu_limit", "> 0"]),
    Bad("limit -1", gpt(swiglu_limit=-1.0), InputError, ["swiglu_limit", "> 0", "-1.0"]),
    Bad("alpha a string", gpt(swiglu_alpha="1.7"), TypeError, ["swiglu_alpha", "real number"]),
    # obscure before
    Bad("no experts", gpt(gate_up_blocks=GX.gate_up_blocks[:0], gate_up_scales=GX.gate_up_scales[:0],
                          gate_up_bias=None, down_blocks=GX.down_blocks[:0], down_scales=GX.down_scales[:0],
                          down_bias=None), MXFormatError, ["at least one expert", "E = 0"]),
    Bad("0-dim blocks", gpt(gate_up_blocks=torch.tensor(1, dtype=torch.uint8)), MXFormatError,
        ["gate_up_proj_blocks", "[E, rows, K/32, 16]", "got shape ()"]),
    Bad("K = 0", gpt(gate_up_blocks=GX.gate_up_blocks[..., :0]), MXFormatError, ["hidden_size H = 0", "positive"]),
    Bad("4-D blocks of 8 bytes", gpt(down_blocks=GX.down_blocks.reshape(6, 224, 12, 8)), MXFormatError,
        ["down_proj_blocks", "16 bytes"]),
    Bad("blocks not a tensor", gpt(gate_up_blocks=[1, 2]), TypeError, ["gate_up_proj_blocks", "torch.Tensor"]),
    Bad("scales float", gpt(gate_up_scales=GX.gate_up_scales.float()), MXFormatError,
        ["gate_up_proj_scales", "uint8"]),
    Bad("odd fc1 rows", gpt(gate_up_blocks=GX.gate_up_blocks[:, :-1]), MXFormatError, ["must be even"]),
    Bad("only one bias", gpt(down_bias=None), MXFormatError, ["down_proj_bias is required"]),
    Bad("E mismatch with config", gpt(config=G.scaled(experts=8)), MXFormatError,
        ["num_experts: tensors say 6", "says 8"]),
    Bad("config a dict", gpt(config={"name": "x"}), TypeError, ["config", "MoEConfig"]),
    Bad("shard a tuple", gpt(shard=(2, 0)), TypeError, ["shard", "ShardSpec"]),
    Bad("shard altered behind the frozen dataclass", gpt(shard=tampered(ShardSpec(tp_size=2))), ValueError,
        ["tp_rank = 5", "[0, tp_size = 2)"]),
    # I = 192 is 6 scale blocks: TP=4 takes 2 per rank, so rank 3 would hold nothing (TP cuts whole blocks)
    Bad("TP rank left without columns", gpt(shard=ShardSpec(tp_size=4, tp_rank=3)), MXFormatError,
        ["intermediate_size = 192", "tp_rank 3 of 4 would hold no column"]),
    Bad("EP not dividing E", gpt(shard=ShardSpec(ep_size=4)), MXFormatError, ["num_experts = 6", "divisible by 4"]),
    Bad("scale byte 255", gpt(down_scales=poisoned(GX.down_scales, (1, 2, 3), 255)), MXFormatError,
        ["down_proj_scales", "byte 255", "(1, 2, 3)"]),
]

PREPARE_DSV4 = [
    Bad("H = 40", dsv4(w1=u8(2, 64, 20), w1_scale=u8(2, 64, 1), w3=u8(2, 64, 20), w3_scale=u8(2, 64, 1),
                       w2=u8(2, 40, 32), w2_scale=u8(2, 40, 2)), MXFormatError, ["hidden_size H = 40"]),
    Bad("I = 48", dsv4(w1=u8(2, 48, 32), w1_scale=u8(2, 48, 2), w3=u8(2, 48, 32), w3_scale=u8(2, 48, 2),
                       w2=u8(2, 64, 24), w2_scale=u8(2, 64, 1)), MXFormatError, ["intermediate_size I = 48"]),
    Bad("GPT-OSS config on DSv4 weights", dsv4(config=dataclasses.replace(
        GPT_OSS_20B, name="gpt-as-dsv4", hidden_size=D.hidden_size, intermediate_size=D.intermediate_size,
        num_experts=D.num_experts, top_k=2)), MXFormatError, ["checkpoint_format: tensors say dsv4", "has_bias"]),
    Bad("no experts", dsv4(w1=DX.w1[:0], w1_scale=DX.w1_scale[:0], w3=DX.w3[:0], w3_scale=DX.w3_scale[:0],
                           w2=DX.w2[:0], w2_scale=DX.w2_scale[:0]), MXFormatError, ["at least one expert"]),
    Bad("w1 1-D", dsv4(w1=DX.w1.reshape(-1)), MXFormatError, ["w1.weight", "[E, I, H/2]"]),
    Bad("scale not a tensor", dsv4(w2_scale=None), TypeError, ["w2.scale", "torch.Tensor"]),
    Bad("NaN limit", dsv4(swiglu_limit=float("nan")), InputError, ["swiglu_limit", "finite"]),
    Bad("w3 shape", dsv4(w3=DX.w3[:, :-32]), MXFormatError, ["w3.weight has shape"]),
]

PREPARE_FROM_EXPERTS = [
    Bad("not an Experts", lambda: P.prepare_from_experts(object(), config=G), TypeError,
        ["GptOssExperts or Dsv4Experts", "object"]),
    Bad("DSv4 config on GPT-OSS experts", lambda: P.prepare_from_experts(GX, config=D), MXFormatError,
        ["GPT-OSS layer does not match", "checkpoint_format"]),
]


@pytest.mark.parametrize("row", PREPARE_GPT_OSS + PREPARE_DSV4 + PREPARE_FROM_EXPERTS, ids=ids)
def test_bad_input(row):
    check(row)


def test_a_valid_layer_still_prepares():
    assert P.prepare_from_experts(GX, config=G).num_local_experts == 6
    assert P.prepare_from_experts(DX, config=D).num_local_experts == 6
    # explicit SwiGLU constants win over the config and are stored as given
    lg = P.prepare_from_experts(GX, config=G, swiglu_limit=3.0)
    assert torch.equal(lg.swiglu_limit, torch.full((6,), 3.0))
