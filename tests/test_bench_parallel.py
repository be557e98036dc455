"""The multi-GPU MoE benchmark (mxfp4lab.bench.parallel) on the CPU: 4 gloo ranks run the whole path -- shards,
the check against the kernel-faithful model of the sharded run, the three timings (with the host-clock stand-in,
not GPU times), the sharded roofline with the all-reduce bandwidth measured in the same run -- and a wrong rank
fails the check on every rank without hanging the job."""

import math

import pytest
import torch
from parallel_support import run_with_a_wrong_rank, run_with_strided_outputs

from mxfp4lab import cli, results
from mxfp4lab import distributed as mxdist
from mxfp4lab.bench import parallel
from mxfp4lab.bench import parallel_timing as pt
from mxfp4lab.bench.moe import CHECK_TOL
from mxfp4lab.models import GPT_OSS_120B, round_up

MS = (3, 17)
SHAPES = ("gpt-oss-20b", "dsv4-flash")  # bias + routed scaling 1.0, and no bias + routed scaling 1.5


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel") / "cpu.json"
    rc = cli.main(["bench", "parallel", "--spawn", "4", "--scaled", "--shapes", ",".join(SHAPES),
                   "--backends", "emulated_sm90,torch_naive", "--tokens", ",".join(map(str, MS)),
                   "--worlds", "1,2,4,8", "--reps", "3", "--warmup", "1", "--out", str(out)])
    assert rc == 0
    return results.load(out, kind="parallel_latency")


def test_every_point_is_checked_and_timed(four_ranks):
    res = four_ranks
    meta = res.meta
    assert meta["complete"] is True and meta["launched_ranks"] == 4
    assert meta["worlds"] == [1, 2, 4] and meta["skipped_worlds"] == [8]
    assert meta["timer"] == "host_wall_clock" and meta["nccl_env"]["NCCL_NVLS_ENABLE"] == "0"
    busbw = meta["ceilings"]["allreduce_busbw_bytes_per_s"]
    assert set(busbw) == {"2", "4"} and all(v > 0 for v in busbw.values())
    rows = res.rows
    configs = [("none", 1), ("tp", 2), ("ep", 2), ("tp", 4), ("ep", 4)]
    assert len(rows) == len(SHAPES) * len(configs) * 2 * len(MS)
    assert {(r["parallel"], r["world"]) for r in rows} == set(configs)
    assert not [r for r in rows if "error" in r]
    for r in rows:
        assert r["rel_err_vs_sharded_kernel_ref"] < CHECK_TOL and r["rel_err_vs_fp32_ref"] < 2e-2
        if r["backend"] == "emulated_sm90":
            # the emulated backend IS the kernel model on each shard, and both partials go through the same
            # all-reduce: the same bits
            assert r["rel_err_vs_sharded_kernel_ref"] == 0.0
        if r["world"] == 1:
            assert r["rel_err_vs_unsharded_same_backend"] == 0.0
        else:
            # bf16 partials summed in bf16: a few extra roundings (2^-8 relative each); a wrong shard is O(1)
            assert 0 < r["rel_err_vs_unsharded_same_backend"] < 1e-2
        assert r["timer"] == "host_wall_clock" and "CPU stand-in" in r["note"] and r["graph"] is False
        assert r["layer_us"] > 0 and r["experts_us"] > 0
        assert len(r["per_rank_layer_us"]) == len(r["per_rank_experts_us"]) == r["world"]
        assert r["layer_us"] == max(r["per_rank_layer_us"]) and r["experts_us"] == max(r["per_rank_experts_us"])
        assert (r["allreduce_us"] == 0.0) == (r["world"] == 1)
        assert r["allreduce_share"] == r["allreduce_us"] / r["layer_us"]
        assert r["comm_in_layer_us"] == r["layer_us"] - r["experts_us"]
        assert r["fraction_of_roofline"] == r["roofline_us"] / r["layer_us"]


def test_roofline_per_point(four_ranks):
    rows, busbw = four_ranks.rows, four_ranks.meta["ceilings"]["allreduce_busbw_bytes_per_s"]
    one = {(r["shape"], r["backend"], r["m"]): r for r in rows if r["world"] == 1}
    for r in rows:
        h, w, m = 256, r["world"], r["m"]
        assert r["roofline_us"] == pytest.approx(r["roofline_gpu_us"] + r["roofline_allreduce_us"], rel=1e-12)
        assert r["allreduce_bytes"] == m * h * 2  # bf16 partials
        if w > 1:
            want = 2 * (w - 1) / w * m * h * 2 / busbw[str(w)] * 1e6
            assert r["roofline_allreduce_us"] == pytest.approx(want, rel=1e-12)
        ref = one[r["shape"], r["backend"], r["m"]]
        if r["parallel"] == "tp":  # I = 320 is 10 scale blocks: TP=4 is 96, 96, 96, 32 (each padded to 128)
            assert r["intermediate_by_rank"] == {2: [160, 160], 4: [96, 96, 96, 32]}[w]
            assert r["active_experts_by_rank"] == [ref["active_experts_per_gpu"]] * w
            i_pad = round_up(r["intermediate_by_rank"][0], 128)
            want = r["active_experts_per_gpu"] * 3 * h * i_pad * 4.25 / 8 + 2 * m * h * 2
            assert r["bytes_per_gpu"] == pytest.approx(want, rel=1e-12)
        elif r["parallel"] == "ep":  # the ranks' experts partition the layer's: their active experts add up
            assert r["intermediate_by_rank"] == [320] * w
            assert sum(r["active_experts_by_rank"]) == pytest.approx(ref["active_experts_per_gpu"], rel=1e-12)
            assert sum(r["pairs_by_rank"]) == m * 4  # every (token, expert) pair on exactly one rank
        # the GPU part is the slowest rank's floor: its weight bytes / bandwidth or its FLOPs / rate
        ceil = four_ranks.meta["ceilings"]
        floors = []
        for i, a, p in zip(r["intermediate_by_rank"], r["active_experts_by_rank"], r["pairs_by_rank"]):
            params = 3 * h * round_up(i, 128)
            floors.append(max((a * params * 4.25 / 8 + 2 * m * h * 2) / ceil["copy_bytes_per_s"],
                              2 * p * params / ceil["bf16_flops_per_s"]) * 1e6)
        assert r["roofline_gpu_us"] == pytest.approx(max(floors), rel=1e-12)


