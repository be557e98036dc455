"""Dispatch from a synthetic recorded sweep (tmp_path JSON, never a GPU)."""

import math

import pytest
from test_study_latency import M_CROSS, MS, synthetic_rows, t_fi, t_marlin, t_naive, write_results

from mxfp4lab.dispatch import Dispatch


@pytest.fixture
def results(tmp_path):
    rows = synthetic_rows(shapes=("seed-bench", "gpt-oss-20b"), routings=("uniform", "skewed"))
    # on gpt-oss-20b, naive wins at M=1 only (a third backend in the table)
    for r in rows:
        if r["shape"] == "gpt-oss-20b" and r["backend"] == "torch_naive" and r.get("m") == 1:
            r["median_us"] = 10.0
    return write_results(tmp_path / "latency.json", rows)


def test_choose_at_recorded_m(results):
    d = Dispatch.from_results(results)
    assert d.shapes == ["gpt-oss-20b", "seed-bench"]
    assert d.backends("seed-bench") == ["flashinfer_sm90", "marlin", "torch_naive"]  # "broken" has no time
    for m in MS:
        assert d.choose("seed-bench", m) == ("flashinfer_sm90" if t_fi(m) < t_marlin(m) else "marlin")
    assert d.choose("gpt-oss-20b", 1) == "torch_naive"


def test_choose_between_recorded_m(results):
    d = Dispatch.from_results(results)  # at_or_above
    assert d.choose("seed-bench", 257) == d.choose("seed-bench", 1024) == "marlin"
    assert d.choose("seed-bench", 200) == d.choose("seed-bench", 256) == "flashinfer_sm90"
    assert d.choose("seed-bench", 10 ** 6) == d.choose("seed-bench", MS[-1])
    di = Dispatch.from_results(results, policy="interpolate")
    # log-linear interpolation of power laws is exact: the switch is at M_CROSS
    assert di.choose("seed-bench", int(M_CROSS) - 5) == "flashinfer_sm90"
    assert di.choose("seed-bench", int(M_CROSS) + 5) == "marlin"
    est = di.estimate("seed-bench", 500)
    assert est["marlin"] == pytest.approx(t_marlin(500)) and est["flashinfer_sm90"] == pytest.approx(t_fi(500))


def test_routing_and_errors(results, tmp_path):
    d = Dispatch.from_results(results, routing="skewed")
    assert d.choose("seed-bench", 4096) == "marlin"
    with pytest.raises(KeyError, match="recorded"):
        d.choose("dsv4-flash", 4)
    with pytest.raises(ValueError):
        Dispatch.from_results(results, routing="nope")
    with pytest.raises(ValueError):
        Dispatch.from_results(results, policy="magic")


def test_speedup_vs_always(results):
    d = Dispatch.from_results(results)
    sp = d.speedup_vs(always="flashinfer_sm90")["seed-bench"]
    want = [t_fi(m) / min(t_fi(m), t_marlin(m), t_naive(m)) for m in MS]
    assert sp["geomean"] == pytest.approx(math.exp(sum(map(math.log, want)) / len(want)))
    assert sp["worst"] == pytest.approx(1.0) and sp["best"] == pytest.approx(max(want))
    assert sp["n_m"] == len(MS) and sp["skipped_m"] == []
    naive = d.speedup_vs(always="torch_naive")
    assert naive["seed-bench"]["worst"] == pytest.approx(min(t_naive(m) / min(t_fi(m), t_marlin(m)) for m in MS))
    assert naive["gpt-oss-20b"]["worst"] == pytest.approx(1.0) and naive["gpt-oss-20b"]["worst_m"] == 1
    assert naive["all"]["n_m"] == 2 * len(MS)
    assert all(v["worst"] >= 1.0 for v in naive.values())
