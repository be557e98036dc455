"""Check mxfp4lab's decode kernel (backend ``decode_w4a16``) on an SM90 GPU against the kernel-faithful
reference: every launch variant, the four study shapes, M = 1..(8192 pairs; wide items 32768), uniform and skewed
routing, TP/EP shards, fresh random inputs per point, NaN-filled workspaces, and a second run that must
give the same bits. An L2-staged variant must also give exactly the bits of its unstaged twin (staging
changes no arithmetic), a fused-launch, dynamic-items or split-grid variant the bits of its twin (twin_of), the
fused combine exactly the bits of the three-launch path, the routed scaling factor applied by the combine (the
model's, or DeepSeek-V4's 1.5 where it has none) exactly the bits of the multiply after the kernel (both combines),
and every fused-combine arrival counter and every grid barrier's arrival count must be back at zero after the
calls. Prints a table and writes JSON (with provenance) as it goes.

    python scripts/gpu/check_decode.py --out data/results/decode_check/h200.json [--shapes ...] [--m ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from mxfp4lab.synthetic import make_inputs, random_layer  # noqa: E402
from mxfp4lab.kernels import decode_w4a16 as dk  # noqa: E402
from mxfp4lab.models import STUDY_SHAPES, get_model  # noqa: E402
from mxfp4lab.moe_tensors import ShardSpec  # noqa: E402
from mxfp4lab.prepare import prepare_from_experts  # noqa: E402
from mxfp4lab import results  # noqa: E402
from mxfp4lab.reference import expert_weights_from_logical, moe_reference, relative_error  # noqa: E402

#: vs the kernel-faithful reference: the same rounding points; only the fp32 summation order inside the
#: GEMMs differs (a few bf16 ulps at a few elements); a wrong layout, scale or routing gives O(1)
TOL = 2e-2
DEFAULT_M = (1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
#: the routed scaling factor checked on shapes without one (DeepSeek-V4's)
ROUTED_SCALE = 1.5
#: ``--shapes`` also takes this name: GPT-OSS-20b with hidden 2912, an odd number of fc2 tile groups (91), so that
#: the last item of a variant whose fc2 items hold two groups has only one (the study shapes all have an even number)
ODD_GROUPS = "gpt-oss-20b-h2912"


def model_config(shape: str):
    if shape == ODD_GROUPS:
        return dataclasses.replace(get_model("gpt-oss-20b"), name=ODD_GROUPS, hidden_size=2912)
    return get_model(shape)


def twin_depth(variant: int) -> int:
    """Links from ``variant`` to the end of its twin chain (37 -> 38 -> 5: 2), so that twins are run first."""
    twin = dk.twin_of(variant)
    return 0 if twin == variant else 1 + twin_depth(twin)


def check_point(layout, ref_w, cfg, inputs, g, label, rows, log, outs):
    """One variant at one point; ``outs`` (variant -> output) collects this point's outputs for the twin check."""
    x, ids, w = inputs
    cfg_l = dk.LaunchConfig(variant=g)
    row = {"label": label, "m": x.shape[0], "variant": g}
    try:
        def poisoned():  # every output element must be written by the kernel
            return torch.full((x.shape[0], layout.hidden_size), float("nan"), dtype=torch.bfloat16, device=x.device)

        out1 = dk.forward(x, ids, w, layout, cfg_l, out=poisoned(), workspace_fill=float("nan"))
        out2 = dk.forward(x, ids, w, layout, cfg_l, out=poisoned(), workspace_fill=float("nan"))
        torch.cuda.synchronize()
        ref = moe_reference(x, ids, w, ref_w, mode="kernel", **cfg.swiglu_kwargs)
        row["rel_err"] = err = relative_error(out1, ref)
        row["nan"] = bool(torch.isnan(out1).any())
        row["deterministic"] = bool(torch.equal(out1, out2))
        row["bitwise_equal_frac"] = float((out1.view(torch.int16) == ref.view(torch.int16)).float().mean())
        # the routed scaling factor in the combine: the bits of (out.float() * s).to(bfloat16) after the kernel
        s = cfg.routed_scaling_factor if cfg.routed_scaling_factor != 1.0 else ROUTED_SCALE
        want = (out1.float() * s).to(torch.bfloat16)
        outs_s = dk.forward(x, ids, w, layout, cfg_l, out=poisoned(), workspace_fill=float("nan"), routed_scaling_factor=s)
        # fc2's fused combine against the three-launch path (default): the same bits, scaled or not; and every
        # arrival counter is back at zero after the calls
        if not (dk.VARIANTS[g].fused or dk.VARIANTS[g].dynamic or dk.VARIANTS[g].wide):  # (they have no fused combine)
            fused = dataclasses.replace(cfg_l, fused_combine=True)
            out3 = dk.forward(x, ids, w, layout, fused, out=poisoned(), workspace_fill=float("nan"))
            out3s = dk.forward(x, ids, w, layout, fused, out=poisoned(), workspace_fill=float("nan"),
                               routed_scaling_factor=s)
            torch.cuda.synchronize()
            row["fused_equal"] = bool(torch.equal(out1, out3)) and bool(torch.equal(want, out3s))
        torch.cuda.synchronize()
        row["scaled_equal"] = bool(torch.equal(want, outs_s))
        row["counters_zero"] = dk.combine_counters_zero()
        row["barriers_idle"] = dk.grid_barriers_idle()
        row["ok"] = bool(err < TOL and not row["nan"] and row["deterministic"] and row.get("fused_equal", True)
                         and row["scaled_equal"]
                         and row["counters_zero"] and row["barriers_idle"])
        outs[g] = out1
        twin = dk.twin_of(g)
        if twin != g and twin in outs:
            row["twin"], row["equal_to_twin"] = twin, bool(torch.equal(out1, outs[twin]))
            row["ok"] = row["ok"] and row["equal_to_twin"]
    except dk.DecodeLaunchError as exc:  # the library refused or failed what Python accepted: a failure
        row.update(ok=False, error=f"DecodeLaunchError: {str(exc)[:300]}")
    except dk.DecodeKernelError as exc:  # a clear refusal (e.g. shared memory for this many pairs) is not a failure
        row.update(ok=True, supported=False, error=str(exc)[:300])
    except Exception as exc:  # noqa: BLE001 - record, go on
        row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
    rows.append(row)
    state = "ok " if row["ok"] and row.get("supported", True) else "n/a" if row["ok"] else "BAD"
    log(f"{label:34s} M={row['m']:5d} v{g} {state} "
        f"err={row.get('rel_err', float('nan')):.2e} det={row.get('deterministic')} {row.get('error', '')}")


