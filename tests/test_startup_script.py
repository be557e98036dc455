"""scripts/gpu/startup_time.py on the CPU: the rows and checks it records from its processes' reports, and
``mxfp4lab build --info``'s reading of them (the GPU steps themselves run on the lead's H200)."""

from __future__ import annotations

from conftest import load_script
from mxfp4lab import results
from mxfp4lab.studies.startup import recorded_times


def _script():
    return load_script("scripts/gpu/startup_time.py")


def _rec(child, had, first, medians, table):
    return {
        "child": child,
        "had_tactics": had,
        "import_mode": "full" if child == "warm_full" else "lean",
        "first_tuned_call_s": first,
        "first_call_without_weights_s": first - 1.0,
        "seconds": {"torch_s": 1.5, "flashinfer_s": 0.8},
        "medians": medians,
        "table": table,
    }


def test_assemble_rows_checks_and_info(tmp_path):
    st = _script()
    table = {"NVIDIA H200/sm90/132|E128_H2944_I2944_k4_tp1_ep1_bias11_ff1": {"buckets": {"1": [6, 13]}}}
    tune = _rec(
        "tune",
        False,
        31.0,
        [
            {"m": 1, "cache_us": 78.0, "autotuner_us": 78.5},
            {"m": 64, "cache_us": 690.0, "autotuner_us": 688.0},
        ],
        table,
    )
    warm = _rec(
        "warm",
        True,
        6.5,
        [{"m": 1, "cache_us": 79.0, "tactics": {"gemm1": 6}}, {"m": 64, "cache_us": 700.0}],
        table,
    )
    full = _rec("warm_full", True, 9.0, [], None)
    build = {"phase": "cold_build", "configs": "compact", "cold_build_s": 95.0}
    rows, checks = st.assemble(
        build, {"tune": tune, "warm": warm, "warm_full": full}, {1: 78.2}, "gpt-oss-120b"
    )
    med = [r for r in rows if r["phase"] == "medians"]
    assert [r["m"] for r in med] == [1, 64] and med[0]["latency_study_us"] == 78.2
    assert abs(med[1]["ratio_fresh_cache_to_autotuner"] - 700 / 688) < 1e-12
    assert checks == {
        "medians_within_3pct": True,
        "same_tactics": True,
        "cold_build_le_90s": False,
        "warm_start_le_10s": True,
    }
    slow = _rec("warm", True, 6.5, [{"m": 1, "cache_us": 82.0}, {"m": 64, "cache_us": 700.0}], table)
    assert not st.assemble(build, {"tune": tune, "warm": slow, "warm_full": full}, {}, "x")[1][
        "medians_within_3pct"
    ]
    other = _rec("warm", True, 6.5, warm["medians"], {})
    assert not st.assemble(build, {"tune": tune, "warm": other, "warm_full": full}, {}, "x")[1][
        "same_tactics"
    ]

    results.write(
        tmp_path / "startup" / "h200.json",
        "startup_time",
        rows,
        checks=checks,
        prov={"gpu": "NVIDIA H200", "cpu_count": 16, "date": "d", "mxfp4lab_commit": "c"},
    )
    (rec,) = recorded_times(tmp_path)
    assert (
        rec["cold_build_s"],
        rec["first_tuned_call_s"],
        rec["first_tuned_call_tuning_s"],
        rec["first_tuned_call_full_import_s"],
    ) == (95.0, 6.5, 31.0, 9.0)


def test_build_info_prints_the_recorded_times(tmp_path, monkeypatch, capsys):
    from mxfp4lab import cli

    rows = [{"phase": "cold_build", "configs": "compact", "cold_build_s": 84.25},
            {"phase": "first_call", "process": "warm", "first_tuned_call_s": 6.5},
            {"phase": "first_call", "process": "tune", "first_tuned_call_s": 31.0}]
    results.write(tmp_path / "res" / "startup" / "h200.json", "startup_time", rows,
                  prov={"gpu": "NVIDIA H200", "cpu_count": 16, "date": "d", "mxfp4lab_commit": "c"})
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path / "res")
    monkeypatch.setenv("MXFP4LAB_CACHE", str(tmp_path / "cache"))
    assert cli.main(["build", "--configs", "minimal", "--info"]) == 0
    out = capsys.readouterr()
    assert '"recorded": [' in out.out and '"cold_build_s": 84.25' in out.out
    assert "cold build 84.2 s (configs=compact), fresh process to the first tuned call 6.5 s" in out.err
