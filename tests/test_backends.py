"""The backend contract (mxfp4lab.backends): one table, explicit options, inputs checked once."""

import pytest
import torch
from conftest import GPT_OSS_SMALL, tokens

from mxfp4lab.backends import BACKENDS, BackendSpec, get_backend, list_backends, make_backend
from mxfp4lab.backends.base import MoEBackend
from mxfp4lab.prepare import prepare_from_experts
from mxfp4lab.synthetic import random_layer


@pytest.fixture(scope="module")
def moe():
    return prepare_from_experts(random_layer(GPT_OSS_SMALL, device="cpu", seed=1), config=GPT_OSS_SMALL)


def test_every_table_entry_resolves_to_its_class():
    for name in BACKENDS:
        cls = get_backend(name)
        assert issubclass(cls, MoEBackend) and cls.name == name
    assert set(list_backends()) == set(BACKENDS)
    with pytest.raises(KeyError, match="unknown backend 'nope'; known"):
        get_backend("nope")


def test_options_are_explicit(moe):
    x, ids, w = tokens(GPT_OSS_SMALL)
    fp32 = make_backend(BackendSpec("emulated_sm90", {"mode": "fp32"}), moe, GPT_OSS_SMALL)
    kern = make_backend("emulated_sm90", moe, GPT_OSS_SMALL)
    assert (fp32.mode, kern.mode) == ("fp32", "kernel")
    assert not torch.equal(fp32(x, ids, w), kern(x, ids, w))  # different rounding points
    with pytest.raises(TypeError, match="colour"):
        make_backend("emulated_sm90", moe, GPT_OSS_SMALL, colour="red")
    with pytest.raises(ValueError, match="mode must be one of"):
        make_backend("emulated_sm90", moe, GPT_OSS_SMALL, mode="fp16")
    assert BackendSpec("emulated_sm90", {"mode": "fp32"}).label == "emulated_sm90 mode=fp32"
    assert BackendSpec("torch_naive").label == "torch_naive"
    with pytest.raises(KeyError, match="unknown backend"):
        BackendSpec("emulated_sm90:fp32")  # variants are options, not name suffixes


def test_inputs_checked_once_at_the_call(moe):
    be = get_backend("emulated_sm90")(moe, GPT_OSS_SMALL)
    x, ids, w = tokens(GPT_OSS_SMALL)
    with pytest.raises(ValueError, match=r"x must be \[M, 224\]"):
        be(x[:, :-1], ids, w)
    with pytest.raises(ValueError, match="x must be torch.bfloat16"):
        be(x.float(), ids, w)
    with pytest.raises(ValueError, match="must both be"):
        be(x, ids[:, :1], w)
    with pytest.raises(ValueError, match="topk_ids must hold integer"):
        be(x, ids.float(), w)
    with pytest.raises(ValueError, match="topk_weights must be floating"):
        be(x, ids, ids)
    with pytest.raises(TypeError, match="takes a mxfp4lab.moe_tensors.LogicalMoE"):
        get_backend("emulated_sm90")({"w13": moe.w13}, GPT_OSS_SMALL)
