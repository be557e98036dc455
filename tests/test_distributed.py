"""TP/EP across processes (gloo on CPU): sharded partial outputs all-reduced equal the unsharded layer."""

import pytest

from mxfp4lab import results
from mxfp4lab.distributed import spawn_cpu


@pytest.mark.parametrize("kind", ["tp", "ep"])
def test_two_ranks_match_unsharded(tmp_path, kind):
    out = tmp_path / f"{kind}.json"
    spawn_cpu(2, kind=kind, model="gpt-oss-20b", backend="emulated_sm90", ms=(5, 33), scaled=True,
              out=str(out))
    res = results.load(out, kind="sharded_check")
    assert len(res.rows) == 2 and {(p["parallel"], p["world"]) for p in res.rows} == {(kind, 2)}
    for p in res.rows:
        # each rank rounds its partial output to bf16 (the kernel's output dtype) before the fp32
        # all-reduce, so the sum differs from the unsharded bf16 output by ~1 bf16 ulp (2^-8 relative);
        # a wrong shard (missing bias, wrong experts, wrong half) is O(1)
        assert p["rel_err_vs_unsharded_same_backend"] < 1e-2
        # the emulated backend runs the kernel-faithful model on the logical shards; the sharded
        # model sums per-shard moe_reference(mode="kernel") partials of the logical shards: same bits
        assert p["rel_err_vs_sharded_kernel_ref"] == 0.0
        assert p["rel_err_vs_fp32_ref"] < 2e-2
