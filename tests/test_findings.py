"""Findings: the data type, change detection, each study's findings from recorded numbers, and the index page
that lists them and flags changed verdicts."""

import json

import pytest

from mxfp4lab import findings as F
from mxfp4lab import report
from mxfp4lab.studies import accuracy_findings, latency_findings, layout_findings


def test_finding_checks_its_status_and_round_trips():
    f = F.Finding("q", "v", "d", "good")
    assert F.Finding.of(f.as_dict()) == f
    with pytest.raises(ValueError, match="status"):
        F.Finding("q", "v", status="fine")
    with pytest.raises(ValueError, match="question and a verdict"):
        F.Finding("q", "")


def test_changes_compare_verdicts_only():
    old = [F.Finding("a", "holds", "1%"), F.Finding("b", "x")]
    new = [F.Finding("a", "holds", "2%"), F.Finding("b", "y"), F.Finding("c", "new")]
    assert F.changes([f.as_dict() for f in old], new) == {"b": "x"}  # detail changes are not flagged
    assert F.changes(None, new) == {}


def _latency_results(fi_faster):
    claim = [{"m": m, "regime": r, "fi_faster": v, "within_claim": lo <= v <= hi}
             for (m, r, lo, hi), v in zip([(16, "M<=64", -.15, -.12), (64, "M<=64", -.15, -.12),
                                           (256, "M~256", -.05, .05), (4096, "M>=1024", .24, .36)], fi_faster)]
    return {"recorded": True, "source": "recorded on H100", "claim_check": claim,
                "fastest": {"gpt-oss-20b": [[1, "marlin"], [64, "marlin"], [128, "fi"], [4096, "fi"]],
                         "dsv4-flash": [[1, "marlin"]], "seed-bench": [[1, "marlin"]]},
                "shape_aliases": {"seed-bench": "dsv4-flash"},
                "dispatch_speedup": [{"always": "fi", "shape": "all", "geomean": 1.2, "worst": 1, "best": 2, "n_m": 4},
                                  {"always": "marlin", "shape": "all", "geomean": 1.1, "worst": 1, "best": 2, "n_m": 4}],
                "best_fraction_of_floor": {"gpt-oss-20b": {"1": 0.3, "4096": 0.45}}, "triton_goals": {"met": 0, "count": 5}}


def test_latency_findings_give_claim_verdicts_and_ranges():
    fs = {f.question: f for f in latency_findings.findings(_latency_results([-0.2, -0.13, 0.01, 0.3]))}
    overall = fs["original claim on seed-bench (FlashInfer vs Marlin; claimed on an H100)"]
    assert (overall.verdict, overall.status) == ("partly holds", "mixed") and "3 of 4" in overall.detail
    assert fs["original claim at M<=64 (Marlin 12-15% faster)"].verdict == "partly holds"
    assert fs["original claim at M~256 (tie)"].status == "good"
    assert fs["fastest backend on gpt-oss-20b"].verdict == "marlin M 1-64, fi M 128-4096"
    assert "fastest backend on dsv4-flash (= seed-bench)" in fs and not any(q.startswith("fastest backend on seed-bench") for q in fs)
    assert fs["dispatching the fastest backend per (shape, M)"].verdict.startswith("1.10x")
    assert fs["mxfp4lab Triton kernel against its goals"].status == "bad"
    none = latency_findings.findings({"recorded": False, "source": "nothing"})
    assert [f.status for f in none] == ["missing"]
    all_held = latency_findings.findings(_latency_results([-0.13, -0.14, 0.0, 0.3]))
    assert all_held[1].verdict == "holds"


