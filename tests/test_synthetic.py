"""Synthetic data (mxfp4lab.synthetic): origin weights, layers in checkpoint layout, inputs."""

import pytest
import torch

from mxfp4lab import synthetic
from mxfp4lab.checkpoints import Dsv4Experts, GptOssExperts
from mxfp4lab.formats import quantize_mxfp4
from mxfp4lab.models import DSV4_FLASH, GPT_OSS_20B
from mxfp4lab.moe_tensors import merge_gate_up_rows
from mxfp4lab.prepare import prepare_from_experts
from mxfp4lab.synthetic import make_origin_expert, make_origin_weights

GPT = GPT_OSS_20B.scaled(hidden=64, intermediate=96, experts=4)
DSV4 = DSV4_FLASH.scaled(hidden=64, intermediate=32, experts=8)  # top-6, hash layers 0..2
HASH_LAYER = 0


# --------------------------------------------------------------------------------------------
# Origin weights (moved from test_checkpoints with the generators)
# --------------------------------------------------------------------------------------------
def test_origin_is_deterministic_and_subset_consistent():
    a = make_origin_weights(DSV4, seed=1, layer=3)
    b = make_origin_weights(DSV4, seed=1, layer=3, experts=[5, 2])
    assert set(a) == {"w_gate", "w_up", "w_down", "router_weight", "router_bias"}
    assert a["w_gate"].shape == (8, 32, 64) and a["w_down"].shape == (8, 64, 32)
    assert all(v.dtype == torch.bfloat16 for k, v in a.items() if k != "router_bias")
    assert torch.equal(b["w_up"], a["w_up"][[5, 2]])
    assert torch.equal(make_origin_expert(DSV4, 5, layer=3, seed=1)["w_down"], a["w_down"][5])
    assert not torch.equal(make_origin_weights(DSV4, seed=2, layer=3)["w_gate"], a["w_gate"])
    g = make_origin_weights(GPT, seed=0)
    assert g["b_gate"].shape == (4, 96) and g["b_down"].shape == (4, 64)
    assert g["router_bias"].dtype == torch.bfloat16
    h = make_origin_weights(DSV4, layer=HASH_LAYER)
    assert "tid2eid" in h and "router_bias" not in h


def test_origin_distributions():
    cfg = GPT_OSS_20B.scaled(hidden=512, intermediate=256, experts=2)
    std = 0.02
    gauss = make_origin_weights(cfg, dist="gaussian", std=std)["w_gate"].float()
    heavy = make_origin_weights(cfg, dist="heavy_tailed", std=std)["w_gate"].float()
    assert gauss.std().item() == pytest.approx(std, rel=0.02)
    assert heavy.std().item() == pytest.approx(std, rel=0.25)  # t(3) sample std converges slowly

    def kurtosis(x):
        z = (x - x.mean()) / x.std()
        return z.pow(4).mean().item()

    assert kurtosis(gauss) == pytest.approx(3.0, abs=0.2) and kurtosis(heavy) > 6.0
    out = make_origin_weights(cfg, dist="outlier_channels", std=std)
    oc = synthetic.outlier_channels(cfg, 0, 0)
    assert len(oc["hidden"]) == 2 and len(oc["intermediate"]) == 1
    col_std = out["w_gate"].float().std(dim=(0, 1))
    mask = torch.zeros(512, dtype=torch.bool)
    mask[oc["hidden"]] = True
    assert bool((col_std[mask] > 7 * std).all()) and bool((col_std[~mask] < 1.5 * std).all())
    dstd = out["w_down"].float().std(dim=(0, 1))
    assert dstd[oc["intermediate"]].min().item() > 7 * std


# --------------------------------------------------------------------------------------------
# Layers in checkpoint layout, inputs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [GPT, DSV4], ids=lambda c: c.checkpoint_format)
def test_random_layer_is_the_checkpoint_dataclass(cfg):
    layer = synthetic.random_layer(cfg, device="cpu", seed=2)
    assert isinstance(layer, GptOssExperts if cfg.checkpoint_format == "gpt_oss" else Dsv4Experts)
    assert layer.experts == tuple(range(cfg.num_experts))
    again = synthetic.random_layer(cfg, device="cpu", seed=2)
    first = layer.gate_up_scales if cfg.checkpoint_format == "gpt_oss" else layer.w2_scale
    assert torch.equal(first, again.gate_up_scales if cfg.checkpoint_format == "gpt_oss" else again.w2_scale)
    assert int(first.min()) >= 118 and int(first.max()) <= 122
    lg = prepare_from_experts(layer, config=cfg)
    assert lg.num_local_experts == cfg.num_experts
    with pytest.raises(TypeError, match="GptOssExperts or Dsv4Experts"):
        prepare_from_experts(object(), config=cfg)


def test_quantize_origin_is_the_checkpoint_layout():
    o = make_origin_weights(GPT, seed=4)
    x = synthetic.quantize_origin(o, GPT, "ocp")
    packed, scales = quantize_mxfp4(merge_gate_up_rows(o["w_gate"], o["w_up"]), scale_rule="ocp")
    assert torch.equal(x.gate_up_blocks.flatten(-2), packed) and torch.equal(x.gate_up_scales, scales)
    assert torch.equal(x.gate_up_bias, merge_gate_up_rows(o["b_gate"], o["b_up"]))
    assert torch.equal(x.router_weight, o["router_weight"])
    d = synthetic.quantize_origin(make_origin_weights(DSV4, seed=4, layer=3), DSV4, "round_up")
    assert isinstance(d, Dsv4Experts) and d.w1.shape == (8, 32, 32) and d.gate_bias.dtype == torch.float32


def test_make_inputs_routings():
    u = synthetic.make_inputs(DSV4, 64, 2, "uniform", device="cpu", seed=1)
    s = synthetic.make_inputs(DSV4, 64, 2, "skewed", device="cpu", seed=1)
    assert len(u) == 2 and u[0][0].dtype == torch.bfloat16 and u[0][1].shape == (64, DSV4.top_k)
    assert torch.unique(s[0][1]).numel() < torch.unique(u[0][1]).numel()  # skew concentrates the experts
    with pytest.raises(ValueError, match="routing must be one of"):
        synthetic.make_inputs(DSV4, 4, 1, "zipf", device="cpu")
