"""The layout report's findings (:mod:`mxfp4lab.findings`), from the numbers notebook 01 records.

Keys: ``check`` (:func:`mxfp4lab.studies.layout.layout_tile_check`), ``tile_fraction_row_moved``,
``bit_permutation``, ``scale_fold_shape``, ``trace``, ``reverse``; with a checkpoint also
``checkpoint_trace`` (see :func:`mxfp4lab.studies.checkpoint.checkpoint_element`).
"""

from __future__ import annotations

from typing import Any

from ..findings import Finding


def findings(results: dict[str, Any]) -> list[Finding]:
    """The layout report's findings (module docstring)."""
    from .checkpoint_findings import findings as checkpoint_findings

    out: list[Finding] = checkpoint_findings(results)  # the checkpoint line when one was given
    chk = results.get("check")
    if chk:
        exact = chk.get("bit_mismatches") == 0 and chk.get("scale_mismatches") == 0
        out.append(Finding("element tracing vs the real transforms (random bytes)",
                           "bit-exact" if exact else "MISMATCH",
                           f"{chk.get('bits_checked')} bits of a {chk.get('elements')}-element window: "
                           f"{chk.get('bit_mismatches')} mismatches; {chk.get('scales_checked')} scales: "
                           f"{chk.get('scale_mismatches')} mismatches", "good" if exact else "bad"))
    ct = results.get("checkpoint_trace")
    if ct:
        ok = bool(ct.get("bits_match"))
        out.append(Finding(f"traced element on the checkpoint (layer {ct.get('layer')}, expert {ct.get('expert')})",
                           "bits found where traced" if ok else "MISMATCH",
                           f"checkpoint row {ct.get('ckpt_row')}, k {ct.get('k')}: code {ct.get('code')} "
                           f"x 2^{ct.get('scale_exp')} = {ct.get('value')}; in the interleaved expert at row "
                           f"{ct.get('dst_row')}, bytes {ct.get('dst_byte')}", "good" if ok else "bad"))
    frac = results.get("tile_fraction_row_moved")
    if frac is not None:
        out.append(Finding("16x64 tile interleave", f"{100 * frac:.0f}% of the elements change row",
                           "rows r and r+8 trade places in alternating groups of 8 bytes", "info"))
    perm = results.get("bit_permutation")
    if perm:
        is_perm = sorted(perm) == list(range(32))
        out.append(Finding("bit permutation inside a 32-bit lane word",
                           "a permutation of the 32 bits" if is_perm else "NOT a permutation",
                           "magnitudes of C, B, A packed from bit 0, signs at bits 9, 12, 15 (per half-word)",
                           "good" if is_perm else "bad"))
    shape = results.get("scale_fold_shape")
    if shape:
        out.append(Finding("scale fold", f"64 rows x 4 scales -> {shape[0]} x {shape[1]} bytes",
                           "folded row f holds rows f, f+16, f+32, f+48: one 16-byte load", "info"))
    tr = results.get("trace")
    if tr:
        src = f"checkpoint row {tr['ckpt_row']} (fc1 row {tr['row']})" if tr.get("ckpt_row") is not None \
            else f"fc1 row {tr['row']}"
        out.append(Finding(f"element {src}, k {tr['k']}",
                           f"SM90 row {tr['dst_row']}, byte(s) {sorted(set(tr['dst_byte']))}",
                           f"code bits m0 e0 e1 s at bits {tr['dst_bit']}; scale -> folded "
                           f"{[tr['scale_fold'][k] for k in ('block', 'k128', 'frow', 'col')]}", "info"))
    rv = results.get("reverse")
    if rv:
        out.append(Finding(f"physical bit (row {rv['dst_row']}, byte {rv['dst_byte']}, bit {rv['dst_bit']})",
                           f"{rv['code_bit_name']} of fc1 row {rv['row']}, k {rv['k']}", "reverse lookup", "info"))
    return out
