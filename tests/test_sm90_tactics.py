"""The FlashInfer backend's persisted tactics (mxfp4lab.backends._sm90_tactics) on the CPU: FlashInfer's real
autotuner object and keys, a stand-in for the GPU call that fills the autotuner's cache the way
``cutlass_fused_moe`` does, and two "processes" (two PersistedTactics over one tactics file)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
autotuner = pytest.importorskip("flashinfer.autotuner")

from autotuner_keys import moe_extras, moe_tuning_config  # noqa: E402

from mxfp4lab.backends import _sm90_tactics as ST  # noqa: E402
from mxfp4lab.flashinfer_build import tactics as T  # noqa: E402
from mxfp4lab.moe_tensors import ShardSpec  # noqa: E402

E, H, I, K = 4, 256, 128, 2  # noqa: E741 - the layer's names


def _picks(bucket: int):
    """A fixed 'timing winner' per bucket: GEMM1 index in [0, 10), GEMM2 in [10, 20)."""
    return bucket % 7, 10 + bucket % 5


class FakeBackend:
    """Stands in for FlashInferSM90._autotune_call: every bucket of the layer tuned, as FlashInfer's
    choose_one stores it (op, runner class, nearest profile, extras) -> (tactic, profile)."""

    def __init__(self):
        self.calls = 0

    def _autotune_call(self, x, topk_ids, topk_weights):
        from flashinfer.fused_moe.utils import get_hybrid_num_tokens_buckets

        self.calls += 1
        tuner, cfg = autotuner.AutoTuner.get(), moe_tuning_config(8192)
        shapes = ((E, 2 * I, H // 2), (E, 2 * I), (E, H, I // 2), (E, H))
        for b in get_hybrid_num_tokens_buckets(8192):
            prof = autotuner.AutoTuner._find_nearest_profile(((b, H), *shapes), cfg)
            for op, t in zip(T.GEMM_OPS, _picks(b), strict=True):
                key = autotuner.ProfilingCacheKey(op, "MoERunner", 7, prof, moe_extras(topk_ids.shape[1]))
                tuner.profiling_cache[key] = (t, None)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda dev=None: SimpleNamespace(name="NVIDIA H200", multi_processor_count=132, major=9, minor=0),
    )
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    capturing = {"on": False}
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing["on"])
    monkeypatch.setattr(ST.PersistedTactics, "_counts", lambda self: (10, 10))
    p = SimpleNamespace(
        w13=torch.empty(E, 2 * I, H // 2, dtype=torch.uint8),
        w2=torch.empty(E, H, I // 2),
        padded_hidden=H,
        shard=ShardSpec(),
        w13_bias=torch.empty(E, 2 * I),
        w2_bias=torch.empty(E, H),
    )
    spec = SimpleNamespace(info={"key": "0123456789abcdef"}, root=tmp_path)
    tuner = autotuner.AutoTuner.get()
    saved = dict(tuner.profiling_cache)
    tuner.profiling_cache.clear()
    yield spec, p, capturing
    tuner.profiling_cache.clear()
    tuner.profiling_cache.update(saved)


def _inputs(m):
    return torch.zeros(m, H, dtype=torch.bfloat16), torch.zeros(m, K, dtype=torch.int32), torch.zeros(m, K)


def test_tune_once_then_a_fresh_process_reads_the_file(setup):
    spec, p, capturing = setup
    first, be = ST.PersistedTactics(spec, p, 8192, True), FakeBackend()
    assert first.profile_ids(be, *_inputs(3)) == list(_picks(4)), "M=3 runs bucket 4's pair"
    assert be.calls == 1 and first.source[K] == "tuned"
    assert first.profile_ids(be, *_inputs(300)) == list(_picks(512)) and be.calls == 1, (
        "all buckets tuned at once"
    )
    assert first.describe(300) == {
        "bucket": 512,
        "gemm1": _picks(512)[0],
        "gemm2": _picks(512)[1],
        "source": "tuned",
    }
    assert T.tactics_path(spec.root).is_file()

    autotuner.AutoTuner.get().profiling_cache.clear()  # a new process: FlashInfer's memory is empty
    fresh, be2 = ST.PersistedTactics(spec, p, 8192, True), FakeBackend()
    for m, b in ((1, 1), (3, 4), (300, 512), (5000, 8192)):
        assert fresh.profile_ids(be2, *_inputs(m)) == list(_picks(b))
    fresh.ensure(be2, *_inputs(64))
    assert be2.calls == 0 and fresh.source[K] == "cache", "no tuning in the fresh process"

    capturing["on"] = True  # graph capture of a bucket already looked up: served from memory
    assert fresh.profile_ids(be2, *_inputs(1)) == list(_picks(1))


def test_capture_of_an_untuned_layer_raises(setup):
    spec, p, capturing = setup
    capturing["on"] = True
    with pytest.raises(RuntimeError, match="during CUDA graph capture"):
        ST.PersistedTactics(spec, p, 8192, True).profile_ids(FakeBackend(), *_inputs(8))


def test_another_token_limit_is_another_table(setup):
    from flashinfer.fused_moe.utils import get_hybrid_num_tokens_buckets

    spec, p, _ = setup
    ST.PersistedTactics(spec, p, 8192, True).ensure(FakeBackend(), *_inputs(8))
    be = FakeBackend()
    other = ST.PersistedTactics(spec, p, 4096, True)
    other.ensure(be, *_inputs(8))
    assert be.calls == 1, "another tune_max_num_tokens has other buckets: tuned again"
    entry = other.cache.entries[T.entry_name(other.gpu, other.shape(K), 4096)]
    assert entry["tune_max_num_tokens"] == 4096
    assert sorted(map(int, entry["buckets"])) == list(get_hybrid_num_tokens_buckets(4096))


def test_no_harvest_is_an_error(setup, monkeypatch):
    spec, p, _ = setup
    monkeypatch.setattr(
        FakeBackend, "_autotune_call", lambda self, *a: None
    )  # FlashInfer stored nothing we know
    with pytest.raises(RuntimeError, match="holds no GEMM1"):
        ST.PersistedTactics(spec, p, 8192, True).ensure(FakeBackend(), *_inputs(8))


def test_tactic_counts_come_from_the_runner_flashinfer_cached(monkeypatch):
    """_counts reads the W4A16 runner out of MoERunner.runner_dict of the namespace that
    get_cutlass_fused_moe_module returns (the installed FlashInfer's structure, read from its source)."""
    import inspect

    from flashinfer.fused_moe import core

    src = inspect.getsource(core.get_cutlass_fused_moe_module) + inspect.getsource(core)
    assert "MoERunner.runner_dict[instance_key] = module.init(" in src
    init = src[src.index("instance_key = (") : src.index(")", src.index("instance_key = ("))]
    fields = [f.strip() for f in init[len("instance_key = (") :].split(",") if f.strip()]
    assert fields == ["x_dtype", "weight_dtype", "output_dtype", "use_deepseek_fp8_block_scale",
                      "use_w4_group_scaling", "use_mxfp8_act_scaling", "use_packed_weights",
                      "use_fused_finalize", "use_wfp4afp8_humming"]

    class Runner:
        def get_gemm1_tactic_count(self):
            return 12

        def get_gemm2_tactic_count(self):
            return 7

    key = (torch.bfloat16, torch.uint8, torch.bfloat16, False, True, False, False, True, False)
    ns = SimpleNamespace(MoERunner=SimpleNamespace(runner_dict={key: Runner()}))
    monkeypatch.setattr(core, "get_cutlass_fused_moe_module", lambda backend="100", use_fast_build=False: ns)
    pt = object.__new__(ST.PersistedTactics)
    pt._dims = {"fused_finalize": True}
    assert pt._counts() == (12, 7)
    ns.MoERunner.runner_dict = {}
    with pytest.raises(RuntimeError, match="no single W4A16 runner"):
        pt._counts()