def test_a_wrong_rank_fails_the_check_on_every_rank(tmp_path):
    out = tmp_path / "wrong.json"
    mxdist.spawn_cpu(2, target=run_with_a_wrong_rank, timeout=parallel.PG_TIMEOUT, wrong_rank=1,
                     shapes=("gpt-oss-20b",), backends=("emulated_sm90", "torch_naive"), ms=(9,), worlds=(1, 2),
                     reps=2, warmup=1, scaled=True, out=str(out))
    rows = {(r["backend"], r["parallel"]): r for r in results.load(out).rows}
    assert len(rows) == 2 * 3
    for par in ("tp", "ep"):
        bad = rows["emulated_sm90", par]
        assert bad["error"].startswith("output check failed") and bad["rel_err_vs_sharded_kernel_ref"] > CHECK_TOL
        assert "layer_us" not in bad  # not timed
        assert "error" not in rows["torch_naive", par] and rows["torch_naive", par]["layer_us"] > 0
    assert "error" not in rows["emulated_sm90", "none"]  # rank 1 is not part of the one-rank run


def test_a_strided_partial_output_is_reduced(tmp_path):
    """FlashInfer's backend returns ``out[:, :h]`` (H padded to 128 inside): the all-reduce needs it contiguous."""
    out = tmp_path / "strided.json"
    mxdist.spawn_cpu(2, target=run_with_strided_outputs, timeout=parallel.PG_TIMEOUT, shapes=("gpt-oss-20b",),
                     backends=("emulated_sm90",), ms=(9,), worlds=(1, 2), reps=2, warmup=1, scaled=True, out=str(out))
    rows = results.load(out).rows
    assert [(r["parallel"], r.get("error")) for r in rows] == [("none", None), ("tp", None), ("ep", None)]
    assert all(r["rel_err_vs_sharded_kernel_ref"] == 0.0 and r["layer_us"] > 0 for r in rows)


def test_rotation_keeps_each_gpus_weights_out_of_l2(monkeypatch):
    class Props:
        L2_cache_size = 60 << 20

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: Props())
    per_expert = GPT_OSS_120B.weight_bytes_per_expert(padded=True)
    # M = 1: 4 experts; TP=8 reads 1/8 of each: 19 sets to read 2 x L2 (four would sit in L2)
    assert pt.rotation(GPT_OSS_120B, 1, 8, "cuda", 4, 32, True) == math.ceil(2 * (60 << 20) / (4 * per_expert / 8))
    assert pt.rotation(GPT_OSS_120B, 1, 1, "cuda", 4, 32, True) == 4  # one GPU: 4 x 55 MB already > 2 x L2
    assert pt.rotation(GPT_OSS_120B, 1, 64, "cuda", 4, 32, True) == 32  # capped
    assert pt.rotation(GPT_OSS_120B, 1, 8, "cpu", 4, 32, False) == 4  # no L2 on the CPU path


def test_shard_spec_names_the_rule():
    assert parallel.shard_spec("none", 1, 0) == parallel.shard_spec("tp", 1, 0)
    assert parallel.shard_spec("ep", 4, 3).expert_slice(128) == (96, 128)
    with pytest.raises(ValueError, match="parallel must be one of"):
        parallel.shard_spec("pp", 2, 0)


def test_runs_merge_into_one_file(four_ranks, tmp_path):
    out = tmp_path / "merged.json"
    assert cli.main(["bench", "parallel", "--merge", str(four_ranks.path), str(four_ranks.path), "--out", str(out)]) == 0
    m = results.load(out, kind="parallel_latency")
    n = len(four_ranks.rows)
    assert len(m.rows) == 2 * n and [r["part"] for r in m.rows] == [0] * n + [1] * n
    assert m.meta["complete"] is True and m.meta["launched_ranks"] == 4 and m.meta["timer"] == "host_wall_clock"
    assert [p["provenance"] for p in m.meta["parts"]] == [four_ranks.provenance] * 2
    assert cli.main(["bench", "parallel", "--merge", str(out)]) == 2  # --out is required


def test_bad_options_are_refused_before_any_group(monkeypatch):
    monkeypatch.setattr(parallel.dist, "new_group", lambda *a, **k: pytest.fail("a group was made"))
    with pytest.raises(ValueError, match="parallels must be some of"):
        parallel.run_rank(0, 1, parallels=("pp",))
    with pytest.raises(ValueError, match="worlds must be GPU counts >= 1"):
        parallel.run_rank(0, 1, worlds=(0, 2))
    with pytest.raises(ValueError, match="reduce_dtype must be one of"):
        parallel.run_rank(0, 1, reduce_dtype="fp8")
