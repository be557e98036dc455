"""Findings on a user's checkpoint (:mod:`mxfp4lab.findings`), from the numbers the notebooks record:
``checkpoint`` (path, model, format, layers, sources), ``checkpoint_stats`` ({layer: {proj: summary row,
"norm_min", "norm_max"}}), ``checkpoint_backends`` ({layer: rows of :func:`~.checkpoint.layer_backends`}),
``checkpoint_backend_info``, ``checkpoint_routing`` ({layer: load summary rows}).
"""

from __future__ import annotations

from typing import Any

from ..findings import Finding


def findings(results: dict[str, Any]) -> list[Finding]:
    ck = results.get("checkpoint") or {}
    if not ck:
        return []
    out = [Finding("checkpoint", f"{ck.get('model')} ({ck.get('format')})",
                   f"{ck.get('path')}; layers {ck.get('layers')}; detected from "
                   + ", ".join(f"{k}: {v}" for k, v in (ck.get("sources") or {}).items()), "info")]
    for layer, st in (results.get("checkpoint_stats") or {}).items():
        projs = {p: v for p, v in st.items() if isinstance(v, dict)}
        zeros = [v["zero_frac"] for v in projs.values()]
        top = [v["max_mag_frac"] for v in projs.values()]
        lo = min(v["scale_exp_min"] for v in projs.values())
        hi = max(v["scale_exp_max"] for v in projs.values())
        med = sorted(v["scale_exp_median"] for v in projs.values())[len(projs) // 2]
        out.append(Finding(f"layer {layer}: MXFP4 weights", f"scale exponents {lo}..{hi} (median {med})",
                           f"zeros {100 * min(zeros):.1f}-{100 * max(zeros):.1f}%, at +-6 "
                           f"{100 * min(top):.1f}-{100 * max(top):.1f}% of the codes (gate/up/down); expert norms "
                           f"{st.get('norm_min', float('nan')):.3g}..{st.get('norm_max', float('nan')):.3g}", "info"))
    info = results.get("checkpoint_backend_info") or {}
    for layer, rows in (results.get("checkpoint_backends") or {}).items():
        vs_k = [r for r in rows if r["reference"] == "kernel-faithful reference"]
        vs_f = [r for r in rows if r["reference"] == "fp32 reference"]
        emu = [r for r in vs_k if r["path"] == "emulated_sm90"]
        if emu:
            ok = emu[0]["bit_exact"]
            out.append(Finding(f"layer {layer}: emulated_sm90 vs the kernel-faithful reference (real experts)",
                               "bit-exact" if ok else "differs", f"max abs diff {emu[0]['max_abs_err']:.3g}",
                               "good" if ok else "bad"))
        if vs_f:
            worst = max(vs_f, key=lambda r: r["rel_err"])
            out.append(Finding(f"layer {layer}: backends vs the fp32 reference (real router)",
                               f"max relative error {worst['rel_err']:.2e} ({worst['path']})",
                               "; ".join(f"{r['path']} {r['rel_err']:.2e}" for r in vs_f)
                               + f" ({info.get('tokens', '?')} tokens, {info.get('activations', '')})", "info"))
    skipped = info.get("skipped") or {}
    if skipped:
        out.append(Finding("backends that failed on the checkpoint", ", ".join(skipped),
                           "; ".join(f"{k}: {v}" for k, v in skipped.items()), "bad"))
    for layer, summ in (results.get("checkpoint_routing") or {}).items():
        real = next((s for s in summ if s["routing"] == "real router"), None)
        uni = next((s for s in summ if s["routing"] == "uniform"), None)
        if real:
            out.append(Finding(f"layer {layer}: expert load under the real router",
                               f"busiest expert {real['max_over_mean']:.1f}x the mean",
                               f"{real['active_experts']} experts hit by {real['tokens']} tokens"
                               + (f" (uniform routing: {uni['active_experts']}, busiest "
                                  f"{uni['max_over_mean']:.1f}x)" if uni else ""), "info"))
    return out
