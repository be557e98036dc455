"""The data model (mxfp4lab.moe_tensors): LogicalMoE is checked when made, ShardSpec is frozen and
validated, the public tensor check names the tensor and the rule."""

import dataclasses

import pytest
import torch
from conftest import GPT_OSS_SMALL

from mxfp4lab.formats import MXFormatError
from mxfp4lab.moe_tensors import ShardSpec, check_tensor
from mxfp4lab.prepare import prepare_from_experts
from mxfp4lab.synthetic import random_layer


@pytest.fixture(scope="module")
def logical():
    return prepare_from_experts(random_layer(GPT_OSS_SMALL, device="cpu", seed=0), config=GPT_OSS_SMALL)


@pytest.mark.parametrize("change,match", [
    (lambda lg: dict(w2=lg.w2[:, :-1]), r"w2 has shape"),
    (lambda lg: dict(w13_bias=lg.w13_bias.float()), "w13_bias must be torch.bfloat16"),
    (lambda lg: dict(w13=lg.w13[:, 1:], w13_scale=lg.w13_scale[:, 1:]), r"expected 2 \* I_pad"),
    (lambda lg: dict(w13_scale=lg.w13_scale[..., :-1]), "w13_scale has shape"),
    (lambda lg: dict(w2_bias=lg.w2_bias[:1]), "w2_bias has shape"),
    (lambda lg: dict(swiglu_limit=lg.swiglu_limit.double()), "swiglu_limit must be torch.float32"),
    (lambda lg: dict(w13=lg.w13.view(torch.int8)), "w13 must be torch.uint8"),
    (lambda lg: dict(hidden_size=lg.padded_hidden + 1), "hidden_size"),
    (lambda lg: dict(expert_offset=1), r"not inside the layer's 6 experts"),
])
def test_logical_moe_is_checked_when_made(logical, change, match):
    with pytest.raises(MXFormatError, match=match):
        dataclasses.replace(logical, **change(logical))


def test_logical_moe_to_and_nbytes(logical):
    moved = logical.to("cpu")
    assert moved.w13 is logical.w13 and moved.shard == logical.shard  # no copy on the same device
    parts = [logical.w13, logical.w13_scale, logical.w13_bias, logical.w2, logical.w2_scale, logical.w2_bias,
             logical.swiglu_alpha, logical.swiglu_beta, logical.swiglu_limit]
    assert logical.nbytes() == sum(t.numel() * t.element_size() for t in parts)
    kw = logical.swiglu_kwargs()
    assert kw["swiglu_limit"] is logical.swiglu_limit
    neutral = dataclasses.replace(logical, swiglu_alpha=None, swiglu_beta=None, swiglu_limit=None)
    assert neutral.swiglu_kwargs() == dict(swiglu_alpha=1.0, swiglu_beta=0.0, swiglu_limit=None)


def test_shard_spec_frozen_and_validated():
    s = ShardSpec(tp_size=2, tp_rank=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.tp_rank = 0
    with pytest.raises(ValueError, match="ep_rank = 3 must be in"):
        ShardSpec(ep_size=2, ep_rank=3)
    with pytest.raises(TypeError, match="must be ints"):
        ShardSpec(tp_size=2.0)


@pytest.mark.parametrize("inter,tp,want", [
    (2880, 1, [(0, 2880)]),
    (2880, 2, [(0, 1440), (1440, 2880)]),
    (2880, 4, [(0, 736), (736, 1472), (1472, 2208), (2208, 2880)]),  # 90 blocks: 23, 23, 23, 21
    (2880, 8, [(384 * r, 384 * (r + 1)) for r in range(7)] + [(2688, 2880)]),  # 12 x 7 + 6
    (2048, 8, [(256 * r, 256 * (r + 1)) for r in range(8)]),
])
def test_intermediate_slice_cuts_whole_scale_blocks(inter, tp, want):
    got = [ShardSpec(tp_size=tp, tp_rank=r).intermediate_slice(inter) for r in range(tp)]
    assert got == want
    assert all(a % 32 == 0 and (b % 32 == 0 or b == inter) for a, b in got)  # no scale block is split
    assert got[0][0] == 0 and got[-1][1] == inter and all(got[i][1] == got[i + 1][0] for i in range(tp - 1))


def test_shard_slices_refuse_what_cannot_be_cut():
    with pytest.raises(MXFormatError, match="intermediate_size = 2888 must be a multiple of 32"):
        ShardSpec(tp_size=2).intermediate_slice(2888)
    with pytest.raises(MXFormatError, match="tp_rank 7 of 8 would hold no column"):
        ShardSpec(tp_size=8, tp_rank=7).intermediate_slice(224)  # 7 blocks: one per rank, none left
    with pytest.raises(MXFormatError, match="num_experts = 6 is not divisible by 4"):
        ShardSpec(ep_size=4).expert_slice(6)
    assert ShardSpec(ep_size=4, ep_rank=3).expert_slice(128) == (96, 128)


def test_check_tensor_names_tensor_and_rule():
    with pytest.raises(MXFormatError, match=r"w9 is required \(expected torch.uint8 \(2, 3\)\)"):
        check_tensor(None, "w9", (2, 3), torch.uint8)
    with pytest.raises(MXFormatError, match=r"w9 has shape \(2, 4\), expected \(2, 3\)"):
        check_tensor(torch.zeros(2, 4, dtype=torch.uint8), "w9", (2, 3), torch.uint8)
    check_tensor(torch.zeros(2, 3, dtype=torch.uint8), "w9", (2, 3), torch.uint8)
