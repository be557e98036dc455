"""Where two launch variants of the decode kernel disagree: one shape, one M, the same inputs, each output compared
with the kernel-faithful reference, by token (its position in a 32-token tile of its first expert is not known
here, so by token index mod 32 and by token) and by 64-column block of the output. For a new schedule whose check
failed: a wrong operand layout shows at every token and block, a wrong token mapping at some token positions, a
missing wait between steps as run-to-run differences. Prints a table and writes JSON.

    python scripts/gpu/compare_variants.py --shape gpt-oss-20b --m 64 --variants 42,46 --out OUT.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from mxfp4lab import results  # noqa: E402
from mxfp4lab.kernels import decode_w4a16 as dk  # noqa: E402
from mxfp4lab.models import get_model  # noqa: E402
from mxfp4lab.prepare import prepare_from_experts  # noqa: E402
from mxfp4lab.reference import expert_weights_from_logical, moe_reference  # noqa: E402
from mxfp4lab.synthetic import make_inputs, random_layer  # noqa: E402

#: an output element is "off" when it differs from the reference by more than this relative to the row's scale
#: (a few bf16 ulps come from another fp32 summation order; a wrong operand gives O(1))
OFF = 2e-2


def locate(out: torch.Tensor, ref: torch.Tensor) -> dict:
    """Where ``out`` [M, H] is off the reference ``ref`` [M, H] (both fp32): the fraction of elements off (relative to
    each row's largest reference magnitude, or NaN), NaN, by token, by token index mod 32 and by 64-column block."""
    m = out.shape[0]
    scale = ref.abs().amax(dim=1, keepdim=True).clamp_min(1e-6)
    off = ((out - ref).abs() / scale > OFF) | torch.isnan(out)
    blocks = off.view(m, -1, 64).float().mean(dim=(0, 2)) if off.shape[1] % 64 == 0 else off.float().mean(0)
    return {"off_frac": float(off.float().mean()), "nan_frac": float(torch.isnan(out).float().mean()),
            "off_by_token": [round(float(f), 3) for f in off.float().mean(1)],
            "off_by_token_mod32": [round(float(off[t::32].float().mean()), 3) for t in range(min(32, m))],
            "off_by_block64": [round(float(f), 3) for f in blocks]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="gpt-oss-20b")
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--variants", default="42,46")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs an SM90 GPU", file=sys.stderr)
        return 2
    cfg = get_model(a.shape)
    logical = prepare_from_experts(random_layer(cfg), config=cfg)
    layout = dk.DecodeLayout.from_logical(logical)
    x, ids, w = make_inputs(cfg, a.m, 1, "uniform", seed=7)[0]
    ref = moe_reference(x, ids, w, expert_weights_from_logical(logical), mode="kernel", **cfg.swiglu_kwargs).float()
    rows = []
    for v in (int(s) for s in a.variants.split(",")):
        outs = [dk.forward(x, ids, w, layout, dk.LaunchConfig(variant=v), workspace_fill=float("nan")).float()
                for _ in range(3)]
        torch.cuda.synchronize()
        row = {"variant": v, "m": a.m, "shape": a.shape, **locate(outs[0], ref),
               "runs_equal": all(torch.equal(outs[0], o) for o in outs[1:])}
        rows.append(row)
        print(f"v{v}: off {row['off_frac']:.3f} nan {row['nan_frac']:.3f} runs_equal {row['runs_equal']}")
        print("  by token mod 32:", row["off_by_token_mod32"])
        print("  by 64-column block:", row["off_by_block64"][:48])
    results.write(a.out, "decode_check", rows, off_tol=OFF, check="variants against moe_reference(mode='kernel'), by token and column block")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
