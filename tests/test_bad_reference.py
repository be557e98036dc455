"""Bad inputs of the references (mxfp4lab.reference): moe_reference, route, relative_error,
expert_weights_from_logical.

Silent before: ids outside the layer gave zero rows, NaN swiglu_alpha and limit <= 0 went through, NaN
logits routed anywhere, relative_error returned 0.0 for broadcast shapes and NaN (not inf) for a NaN
reference."""

import math

import pytest
import torch
from bad_inputs import Bad, check, ids
from conftest import GPT_OSS_SMALL, tokens

from mxfp4lab.models import DSV4_FLASH
from mxfp4lab.prepare import prepare_from_experts
from mxfp4lab.reference import expert_weights_from_logical, moe_reference, relative_error, route
from mxfp4lab.synthetic import random_layer
from mxfp4lab.validate import InputError

G = GPT_OSS_SMALL
MOE = prepare_from_experts(random_layer(G, device="cpu", seed=4), config=G)
EW = expert_weights_from_logical(MOE)
X, IDS, W = tokens(G, m=4)


def ref(**change):
    a = {"x": X, "topk_ids": IDS, "topk_weights": W, "weights": EW}
    a.update(change)
    return lambda: moe_reference(a.pop("x"), a.pop("topk_ids"), a.pop("topk_weights"), a.pop("weights"), **a)


def with_value(t, idx, value):
    t = t.clone()
    t[idx] = value
    return t


MOE_REFERENCE = [
    Bad("id = E", ref(topk_ids=torch.full_like(IDS, 6)), InputError, ["topk_ids", "[0, 6)", "got 6"]),
    Bad("id < 0", ref(topk_ids=with_value(IDS, (0, 1), -3)), InputError, ["got -3", "(0, 1)"]),
    Bad("NaN x", ref(x=with_value(X, (1, 1), float("nan"))), InputError, ["x holds NaN or inf", "(1, 1)"]),
    Bad("inf weights", ref(topk_weights=with_value(W, (0, 0), float("inf"))), InputError, ["topk_weights"]),
    Bad("NaN swiglu_alpha", ref(swiglu_alpha=float("nan")), InputError, ["swiglu_alpha", "finite"]),
    Bad("NaN per-expert beta", ref(swiglu_beta=torch.tensor([0.0, float("nan")])), InputError,
        ["swiglu_beta", "(1,)"]),
    Bad("limit 0", ref(swiglu_limit=0.0), InputError, ["swiglu_limit", "> 0"]),
    Bad("limit < 0 per expert", ref(swiglu_limit=torch.tensor([7.0, -1.0])), InputError,
        ["swiglu_limit must be > 0", "-1.0", "(1,)"]),
    Bad("inf routed scaling", ref(routed_scaling_factor=math.inf), InputError, ["routed_scaling_factor"]),
    Bad("a LogicalMoE as weights", ref(weights=MOE), TypeError, ["expert_weights_from_logical(moe)"]),
    Bad("a dict as weights", ref(weights={"w_gate": EW.w_gate}), TypeError, ["ExpertWeights", "dict"]),
    Bad("1-D x", ref(x=X[0]), InputError, ["x must be [M, 224] (2-D)"]),
    Bad("3-D x", ref(x=X[None]), InputError, ["x must be [M, 224] (2-D)"]),
    Bad("x wrong H", ref(x=X[:, :100]), InputError, ["x must be [M, 224]"]),
    Bad("k = 0", ref(topk_ids=IDS[:, :0], topk_weights=W[:, :0]), InputError, ["k >= 1"]),
    Bad("mode", ref(mode="bf16"), ValueError, ["mode must be 'fp32' or 'kernel'"]),
    Bad("dtype int", ref(dtype=torch.int32), TypeError, ["dtype must be a floating torch.dtype"]),
]

ROUTE = [
    Bad("NaN logits", lambda: route(with_value(torch.randn(3, 6), (2, 4), float("nan")), G), InputError,
        ["logits holds NaN or inf", "(2, 4)"]),
    Bad("logits wrong E", lambda: route(torch.randn(3, 5), G), InputError, ["logits must be", "E=6", "(3, 5)"]),
    Bad("logits 1-D", lambda: route(torch.randn(6), G), InputError, ["[M, E=6]"]),
    Bad("NaN correction bias", lambda: route(torch.randn(3, 256), DSV4_FLASH, torch.full((256,), math.nan)),
        InputError, ["correction_bias holds NaN"]),
    Bad("correction bias shape", lambda: route(torch.randn(3, 256), DSV4_FLASH, torch.zeros(255)), InputError,
        ["correction_bias must be [E=256]"]),
    Bad("config a name", lambda: route(torch.randn(3, 6), "gpt-oss-20b"), TypeError, ["MoEConfig"]),
]

RELATIVE_ERROR = [
    Bad("broadcast shapes (0.0 before)", lambda: relative_error(torch.ones(3), torch.ones(2, 3)), InputError,
        ["same shape", "(3,)", "(2, 3)"]),
    Bad("transposed", lambda: relative_error(torch.ones(2, 3), torch.ones(3, 2)), InputError, ["same shape"]),
    Bad("not a tensor", lambda: relative_error([1.0], torch.ones(1)), TypeError, ["out must be a torch.Tensor"]),
]

WEIGHTS = [
    Bad("not a LogicalMoE", lambda: expert_weights_from_logical(random_layer(G, device="cpu")), TypeError,
        ["LogicalMoE", "GptOssExperts"]),
]


@pytest.mark.parametrize("row", MOE_REFERENCE + ROUTE + RELATIVE_ERROR + WEIGHTS, ids=ids)
def test_bad_input(row):
    check(row)


def test_relative_error_never_passes_a_non_finite_value():
    one = torch.ones(4)
    nan = torch.tensor([1.0, math.nan, 1.0, 1.0])
    assert relative_error(nan, one) == math.inf  # NaN in out
    assert relative_error(one, nan) == math.inf  # NaN in the reference (NaN before)
    assert relative_error(one, torch.tensor([1.0, math.inf, 1.0, 1.0])) == math.inf
    assert relative_error(torch.zeros(0), torch.zeros(0)) == 0.0
    assert relative_error(torch.zeros(3), torch.zeros(3)) == 0.0


def test_empty_batch_is_an_empty_output():
    for mode in ("fp32", "kernel"):
        assert moe_reference(X[:0], IDS[:0], W[:0], EW, mode=mode).shape == (0, G.hidden_size)
