"""The one-command runs of the multi-GPU benchmark (scripts/gpu/parallel*.steps with parallel.env) stay runnable:
every `mxfp4lab bench parallel` line parses with today's CLI, the ENV file is valid bash, and the launcher the
steps use (torch.distributed.run, one process per rank, the rendezvous from the environment) runs the path here,
on the CPU, with two gloo ranks."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mxfp4lab import cli, results

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "scripts" / "gpu"
STEPS = [GPU / "parallel.steps", GPU / "parallel-dryrun.steps"]


def steps(path):
    """(name, argv) of every step line (job.sh's format: NAME COMMAND, # comments, blank lines)."""
    out = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, cmd = line.split(maxsplit=1)
        out.append((name, shlex.split(cmd.replace("{out}", f"/tmp/OUT/{name}.json"))))
    return out


def bench_args(argv):
    i = argv.index("mxfp4lab")
    assert argv[i + 1:i + 3] == ["bench", "parallel"], argv
    return argv[i + 1:]


@pytest.mark.parametrize("path", STEPS, ids=lambda p: p.name)
def test_every_benchmark_step_parses(path):
    found = [(n, a) for n, a in steps(path) if "mxfp4lab" in a and "parallel" in a]
    assert found, f"{path.name} runs no benchmark"
    parser = cli.build_parser()
    for name, argv in found:
        args = parser.parse_args(bench_args(argv))
        assert args.func is cli._cmd_bench_parallel and args.out == f"/tmp/OUT/{name}.json", name
        if "torch.distributed.run" in argv:
            assert argv[:3] == ["python3", "-m", "torch.distributed.run"] and "--nproc-per-node" in argv
    if path.name == "parallel.steps":  # one step per shape, all four worlds, the unsharded baseline first
        shapes = [parser.parse_args(bench_args(a)).shapes for _, a in found]
        assert shapes == ["gpt-oss-120b", "dsv4-flash"]
        assert all(parser.parse_args(bench_args(a)).worlds[0] == 1 for _, a in found)
    else:  # the shards step shares one GPU: gloo, check only
        args = parser.parse_args(bench_args(dict(found)["shards"]))
        assert args.dist_backend == "gloo" and args.check_only


def test_the_merge_line_parses():
    text = (GPU / "parallel.steps").read_text()
    line = " ".join(ln.lstrip("# ").rstrip("\\ ") for ln in text.splitlines() if "--merge" in ln or "--out data" in ln)
    argv = shlex.split(line[line.index("mxfp4lab") + len("mxfp4lab"):])
    args = cli.build_parser().parse_args(argv)
    assert args.merge == ["OUT/gpt_oss.json", "OUT/dsv4.json"]
    assert Path(args.out) == Path("data/results/parallel_latency/h200.json")


def test_env_file_is_valid_bash():
    r = subprocess.run(["bash", "-n", str(GPU / "parallel.env")], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_launcher_runs_two_ranks_on_the_cpu(tmp_path):
    out = tmp_path / "torchrun.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mxfp4lab",
           "bench", "parallel", "--scaled", "--shapes", "gpt-oss-20b", "--backends", "emulated_sm90", "--tokens", "5",
           "--worlds", "1,2", "--reps", "2", "--warmup", "1", "--out", str(out)]
    r = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = results.load(out, kind="parallel_latency")
    assert res.meta["launched_ranks"] == 2 and res.meta["complete"] is True
    assert [(x["parallel"], x["world"]) for x in res.rows] == [("none", 1), ("tp", 2), ("ep", 2)]
    assert all(x["rel_err_vs_sharded_kernel_ref"] == 0.0 and x["layer_us"] > 0 for x in res.rows)
