"""The latency study (mxfp4lab.studies.latency) on synthetic sweeps (no GPU): crossovers, speedups, dispatch
table, loading."""

import math

import numpy as np
import pandas as pd
import pytest

from mxfp4lab import results
from mxfp4lab.studies import latency as ex
from mxfp4lab.studies import latency_costs as costs

MS = [1, 4, 16, 64, 256, 1024, 4096]
M_CROSS = 300.0  # flashinfer / marlin cross here (not a recorded M)


def t_fi(m):
    return 100.0 * m ** 0.5


def t_marlin(m):
    # log(t_fi / t_marlin) = 0.2 * (log m - log M_CROSS): linear in log m -> interpolation is exact
    return 100.0 * M_CROSS ** 0.2 * m ** 0.3


def t_naive(m):
    return 3 * t_fi(m)


def synthetic_rows(shapes=("seed-bench",), routings=("uniform",)):
    rows = []
    for s in shapes:
        for r in routings:
            for m in MS:
                for b, f in (("flashinfer_sm90", t_fi), ("marlin", t_marlin), ("torch_naive", t_naive)):
                    rows.append(dict(shape=s, backend=b, m=m, routing=r, median_us=f(m), roofline_us=0.5 * t_fi(m),
                                     bytes=1e6 * m, flops=1e9 * m))
    rows.append(dict(shape=shapes[0], backend="broken", m=1, routing=routings[0], error="boom"))
    return rows


def synthetic_df(**kw):
    df = pd.DataFrame(synthetic_rows(**kw))
    df["ok"] = df["median_us"].notna() & df["error"].isna()
    return df


def write_results(path, rows, prov=None):
    prov = prov or {"gpu": "NVIDIA H100 80GB HBM3", "date": "2026-11-27T10:00:00+00:00",
                    "mxfp4lab_commit": "abcdef0123456789"}
    return results.write(path, "latency_sweep", rows, prov=prov,
                         ceilings={"copy_bytes_per_s": 3e12, "bf16_flops_per_s": 8e14})


def test_crossover_is_exact_for_power_laws():
    cx = ex.latency_crossovers(synthetic_df(), "flashinfer_sm90", "marlin")
    assert len(cx) == 1
    row = cx.iloc[0]
    assert row.crossover_m == pytest.approx(M_CROSS, rel=1e-9)
    assert (row.m_lo, row.m_hi) == (256, 1024)
    assert row.faster_below == "flashinfer_sm90" and row.faster_above == "marlin"
    assert row.n_crossings == 1
    # swapping a and b gives the same M, mirrored labels
    cx2 = ex.latency_crossovers(synthetic_df(), "marlin", "flashinfer_sm90").iloc[0]
    assert cx2.crossover_m == pytest.approx(M_CROSS, rel=1e-9) and cx2.faster_below == "flashinfer_sm90"


def test_no_crossover_gives_nan_row_and_per_routing_rows():
    df = synthetic_df(routings=("uniform", "skewed"))
    cx = ex.latency_crossovers(df, "flashinfer_sm90", "torch_naive")
    assert len(cx) == 2 and cx.crossover_m.isna().all() and (cx.n_crossings == 0).all()
    assert set(cx.faster_at_min_m) == {"flashinfer_sm90"}
    assert ex.latency_crossovers(df, "flashinfer_sm90", "absent").empty


def test_two_crossings():
    rows = [dict(shape="s", backend="a", m=m, routing="uniform", median_us=10.0) for m in (1, 10, 100, 1000)]
    rows += [dict(shape="s", backend="b", m=m, routing="uniform", median_us=t)
             for m, t in zip((1, 10, 100, 1000), (20.0, 5.0, 5.0, 20.0))]
    cx = ex.latency_crossovers(pd.DataFrame(rows), "a", "b")
    assert list(cx.crossing) == [0, 1] and (cx.n_crossings == 2).all()
    # r = log(10/20) -> log(10/5): symmetric, so the crossing is the geometric midpoint sqrt(1*10)
    assert cx.crossover_m.iloc[0] == pytest.approx(math.sqrt(10))
    assert cx.crossover_m.iloc[1] == pytest.approx(math.sqrt(100 * 1000))


