"""MXFP4 error against the bf16 origin, per scale rule and weight distribution (CPU), as JSON.

Weight level: one expert of each real shape (GPT-OSS-20b, DeepSeek-V4-Flash), first ``--rows`` rows of
each matrix at full K, quantized with each :class:`mxfp4lab.formats.ScaleRule`; relative Frobenius error
vs the bf16 origin (``mxfp4lab.experiments.accuracy_quantization``), averaged over models and matrices.

    python -m mxfp4lab.bench.accuracy [--rows 256] [--out data/results/accuracy/cpu.json]
"""

from __future__ import annotations

import argparse

from .. import results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--out", default=str(results.result_path("accuracy", "cpu")))
    a = ap.parse_args(argv)
    from .. import experiments as X

    q = X.accuracy_quantization(max_rows=a.rows)
    table = X.accuracy_table(q)
    print("relative error vs bf16 origin (rows: scale rule, columns: weight distribution)")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    path = results.write(a.out, "quantization_error", q.to_dict(orient="records"), rows_per_matrix=a.rows,
                         table_rel_err={r: table.loc[r].to_dict() for r in table.index})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
