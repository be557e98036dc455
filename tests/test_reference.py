"""Routing rules, clamped SwiGLU, the two reference modes, the naive backend."""

import pytest
import torch
from conftest import DSV4_SMALL, GPT_OSS_SMALL, tokens

from mxfp4lab import prepare as P
from mxfp4lab.backends import BackendUnavailable, get_backend
from mxfp4lab.reference import expert_weights_from_logical, moe_reference, relative_error, route, swiglu


def test_gpt_oss_routing_softmax_over_topk():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0, 0.5]])
    ids, w = route(logits, GPT_OSS_SMALL)  # top-2
    assert ids.dtype == torch.int32 and ids.tolist() == [[1, 3]]
    assert torch.allclose(w, torch.softmax(torch.tensor([[3.0, 2.0]]), -1))


def test_dsv4_routing_bias_selects_but_does_not_weight():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 3.0, 0.5]])
    bias = torch.tensor([0.0, 0.0, 0.0, 10.0, 0.0, 0.0])  # forces expert 3 into the top-3
    ids, w = route(logits, DSV4_SMALL, correction_bias=bias)
    assert 3 in ids[0].tolist()
    s = torch.sqrt(torch.nn.functional.softplus(logits))[0, ids[0].long()]
    assert torch.allclose(w[0], s / s.sum())  # weights from the unbiased scores, normalized
    assert abs(w.sum().item() - 1) < 1e-6


def test_swiglu_clamps_like_the_kernel():
    gate = torch.tensor([-20.0, -1.0, 0.5, 9.0])
    up = torch.tensor([-9.0, 0.2, 3.0, 9.0])
    got = swiglu(gate, up, alpha=1.702, beta=1.0, limit=7.0)
    g = torch.tensor([-20.0, -1.0, 0.5, 7.0])  # gate: upper clamp only
    u = torch.tensor([-7.0, 0.2, 3.0, 7.0])  # up: both sides
    assert torch.equal(got, g * torch.sigmoid(1.702 * g) * (u + 1.0))
    # DeepSeek-V4 constants reduce to up * silu(gate) inside the limit
    assert torch.allclose(swiglu(gate[1:3], up[1:3], 1.0, 0.0, 10.0), up[1:3] * torch.nn.functional.silu(gate[1:3]))


def test_kernel_mode_close_to_fp32(small_layer):
    cfg, ex = small_layer
    p = P.prepare_from_experts(ex, config=cfg)
    ew = expert_weights_from_logical(p)
    x, ids, w = tokens(cfg)
    kw = cfg.swiglu_kwargs
    fp32 = moe_reference(x, ids, w, ew, **kw)
    k = moe_reference(x, ids, w, ew, mode="kernel", **kw)
    assert k.dtype == torch.bfloat16
    err = relative_error(k, fp32)
    # four bf16 roundings (2^-9 relative each) -> ~1e-3..1e-2; zero would mean no rounding was modelled
    assert 1e-4 < err < 2e-2


def test_naive_backend_matches_kernel_reference(small_layer):
    cfg, ex = small_layer
    p = P.prepare_from_experts(ex, config=cfg)
    x, ids, w = tokens(cfg, seed=3)
    naive = get_backend("torch_naive")(p, cfg)(x, ids, w)
    emul = get_backend("emulated_sm90")(p, cfg)(x, ids, w)
    # same bf16 operands; the naive path keeps GEMM1 output in bf16 + bias in bf16 (one extra rounding)
    assert relative_error(naive, emul) < 1e-2


def test_flashinfer_backend_says_what_it_needs_without_gpu(small_layer):
    cfg, ex = small_layer
    if torch.cuda.is_available():
        pytest.skip("this checks the no-GPU error message")
    p = P.prepare_from_experts(ex, config=cfg)
    with pytest.raises(BackendUnavailable, match="compute capability 9.0"):
        get_backend("flashinfer_sm90")(p, cfg)


def test_relative_error_rejects_nan():
    assert relative_error(torch.tensor([float("nan")]), torch.tensor([1.0])) == float("inf")