def test_speedups():
    sp = ex.latency_speedups(synthetic_df(), "torch_naive")
    fi = sp[sp.backend == "flashinfer_sm90"]
    assert len(fi) == len(MS)
    assert np.allclose(fi.speedup, 3.0) and np.allclose(fi.faster_pct, 200.0)
    mar = sp[sp.backend == "marlin"].set_index("m")
    for m in MS:
        assert mar.loc[m, "speedup"] == pytest.approx(t_naive(m) / t_marlin(m))
    assert "broken" not in set(sp.backend)


def test_dispatch_table():
    tab = ex.latency_dispatch_table(synthetic_df()).set_index("m")
    for m in MS:
        want = "flashinfer_sm90" if t_fi(m) < t_marlin(m) else "marlin"
        assert tab.loc[m, "best"] == want
        assert tab.loc[m, "best_us"] == pytest.approx(min(t_fi(m), t_marlin(m)))
        assert tab.loc[m, "margin"] >= 1.0
    assert (tab.n_backends == 3).all()


def test_claim_check_and_its_absence():
    cc = ex.latency_claim_check(synthetic_df())
    assert not cc.empty and set(cc.regime) <= {"M<=64", "M~256", "M>=1024"}
    r = cc.set_index("m")
    assert r.loc[1024, "fi_faster"] == pytest.approx(t_marlin(1024) / t_fi(1024) - 1)
    df = synthetic_df()
    cc2 = ex.latency_claim_check(df[df.backend != "marlin"])
    assert cc2.empty and "not measured" in cc2.attrs["note"]


def test_load_missing_and_present(tmp_path):
    df, prov = ex.latency_load(tmp_path / "nope.json")
    assert prov is None and df.empty
    assert "no recorded" in ex.latency_source_label(prov)
    p = write_results(tmp_path / "lat.json", synthetic_rows())
    df, prov = ex.latency_load(p)
    assert prov["gpu"].startswith("NVIDIA H100") and df.attrs["ceilings"]["copy_bytes_per_s"] == 3e12
    assert int(df.ok.sum()) == 3 * len(MS) and not df[df.backend == "broken"].ok.any()
    label = ex.latency_source_label(prov)
    assert "H100" in label and "2026-11-27" in label and "abcdef0123" in label
    # a merged sweep names its other runs where their day or commit differs
    later = dict(prov, date="2026-11-29T10:00:00+00:00", mxfp4lab_commit="0123456789abcdef")
    label = ex.latency_source_label(prov, {"decode_rerun": later, "same": dict(prov)})
    assert label.endswith("; run decode_rerun: 2026-11-29, commit 0123456789") and "same" not in label
    frac = ex.latency_roofline_fraction(df)
    assert np.allclose(frac[frac.backend == "flashinfer_sm90"].fraction_of_roofline, 0.5)


def test_roofline_frame_matches_facts():
    rf = ex.latency_roofline(ms=(1, 1024)).set_index(["shape", "m"])
    assert rf.loc[("seed-bench", 1), "floor_us"] == pytest.approx(27, abs=1)
    assert rf.loc[("gpt-oss-20b", 1024), "bound"] == "compute"
    assert set(rf.index.get_level_values(0)) == set(ex.LATENCY_SHAPES)


