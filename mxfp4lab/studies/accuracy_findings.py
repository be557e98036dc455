"""The accuracy report's findings (:mod:`mxfp4lab.findings`), from the numbers notebook 02 records.

Synthetic study keys: ``accuracy_table`` ({dist: {rule: rel_err}}), ``clipped_frac`` ({rule: fraction}),
``rule_agreement`` ({"a/b/dist": {"scale_diff", "value_diff"}}), ``emulated_vs_kernel_ref_max``,
``flashinfer`` ({"available", "reason"}), ``flashinfer_vs_kernel_ref_max``, ``layer_rel_err``
({dist: {rule: rel_err}}), ``clamped_frac_routed``, ``depth_summary`` ({path: {"mean", "min", "max",
"agree_mean", "agree_min", "agree_max"}}), ``depth_layers``. Checkpoint keys: see
:func:`mxfp4lab.studies.checkpoint_findings.findings`. Missing keys are skipped.
"""

from __future__ import annotations

from typing import Any

from ..findings import Finding


def _span(lo: float, hi: float, fmt: str) -> str:
    a, b = format(lo, fmt), format(hi, fmt)
    return a if a == b else f"{a}-{b}"


def _rule_winner(table: dict[str, dict[str, float]], clipped: dict[str, float]) -> Finding | None:
    if not table:
        return None
    wins = {dist: min(v, key=v.get) for dist, v in table.items() if v}
    rules = sorted(set(wins.values()))
    per = "; ".join(f"{d}: " + ", ".join(f"{r} {e:.4f}" for r, e in sorted(v.items(), key=lambda x: x[1]))
                    for d, v in table.items())
    if len(rules) == 1:
        r = rules[0]
        sat = f", although it saturates {100 * clipped[r]:.1f}% of the elements" if clipped.get(r) else ""
        return Finding("scale rule with the lowest weight error", f"{r} on every distribution",
                       f"relative error vs the bf16 origin{sat}. {per}", "info")
    return Finding("scale rule with the lowest weight error", "depends on the distribution",
                   ", ".join(f"{d}: {r}" for d, r in wins.items()) + f". {per}", "info")


def _agreement(agree: dict[str, dict[str, float]]) -> Finding | None:
    pairs = {k: v for k, v in agree.items() if k.startswith("round_up/flashinfer/")}
    if not pairs:
        return None
    sd = max(v["scale_diff"] for v in pairs.values())
    vd = [v["value_diff"] for v in pairs.values()]
    if sd == 0:
        return Finding("round_up vs flashinfer scale rules", "identical scales",
                       f"no block gets a different scale byte; {100 * min(vd):.1f}-{100 * max(vd):.1f}% of the "
                       f"values differ (exact ties: away from zero vs down)", "info")
    return Finding("round_up vs flashinfer scale rules", "different scales",
                   f"up to {100 * sd:.2f}% of the blocks get a different scale byte", "info")


def findings(results: dict[str, Any]) -> list[Finding]:
    """The accuracy report's findings (module docstring)."""
    out: list[Finding] = []
    if results.get("checkpoint"):
        from .checkpoint_findings import findings as checkpoint_findings

        out += checkpoint_findings(results)
    for f in (_rule_winner(results.get("accuracy_table") or {}, results.get("clipped_frac") or {}),
              _agreement(results.get("rule_agreement") or {})):
        if f is not None:
            out.append(f)
    emu = results.get("emulated_vs_kernel_ref_max")
    if emu is not None:
        out.append(Finding("emulated_sm90 (prepared SM90 tensors) vs the kernel-faithful reference",
                           "bit-exact" if emu == 0 else "differs",
                           "max relative error 0 over every rule, distribution and clamp setting" if emu == 0
                           else f"max relative error {emu:.3g}", "good" if emu == 0 else "bad"))
    fi = results.get("flashinfer") or {}
    if "available" in fi or "flashinfer_vs_kernel_ref_max" in results:
        err = results.get("flashinfer_vs_kernel_ref_max")
        if err is None:
            out.append(Finding("FlashInfer SM90 kernel vs the kernel-faithful reference", "not run here",
                               str(fi.get("reason") or "no Hopper GPU with FlashInfer"), "missing"))
        else:
            # a few bf16 ulps after four roundings (2^-8 relative); a wrong layout or scale gives O(1)
            ok = err < 2e-2
            out.append(Finding("FlashInfer SM90 kernel vs the kernel-faithful reference",
                               "agrees" if ok else "differs", f"max relative error {err:.3g}", "good" if ok else "bad"))
    layer = results.get("layer_rel_err") or {}
    if layer:
        vals = [v for d in layer.values() for v in d.values()]
        out.append(Finding("one MoE layer: MXFP4 vs the bf16 origin (clamp on)",
                           f"{_span(min(vals), max(vals), '.3f')} relative error",
                           "kernel-faithful rounding, synthetic random weights; per distribution: "
                           + "; ".join(f"{d}: " + ", ".join(f"{r} {e:.3f}" for r, e in v.items())
                                       for d, v in layer.items()), "info"))
    depth = results.get("depth_summary") or {}
    if depth:
        mx = {p: v for p, v in depth.items() if not p.startswith("origin")}
        if mx:
            errs = [v["mean"] for v in mx.values()]
            agree = [v["agree_mean"] for v in mx.values()]
            n = results.get("depth_layers", "?")
            out.append(Finding(f"through {n} layers (MXFP4 paths)",
                               f"hidden-state error {_span(min(errs), max(errs), '.3f')}",
                               f"routing agreement with the truth path {_span(min(agree), max(agree), '.2f')} (means over "
                               f"seeds; per path min..max: " + "; ".join(
                                   f"{p} err {v['min']:.3f}..{v['max']:.3f}, agree {v['agree_min']:.2f}.."
                                   f"{v['agree_max']:.2f}" for p, v in mx.items()) + ")", "info"))
    return out
