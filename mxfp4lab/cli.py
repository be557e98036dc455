"""The ``mxfp4lab`` command.

::

    mxfp4lab report {layout,accuracy,latency,all} [-p NAME VALUE ...] [-f params.yaml] [--out DIR]
    mxfp4lab layout --example [--row R --k K --model NAME]
    mxfp4lab build [--configs compact|minimal|full|stock_k128|LABELS] [--info|--export F|--import F|...]

``main(argv=None) -> int`` is the console-script entry point (exit status).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

REPORT_CHOICES_HELP = "layout, accuracy, latency, all (or any notebooks/NN_<name>.ipynb stem)"


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="run notebooks through papermill into outputs/<date>-<name>/ (ipynb + HTML)",
        description="Execute report notebooks with parameters; write the executed notebook, a self-contained "
                    "HTML report and results.json to OUT/<date>-<name>/ and refresh OUT/index.html. "
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
    try:
        res = report.run_reports(
            args.names, parameters=params, param_file=args.parameters_file, out_dir=args.out,
            notebook_dir=args.notebooks,
            hide_input=args.hide_input, progress=not args.no_progress, log_output=args.log_output,
            timeout=args.timeout or report.DEFAULT_TIMEOUT_S,
        )
    except report.ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
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
def layout_example_text(row: int = 8, k: int = 45, model: Optional[str] = None) -> str:
    """The plain-text layout walk-through ``mxfp4lab layout --example`` prints."""
    from . import experiments as ex

    lines: List[str] = []
    add = lines.append
    tile = ex.layout_tile_map()
    by_byte = tile[tile.nibble == 0].set_index(["tile_row", "src_byte"])
    add("=" * 100)
    add("1. SM90 FP4 weight interleave: one 16-row x 64-element tile (32 bytes per row)")
    add("   Each logical byte (2 FP4 codes) travels in one lane's 32-bit word; per source byte:")
    add("   destination row (hex) / destination 32-bit word in the row (0-7) / its slot in the word (A-D)")
    add("=" * 100)
    header = "   byte " + " ".join(f"{c:>3}" for c in range(32))
    add(header)
    for r in range(16):
        cells = []
        for c in range(32):
            e = by_byte.loc[(r, c)]
            cells.append(f"{int(e.dst_tile_row):x}{int(e.dst_word)}{e.lane_byte}")
        add(f"   r{r:<3}  " + " ".join(cells))
    add("   (e.g. '83B' = row 8, word 3, slot B). Slots: A=(r, c) B=(r+8, c) C=(r, c+4) D=(r+8, c+4),")
    add("   c = 8m + l: lane (r, m, l) stores its word at row r + 8(m % 2), bytes 16(m // 2) + 4l .. +3.")
    moved = tile.row_moved.mean()
    add(f"   {100 * moved:.0f}% of the elements change row: bytes 8-15, 24-31 of rows 0-7 go to rows 8-15, and "
        "bytes 0-7, 16-23 of rows 8-15 to rows 0-7.")
    add("")
    add("=" * 100)
    add("2. The bit permutation inside one 32-bit lane word (SM90_FP4_BIT_PERM)")
    add("   Source word = bytes A B C D little-endian; label Xn.b = byte X, nibble n (element 2i+n),")
    add("   code bit b (m0 e0 e1 = magnitude, s = sign)")
    add("=" * 100)
    perm = ex.layout_bit_permutation()
    src_lbl = dict(zip(perm.src_bit, perm.label))
    dst_lbl = dict(zip(perm.dst_bit, perm.label))
    for title, lbl in (("source     ", src_lbl), ("destination", dst_lbl)):
        for half in (1, 0):
            bits = range(16 * half + 15, 16 * half - 1, -1)
            add(f"   {title} bits {16 * half + 15:>2}..{16 * half:<2}: " + " ".join(f"{lbl[b]:>5}" for b in bits))
        title = ""
    add("   per half-word: magnitudes of C, B, A -> bits 0-2, 3-5, 6-8; signs of C, B, A -> 9, 12, 15;")
    add("   D: m0 -> 13, e0 e1 -> 10 11, s -> 14.  src bit -> dst bit:")
    for j in range(4):
        seg = perm[perm.word_byte == j]
        add("     " + "  ".join(f"{s:>2}->{d:<2}" for s, d in zip(seg.src_bit, seg.dst_bit)))
    add("")
    add("=" * 100)
    add("3. Scale fold: one 64-row x 128-K block of E8M0 scales [64, 4] -> [16, 16] bytes")
    add("   folded[f, 4s + g] = s[16s + f, g]: folded row f holds rows f, f+16, f+32, f+48 (labels row.group)")
    add("=" * 100)
    fold = ex.layout_scale_fold()
    g = fold.set_index(["frow", "col"])
    add("   f\\col " + "".join(f"{c:>6}" for c in range(16)))
    for f in range(16):
        add(f"   {f:>4}  " + "".join(f"{int(g.loc[(f, c)].row):>4}.{int(g.loc[(f, c)].group_in_k128)}"
                                      for c in range(16)))
    add("")
    add("=" * 100)
    config = None
    if model:
        from .models import get_model

        config = get_model(model)
    tr = ex.layout_trace(row, k, config=config, pre_stage="auto" if config is not None else None)
    add(f"4. The path of one element: {'checkpoint' if config is not None else 'fc1'} row {row}, k {k}"
        + (f" ({config.name})" if config is not None else ""))
    add("=" * 100)
    for stage, where, note in tr["stages"]:
        add(f"   {stage:<22} {where:<40} {note}")
    rv = ex.layout_reverse(tr["dst_row"], tr["dst_byte"][3], tr["dst_bit"][3])
    add(f"   reverse: w_sm90[{tr['dst_row']}, {tr['dst_byte'][3]}] bit {tr['dst_bit'][3]} <- "
        f"{rv['code_bit_name']} of (row {rv['row']}, k {rv['k']})")
    chk = ex.layout_tile_check()
    add(f"   check vs the real transforms: {chk['bits_checked']} bits, {chk['bit_mismatches']} mismatches; "
        f"{chk['scales_checked']} scales, {chk['scale_mismatches']} mismatches")
    return "\n".join(lines)


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
    try:
        print(layout_example_text(args.row, args.k, args.model))
    except (KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
    p.add_argument("--info", action="store_true", help="print build_info() as JSON and exit")
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
            print(json.dumps(fb.build_info(configs=configs, **kw), indent=1))
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
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mxfp4lab", description="MXFP4 MoE on Hopper: layouts, builds, reports")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_report_parser(sub)
    _add_layout_parser(sub)
    _add_build_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    rc = args.func(args)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
