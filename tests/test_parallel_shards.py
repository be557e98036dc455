"""Every TP shard the multi-GPU benchmark runs (GPT-OSS-120b and DeepSeek-V4-Flash at TP = 2, 4, 8; the real
hidden and intermediate sizes, 2 experts) goes through every backend's layout on the CPU: accepted, and for the
layouts with an inverse, back bit for bit. GPT-OSS's uneven cuts (736 / 672 at TP=4, 384 / 192 at TP=8) are
the shapes no single-GPU run has seen. (EP shards have the unsharded H and I: the single-GPU sweep's shapes.)"""

import pytest
import torch
from peer_support import assert_same_logical

from mxfp4lab.backends.humming import humming_layout_from_logical, logical_from_humming_layout
from mxfp4lab.backends.marlin import marlin_permute_mx_scales, marlin_repack_fp4, swap_halves
from mxfp4lab.backends.triton_kernels import (
    logical_from_triton_kernels_layout,
    triton_kernels_layout_from_logical,
)
from mxfp4lab.kernels.decode_w4a16 import DecodeLayout
from mxfp4lab.layout import decode_w4a16 as dl
from mxfp4lab.layout.sm90_moe import from_sm90, to_sm90
from mxfp4lab.layout.triton_w4a16 import from_triton_layout, to_triton_layout
from mxfp4lab.models import get_model
from mxfp4lab.moe_tensors import ShardSpec
from mxfp4lab.prepare import prepare_from_experts
from mxfp4lab.synthetic import random_layer

# (model, tp, rank, intermediate columns of that rank): every distinct shard shape of GPT-OSS at TP = 2, 4, 8;
# DeepSeek-V4-Flash's 2048 cuts evenly into multiples of 256 (1024, 512, 256): its smallest
SHARDS = [("gpt-oss-120b", 2, 0, 1440), ("gpt-oss-120b", 4, 0, 736), ("gpt-oss-120b", 4, 3, 672),
          ("gpt-oss-120b", 8, 0, 384), ("gpt-oss-120b", 8, 7, 192), ("dsv4-flash", 8, 7, 256)]
LOGICAL = ("w13", "w13_scale", "w13_bias", "w2", "w2_scale", "w2_bias")


@pytest.fixture(scope="module")
def layers():
    cache = {}

    def get(name):
        if name not in cache:
            cfg = get_model(name).scaled(experts=2, top_k=2)
            cache[name] = cfg, random_layer(cfg, device="cpu", seed=3)
        return cache[name]

    return get


@pytest.mark.parametrize("name,tp,rank,inter", SHARDS, ids=[f"{s[0]}-tp{s[1]}-r{s[2]}" for s in SHARDS])
def test_every_layout_takes_the_shard(layers, name, tp, rank, inter):
    cfg, layer = layers(name)
    moe = prepare_from_experts(layer, config=cfg, shard=ShardSpec(tp_size=tp, tp_rank=rank))
    assert moe.intermediate_size == inter and moe.padded_intermediate == -(-inter // 128) * 128

    def same(other):
        for f in LOGICAL:
            a, b = getattr(other, f), getattr(moe, f)
            assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), f

    same(from_sm90(to_sm90(moe)))  # flashinfer_sm90
    same(from_triton_layout(to_triton_layout(moe), moe.shard))  # triton_w4a16
    assert_same_logical(logical_from_triton_kernels_layout(triton_kernels_layout_from_logical(moe), inter), moe)
    assert_same_logical(logical_from_humming_layout(humming_layout_from_logical(moe), inter), moe)
    # decode_w4a16: the fc1 / fc2 step blocks hold exactly the logical codes and scales it needs
    dec = DecodeLayout.from_logical(moe, device="cpu")
    sz = dl.padded_sizes(moe.hidden_size, inter)
    up, up_s, gate, gate_s = dl.fc1_from_decode(dec.w13)
    i_pad = moe.padded_intermediate
    assert torch.equal(up, moe.w13[:, : sz["I32"], : sz["H64"] // 2])
    assert torch.equal(gate, moe.w13[:, i_pad : i_pad + sz["I32"], : sz["H64"] // 2])
    assert torch.equal(up_s, moe.w13_scale[:, : sz["I32"], : sz["H64"] // 32])
    assert torch.equal(gate_s, moe.w13_scale[:, i_pad : i_pad + sz["I32"], : sz["H64"] // 32])
    down, down_s = dl.fc2_from_decode(dec.w2)
    assert torch.equal(down, moe.w2[:, : sz["H32"], : sz["I64"] // 2])
    assert torch.equal(down_s, moe.w2_scale[:, : sz["H32"], : sz["I64"] // 32])
    # marlin_mxfp4: its repack and scale permutation take both GEMMs' shapes ([gate ; up] halves, as it runs)
    w13, s13 = swap_halves(moe.w13), swap_halves(moe.w13_scale)
    e, n1, k1 = w13.shape[0], w13.shape[1], 2 * w13.shape[2]
    assert marlin_repack_fp4(w13).shape == (e, k1 // 16, 2 * n1)
    assert marlin_permute_mx_scales(s13).shape == (e, k1 // 32, n1)
    n2, k2 = moe.w2.shape[1], 2 * moe.w2.shape[2]
    assert marlin_repack_fp4(moe.w2).shape == (e, k2 // 16, 2 * n2)
    assert marlin_permute_mx_scales(moe.w2_scale).shape == (e, k2 // 32, n2)