def test_launch_bound_finding_ranges_the_floor_fractions_per_m_range():
    """The decode kernel's launch-bound finding: per M range the span of floor fractions and the floors that bound
    them, the launches below half their floor by (shape, M) in numeric order, 'good' only with every launch >= 80 %
    of its floor; recorded but empty gives 'missing', unrecorded gives no finding."""
    rows = [{"shape": "gpt-oss-120b", "m": 1, "launch": 0, "bound": "DRAM", "floor_frac": 0.47},
            {"shape": "gpt-oss-120b", "m": 1, "launch": 1, "bound": "issue", "floor_frac": 0.39},
            {"shape": "seed-bench", "m": 1, "launch": 1, "bound": "ALU", "floor_frac": 0.5},
            {"shape": "gpt-oss-20b", "m": 64, "launch": 0, "bound": "issue", "floor_frac": 0.63},
            {"shape": "gpt-oss-20b", "m": 4096, "launch": 0, "bound": "issue", "floor_frac": 0.34},
            {"shape": "gpt-oss-20b", "m": 1024, "launch": 1, "bound": "tensor", "floor_frac": 0.45}]
    q = ("what bounds mxfp4lab's decode kernel launch by launch (fc1, fc2 against their DRAM, issue, ALU and tensor "
         "floors)")
    (f,) = [x for x in latency_findings.findings({**_latency_results([-0.13] * 4), "launch_bounds": rows})
            if x.question == q]
    assert f.verdict == ("M <= 64: 39-63% of their ALU / DRAM / issue floor (4 launches); M >= 1024: 34-45% of their "
                         "issue / tensor floor (2 launches)")
    assert f.detail.endswith("gpt-oss-120b M 1, gpt-oss-20b M 1024, gpt-oss-20b M 4096") and f.status == "mixed"
    at_floor = [dict(r, floor_frac=0.9) for r in rows]
    (g,) = [x for x in latency_findings.findings({**_latency_results([-0.13] * 4), "launch_bounds": at_floor})
            if x.question == q]
    assert g.status == "good" and "Below half" not in g.detail
    # a breakdown recorded with another launch variant than the sweep's at that point is named, once per point
    stale = [dict(r, variant=37, sweep_variant=70 if r["m"] == 64 else 37) for r in rows]
    (h,) = [x for x in latency_findings.findings({**_latency_results([-0.13] * 4), "launch_bounds": stale})
            if x.question == q]
    assert h.detail.endswith("Recorded with another launch variant than the sweep now runs there (re-record with "
                             "mxfp4lab bench launches --ncu): gpt-oss-20b M 64 (variant 37; the sweep: 70)")
    assert "Recorded with another" not in f.detail  # (rows without variants: nothing to compare)
    empty = latency_findings.findings({**_latency_results([-0.13] * 4), "launch_bounds": []})
    assert [x.status for x in empty if x.question.startswith("what bounds")] == ["missing"]
    assert not [x for x in latency_findings.findings(_latency_results([-0.13] * 4)) if x.question.startswith("what bounds")]


def test_harness_finding_states_the_fixed_cost_only_where_recorded():
    base = _latency_results([-0.13] * 4)
    hf = {"one_kernel_us": 2.816, "per_launch_us": 1.216, "entry_exit_us": 1.6, "source": "data/results/harness/h200.json"}
    (f,) = [x for x in latency_findings.findings({**base, "harness_floor": hf}) if x.question == "the timing harness's own cost"]
    assert f.verdict == "2.82 us for a CUDA graph of one tiny kernel" and f.status == "info"
    assert f.detail.startswith("1.2 us per further dependent launch, ~1.6 us the graph's entry and exit")
    assert f.detail.endswith("data/results/harness/h200.json")
    assert not [x for x in latency_findings.findings({**base, "harness_floor": None}) if "harness" in x.question]


def test_part_costs_finding_lists_each_removal_per_variant_and_m():
    base = _latency_results([-0.13] * 4)
    pc = {"rows": [{"variant": 56, "m": 4096, "removed": "wgmma", "saved_lo": 0.30, "saved_hi": 0.319, "points": 2},
                   {"variant": 56, "m": 4096, "removed": "decode", "saved_lo": -0.0053, "saved_hi": 0.0042, "points": 2},
                   {"variant": 51, "m": 1024, "removed": "epilogue", "saved_lo": 0.039, "saved_hi": 0.039, "points": 1}],
          "source": "data/results/part_costs/h200.json"}
    (f,) = [x for x in latency_findings.findings({**base, "part_costs": pc}) if x.question.startswith("where the decode")]
    assert f.verdict == "M = 4096 (variant 56): its MMAs 30-32 %, its decode -1 to 0 %" and f.status == "info"
    assert f.detail.startswith("M = 1024 (variant 51): its epilogue 4 %;") and f.detail.endswith("h200.json")
    assert not [x for x in latency_findings.findings({**base, "part_costs": None}) if x.question.startswith("where the decode")]