def test_notebook_helpers_all_pairs_dispatch_and_empty_input(tmp_path):
    df = synthetic_df()
    cx = ex.latency_all_crossovers(df)
    pairs = {(r.a, r.b) for r in cx.itertuples()}
    assert pairs == {("flashinfer_sm90", "marlin"), ("flashinfer_sm90", "torch_naive"), ("marlin", "torch_naive")}
    assert cx[(cx.a == "flashinfer_sm90") & (cx.b == "marlin")].crossover_m.iloc[0] == pytest.approx(M_CROSS, rel=1e-9)
    sp = ex.latency_dispatch_speedups(df)
    allrow = sp[(sp.always == "torch_naive") & (sp["shape"] == "all")].iloc[0]
    assert allrow.worst >= 1.0 and allrow.geomean > 1.0  # dispatch never loses to a fixed choice
    assert (sp.worst >= 1.0 - 1e-12).all()
    # no recorded file: empty frames, no exceptions (the notebook's CPU path before any GPU run)
    empty, prov, label, recorded = ex.latency_results(tmp_path / "none.json")
    assert prov is None and not recorded and "no recorded" in label
    assert ex.latency_all_crossovers(empty).empty and ex.latency_claim_check(empty).empty
    # recorded file: read back, recorded
    path = write_results(tmp_path / "lat.json", synthetic_rows())
    df2, prov2, label2, recorded2 = ex.latency_results(path)
    assert recorded2 and "H100" in label2 and len(df2) == len(synthetic_rows())


def test_triton_goals_from_rows():
    rows = []
    for m, fi, ma, tr, floor in [(1, 100.0, 80.0, 95.0, 90.0), (2048, 1000.0, 1300.0, 1100.0, 800.0)]:
        for b, t in (("flashinfer_sm90", fi), ("marlin_mxfp4", ma), ("triton_w4a16", tr)):
            rows.append(dict(shape="s", backend=b, m=m, routing="uniform", median_us=t, roofline_us=floor, error=None))
    df = pd.DataFrame(rows)
    df["ok"] = True
    g = ex.latency_triton_goals(df).set_index("m")
    assert not bool(g.loc[1, "met"])  # 95/90 <= 1.25x floor but slower than Marlin (95 > 80)
    assert bool(g.loc[2048, "met"])   # 1100/1000 = 1.1x FlashInfer


def test_the_table_floor_is_the_main_runs_whatever_the_row_order():
    """Rows a merged sweep took from another run (``run`` set) carry that lease's floor; the table uses the main
    run's, even where another run's row comes first, and another run's floor only where the main run lacks the
    point; with the file's ceilings, every point's bytes and FLOPs over them."""
    rows = [dict(shape="s", backend="decode_w4a16", m=1, routing="uniform", median_us=30.0, roofline_us=14.0,
                 run="later"),
            dict(shape="s", backend="marlin_mxfp4", m=1, routing="uniform", median_us=55.0, roofline_us=13.0),
            dict(shape="s", backend="decode_w4a16", m=2, routing="uniform", median_us=50.0, roofline_us=27.0,
                 run="later")]
    df = pd.DataFrame(rows)
    df["error"] = None
    df["ok"] = True
    t = ex.latency_table(df).set_index("m")
    assert t.loc[1, "floor_us"] == 13.0 and t.loc[2, "floor_us"] == 27.0
    assert abs(t.loc[1, "best_fraction_of_floor"] - 13.0 / 30.0) < 1e-12
    # with the file's ceilings and each row's bytes and FLOPs: every point at the main run's rates
    df["bytes"], df["flops"] = [2e7, 2e7, 5e7], [1e9, 1e9, 2e9]
    df.attrs["ceilings"] = {"copy_bytes_per_s": 2e12, "bf16_flops_per_s": 1e15}
    t = ex.latency_table(df).set_index("m")
    assert t.loc[1, "floor_us"] == 10.0 and t.loc[2, "floor_us"] == 25.0  # bytes / bandwidth > FLOPs / rate