def unchecked_variants(rows) -> list:
    """The variants refused at every point of ``rows``: checked nowhere, so the check is not ok."""
    return sorted({r["variant"] for r in rows} - {r["variant"] for r in rows if r.get("supported", True)})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(STUDY_SHAPES))
    ap.add_argument("--m", default=",".join(map(str, DEFAULT_M)))
    ap.add_argument("--shards", default="gpt-oss-120b,dsv4-flash", help="shapes also checked as TP=2 / EP=2 shards")
    ap.add_argument("--variants", default=",".join(map(str, sorted(dk.VARIANTS))), help="launch variants to check")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs an SM90 GPU", file=sys.stderr)
        return 2
    rows: list[dict] = []
    t0 = time.time()
    lib = dk.load_library()
    meta = {"check": "decode_w4a16 vs moe_reference(mode='kernel')", "tol": TOL,
            "library": getattr(lib, "_name", "")}

    def save(done=False):
        unchecked = unchecked_variants(rows) if done else []
        results.write(a.out, "decode_check", rows, partial=not done, **meta, complete=done,
                      all_ok=all(r["ok"] for r in rows) and not unchecked, unchecked_variants=unchecked,
                      wall_s=round(time.time() - t0, 1))

    ms = [int(v) for v in a.m.split(",")]
    variants = [int(v) for v in a.variants.split(",")]
    unknown = sorted(set(variants) - set(dk.VARIANTS))
    if unknown:
        print(f"unknown variants {unknown}; compiled: {sorted(dk.VARIANTS)}", file=sys.stderr)
        return 2
    for shape in a.shapes.split(","):
        cfg = model_config(shape)
        layer = random_layer(cfg)
        shards = [ShardSpec()]
        if shape in a.shards.split(","):
            shards += [ShardSpec(tp_size=2, tp_rank=r) for r in (0, 1)] + [ShardSpec(ep_size=2, ep_rank=r) for r in (0, 1)]
        for shard in shards:
            logical = prepare_from_experts(layer, config=cfg, shard=shard)
            layout = dk.DecodeLayout.from_logical(logical)
            ref_w = expert_weights_from_logical(logical)
            sh = "" if shard == ShardSpec() else f" tp{shard.tp_rank}/{shard.tp_size} ep{shard.ep_rank}/{shard.ep_size}"
            for m in [v for v in (ms if not sh else (1, 7, 64, 512)) if v * cfg.top_k <= dk.MAX_WIDE_PAIRS]:
                for routing in ("uniform", "skewed") if m in (8, 64, 512) and not sh else ("uniform",):
                    inputs = make_inputs(cfg, m, 1, routing, seed=1000 + m)[0]
                    outs: dict = {}
                    for g in sorted(variants, key=lambda v: (twin_depth(v), v)):  # twins after their base
                        check_point(layout, ref_w, cfg, inputs, g, f"{shape} {routing}{sh}", rows, print, outs)
                    del outs
                save()
            del logical, layout, ref_w
            torch.cuda.empty_cache()
        del layer
    save(done=True)
    bad = [r for r in rows if not r["ok"]]
    unchecked = unchecked_variants(rows)
    print(f"{len(rows) - len(bad)}/{len(rows)} ok in {time.time() - t0:.0f} s -> {a.out}"
          + (f"; variants refused at every point (checked nowhere): {unchecked}" if unchecked else ""))
    return 0 if not bad and not unchecked else 1


if __name__ == "__main__":
    raise SystemExit(main())
