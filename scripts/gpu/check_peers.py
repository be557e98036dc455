"""Check the field's MoE libraries as mxfp4lab backends on a GPU (H100/H200), before any sweep times them.

    python scripts/gpu/check_peers.py --stage .devcarry [--backends triton_kernels,humming]
        [--shapes gpt-oss-20b,gpt-oss-120b,dsv4-flash,seed-bench] [--m 1,4,64,1024] [--out FILE]

For each backend x shape (a random layer in checkpoint layout, prepared on the GPU) x M:

* the output, with the backend's buffers filled with NaN first (``poison``; an element no kernel wrote
  shows up), against ``moe_reference(mode="fp32")``: relative error below :data:`TOL_FP32`;
* a second call: bit-identical or not (recorded);
* the call captured in a CUDA graph and replayed: the same output (relative error below
  :data:`TOL_FP32`; a capture that reads stale buffers gives O(1));
* a first timing (CUDA graph, median of 20; the sweep's numbers come from ``mxfp4lab.bench.moe``);
* at ``--profile-m``: the kernels of one call from the torch profiler and which of them the ``gemm`` timing
  mode counts as GEMMs (:mod:`mxfp4lab.bench.modes`), so the pattern can be audited.

Prints a table and writes the rows (``peer_check`` result, with provenance and the peers' sources) to
``--out`` (default ``data/results/peer_check/<gpu>.json``). ``--stage DIR`` uses what
``scripts/gpu/stage-triton-kernels.sh`` / ``stage-humming.sh`` put in DIR: ``DIR/triton_kernels``, and the
Humming wheel in ``DIR/humming`` installed into ``--site`` (no package index needed). Exit status 0 when
every point passes, 1 otherwise, 2 without a GPU.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

#: three or four bf16 roundings (plus triton_kernels' bf16 router weights) give 3e-3 .. 6e-3 against the
#: fp32 reference on these layers; a wrong layout, scale, routing or activation gives O(1)
TOL_FP32 = 1e-2
DEFAULT_BACKENDS = ("triton_kernels", "humming")
DEFAULT_M = (1, 4, 64, 1024)


def use_stage(stage: Path, site: Path) -> list[str]:
    """Point the peers at staged copies: ``$MXFP4LAB_TRITON_KERNELS`` = ``stage/triton_kernels``; the
    wheel(s) in ``stage/humming`` installed into ``site`` (pip, no index, no dependencies) unless
    ``humming`` imports already; ``site`` goes first on ``sys.path``. -> notes of what was done."""
    notes = []
    tk = stage / "triton_kernels"
    if (tk / "triton_kernels").is_dir():
        os.environ["MXFP4LAB_TRITON_KERNELS"] = str(tk.resolve())
        notes.append(f"MXFP4LAB_TRITON_KERNELS={tk.resolve()}")
    wheels = sorted(glob.glob(str(stage / "humming" / "*.whl")))
    if wheels and importlib.util.find_spec("humming") is None:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--target", str(site), *wheels]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        notes.append(f"{' '.join(cmd)} -> rc {r.returncode} {r.stderr.strip()[-300:]}")
    if site.is_dir() and str(site) not in sys.path:
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    return notes


def verdict(row: dict, tol: float = TOL_FP32) -> tuple[bool, str]:
    """A checked point passes when every output element was written, it matches the fp32 reference and
    its graph replay matches the eager call."""
    if row.get("error"):
        return False, row["error"]
    why = []
    if row.get("nan", 1):
        why.append(f"{row.get('nan')} unwritten (NaN) output elements")
    if not row.get("rel_err_fp32", float("inf")) < tol:
        why.append(f"rel err vs fp32 {row.get('rel_err_fp32'):.3g} >= {tol}")
    if "graph_vs_eager" in row and not row["graph_vs_eager"] < tol:
        why.append(f"graph replay differs from the eager call (rel {row['graph_vs_eager']:.3g})")
    return not why, "; ".join(why)


def format_table(rows: list[dict]) -> str:
    head = f"{'backend':15s} {'shape':13s} {'M':>5s} {'rel_fp32':>9s} {'nan':>4s} {'det':>4s} {'graph':>9s} {'us':>9s}  verdict"
    out = [head, "-" * len(head)]

    def num(r, k, f):
        return format(r[k], f) if isinstance(r.get(k), (int, float)) else "-"

    for r in rows:
        ok, why = verdict(r)
        out.append(f"{r.get('backend', '?'):15s} {r.get('shape', '?'):13s} {r.get('m', '-')!s:>5s} "
                   f"{num(r, 'rel_err_fp32', '9.2e')} {num(r, 'nan', '4d')} {'yes' if r.get('deterministic') else 'no':>4s} "
                   f"{num(r, 'graph_vs_eager', '9.1e')} {num(r, 'median_us', '9.1f')}  {'ok' if ok else 'FAIL: ' + why}")
    return "\n".join(out)


def _graph_replay(be, x, ids, w):
    import torch

    from mxfp4lab.bench.harness import capture_graphs

    outs = []
    (g,) = capture_graphs(lambda *a: outs.append(be(*a)), [(x, ids, w)])
    out = outs[-1]  # the captured call's output buffer, written by each replay
    g.replay()
    torch.cuda.synchronize()
    return out.clone()


def check_point(be, cfg, ref_w, x, ids, w) -> dict:
    import torch

    from mxfp4lab.reference import moe_reference, relative_error

    out = be(x, ids, w)
    again = be(x, ids, w)
    ref = moe_reference(x, ids, w, ref_w, mode="fp32", **cfg.swiglu_kwargs, routed_scaling_factor=cfg.routed_scaling_factor)
    row = {"nan": int(torch.isnan(out).sum()), "rel_err_fp32": relative_error(out, ref),
           "deterministic": bool(torch.equal(out, again))}
    if be.graph_capturable:
        row["graph_vs_eager"] = relative_error(_graph_replay(be, x, ids, w), out)
    return row


def run(backends, shapes, ms, profile_m, log=print) -> list[dict]:
    import torch

    from mxfp4lab.backends.registry import get_backend
    from mxfp4lab.bench import modes
    from mxfp4lab.bench.harness import time_cuda
    from mxfp4lab.models import get_model
    from mxfp4lab.prepare import prepare_from_experts
    from mxfp4lab.reference import expert_weights_from_logical
    from mxfp4lab.synthetic import make_inputs, random_layer

    rows = []
    for shape in shapes:
        cfg = get_model(shape)
        moe = prepare_from_experts(random_layer(cfg), config=cfg)
        ref_w = expert_weights_from_logical(moe)
        for name in backends:
            base = {"backend": name, "shape": shape}
            t0 = time.perf_counter()
            try:
                be = get_backend(name)(moe, cfg)
                be.poison = True  # the peers' option; others allocate fresh outputs each call
            except Exception as exc:  # noqa: BLE001 - recorded, the others go on
                rows.append({**base, "error": f"construct: {type(exc).__name__}: {str(exc)[:400]}"})
                log(traceback.format_exc()[-1500:])
                continue
            base["construct_s"] = time.perf_counter() - t0
            for m in ms:
                row = {**base, "m": m}
                try:
                    inputs = make_inputs(cfg, m, 2, "uniform", seed=m)
                    t1 = time.perf_counter()
                    row.update(check_point(be, cfg, ref_w, *inputs[0]))
                    row["check_s"] = time.perf_counter() - t1  # includes JIT compiles at first use
                    row["median_us"] = time_cuda(be, inputs, warmup=3, reps=20, graph=be.graph_capturable).median_us
                    row.update({f"describe_{k}": v for k, v in be.describe(m).items()})
                    if m == profile_m:
                        g = modes.time_modes(be, inputs, ["gemm"], warmup=2, profile_calls=5)[0]
                        row["gemm"] = {k: g.get(k) for k in ("median_us", "device_total_us", "gemm_pattern",
                                                             "gemm_kernels", "kernels", "error")}
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
                    log(traceback.format_exc()[-1500:])
                rows.append(row)
                log(format_table([row]).splitlines()[-1])
            del be
            torch.cuda.empty_cache()
        del moe, ref_w
        torch.cuda.empty_cache()
    return rows


def peer_sources() -> dict:
    out = {}
    try:
        from mxfp4lab.backends.triton_kernels_source import VLLM_VERSION, find_source

        root, how = find_source()
        out["triton_kernels"] = {"vllm_wheel": VLLM_VERSION, "path": str(root), "found": how}
    except Exception as exc:  # noqa: BLE001
        out["triton_kernels"] = {"error": str(exc)[:300]}
    try:
        import humming

        out["humming"] = {"version": humming.__version__, "path": str(Path(humming.__file__).parent)}
    except Exception as exc:  # noqa: BLE001
        out["humming"] = {"error": str(exc)[:300]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default=",".join(DEFAULT_BACKENDS))
    ap.add_argument("--shapes", default="gpt-oss-20b,gpt-oss-120b,dsv4-flash,seed-bench")
    ap.add_argument("--m", default=",".join(map(str, DEFAULT_M)))
    ap.add_argument("--profile-m", type=int, default=64, help="M at which one call's kernels are profiled")
    ap.add_argument("--stage", type=Path, default=None, help="folder with triton_kernels/ and humming/ (staging scripts)")
    ap.add_argument("--site", type=Path, default=Path("/tmp/mxfp4lab-site"), help="where staged wheels are installed")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    notes = use_stage(a.stage, a.site) if a.stage else []
    for n in notes:
        print(n)
    import torch

    if not torch.cuda.is_available():
        print("check_peers needs a CUDA GPU (H100/H200)", file=sys.stderr)
        return 2
    from mxfp4lab import results

    rows = run(a.backends.split(","), a.shapes.split(","), [int(v) for v in a.m.split(",")], a.profile_m)
    print("\n" + format_table(rows))
    out = a.out or results.result_path("peer_check", results.gpu_slug(torch.cuda.get_device_name()))
    path = results.write(out, "peer_check", rows, tol_fp32=TOL_FP32, peer_sources=peer_sources(), stage_notes=notes)
    print(f"wrote {path}")
    return 0 if all(verdict(r)[0] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