def test_launch_breakdown_of_the_recorded_forwards():
    """The recorded launch breakdown: three launches per decode_w4a16 forward (fc1, fc2, the combine) or two (one
    grid for both GEMMs, the combine), ncu bytes attached in order, and a launch whose ncu process ran another kernel
    is flagged."""
    from mxfp4lab.studies.launches import _kernel_key, latency_launches

    d = latency_launches()
    if d.empty:
        pytest.skip("no recorded launch breakdown")
    sizes = d.groupby(["backend", "shape", "m"])["kernel"].agg(list)
    assert all(len(k) == 3 or (len(k) == 2 and "wide_one_kernel" in k[0]) for k in sizes), sizes[sizes.map(len) != 3]
    assert all("combine_kernel" in k[-1] for k in sizes)
    assert (d["end_us"] > d["start_us"]).all()
    same = d[d["ncu_same_kernel"] == True]  # noqa: E712
    assert (same["dram_read_MB"] > 0).all()
    if "top_stalls" in d:  # the stall pass: four reasons per launch, largest first, and the ALU pipe's share
        for text in d["top_stalls"].dropna():
            vals = [float(part.rsplit(" ", 1)[1]) for part in text.split(", ")]
            assert len(vals) == 4 and vals == sorted(vals, reverse=True)
        assert d["alu_pipe_pct"].dropna().between(0, 100).all()
    assert _kernel_key("void mxfp4lab_decode::gemm_kernel<4, 1, 2, 1, 3, true>(mxfp4lab_decode::GemmArgs)") == \
        _kernel_key("void gemm_kernel<4, 1, 2, 1, 3, 1>(GemmArgs)")
    assert _kernel_key("void gemm_kernel<4, 1, 6, 2, 1, 1>(GemmArgs)") != _kernel_key("gemm_kernel<4, 1, 2, 1, 3, true>")


def test_launch_floors_name_what_bounds_each_launch(tmp_path):
    """latency_launches: each launch's DRAM floor (its bytes over the copy bandwidth of the same GPU's latency sweep),
    issue floor (ncu's instruction counters), ALU and tensor floors (the pipes' busy shares), the largest as its
    bound, and the floor's share of its duration; without a sweep of that GPU, no DRAM floor."""
    from mxfp4lab import results
    from mxfp4lab.studies.launches import copy_bandwidth, latency_launches

    tl = [{"launch": i, "kernel": k, "start_us": 2.0 * i, "end_us": 2.0 * i + 20.0}
          for i, k in enumerate(["gemm_kernel<4, 1>(GemmArgs)", "gemm_kernel<2, 1>(GemmArgs)", "combine_kernel(C)"])]
    ncu = [{"launch_id": i, "kernel": x["kernel"], "duration_us": d, "dram__bytes_read.sum": b, **extra}
           for i, (x, d, b, extra) in enumerate(zip(tl, (17.0, 15.0, 5.0), (35e6, 17.5e6, 6e4),
                                                    ({"issue_floor_us": 6.0}, {"issue_floor_us": 5.0}, {})))]
    stalls = [{"launch_id": i, "kernel": x["kernel"], "stall_wait": 1.0,
               "sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active": u,
               "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active": t} for i, (x, t, u) in enumerate(
               zip(tl, (12.0, 40.0, 0.2), (30.0, 20.0, 80.0)))]
    row = {"backend": "decode_w4a16", "shape": "gpt-oss-120b", "m": 1, "timeline": tl, "ncu": ncu, "ncu_stalls": stalls}
    path = tmp_path / "launches" / "h200.json"
    path.parent.mkdir()
    results.write(path, "moe_launches", [row])
    d = latency_launches(path)
    assert copy_bandwidth(path) is None and "dram_floor_us" not in d
    assert list(d["bound"]) == ["issue", "tensor", "ALU"]  # no DRAM floor without the sweep's bandwidth
    (tmp_path / "latency").mkdir()
    results.write(tmp_path / "latency" / "h200.json", "latency_sweep", [],
                  ceilings={"copy_bytes_per_s": 4e12, "bf16_flops_per_s": 7e14})
    d = latency_launches(path).set_index("launch")
    assert copy_bandwidth(path) == 4e12 and d.attrs["copy_bytes_per_s"] == 4e12
    assert d["dram_floor_us"].tolist() == pytest.approx([8.75, 4.375, 0.015])  # bytes / 4 TB/s
    assert d["tensor_floor_us"].tolist() == pytest.approx([2.04, 6.0, 0.01])  # 12 % of 17 us, 40 % of 15, 0.2 % of 5
    assert d["alu_floor_us"].tolist() == pytest.approx([5.1, 3.0, 4.0])  # 30 % of 17 us, 20 % of 15, 80 % of 5
    assert list(d["bound"]) == ["DRAM", "tensor", "ALU"]
    assert d["floor_us"].tolist() == pytest.approx([8.75, 6.0, 4.0])
    assert d.loc[0, "floor_frac"] == pytest.approx(8.75 / 17.0)
    from mxfp4lab.studies.launches import launch_bounds

    b = launch_bounds(latency_launches(path))  # the GEMMs only: the combine (launch 2) is left out
    assert b == [{"shape": "gpt-oss-120b", "m": 1, "launch": 0, "bound": "DRAM", "floor_frac": round(8.75 / 17.0, 3),
                  "variant": None, "sweep_variant": None},
                 {"shape": "gpt-oss-120b", "m": 1, "launch": 1, "bound": "tensor", "floor_frac": 0.4,
                  "variant": None, "sweep_variant": None}]
    assert launch_bounds(latency_launches(tmp_path / "launches" / "none.json")) == []


