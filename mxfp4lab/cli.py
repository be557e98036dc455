"""The ``mxfp4lab`` command (also ``python -m mxfp4lab``): every argparse of the package is here, so this
module is longer than most modules: one place lists every subcommand and flag, each handler a few lines.

::

    mxfp4lab report {layout,accuracy,latency,all} [-p NAME VALUE ...] [-f params.yaml] [--out DIR]
    mxfp4lab layout --example [--row R --k K --model NAME]
    mxfp4lab bench {moe,summary,layout,prepare,accuracy,validation,launches} ...   (a table and a result file)
    torchrun --nproc-per-node gpu -m mxfp4lab bench parallel ...   (TP / EP over the GPUs of one host)
    mxfp4lab distributed [--spawn N] --kind tp|ep ...         (or under torchrun: torchrun -m mxfp4lab distributed)
    mxfp4lab sass [--shape S] [--bucket B] [--tile ...]       (sm_90a compile report of the Triton kernels)
    mxfp4lab provenance                                       (this machine's provenance block, JSON)
    mxfp4lab provenance --which-commit DIGEST                 (the commits whose source has a result's source_digest)
    mxfp4lab build [--configs compact|minimal|full|stock_k128|LABELS] [--info|--export F|--import F|...]

``main(argv=None) -> int`` is the console-script entry point (exit status): 0 success; 1 a report or
build failed; 2 a user error -- a bad value, an unknown name, a missing or unreadable file, an output path
that is a file or read-only -- printed as ONE line ``mxfp4lab <command>: error: ...`` (no traceback; set
``MXFP4LAB_TRACEBACK=1`` to see one). A traceback means a bug in mxfp4lab.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

REPORT_CHOICES_HELP = "layout, accuracy, latency, all (or any notebooks/NN_<name>.ipynb stem)"


def int_list(text: str) -> list:
    """argparse type: ``"1,64,1024"`` -> [1, 64, 1024] (positive ints; the error names the bad item)."""
    out = []
    for item in text.split(","):
        try:
            v = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers "
                                             f"({item.strip()!r})") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: every value must be >= 1, got {v}")
        out.append(v)
    return out


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="run notebooks through papermill into outputs/<date>-<name>/ (ipynb + HTML)",
        description="Execute report notebooks with parameters; write the executed notebook, a self-contained "
                    "HTML report and results.json to a new OUT/<date>-<name>[-N]/ (never replacing a run) and refresh "
                    "OUT/index.html. "
                    "Exit status 1 if any report failed (earlier reports are left intact).",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help=REPORT_CHOICES_HELP)
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="notebook parameter (VALUE parsed as YAML: 3, 0.5, [1, 2], text); repeatable")
    p.add_argument("-f", "--parameters-file", metavar="YAML",
                   help="YAML parameters: shared top-level values, and per-report sections (layout: {...})")
    p.add_argument("--out", metavar="DIR", help="output root (default: <repo>/outputs)")
    p.add_argument("--hide-input", action="store_true", help="HTML report without code cells' input")
    p.add_argument("--no-progress", action="store_true", help="no papermill progress bar")
    p.add_argument("--log-output", action="store_true", help="stream the notebooks' output to the log")
    p.add_argument("--timeout", type=int, default=None, metavar="S", help="per-cell timeout in seconds (600)")
    p.add_argument("--list", action="store_true", help="list available reports and their parameters")
    p.add_argument("--notebooks", metavar="DIR", default=None, help=argparse.SUPPRESS)  # tests: other notebook dir
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    from . import report

    if args.list or not args.names:
        for n in report.available_reports(args.notebooks):
            nb = report.notebook_path(n, args.notebooks)
            params = report.notebook_parameters(nb)
            print(f"{n:<10} {nb.name}: " + ", ".join(f"{k}={v}" for k, v in params.items()))
        if not args.list:
            print("\nusage: mxfp4lab report NAME [NAME ...] | all   (see mxfp4lab report -h)")
            return 2
        return 0
    params = {name: report.parse_value(value) for name, value in args.parameter}
    if args.timeout is not None and args.timeout <= 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    res = report.run_reports(
        args.names, parameters=params, param_file=args.parameters_file, out_dir=args.out,
        notebook_dir=args.notebooks,
        hide_input=args.hide_input, progress=not args.no_progress, log_output=args.log_output,
        timeout=args.timeout or report.DEFAULT_TIMEOUT_S,
    )
    out_root = args.out or report.OUTPUT_DIR
    failed = [n for n, r in res.items() if isinstance(r, Exception)]
    print(f"index: {report.write_index(out_root)}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# layout --example
# --------------------------------------------------------------------------------------------
def _add_layout_parser(sub) -> None:
    p = sub.add_parser("layout", help="explain the SM90 layouts in the terminal",
                       description="Print the SM90 weight interleave, bit permutation and scale fold of a small "
                                   "example, and one element's path.")
    p.add_argument("--example", action="store_true", help="print the worked example (the default)")
    p.add_argument("--row", type=int, default=8, help="row of the traced element (checkpoint row with --model)")
    p.add_argument("--k", type=int, default=45, help="k of the traced element")
    p.add_argument("--model", default=None, help="model name: trace from a checkpoint row through [up ; gate]")
    p.set_defaults(func=_cmd_layout)


def _cmd_layout(args) -> int:
    from .studies.layout import layout_example_text

    print(layout_example_text(args.row, args.k, args.model))
    return 0


# --------------------------------------------------------------------------------------------
# build (mxfp4lab.flashinfer_build: standard library only at import)
# --------------------------------------------------------------------------------------------
def _add_build_parser(sub) -> None:
    from . import flashinfer_build as fb

    p = sub.add_parser(
        "build",
        help="build the restricted W4A16 fused_moe_90 module (and/or the interleave extension)",
        description=fb.__doc__.split("\n\n")[0],
    )
    p.add_argument("--configs", default=fb.DEFAULT_CONFIGS,
                   help=" | ".join(fb.CONFIG_SETS) + " | comma-separated labels")
    p.add_argument("-j", "--jobs", type=int, default=None, help="ninja jobs (default $MAX_JOBS or all cores)")
    p.add_argument("--no-split", action="store_true", help="group generated instantiations by 8 (stock)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--spec-only", action="store_true", help="generate sources + build.ninja, do not compile")
    p.add_argument("--interleave-ext", action="store_true", help="only build the tiny interleave extension")
    p.add_argument("--info", action="store_true",
                   help="print build_info() as JSON (with the recorded start-up times) and exit")
    p.add_argument("--import-cost", action="store_true",
                   help="time `import flashinfer` and the lean W4A16 import in fresh interpreters")
    p.add_argument("--export", metavar="TAR_XZ", help="write the built library to an archive (reuse on other hosts)")
    p.add_argument("--import", dest="import_", metavar="TAR_XZ", help="install a library archive into the cache")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_build)


def _cmd_build(args) -> int:
    """Run the ``build`` subcommand; returns a process exit code."""
    import json

    from . import flashinfer_build as fb

    configs = fb.parse_configs(args.configs)
    kw = {"split_units": not args.no_split}
    try:
        if args.interleave_ext:
            print(fb.build_interleave_ext(verbose=not args.quiet, force=args.force))
        elif args.info:
            from .studies.startup import recorded_times

            info = {**fb.build_info(configs=configs, **kw), "recorded": recorded_times()}
            print(json.dumps(info, indent=1))
            def s(v):
                return "?" if v is None else f"{v:.1f}"

            for r in info["recorded"]:
                print(f"recorded {r['file']}: {r['gpu']} ({r['cpu_count']} cores, {r['date']}): cold build "
                      f"{s(r['cold_build_s'])} s (configs={r['configs']}), fresh process to the first tuned "
                      f"call {s(r['first_tuned_call_s'])} s with persisted tactics, "
                      f"{s(r['first_tuned_call_tuning_s'])} s tuning", file=sys.stderr)
        elif args.import_cost:
            from .flashinfer_build import import_cost

            print(import_cost.report([import_cost.measure(m, cwd=str(Path(__file__).resolve().parents[1]))
                                      for m in ("torch", "lean", "full")]))
        elif args.export:
            print(fb.export_archive(args.export, configs=configs, **kw))
        elif args.import_:
            print(fb.import_archive(args.import_, configs=configs, **kw))
        elif args.spec_only:
            spec = fb.w4a16_jit_spec(configs=configs, **kw)
            spec.write_ninja()
            print(spec.ninja_path)
        else:
            print(fb.build(configs=configs, jobs=args.jobs, verbose=not args.quiet, force=args.force, **kw))
        return 0
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        print(f"mxfp4lab build: error: {e}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------------------------
# bench: each prints a table and writes a result file (mxfp4lab.results)
# --------------------------------------------------------------------------------------------
def _add_bench_parser(sub) -> None:
    from . import results
    from .models import STUDY_SHAPES

    p = sub.add_parser("bench", help="benchmarks: print a table, write data/results/<study>/<gpu>.json")
    bench = p.add_subparsers(dest="bench", metavar="BENCH", required=True)

    m = bench.add_parser("moe", help="GPU latency sweep: backends x shapes x M x routing, against the roofline")
    m.add_argument("--backends", default="flashinfer_sm90,torch_naive")
    m.add_argument("--shapes", default=",".join(STUDY_SHAPES))
    m.add_argument("--m", default=None, help="token counts (default: bench.moe.DEFAULT_M, 1 .. 16384)")
    m.add_argument("--routing", default="uniform,skewed")
    m.add_argument("--reps", type=int, default=50)
    m.add_argument("--rotate", type=int, default=4)
    m.add_argument("--no-graph", action="store_true")
    m.add_argument("--modes", default=None, help="timing modes, e.g. graph,eager,gemm (mxfp4lab.bench.modes; "
                   "default graph, or eager with --no-graph); one row per mode")
    m.add_argument("--mode-m", default=None, help="M values for the modes other than graph (default: every M)")
    m.add_argument("--check-m", default="1,64,1024", help="M values at which outputs are checked (all: 'all')")
    m.add_argument("--out", default=None, help="result file (default data/results/latency/<gpu>.json)")
    m.set_defaults(func=_cmd_bench_moe)

    s = bench.add_parser("summary", help="the latency study's conclusions from a recorded sweep (CPU)")
    s.add_argument("--results", default=None, help="sweep (default: data/results/latency/h200.json, else h100)")
    s.add_argument("--out", default=None, help="summary (default data/results/latency_summary/<gpu>.json)")
    s.set_defaults(func=_cmd_bench_summary)

    lay = bench.add_parser("layout", help="CPU throughput of the SM90 interleave / fold as a ratio to clone()")
    lay.add_argument("--experts", type=int, default=128)
    lay.add_argument("--rows", type=int, default=5888)
    lay.add_argument("--kbytes", type=int, default=1472)
    lay.add_argument("--repeat", type=int, default=3)
    lay.add_argument("--out", default=str(results.result_path("layout", "cpu")))
    lay.set_defaults(func=_cmd_bench_layout)

    pr = bench.add_parser("prepare", help="wall time and peak memory to prepare one real layer on CPU")
    pr.add_argument("--models", default="gpt-oss-120b,dsv4-flash")
    pr.add_argument("--out", default=str(results.result_path("prepare", "cpu")))
    pr.set_defaults(func=_cmd_bench_prepare)

    ac = bench.add_parser("accuracy", help="MXFP4 error vs the bf16 origin per scale rule and distribution (CPU)")
    ac.add_argument("--rows", type=int, default=256)
    ac.add_argument("--out", default=str(results.result_path("accuracy", "cpu")))
    ac.set_defaults(func=_cmd_bench_accuracy)

    pa = bench.add_parser(
        "parallel", help="one MoE layer over the GPUs of one host (TP / EP = 1, 2, 4, 8): whole layer, all-reduce "
                         "share, roofline; under torchrun, one rank per GPU",
        description="torchrun --nproc-per-node gpu -m mxfp4lab bench parallel ...  (one process: world 1 only; "
                    "--spawn N: N gloo ranks on this CPU with the host-clock stand-in)")
    pa.add_argument("--backends", default=None, help="default: every backend that runs on shards "
                    "(bench.parallel.DEFAULT_BACKENDS; on a CPU: emulated_sm90,torch_naive)")
    pa.add_argument("--shapes", default="gpt-oss-120b,dsv4-flash")
    pa.add_argument("--m", "--tokens", dest="m", type=int_list, default=[1, 16, 64, 256, 1024, 4096],
                    help="token counts (--tokens under torchrun, whose own options take --m)")
    pa.add_argument("--worlds", type=int_list, default=[1, 2, 4, 8],
                    help="GPUs per layer (those above the launched ranks are skipped)")
    pa.add_argument("--parallel", default="tp,ep", help="tp, ep or both")
    pa.add_argument("--reduce-dtype", default="bf16", choices=["bf16", "fp32"], help="dtype of the all-reduce")
    pa.add_argument("--reps", type=int, default=30)
    pa.add_argument("--warmup", type=int, default=5)
    pa.add_argument("--rotate", type=int, default=4, help="input sets at least (more where L2 would hold the weights)")
    pa.add_argument("--no-graph", action="store_true", help="time eagerly (no CUDA graph around the layer)")
    pa.add_argument("--check-only", action="store_true", help="only the output checks, no timing (implied when "
                    "ranks share a GPU)")
    pa.add_argument("--dist-backend", default=None, choices=["nccl", "gloo"],
                    help="process group backend (default nccl on GPUs; gloo lets ranks share one GPU: a dry run)")
    pa.add_argument("--scaled", action="store_true", help="scaled-down layers (CPU tests)")
    pa.add_argument("--spawn", type=int, default=0, help="spawn N gloo ranks on this CPU instead of torchrun")
    pa.add_argument("--out", default=None, help="result file (default on GPUs: data/results/parallel_latency/<gpu>.json; "
                    "a CPU run writes only with --out)")
    pa.add_argument("--merge", nargs="+", metavar="FILE", default=None,
                    help="instead of running: merge these runs' files (e.g. one per shape) into --out")
    pa.set_defaults(func=_cmd_bench_parallel)

    va = bench.add_parser("validation", help="what the input/output checks cost a backend's call at small M")
    va.add_argument("--backends", default="emulated_sm90,torch_naive")
    va.add_argument("--shapes", default=",".join(STUDY_SHAPES))
    va.add_argument("--m", type=int_list, default=[1, 64], help="token counts (default 1,64)")
    va.add_argument("--device", default="cpu")
    va.add_argument("--repeat", type=int, default=7)
    va.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steady small-M timings)")
    va.add_argument("--out", default=None, help="result file (default data/results/validation/<device>.json)")
    va.set_defaults(func=_cmd_bench_validation)

    la = bench.add_parser("launches", help="one MoE forward launch by launch: timeline of a CUDA-graph replay "
                                           "and (--ncu) DRAM bytes per launch from Nsight Compute")
    la.add_argument("--backend", default="decode_w4a16")
    la.add_argument("--shape", default="gpt-oss-120b")
    la.add_argument("--m", default="1,64")
    la.add_argument("--ncu", action="store_true", help="also read DRAM bytes per launch with Nsight Compute")
    la.add_argument("--phases", action="store_true",
                    help="decode_w4a16: also each CTA's phase stamps from the kernel's traced build (bench/phases.py)")
    la.add_argument("--out", default=None, help="result file (default data/results/launches/<gpu>.json)")
    la.add_argument("--target", nargs=4, metavar=("BACKEND", "SHAPE", "M", "CALLS"), help=argparse.SUPPRESS)
    la.set_defaults(func=_cmd_bench_launches)


def _cmd_bench_launches(a) -> int:
    import torch

    from . import results
    from .bench import launches

    if a.target:  # the process Nsight Compute profiles
        launches.run_target(a.target[0], a.target[1], int(a.target[2]), int(a.target[3]))
        return 0
    if not torch.cuda.is_available():
        print("the launch breakdown needs a CUDA GPU; recorded ones are in data/results/launches/", file=sys.stderr)
        return 2
    out = a.out or results.result_path("launches", results.gpu_slug(torch.cuda.get_device_name()))
    launches.breakdown(a.backend, a.shape, [int(v) for v in a.m.split(",")], ncu=a.ncu, phases=a.phases, out=out)
    return 0


def _cmd_bench_moe(a) -> int:
    import os

    import torch

    from . import results
    from .bench.harness import measure_ceilings
    from .bench.moe import DEFAULT_M, sweep
    from .flashinfer_build import DEFAULT_CONFIGS

    if not torch.cuda.is_available():
        print("the latency sweep needs a CUDA GPU; recorded results are in data/results/latency/", file=sys.stderr)
        return 2
    out = a.out or results.result_path("latency", results.gpu_slug(torch.cuda.get_device_name()))
    ceil = measure_ceilings()
    print(f"measured ceilings: copy {ceil['copy_bytes_per_s'] / 1e12:.2f} TB/s, "
          f"bf16 {ceil['bf16_flops_per_s'] / 1e12:.0f} TFLOP/s")
    check_m = None if a.check_m == "all" else [int(v) for v in a.check_m.split(",")]

    def save(rows, done=False):
        extra = {}
        if "flashinfer_sm90" in a.backends:
            from .backends.flashinfer_sm90 import autotuner_choices

            extra["flashinfer_autotuner"] = autotuner_choices()
        return results.write(out, "latency_sweep", rows, partial=not done, ceilings=ceil, complete=done,
                             build_configs=os.environ.get("MXFP4LAB_BUILD_CONFIGS", DEFAULT_CONFIGS), **extra)

    ms = DEFAULT_M if a.m is None else [int(v) for v in a.m.split(",")]
    rows = sweep(a.backends.split(","), a.shapes.split(","), list(ms),
                 a.routing.split(","), reps=a.reps, rotate=a.rotate, graph=not a.no_graph, check_m=check_m,
                 ceilings=ceil, on_progress=save, modes=a.modes.split(",") if a.modes else None,
                 mode_m=[int(v) for v in a.mode_m.split(",")] if a.mode_m else None)
    print(f"wrote {save(rows, done=True)}")
    return 0


def _cmd_bench_parallel(a) -> int:
    import torch

    from . import results
    from .bench import parallel

    out = a.out
    if a.merge:
        if not out:
            print("mxfp4lab bench parallel --merge needs --out", file=sys.stderr)
            return 2
        print(f"wrote {parallel.merge(a.merge, out)}")
        return 0
    if out is None and torch.cuda.is_available() and not a.spawn:
        out = str(results.result_path(parallel.STUDY, results.gpu_slug(torch.cuda.get_device_name())))
    parallel.run(spawn=a.spawn, dist_backend=a.dist_backend, shapes=a.shapes.split(","),
                 backends=a.backends.split(",") if a.backends else None, ms=tuple(a.m), worlds=tuple(a.worlds),
                 parallels=tuple(a.parallel.split(",")), reduce_dtype=a.reduce_dtype, reps=a.reps, warmup=a.warmup,
                 rotate=a.rotate, graph=not a.no_graph, check_only=a.check_only, scaled=a.scaled, out=out)
    return 0


def _cmd_bench_summary(a) -> int:
    from pathlib import Path

    import pandas as pd

    from . import results
    from .studies import latency

    s = latency.summarize(a.results)
    pd.set_option("display.width", 220)
    pd.set_option("display.max_rows", 500)
    prov = s["provenance"] or {}
    print(f"source: {s['source']} ({prov.get('gpu')}, {str(prov.get('date'))[:10]}, commit "
          f"{str(prov.get('mxfp4lab_commit'))[:10]})\n")
    print("latency (us, median), uniform routing; best_fraction_of_floor = floor / best")
    print(s["table"].round(3).to_string(index=False), "\n")
    print("FlashInfer vs Marlin crossovers (log-log interpolation between recorded M)")
    print(s["crossovers"][["shape", "routing", "crossing", "crossover_m", "m_lo", "m_hi", "faster_below",
                           "faster_above"]].round(1).to_string(index=False), "\n")
    print(f"claim check ({s['claim_note']}); fi_faster = t_marlin / t_flashinfer - 1")
    print(s["claim"].round(3).to_string(index=False), "\n")
    print("dispatch (fastest recorded backend per (shape, M)) vs always-X: t_X / t_dispatch")
    for r in s["dispatch"][s["dispatch"]["shape"] == "all"].itertuples():
        print(f"  always {r.always:16s} geomean {r.geomean:.3f}x  best {r.best:.3f}x  over {r.n_m} (shape, M) points")
    if not s["triton_goals"].empty:
        print("\nTriton vs its goals")
        print(s["triton_goals"].round(2).to_string(index=False))
    if not s["decode_goals"].empty:
        print("\ndecode_w4a16 vs its goals")
        print(s["decode_goals"].round(2).to_string(index=False))
    src = Path(s["source"])
    payload = latency.summary_records(s)
    sweep_prov, table = payload.pop("provenance"), payload.pop("table")
    try:
        payload["source"] = src.resolve().relative_to(results.RESULTS_DIR.resolve()).as_posix()
    except ValueError:  # a sweep outside data/results: keep its path
        pass
    out = a.out or results.result_path("latency_summary", src.stem)
    print(f"\nwrote {results.write(out, 'latency_summary', table, sweep_provenance=sweep_prov, **payload)}")
    return 0


def _cmd_bench_layout(a) -> int:
    import torch

    from . import results
    from .bench.layout import layout_throughput

    rows = layout_throughput(a.experts, a.rows, a.kbytes, a.repeat)
    print(f"{'op':28s} {'shape':>20s} {'s':>8s} {'clone s':>8s} {'x clone':>8s} {'GB/s':>6s}")
    for r in rows:
        print(f"{r['op']:28s} {str(tuple(r['shape'])):>20s} {r['seconds']:8.3f} {r['clone_seconds']:8.3f} "
              f"{r['ratio_to_clone']:8.2f} {r['GB_per_s']:6.2f}")
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"wrote {results.write(a.out, 'layout_throughput', rows, torch_threads=torch.get_num_threads(), repeat=a.repeat)}")
    return 0


def _cmd_bench_prepare(a) -> int:
    from . import results
    from .bench.prepare import measure_isolated

    rows = measure_isolated(a.models.split(","))
    print(f"{'model':14s} {'seconds':>8s} {'in GB':>7s} {'out GB':>7s} {'peak RSS GB':>12s} {'extra GB':>9s}")
    for r in rows:
        print(f"{r['model']:14s} {r['seconds']:8.2f} {r['input_bytes'] / 1e9:7.2f} {r['output_bytes'] / 1e9:7.2f} "
              f"{r['peak_rss_bytes'] / 1e9:12.2f} {r['peak_extra_bytes'] / 1e9:9.2f}")
    print(f"wrote {results.write(a.out, 'prepare_cost', rows)}")
    return 0


def _cmd_bench_accuracy(a) -> int:
    from . import results
    from .studies import accuracy

    q = accuracy.accuracy_quantization(max_rows=a.rows)
    table = accuracy.accuracy_table(q)
    print("relative error vs bf16 origin (rows: scale rule, columns: weight distribution)")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    path = results.write(a.out, "quantization_error", q.to_dict(orient="records"), rows_per_matrix=a.rows,
                         table_rel_err={r: table.loc[r].to_dict() for r in table.index})
    print(f"wrote {path}")
    return 0


def _cmd_bench_validation(a) -> int:
    import torch

    from . import results
    from .bench.validation import format_table, validation_cost

    rows = validation_cost(a.backends.split(","), a.shapes.split(","), a.m, repeat=a.repeat, device=a.device,
                           threads=a.threads)
    print(format_table(rows))
    print(f"torch threads: {torch.get_num_threads()}")
    slug = "cpu" if a.device == "cpu" else results.gpu_slug(torch.cuda.get_device_name())
    out = a.out or results.result_path("validation", slug)
    print(f"wrote {results.write(out, 'validation_cost', rows, torch_threads=torch.get_num_threads())}")
    return 0


# --------------------------------------------------------------------------------------------
# distributed (TP/EP across processes) and sass (sm_90a compile report)
# --------------------------------------------------------------------------------------------
def _add_distributed_parser(sub) -> None:
    p = sub.add_parser("distributed", help="sharded MoE (TP/EP) across processes vs the unsharded layer")
    p.add_argument("--kind", choices=["tp", "ep"], default="tp")
    p.add_argument("--model", default="gpt-oss-120b")
    p.add_argument("--backend", default="flashinfer_sm90")
    p.add_argument("--m", "--tokens", dest="m", type=int_list, default=[16, 256],
                   help="token counts (--tokens under torchrun, whose own options take --m)")
    p.add_argument("--scaled", action="store_true", help="scaled-down layer (CPU tests)")
    p.add_argument("--spawn", type=int, default=0, help="spawn N gloo ranks here instead of torchrun")
    p.add_argument("--out")
    p.set_defaults(func=_cmd_distributed)


def _cmd_distributed(a) -> int:
    from .distributed import run

    run(spawn=a.spawn, kind=a.kind, model=a.model, backend=a.backend, ms=tuple(a.m),
        scaled=a.scaled, out=a.out)
    return 0


def _add_sass_parser(sub) -> None:
    p = sub.add_parser("sass", help="compile the Triton MoE kernels for sm_90a (no GPU) and report registers, "
                                    "spills and SASS counts")
    p.add_argument("--shape", default="gpt-oss-120b")
    p.add_argument("--bucket", type=int, default=None, help="only this M bucket of the tile table")
    p.add_argument("--tile", action="append", default=[],
                   help="a tile 'bm,bn1,bk1,bn2,bk2,warps,stages,dq' instead of the table (repeatable)")
    p.add_argument("--sass", metavar="DIR", default=None, help="also write each kernel's SASS to DIR/<kernel>_<tile>.sass")
    p.set_defaults(func=_cmd_sass)


def _cmd_sass(a) -> int:
    from .kernels.sass import print_reports
    from .kernels.tiles import TileConfig, table_tiles
    from .models import get_model

    tiles = [TileConfig.from_list(t.strip("()").split(",")) for t in a.tile] if a.tile else table_tiles(a.bucket)
    print_reports(get_model(a.shape), tiles, a.sass)
    return 0


def _add_checkpoint_parser(sub) -> None:
    p = sub.add_parser("checkpoint", help="inspect a GPT-OSS / DeepSeek-V4 checkpoint: model, layer statistics, "
                                          "backends vs the fp32 reference, time and peak memory",
                       description="Detect the model of a checkpoint directory, then per layer (one expert at a "
                                   "time, memory-mapped): weight statistics, and every backend available here "
                                   "against the fp32 reference on the layer's real experts with its real router. "
                                   "Prints the wall time and the process's peak RSS.")
    p.add_argument("path", help="checkpoint directory (or index.json / one .safetensors)")
    p.add_argument("--layers", default=None, help="comma-separated MoE layers (default: the first)")
    p.add_argument("--tokens", type=int, default=64, help="tokens routed through each layer (64)")
    p.add_argument("--activations", default="gaussian",
                   help="gaussian, heavy_tailed, or a .safetensors file of captured hidden states")
    p.add_argument("--max-experts", type=int, default=16, help="experts held dequantized at once (16)")
    p.add_argument("--no-backends", action="store_true", help="statistics only")
    p.set_defaults(func=_cmd_checkpoint)


def _cmd_checkpoint(a) -> int:
    import resource
    import time

    from .checkpoints import CheckpointError
    from .studies import checkpoint as ck

    t0 = time.perf_counter()
    try:
        src = ck.open_layer_source(a.path)
        layers = src.check_layers(None if a.layers is None else [int(x) for x in a.layers.split(",")])
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(src.detected.describe())
    print("detected from: " + ", ".join(f"{k} <- {v}" for k, v in src.detected.sources.items()))
    for layer in layers:
        t1 = time.perf_counter()
        st = ck.layer_stats(src, layer)
        print(f"\nlayer {layer}: weight statistics ({time.perf_counter() - t1:.1f} s)")
        print(st["summary"].round(4).to_string(index=False))
        if not a.no_backends:
            t1 = time.perf_counter()
            x, tid, desc = ck.layer_tokens(src, layer, a.tokens, a.activations)
            ids, w = ck.route_tokens(src, layer, x, tid)
            frame, info = ck.layer_backends(src, layer, x, ids, w, max_experts=a.max_experts)
            print(f"layer {layer}: {desc}; {info['experts_routed']} experts routed, {info['chunks']} chunk(s) "
                  f"({time.perf_counter() - t1:.1f} s)")
            print(frame.to_string(index=False))
            for name, why in info["skipped"].items():
                print(f"  {name} failed: {why}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    print(f"\n{len(layers)} layer(s) in {time.perf_counter() - t0:.1f} s; peak RSS {peak:.2f} GiB")
    return 0


def _add_provenance_parser(sub) -> None:
    p = sub.add_parser("provenance", help="print this machine's provenance block (what every result records)")
    p.add_argument("--which-commit", metavar="DIGEST", default=None,
                   help="list the commits whose source has this source_digest (a result's provenance field)")
    p.set_defaults(func=_cmd_provenance)


def _cmd_provenance(a) -> int:
    import json

    from . import provenance as pv

    if a.which_commit:
        found = pv.commits_with_digest(a.which_commit)
        print("\n".join(found) if found else f"no commit of the last 400 has source_digest {a.which_commit}")
        return 0 if found else 1
    print(json.dumps(pv.provenance(), indent=2, default=str))
    return 0


def _add_results_parser(sub) -> None:
    p = sub.add_parser("results", help="recorded results: merge a run's file into a study file")
    res = p.add_subparsers(dest="results", metavar="ACTION", required=True)
    m = res.add_parser("merge", help="put a run's rows (a GPU job's file) into a study file under a run name; the "
                                     "rows they replace move to archive/<study>/<gpu>-LABEL.json")
    m.add_argument("run", help="the run's result file (e.g. OUT/latency.json from scripts/gpu/job.sh)")
    m.add_argument("--into", required=True, help="the study file, e.g. data/results/latency/h200.json")
    m.add_argument("--name", required=True, help="the run's name in the file (new; lower-case, digits, '_')")
    m.add_argument("--key", required=True,
                   help="comma-separated fields that say which rows a new row replaces, e.g. backend,shape,m,routing")
    m.add_argument("--label", required=True, help="the archive file's label for the replaced rows, e.g. "
                                                  "2026-12-05-before-one-grid")
    m.add_argument("--what", default=None, help="one sentence on the archived rows (their note and index line)")
    m.set_defaults(func=_cmd_results_merge)


def _cmd_results_merge(a) -> int:
    from . import results

    key = [k.strip() for k in a.key.split(",") if k.strip()]
    target, arch = results.merge_run(a.into, a.run, a.name, key=key, label=a.label, what=a.what)
    r = results.load(target)
    print(f"{target}: {sum(1 for x in r.rows if x.get('run') == a.name)} rows of run {a.name}"
          + (f"; the rows they replaced: {arch}" if arch else "; no row replaced"))
    return 0


# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mxfp4lab", description="MXFP4 MoE on Hopper: layouts, builds, reports")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_report_parser(sub)
    _add_layout_parser(sub)
    _add_build_parser(sub)
    _add_bench_parser(sub)
    _add_distributed_parser(sub)
    _add_sass_parser(sub)
    _add_provenance_parser(sub)
    _add_checkpoint_parser(sub)
    _add_results_parser(sub)
    return parser


def _user_error_status(exc: BaseException) -> int | None:
    """Exit status for an error caused by the user's input (1: a report / build failed; 2: bad input), or
    None for anything else (a bug: let its traceback show)."""
    from .backends.base import BackendUnavailable
    from .report import ReportError

    if isinstance(exc, (ReportError, BackendUnavailable)):
        return 1
    if isinstance(exc, (ValueError, KeyError, OSError)):  # InputError, CheckpointError, ResultsError ...
        return 2
    try:
        import yaml

        if isinstance(exc, yaml.YAMLError):
            return 2
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        pass
    return None


def _one_line(exc: BaseException) -> str:
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        msg = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return " ".join(str(msg).split()) or type(exc).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print(f"mxfp4lab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # sorted into user errors (one line) and bugs (re-raised)
        status = _user_error_status(exc)
        if status is None or os.environ.get("MXFP4LAB_TRACEBACK", "") not in ("", "0"):
            raise
        print(f"mxfp4lab {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return status
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
