"""The persisted tactic cache (mxfp4lab.flashinfer_build.tactics): keying, file round trip, merge, the
rules that refuse a wrong tactic, and the harvest from FlashInfer's own autotuner keys (CPU only)."""

from __future__ import annotations

import json

import pytest

from mxfp4lab.flashinfer_build import tactics as T

GPU = T.gpu_identity("NVIDIA H200", 132, (9, 0))
SHAPE = T.LayerShape(num_experts=128, hidden=2944, inter=2944, top_k=4, bias=True)
TABLE = {1: (6, 13), 2: (6, 13), 4: (7, 11), 256: (3, 14), 8192: (4, 14)}


def _cache(tmp_path, key="496e8c444770d38a"):
    return T.TacticCache(T.tactics_path(tmp_path), key)


def test_keys_tell_apart_gpu_build_shape_bucket():
    base = T.TacticKey(GPU, "k1", SHAPE, 64)
    variants = [
        T.TacticKey(T.gpu_identity("NVIDIA H100 80GB HBM3", 132, (9, 0)), "k1", SHAPE, 64),
        T.TacticKey(T.gpu_identity("NVIDIA H200", 78, (9, 0)), "k1", SHAPE, 64),
        T.TacticKey(GPU, "k2", SHAPE, 64),
        T.TacticKey(GPU, "k1", T.LayerShape(32, 2944, 2944, 4, bias=True), 64),
        T.TacticKey(GPU, "k1", T.LayerShape(128, 2944, 2944, 4, bias=False), 64),
        T.TacticKey(GPU, "k1", T.LayerShape(128, 2944, 2944, 4, bias=True, bias2=False), 64),
        T.TacticKey(GPU, "k1", T.LayerShape(128, 2944, 2944, 4, bias=True, fused_finalize=False), 64),
        T.TacticKey(GPU, "k1", T.LayerShape(128, 2944, 2944, 4, tp_size=2, bias=True), 64),
        T.TacticKey(GPU, "k1", SHAPE, 128),
        T.TacticKey(GPU, "k1", SHAPE, 64, max_tokens=4096),
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert base.entry == "NVIDIA H200/sm90/132|E128_H2944_I2944_k4_tp1_ep1_bias11_ff1|max8192"
    assert T.TacticKey(GPU, "k1", T.LayerShape(128, 2944, 2944, 4, bias=True), 64) == base


def test_round_trip_in_a_fresh_reader(tmp_path):
    c = _cache(tmp_path)
    assert c.lookup(T.TacticKey(GPU, c.build_key, SHAPE, 1)) is None
    c.record(GPU, SHAPE, TABLE, tune_max_num_tokens=8192, gemm1_count=10, gemm2_count=10)
    c.save()
    fresh = _cache(tmp_path)  # what a new process sees
    for b, pair in TABLE.items():
        assert fresh.lookup(T.TacticKey(GPU, c.build_key, SHAPE, b)) == pair
    assert fresh.lookup(T.TacticKey(GPU, c.build_key, SHAPE, 3)) is None
    assert fresh.covers(GPU, SHAPE, tune_max_num_tokens=8192)
    # another tune_max_num_tokens means other buckets: not served
    assert fresh.lookup(T.TacticKey(GPU, c.build_key, SHAPE, 1, max_tokens=4096)) is None
    assert not fresh.covers(GPU, SHAPE, tune_max_num_tokens=4096)
    other = T.LayerShape(32, 2944, 2944, 4, bias=True)
    assert fresh.lookup(T.TacticKey(GPU, c.build_key, other, 1)) is None


def test_save_merges_with_another_writer(tmp_path):
    a, b = _cache(tmp_path), _cache(tmp_path)
    other = T.LayerShape(32, 2944, 2944, 4, bias=True)
    a.record(GPU, SHAPE, TABLE, tune_max_num_tokens=8192, gemm1_count=10, gemm2_count=10)
    b.record(GPU, other, {1: (0, 10)}, tune_max_num_tokens=8192, gemm1_count=10, gemm2_count=10)
    a.save()
    b.save()  # b read the file before a wrote: its save must keep a's entry
    fresh = _cache(tmp_path)
    assert fresh.lookup(T.TacticKey(GPU, a.build_key, SHAPE, 256)) == (3, 14)
    assert fresh.lookup(T.TacticKey(GPU, a.build_key, other, 1)) == (0, 10)
    assert not list(tmp_path.glob(".*.tmp")), "atomic write leaves no temporary file"


def test_refuses_another_build_or_format(tmp_path):
    c = _cache(tmp_path)
    c.record(GPU, SHAPE, TABLE, tune_max_num_tokens=8192, gemm1_count=10, gemm2_count=10)
    c.save()
    with pytest.raises(T.TacticCacheError, match="not of this build"):
        _cache(tmp_path, key="d850d3376a54d134")
    with pytest.raises(T.TacticCacheError, match="asked of the tactics of build"):
        c.lookup(T.TacticKey(GPU, "other", SHAPE, 1))
    doc = json.loads(c.path.read_text())
    c.path.write_text(json.dumps({**doc, "format": 99}))
    with pytest.raises(T.TacticCacheError, match="tactics format 1"):
        _cache(tmp_path)
    c.path.write_text("{not json")
    with pytest.raises(T.TacticCacheError, match="not valid JSON"):
        _cache(tmp_path)


@pytest.mark.parametrize(
    "pair, rule",
    [
        ((10, 13), "outside GEMM1"),  # GEMM1 index past its 10 candidates
        ((3, 3), "outside GEMM1"),  # a GEMM1 index where a GEMM2 one belongs
        ((3, 20), "outside GEMM1"),  # past GEMM2's list
        ((-2, 13), "outside GEMM1"),
    ],
)
def test_refuses_tactics_outside_the_lists(tmp_path, pair, rule):
    c = _cache(tmp_path)
    with pytest.raises(T.TacticCacheError, match=rule):
        c.record(GPU, SHAPE, {1: pair}, tune_max_num_tokens=8192, gemm1_count=10, gemm2_count=10)
    c.record(GPU, SHAPE, {1: (-1, -1)}, tune_max_num_tokens=8192, gemm1_count=10, gemm2_count=10)  # default


def test_bad_shape_and_gpu_names():
    with pytest.raises(T.TacticCacheError, match="num_experts"):
        T.LayerShape(0, 2944, 2944, 4)
    with pytest.raises(T.TacticCacheError, match="top_k"):
        T.LayerShape(8, 2944, 2944, True)
    with pytest.raises(T.TacticCacheError, match="must not contain"):
        T.gpu_identity("a|b", 1, (9, 0))
    with pytest.raises(T.TacticCacheError, match="build_key"):
        T.TacticCache("x.json", "")


# ------------------------------------------------------------------ FlashInfer's own keys and buckets

autotuner = pytest.importorskip("flashinfer.autotuner")
torch = pytest.importorskip("torch")
from autotuner_keys import moe_extras, moe_tuning_config  # noqa: E402


def _winners(shape, table, top_k=None):
    cfg = moe_tuning_config(8192)
    out = {}
    for b, (t1, t2) in table.items():
        shapes = ((b, shape.hidden), *shape.weight_shapes())
        prof = autotuner.AutoTuner._find_nearest_profile(shapes, cfg)
        for op, t in zip(T.GEMM_OPS, (t1, t2), strict=True):
            extras = moe_extras(top_k or shape.top_k, shape.tp_size, shape.ep_size, shape.fused_finalize)
            key = autotuner.ProfilingCacheKey(op, "MoERunner", 1234, prof, extras)
            out[key] = (t, None)
    return out


def test_harvest_reads_flashinfer_keys():
    other = T.LayerShape(32, 2944, 2944, 4, bias=True)
    winners = {
        **_winners(SHAPE, TABLE),
        **_winners(other, {1: (0, 10)}),
        **_winners(SHAPE, {16: (1, 12)}, top_k=2),
    }  # another top_k: not this layer
    assert T.harvest(winners.items(), SHAPE) == TABLE
    assert T.harvest(winners.items(), other) == {1: (0, 10)}
    one_gemm = {k: v for k, v in _winners(SHAPE, {64: (2, 12)}).items() if k.custom_op == T.GEMM_OPS[0]}
    assert T.harvest(one_gemm.items(), SHAPE) == {}, "a bucket with only GEMM1 tuned is left out"


def test_bucket_rule_is_flashinfers():
    """The bucket a caller looks up (map_to_hybrid_bucket) is the bucket FlashInfer keys its winner by."""
    from flashinfer.fused_moe.utils import get_hybrid_num_tokens_buckets, map_to_hybrid_bucket

    cfg = moe_tuning_config(8192)
    buckets = get_hybrid_num_tokens_buckets(8192)
    assert len(buckets) == 21 and buckets[0] == 1 and buckets[-1] == 8192
    for m in (1, 3, 5, 200, 256, 257, 1000, 2049, 4097, 8192, 20000):
        prof = autotuner.AutoTuner._find_nearest_profile(((m, 2944), *SHAPE.weight_shapes()), cfg)
        assert prof[0][0] == map_to_hybrid_bucket(m, 8192) in buckets