def test_each_breakdown_names_its_launch_variant_and_the_sweeps(tmp_path):
    """latency_launches: ``variant`` is the launch variant the breakdown ran (its describe), ``sweep_variant`` the one
    the latency sweep of the same GPU ran at that point with uniform routing (skewed rows and other backends do not
    count); launch_bounds carries both, so the findings can name a breakdown of another kernel than the sweep's."""
    from mxfp4lab import results
    from mxfp4lab.studies.launches import latency_launches, launch_bounds, sweep_variants

    names = ["a", "b", "combine_kernel(C)"]  # launch_bounds: every launch but the combine
    tl = [{"launch": i, "kernel": k, "start_us": 0.0, "end_us": 10.0} for i, k in enumerate(names)]
    ncu = [{"launch_id": i, "kernel": k, "duration_us": 10.0, "dram__bytes_read.sum": 1e6, "issue_floor_us": 5.0}
           for i, k in enumerate(names)]

    def entry(m, variant):
        return {"backend": "decode_w4a16", "shape": "s", "m": m, "timeline": tl, "ncu": ncu,
                "describe": {"launch": {"variant": variant}, "tune": []}}

    path = tmp_path / "launches" / "h200.json"
    path.parent.mkdir()
    results.write(path, "moe_launches", [entry(64, 37), entry(256, 70)])
    d = latency_launches(path)
    assert d["variant"].tolist() == [37] * 3 + [70] * 3 and d["sweep_variant"].isna().all()  # no sweep recorded
    (tmp_path / "latency").mkdir()

    def point(m, routing, variant, backend="decode_w4a16"):
        return {"backend": backend, "shape": "s", "m": m, "routing": routing, "launch": {"variant": variant}}

    results.write(tmp_path / "latency" / "h200.json", "latency_sweep",
                  [point(64, "skewed", 52), point(64, "uniform", 70), point(256, "uniform", 70),
                   point(256, "uniform", 9, backend="other")], ceilings={"copy_bytes_per_s": 4e12})
    assert sweep_variants(path) == {("decode_w4a16", "s", 64): 70, ("decode_w4a16", "s", 256): 70,
                                    ("other", "s", 256): 9}
    b = launch_bounds(latency_launches(path))
    assert [(r["m"], r["launch"], r["variant"], r["sweep_variant"]) for r in b] == [
        (64, 0, 37, 70), (64, 1, 37, 70), (256, 0, 70, 70), (256, 1, 70, 70)]