def test_accuracy_and_layout_findings():
    res = {"accuracy_table": {"gaussian": {"ocp": 0.11, "round_up": 0.12}, "heavy": {"ocp": 0.14, "round_up": 0.15}},
               "clipped_frac": {"ocp": 0.018, "round_up": 0.0},
               "rule_agreement": {"round_up/flashinfer/gaussian": {"scale_diff": 0.0, "value_diff": 0.011}},
               "emulated_vs_kernel_ref_max": 0.0, "flashinfer": {"available": False, "reason": "no GPU"},
               "flashinfer_vs_kernel_ref_max": None}
    fs = {f.question: f for f in accuracy_findings.findings(res)}
    win = fs["scale rule with the lowest weight error"]
    assert win.verdict == "ocp on every distribution" and "1.8%" in win.detail
    assert fs["round_up vs flashinfer scale rules"].verdict == "identical scales"
    assert fs["emulated_sm90 (prepared SM90 tensors) vs the kernel-faithful reference"].verdict == "bit-exact"
    assert fs["FlashInfer SM90 kernel vs the kernel-faithful reference"].status == "missing"
    res["emulated_vs_kernel_ref_max"] = 1e-3
    assert any(f.status == "bad" for f in accuracy_findings.findings(res))
    lay = layout_findings.findings({"check": {"elements": 4, "bits_checked": 16, "bit_mismatches": 1,
                                                   "scales_checked": 2, "scale_mismatches": 0},
                                        "bit_permutation": list(range(32))})
    assert [f.verdict for f in lay] == ["MISMATCH", "a permutation of the 32 bits"] and lay[0].status == "bad"


def _run(root, name, date, fs, started):
    d = root / f"{date}-{name}"
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"name": name, "date": date, "started": started, "results": "results.json",
                                                "html": "x.html", "seconds": 1.0, "parameters": {}}))
    (d / "results.json").write_text(json.dumps({"findings": [f.as_dict() for f in fs], "other": 1}))


def test_index_lists_findings_and_flags_a_changed_verdict(tmp_path):
    _run(tmp_path, "latency", "2030-01-01", [F.Finding("claim", "holds", "6 of 13"), F.Finding("x", "1")], "a")
    _run(tmp_path, "latency", "2030-01-02", [F.Finding("claim", "does not hold", "0 of 13", "bad"),
                                             F.Finding("x", "1")], "b")
    d = tmp_path / "2030-01-03-layout"  # a run recorded before findings existed
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"name": "layout", "date": "2030-01-03", "results": "results.json"}))
    (d / "results.json").write_text(json.dumps({"check": {"bit_mismatches": 0}}))
    page = report.write_index(tmp_path).read_text()
    assert "claim_check = [" not in page and "does not hold" in page
    assert page.count("changed, was: holds") == 1 and "1 verdict(s) changed" in page
    assert "no findings recorded" in page and "bit_mismatches" in page
    assert page.index("2030-01-03") < page.index("2030-01-02") < page.index("2030-01-01")  # newest first


def test_decode_goal_finding_names_the_points_decided_by_noise():
    """Goal points within 2 % of the 1.15x speedup are listed (met or not): the spread between two runs of one kernel
    is that large, so a reader knows which verdicts can flip; none listed, no sentence."""
    base = {"recorded": True, "source": "recorded on H200"}
    goals = {"met": 29, "count": 36, "fastest": 28, "small_m": 28}
    f = [x for x in latency_findings.findings({**base, "decode_goals": {**goals, "narrow": ["gpt-oss-20b M 64"]}})
         if x.question == "mxfp4lab decode kernel against its goals"]
    assert f[0].verdict == "met at 29 of 36 (shape, M) points"
    assert f[0].detail.endswith("Within 2 % of the 1.15x (met or not; the spread between runs): gpt-oss-20b M 64")
    f = [x for x in latency_findings.findings({**base, "decode_goals": {**goals, "narrow": []}})
         if x.question == "mxfp4lab decode kernel against its goals"]
    assert "Within 2 %" not in f[0].detail
