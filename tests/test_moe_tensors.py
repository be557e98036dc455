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


def test_check_tensor_names_tensor_and_rule():
    with pytest.raises(MXFormatError, match=r"w9 is required \(expected torch.uint8 \(2, 3\)\)"):
        check_tensor(None, "w9", (2, 3), torch.uint8)
    with pytest.raises(MXFormatError, match=r"w9 has shape \(2, 4\), expected \(2, 3\)"):
        check_tensor(torch.zeros(2, 4, dtype=torch.uint8), "w9", (2, 3), torch.uint8)
    check_tensor(torch.zeros(2, 3, dtype=torch.uint8), "w9", (2, 3), torch.uint8)
