"""The latency study's summary (mxfp4lab.studies.latency.summarize, `mxfp4lab bench summary`): the tables
from recorded rows (synthetic rows, then the recorded sweep)."""
import json

import pandas as pd
import pytest

from mxfp4lab import cli
from mxfp4lab.studies import latency as S


def _df(rows):
    df = pd.DataFrame(rows)
    df["ok"] = df["median_us"].notna()
    df["error"] = None
    return df


def test_latency_table_and_triton_goals_from_synthetic_rows():
    rows = []
    for m, fi, ma, tr, floor in [(1, 100.0, 80.0, 90.0, 75.0), (64, 500.0, 450.0, 600.0, 400.0),
                                 (1024, 1000.0, 1300.0, 1150.0, 800.0)]:
        for b, t in ((S.FI, fi), (S.MARLIN, ma), (S.TRITON, tr)):
            rows.append(dict(shape="s", backend=b, m=m, routing="uniform", median_us=t, roofline_us=floor))
    t = S.latency_table(_df(rows))
    assert list(t["best"]) == [S.MARLIN, S.MARLIN, S.FI]
    assert t["best_fraction_of_floor"].tolist() == pytest.approx([75 / 80, 400 / 450, 800 / 1000])
    g = S.triton_goals(t).set_index("m")
    # M=1: 90/75 = 1.2x floor (<= 1.25) but slower than Marlin (90 > 80) -> not met
    assert g.loc[1, "x_floor"] == pytest.approx(1.2) and bool(g.loc[1, "met"]) is False
    assert bool(g.loc[64, "met"]) is False  # 1.5x floor
    # M=1024: 1150/1000 = 1.15x FlashInfer (<= 1.2) -> met
    assert g.loc[1024, "x_flashinfer"] == pytest.approx(1.15) and bool(g.loc[1024, "met"]) is True


def test_summary_of_the_recorded_sweep(tmp_path):
    src = S.latency_results_path()
    if not src.is_file():
        pytest.skip("no recorded sweep in data/results")
    out = tmp_path / "summary.json"
    assert cli.main(["bench", "summary", "--results", str(src), "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["kind"] == "latency_summary" and d["sweep_provenance"]["gpu"]
    # every (shape, M) row's best is the argmin of its backends (every backend the sweep timed)
    backends = {r["backend"] for r in json.loads(src.read_text())["rows"]}
    for r in d["rows"]:
        times = {b: r[b] for b in backends if r.get(b) is not None}
        assert r["best"] == min(times, key=times.get)
    # a crossover lies between the M values where the faster backend changes
    for c in d["crossovers"]:
        if c["crossover_m"] is not None:
            assert c["m_lo"] < c["crossover_m"] < c["m_hi"]
