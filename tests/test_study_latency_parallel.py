"""The latency study across GPUs (mxfp4lab.studies.latency_parallel and its figures) on recorded files made here:
no run recorded (the clear empty state), a GPU run, and a file of CPU stand-in timings (never shown)."""

import matplotlib.pyplot as plt
import pytest

from mxfp4lab import results
from mxfp4lab.models import GPT_OSS_120B
from mxfp4lab.roofline import roofline
from mxfp4lab.studies import latency_figures as figures
from mxfp4lab.studies import latency_parallel as lp

PROV = {"gpu": "NVIDIA H200", "date": "2026-12-24T10:00:00+00:00", "mxfp4lab_commit": "0123456789abcdef",
        "device_count": 8}


def layer_us(backend, par, w, m):
    base = {"flashinfer_sm90": 100.0, "triton_kernels": 80.0}[backend] * (1 + m / 256)
    return base if w == 1 else base / w * (1.1 if par == "ep" else 1.0) + 10.0


def rows(timer="cuda_events"):
    out = []
    for b in ("flashinfer_sm90", "triton_kernels"):
        for m in (1, 64):
            one = layer_us(b, "none", 1, m)
            out.append({"shape": "gpt-oss-120b", "backend": b, "parallel": "none", "world": 1, "m": m, "timer": timer,
                        "layer_us": one, "experts_us": one, "allreduce_us": 0.0, "allreduce_share": 0.0,
                        "roofline_us": 10.0})
            for par in ("tp", "ep"):
                for w in (2, 4, 8):
                    t = layer_us(b, par, w, m)
                    out.append({"shape": "gpt-oss-120b", "backend": b, "parallel": par, "world": w, "m": m,
                                "timer": timer, "layer_us": t, "experts_us": t - 10, "allreduce_us": 9.0,
                                "allreduce_share": 9.0 / t, "roofline_us": 10.0 / w + 2})
    out.append({"shape": "gpt-oss-120b", "backend": "humming", "parallel": "tp", "world": 8, "m": 1,
                "timer": timer, "error": "output check failed"})
    return out


def write(tmp_path, timer="cuda_events"):
    p = results.result_path(lp.PARALLEL_STUDY, "h200", tmp_path)
    results.write(p, "parallel_latency", rows(timer), prov=PROV, launched_ranks=8, ceilings={"copy_bytes_per_s": 4e12})
    return p


def texts(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts) + " " + fig._suptitle.get_text()


def test_no_run_recorded_is_a_clear_state(tmp_path):
    df, prov = lp.parallel_load(tmp_path / "parallel_latency" / "h200.json")
    assert prov is None and df.empty and lp.NO_RUN in df.attrs["note"]
    assert lp.parallel_source_label(prov, df) == lp.NO_RUN
    sc = lp.parallel_scaling(df)
    assert sc.empty and list(sc.columns) == lp.SCALING_COLUMNS
    floor = lp.parallel_floor_only(["gpt-oss-120b"], (1, 2, 8), (1, 64), ceilings={"copy_bytes_per_s": 4.27e12,
                                                                                   "bf16_flops_per_s": 7.85e14})
    fig = figures.plot_parallel_scaling(sc, floor, label=lp.parallel_source_label(prov, df))
    assert texts(fig).count("no multi-GPU run") >= 3  # the title and every panel
    assert len(fig.axes[0].lines) == 2  # the per-GPU floor of TP and of EP, nothing measured
    share = figures.plot_parallel_allreduce_share(lp.parallel_best(sc))
    assert "no multi-GPU run recorded yet" in texts(share)
    plt.close("all")


def test_floor_only_is_the_single_gpu_floor_split(tmp_path):
    ceil = {"copy_bytes_per_s": 4.27e12, "bf16_flops_per_s": 7.85e14}
    f = lp.parallel_floor_only(["gpt-oss-120b"], (1, 2, 4, 8), (1, 64, 4096), ceilings=ceil).set_index(
        ["parallel", "world", "m"])["floor_gpu_us"]
    for m in (1, 64, 4096):
        one = roofline(GPT_OSS_120B, m, bandwidth=4.27e12, flops_rate=7.85e14).floor_us
        assert f["tp", 1, m] == pytest.approx(one, rel=1e-12) and f["ep", 1, m] == pytest.approx(one, rel=1e-12)
        # GPT-OSS's 2880 is 90 scale blocks: TP=8 ranks hold 384 (-> 384) columns, more than 2880 / 8 padded
        # to 2944 / 8: the TP floor falls a little slower than 1 / world; EP splits the experts exactly
        assert f["tp", 8, m] > f["ep", 8, m]
        assert f["ep", 2, m] < f["ep", 1, m] and f["tp", 8, m] < f["tp", 4, m] < f["tp", 2, m] < f["tp", 1, m]


def test_recorded_run_gives_scaling_curves(tmp_path):
    df, prov = lp.parallel_load(write(tmp_path))
    assert int(df["ok"].sum()) == len(rows()) - 1 and df.attrs["note"] == ""
    assert lp.parallel_source_label(prov, df) == "recorded on 8 x NVIDIA H200 2026-12-24, commit 0123456789"
    sc = lp.parallel_scaling(df)
    # the one-GPU point starts both curves: 2 backends x 2 M x 2 kinds x (1 + 3 worlds)
    assert len(sc) == 2 * 2 * 2 * 4 and set(sc["parallel"]) == {"tp", "ep"}
    for r in sc.itertuples():
        assert r.speedup == pytest.approx(layer_us(r.backend, "none", 1, r.m) / r.layer_us, rel=1e-12)
        assert r.efficiency == pytest.approx(r.speedup / r.world, rel=1e-12)
    best = lp.parallel_best(sc)
    assert set(best["backend"]) == {"triton_kernels"} and len(best) == 2 * 2 * 4
    fig = figures.plot_parallel_scaling(sc, label=lp.parallel_source_label(prov, df))
    assert "no multi-GPU run" not in texts(fig)
    panel = fig.axes[0]  # gpt-oss-120b, M=1: 2 backends x TP/EP, the roofline and the all-reduce per kind
    assert len(panel.lines) == 2 * 2 + 2 * 2
    share = figures.plot_parallel_allreduce_share(best, label="x")
    assert len(share.axes[0].lines) == 2 * 3  # TP and EP at 2, 4, 8 GPUs
    plt.close("all")


def test_cpu_stand_in_timings_are_never_results(tmp_path):
    df, prov = lp.parallel_load(write(tmp_path, timer="host_wall_clock"))
    assert not df["ok"].any() and "CPU stand-ins" in df.attrs["note"]
    assert lp.parallel_source_label(prov, df) == lp.NO_RUN and lp.parallel_scaling(df).empty
