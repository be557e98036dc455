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


def test_decode_goals_from_synthetic_rows():
    """Each goal of the decode kernel decides on its own numbers; only the stated goals of an M count."""
    rows = []
    # m, decode, best peer (humming), another peer (Marlin), floor
    for m, dec, hum, ma, floor in [(1, 30.0, 40.0, 60.0, 16.0),    # 1.33x peer, 1.875x floor -> met
                                   (2, 50.0, 57.0, 80.0, 20.0),    # 1.14x peer -> not met (no floor goal at M=2)
                                   (8, 100.0, 116.0, 130.0, 40.0),  # 1.16x, 40 % of floor -> not met; 1.16x narrow
                                   (4, 100.0, 120.0, 130.0, 61.0),  # 1.2x, 61 % of floor -> met
                                   (64, 500.0, 600.0, 700.0, 290.0),  # 1.2x but 58 % of floor -> not met
                                   (256, 900.0, 600.0, 700.0, 400.0),  # no goal stated
                                   (1024, 1090.0, 1000.0, 1200.0, 800.0)]:  # 1.09x the best peer -> met
        for b, t in ((S.DECODE, dec), ("humming", hum), (S.MARLIN, ma)):
            rows.append(dict(shape="s", backend=b, m=m, routing="uniform", median_us=t, roofline_us=floor))
    g = S.decode_goals(S.latency_table(_df(rows))).set_index("m")
    assert (g["best_peer"] == "humming").all()
    assert g.loc[1, "speedup"] == pytest.approx(40 / 30) and g.loc[4, "floor_fraction"] == pytest.approx(0.61)
    assert g["met"].to_dict() == {1: True, 2: False, 4: True, 8: False, 64: False, 256: None, 1024: True}
    # narrow: speedups within 2 % of 1.15x, either side (M = 2: 1.14x, M = 8: 1.16x; M = 4: 1.2x is not)
    assert S.latency_decode_goal_counts(g.reset_index()) == {"met": 3, "count": 6, "fastest": 5, "small_m": 5,
                                                             "narrow": ["s M 2", "s M 8"]}


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