def test_phase_stamps_of_the_recorded_forwards_are_in_launch_order():
    """The recorded phase stamps (current and archived files): per forward, fc1, fc2 and the combine end in that
    order, fc2's CTAs are all in by the time fc1's last CTA leaves, every busy CTA count fits its grid, and the
    counts are whole numbers."""
    from mxfp4lab.studies.launches import latency_phases

    frames = [latency_phases(), latency_phases("data/results/archive/launches/h200-2026-12-02-phases.json")]
    frames = [f for f in frames if len(f)]
    if not frames:
        pytest.skip("no recorded phase stamps")
    for d in frames:
        for _, f in d.groupby(["backend", "shape", "m"]):
            by = f.set_index("launch")
            assert by.loc["fc1", "last_exit"] < by.loc["fc2", "last_exit"] < by.loc["combine", "last_exit"]
            # fc2's CTAs take the SM slots fc1's free: its last one has entered by the time fc1's last one leaves
            # (+ 1 us for the CTA scheduler; fc2 is the same size of grid)
            assert by.loc["fc2", "last_entry"] <= by.loc["fc1", "last_exit"] + 1.0
            assert (f["busy"] <= f["ctas"]).all() and str(f["ctas"].dtype) == "Int64"
            assert (f[["route", "first_step", "stream", "epilogue"]].dropna() > 0).all().all()


def test_tails_of_a_recorded_forward_name_the_latest_ctas_phases(tmp_path):
    """latency_tails: one row per GEMM launch with its median and last exit and the latest CTAs' phases beside the
    median CTA's, read from a launches file (a synthetic one: two replays' medians as bench.phases writes them);
    a file recorded before these views gives an empty frame."""
    import json

    from mxfp4lab import results
    from mxfp4lab.studies.launches import latency_tails

    def launch(first, late_first, loads):
        return {"first_entry": 0.0, "last_entry": 0.3, "route": 0.8, "route_ids": 0.7, "ready_wait": None,
                "first_step": first, "stream": 6.4, "epilogue": 2.7, "slowest_warp": 0.9, "median_exit": 13.6,
                "last_exit": 17.0, "ctas": 396, "busy": 360, "sms": 132, "max_items": 1, "exit_by_load": loads,
                "late": {"entry": 0.1, "route": 0.9, "first_step": late_first, "stream": 7.0, "epilogue": 2.7}}

    row = {"backend": "decode_w4a16", "shape": "gpt-oss-120b", "m": 1, "timeline": [], "span_us": 28.0,
           "phases": {"variant": 15, "grid": 396, "replays": 20, "timer_step_ns": 32,
                      "launches": {"fc1": launch(2.85, 4.59, {"1": 11.9, "3": 13.7, "2": 12.3}),
                                   "fc2": launch(2.4, 3.6, {}), "combine": None}}}
    path = tmp_path / "launches" / "h200.json"
    path.parent.mkdir()
    results.write(path, "moe_launches", [row])
    t = latency_tails(path)
    assert list(t["launch"]) == ["fc1", "fc2"] and t.loc[0, "late_first_step"] == 4.59
    assert t.loc[0, "first_step"] == 2.85 and t.loc[0, "exit_by_load"] == "1: 11.9, 2: 12.3, 3: 13.7"
    assert t.loc[1, "exit_by_load"] == "" and t["run"].isna().all()
    # a row re-measured without stamps keeps its predecessor's, named by the run they came from
    results.write(path, "moe_launches", [{**row, "run": "floors", "phases_run": "item_tiles"}])
    assert set(latency_tails(path)["run"]) == {"item_tiles"}
    from mxfp4lab.studies.launches import latency_phases

    assert set(latency_phases(path)["run"]) == {"item_tiles"}
    results.write(path, "moe_launches", [row])
    doc = json.loads(path.read_text())
    for name in ("fc1", "fc2"):
        del doc["rows"][0]["phases"]["launches"][name]["late"]
    path.write_text(json.dumps(doc))
    assert latency_tails(path).empty


