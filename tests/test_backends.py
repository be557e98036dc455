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


def test_tuner_input_sets_route_the_same_pairs_to_other_experts_of_the_shard():
    """expert_permuted_sets: the given set first; each other set maps every id of the shard's experts through one
    permutation of them (so a token's ids stay distinct and each expert slot keeps its pair count), leaves other
    shards' ids alone, keeps x and the weights, and is the same on every call (fixed seed)."""
    from mxfp4lab.backends.base import expert_permuted_sets

    gen = torch.Generator().manual_seed(3)
    ids = torch.stack([torch.randperm(32, generator=gen)[:4] for _ in range(6)]).to(torch.int32)  # 6 tokens, top-4
    x, w = torch.randn(6, 8), torch.rand(6, 4)
    off, n_local = 8, 16  # this shard holds experts 8..23
    sets = expert_permuted_sets((x, ids, w), 4, expert_offset=off, num_local_experts=n_local)
    assert len(sets) == 4 and sets[0][1] is ids
    local = (ids >= off) & (ids < off + n_local)
    assert local.any() and (~local).any()
    moved = 0
    for sx, sids, sw in sets[1:]:
        assert sx is x and sw is w and sids.dtype == ids.dtype and sids.shape == ids.shape
        assert torch.equal(sids[~local], ids[~local])  # other shards' ids stay
        assert bool(((sids[local] >= off) & (sids[local] < off + n_local)).all())  # the shard's stay in the shard
        perm = {}  # one map for the whole set: a permutation of the shard's experts
        for a, b in zip(ids[local].tolist(), sids[local].tolist()):
            assert perm.setdefault(a, b) == b
        assert len(set(perm.values())) == len(perm)
        assert all(len(set(row)) == len(row) for row in sids.tolist())  # a token's ids stay distinct
        moved += int((sids != ids).sum())
    assert moved > 0
    again = expert_permuted_sets((x, ids, w), 4, expert_offset=off, num_local_experts=n_local)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(sets, again))
    assert expert_permuted_sets((x, ids, w), 1, expert_offset=off, num_local_experts=n_local) == [(x, ids, w)]
    with pytest.raises(ValueError, match="at least the given input set"):
        expert_permuted_sets((x, ids, w), 0, expert_offset=off, num_local_experts=n_local)


def test_the_tuner_times_every_input_set_and_checks_agreement_on_the_given_one():
    """fastest_agreeing runs each candidate on the given inputs for the agreement check and hands the timer every
    set (default: the given one alone)."""
    from mxfp4lab.backends.base import fastest_agreeing

    seen, ran = [], []
    a, b = (torch.ones(2),), (torch.zeros(2),)

    def run_of(c):
        def run(v):
            ran.append((c, v))
            return v * 0 + 1
        return run

    def time_us(fn, sets):
        seen.append(sets)
        return len(seen)

    log = []
    best = fastest_agreeing(["p", "q"], run_of, a, tol=1e-3, log=log, prefix="bucket 1", time_us=time_us, sets=[a, b])
    assert best == "p" and seen == [[a, b], [a, b]] and [v for _, v in ran] == [a[0], a[0]]
    seen.clear()
    fastest_agreeing(["p"], run_of, a, tol=1e-3, log=log, prefix="bucket 1", time_us=time_us)
    assert seen == [[a]]


def test_the_routed_scaling_factor_is_one_launch_with_the_bits_of_the_fp32_multiply():
    """``__call__`` scales a backend's output by multiplying the bf16 tensor by the Python scalar (one launch): over
    every finite bf16 value and several factors, the bits of ``(y.float() * s).to(bfloat16)``, the reference's
    rounding. A backend that applies the factor in its own kernel (``applies_routed_scaling``) is not scaled twice."""
    y = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    y = y[torch.isfinite(y)]
    for s in (1.5, 2.5, 0.7, 1 / 3, 3.14159):
        assert torch.equal((y * s).view(torch.int16), (y.float() * s).to(torch.bfloat16).view(torch.int16)), s

    import dataclasses

    cfg = dataclasses.replace(GPT_OSS_SMALL, routed_scaling_factor=1.5)
    moe_s = prepare_from_experts(random_layer(cfg, device="cpu", seed=2), config=cfg)
    be = make_backend("torch_naive", moe_s, cfg)
    x, ids, w = tokens(cfg)
    experts = be.forward(x, ids, w)
    assert torch.equal(be(x, ids, w), (experts.float() * 1.5).to(torch.bfloat16))

    class Folding(type(be)):
        applies_routed_scaling = True

    folded = Folding(moe_s, cfg)
    assert torch.equal(folded(x, ids, w), folded.forward(x, ids, w))  # its forward's output, not scaled again