def test_launch_rows_merged_from_other_runs_keep_their_provenance(tmp_path):
    """A launches file whose rows were merged from other runs: each row says its run, and the frames carry every
    run's provenance, so that the report's label names each run's date and commit."""
    from mxfp4lab import results
    from mxfp4lab.studies import latency as lat
    from mxfp4lab.studies.launches import latency_launches, latency_tails

    tl = [{"launch": 0, "kernel": "k1", "start_us": 0.0, "end_us": 5.0}]
    rows = [{"backend": "decode_w4a16", "shape": "gpt-oss-120b", "m": 1, "timeline": tl},
            {"backend": "decode_w4a16", "shape": "gpt-oss-20b", "m": 64, "timeline": tl, "run": "twenty_b"}]
    later = {"gpu": "NVIDIA H200", "date": "2026-12-03T12:29:00+00:00", "mxfp4lab_commit": "0537e53aaf9dfaef"}
    path = tmp_path / "launches" / "h200.json"
    path.parent.mkdir()
    results.write(path, "moe_launches", rows, prov={"gpu": "NVIDIA H200", "date": "2026-12-03T10:31:00+00:00",
                                                     "mxfp4lab_commit": "8cd24d3f4923876a"},
                  runs={"twenty_b": {"provenance": later}})
    d = latency_launches(path)
    assert d["run"].isna().tolist() == [True, False] and d.loc[1, "run"] == "twenty_b"
    assert d.attrs["runs"] == {"twenty_b": later}
    assert latency_tails(path).attrs["runs"] == {"twenty_b": later}
    label = lat.latency_source_label(d.attrs["provenance"], d.attrs["runs"])
    assert "8cd24d3f49" in label and "run twenty_b" in label and "0537e53aaf" in label


def test_routing_load_floor_uses_the_given_ceilings():
    """latency_load_floor: the roofline of each routing's tokens and hit experts at the measured ceilings."""
    import pandas as pd

    from mxfp4lab.models import get_model
    from mxfp4lab.roofline import roofline
    from mxfp4lab.studies.latency import latency_load_floor

    summary = pd.DataFrame({"routing": ["uniform", "real"], "tokens": [64, 64], "active_experts": [100.0, 40.0]})
    ceil = {"copy_bytes_per_s": 4.1e12, "bf16_flops_per_s": 7.5e14}
    out = latency_load_floor(summary, "gpt-oss-120b", ceilings=ceil)
    want = roofline(get_model("gpt-oss-120b"), 64, bandwidth=4.1e12, flops_rate=7.5e14, active_experts=40.0).floor_us
    assert out.loc[1, "floor_us"] == pytest.approx(want) and out.loc[0, "floor_us"] > out.loc[1, "floor_us"]


def test_ncu_rows_of_the_first_forward_skip_what_runs_around_it():
    """first_forward: ncu's rows start at the first kernel named like the timeline's first one (the input
    checks' reductions before it are not launches of the forward); a variant's other template arguments match."""
    from mxfp4lab.studies.launches import first_forward

    tl = [{"kernel": "void ns::gemm_kernel<4, 1, 2, 1, 3, true>(ns::GemmArgs)"},
          {"kernel": "void ns::gemm_kernel<2, 1, 2, 1, 3, false>(ns::GemmArgs)"}, {"kernel": "ns::combine_kernel(A)"}]
    ncu = [{"kernel": "void at::reduce_kernel<512, 1>(T3)"}, {"kernel": "void at::copy_kernel(T)"},
           {"kernel": "void ns::gemm_kernel<4, 1, 6, 2, 1, 1>(ns::GemmArgs)"}, {"kernel": "void ns::gemm_kernel<2>(A)"},
           {"kernel": "ns::combine_kernel(A)"}, {"kernel": "void ns::gemm_kernel<4, 1, 6, 2, 1, 1>(ns::GemmArgs)"}]
    assert [n["kernel"] for n in first_forward(ncu, tl)] == [n["kernel"] for n in ncu[2:5]]
    assert first_forward(ncu[:2], tl) == [] and first_forward(ncu, []) == []


def test_part_costs_are_the_share_each_removal_saved(tmp_path):
    """What each part of the wide items holds, from a part_costs file: per (variant, M, part) the least and most of the
    forward's time its removal saved (1 - ablated / shipped) over the shapes, largest M first and the parts in the
    report's order; nothing recorded gives None, an unknown part or a time that is not positive an error naming the
    file. The recorded H200 file reads back: at M = 4096 the decode saves nothing, the MMAs and the token tiles most."""
    path = tmp_path / "part_costs" / "h200.json"
    prov = {"gpu": "NVIDIA H200", "date": "2026-12-04", "mxfp4lab_commit": "abc"}
    rows = [{"variant": 51, "shape": "a", "m": 1024, "removed": "decode", "median_us": 96.0, "shipped_us": 100.0},
            {"variant": 56, "shape": "a", "m": 4096, "removed": "epilogue", "median_us": 90.0, "shipped_us": 100.0},
            {"variant": 56, "shape": "b", "m": 4096, "removed": "epilogue", "median_us": 180.0, "shipped_us": 200.0},
            {"variant": 56, "shape": "b", "m": 4096, "removed": "wgmma", "median_us": 140.0, "shipped_us": 200.0}]
    results.write(path, "part_costs", rows, prov=prov)
    pc = costs.latency_part_costs(path)
    got = [(r["variant"], r["m"], r["removed"], round(r["saved_lo"], 6), round(r["saved_hi"], 6), r["points"])
           for r in pc["rows"]]
    assert got == [(56, 4096, "wgmma", 0.3, 0.3, 1), (56, 4096, "epilogue", 0.1, 0.1, 2), (51, 1024, "decode", 0.04, 0.04, 1)]
    assert "recorded on NVIDIA H200 2026-12-04" in pc["source"]
    assert costs.latency_part_costs(tmp_path / "none.json") is None
    results.write(path, "part_costs", [dict(rows[0], removed="routing")], prov=prov)
    with pytest.raises(ValueError, match="'routing' is not one of"):
        costs.latency_part_costs(path)
    results.write(path, "part_costs", [dict(rows[0], shipped_us=0.0)], prov=prov)
    with pytest.raises(ValueError, match="must be > 0"):
        costs.latency_part_costs(path)
    recorded = {(r["m"], r["removed"]): r for r in costs.latency_part_costs()["rows"]}
    assert abs(recorded[4096, "decode"]["saved_hi"]) < 0.02  # run-to-run spread of one lease: ~1 %
    assert min(recorded[4096, p]["saved_lo"] for p in ("wgmma", "token_tiles")) > 0.2


def test_harness_floor_splits_the_graphs_cost_into_launches_and_entry(tmp_path):
    """The harness's own cost from a harness_floor file: the one-kernel graph, half the three-kernel graph's extra time
    per further launch, the rest the graph's entry and exit; nothing recorded gives None, a file without one of the
    two graphs an error naming it. The recorded H200 file reads back."""
    path = tmp_path / "harness" / "h200.json"
    rows = [{"kernel_calls": "one", "kernels": 1, "median_us": 3.0}, {"kernel_calls": "three", "kernels": 3, "median_us": 5.5}]
    results.write(path, "harness_floor", rows, prov={"gpu": "NVIDIA H200", "date": "2026-12-04", "mxfp4lab_commit": "abc"})
    hf = costs.latency_harness_floor(path)
    assert (hf["one_kernel_us"], hf["per_launch_us"], hf["entry_exit_us"]) == (3.0, 1.25, 1.75)
    assert "recorded on NVIDIA H200 2026-12-04" in hf["source"]
    assert costs.latency_harness_floor(tmp_path / "none.json") is None
    results.write(path, "harness_floor", rows[:1], prov={"gpu": "NVIDIA H200"})
    with pytest.raises(ValueError, match="kernels = 1, 3"):
        costs.latency_harness_floor(path)
    recorded = costs.latency_harness_floor()
    assert recorded is not None and 1.0 < recorded["one_kernel_us"] < 10.0 and recorded["per_launch_us"] > 0
