"""What a reader of the reports sees, checked on the figures themselves (Agg): labels that do not overlap,
axes that cover the data, legends off the data, discrete colour bars, readable label sizes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from mxfp4lab.studies import accuracy as acc
from mxfp4lab.studies import accuracy_figures as afig
from mxfp4lab.studies import latency as lat
from mxfp4lab.studies import latency_figures as lfig
from mxfp4lab.studies import layout as lay
from mxfp4lab.studies import layout_figures as layfig

MS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]


def sweep_df():
    """Marlin vs FlashInfer crossing three times between M 128 and 1024 (labels that used to collide); a
    Triton backend timed at every other M; two shapes with the same MoE dimensions."""
    rows = []
    for shape in ("gpt-oss-20b", "dsv4-flash", "seed-bench"):
        for m in MS:
            marlin = 50.0 * m ** 0.6
            ratio = {128: 1.05, 256: 0.97, 512: 1.03}.get(m, 1.2 if m < 128 else 0.8)
            rows.append({"shape": shape, "backend": "marlin_mxfp4", "m": m, "median_us": marlin, "roofline_us": marlin / 3})
            rows.append({"shape": shape, "backend": "flashinfer_sm90", "m": m, "median_us": marlin * ratio,
                             "roofline_us": marlin / 3, "bytes": 1e6, "flops": 1e9})
            if MS.index(m) % 2 == 0:
                rows.append({"shape": shape, "backend": "triton_w4a16", "m": m, "median_us": marlin * 1.3,
                                 "roofline_us": marlin / 3})
    df = pd.DataFrame(rows).assign(routing="uniform", error=None)
    df["ok"] = True
    return df


def _overlaps(texts, renderer):
    boxes = [t.get_window_extent(renderer) for t in texts if t.get_text()]
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_speedup_crossover_labels_do_not_overlap():
    df = sweep_df()
    sp = lat.latency_speedups(df, "marlin_mxfp4")
    cx = lat.latency_all_crossovers(df)
    assert (cx[(cx["shape"] == "dsv4-flash") & (cx["b"] == "marlin_mxfp4")]["n_crossings"] == 3).all()
    fig = lfig.plot_latency_speedup(sp, crossovers=cx)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2  # seed-bench drawn with dsv4-flash
    assert any("(= seed-bench: same shape)" in ax.get_title() for ax in visible)
    for ax in visible:
        labels = [t for t in ax.texts if t.get_text().startswith("M~")]
        assert labels and not _overlaps(labels, r), ax.get_title()
        leg = ax.get_legend().get_texts()
        assert any("timed at 8 of 15 M" in t.get_text() for t in leg)


def test_latency_axes_cover_the_data():
    df = sweep_df()
    roof = lat.latency_roofline(["gpt-oss-20b", "dsv4-flash", "seed-bench"], lat.latency_ms(df, [1, 8192]))
    assert roof["m"].max() == 16384  # the floor spans every recorded M
    fig = lfig.plot_latency_vs_m(df, roof)
    for ax in (a for a in fig.axes if a.get_visible()):
        lines = [ln for ln in ax.get_lines() if ln.get_label() != "FLOPs / peak"]
        lo = min(min(ln.get_ydata()) for ln in lines)
        bottom = ax.get_ylim()[0]
        assert lo * 0.5 <= bottom <= lo, (ax.get_title(), bottom, lo)  # not 1 us under data at 10-1000 us
        assert ax.get_xlim()[1] >= 16384


def test_roofline_fraction_is_small_multiples_with_the_legend_outside():
    fig = lfig.plot_latency_roofline_fraction(lat.latency_roofline_fraction(sweep_df()))
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 4 and all(a.get_legend() is None for a in axes)  # 2 distinct shapes x 2 rows
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    (leg,) = fig.legends
    box = leg.get_window_extent(r)
    assert not any(box.overlaps(a.get_window_extent(r)) for a in axes)
    assert max(len(a.get_lines()) for a in axes) <= 4  # 3 backends (+ the 1.0 line), not 12


def test_speedup_table_fits_a_page():
    t = lat.latency_speedup_table(lat.latency_speedups(sweep_df(), "marlin_mxfp4"))
    assert list(t.index.names) == ["shape", "backend"] and len(t.columns) == len(MS)
    assert "seed-bench" not in t.index.get_level_values(0) and "marlin_mxfp4" not in t.index.get_level_values(1)
    assert (t.map(len) <= 4).all().all()  # "1.23" or "-"


def test_claim_verdicts_per_regime():
    df = sweep_df()
    v = lat.latency_claim_verdicts(lat.latency_claim_check(df))
    assert list(v["regime"]) == ["M<=64", "M~256", "M>=1024"]
    assert set(v["verdict"]) <= {"holds", "partly holds", "does not hold"}


@pytest.fixture(scope="module")
def layer_frame():
    cfg = "gpt-oss-20b"
    from mxfp4lab.models import get_model

    small = get_model(cfg).scaled(hidden=64, intermediate=64, experts=4)
    return acc.accuracy_layer(small, ("ocp",), ("gaussian",), clamp=(True,), m=8,
                              backends=("emulated_sm90",), seed=0)


def test_accuracy_exact_results_are_marks_not_bars_and_legends_sit_outside(layer_frame):
    assert (layer_frame.loc[layer_frame.path == "emulated_sm90", "rel_err"] == 0).any()
    fig = afig.plot_accuracy_layer(layer_frame)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    left, right = fig.axes[:2]
    n_nonzero = (layer_frame[~((layer_frame.reference == "origin fp32") & (layer_frame.path != "origin kernel"))]
                 .groupby(["path", "reference", "rule"]).rel_err.max() > 0).sum()
    assert len(right.patches) == n_nonzero  # no bar for a zero
    assert any(t.get_text() == "exact (0)" for t in right.texts)
    for ax in (left, right):
        box = ax.get_legend().get_window_extent(r)
        assert box.x0 >= ax.get_window_extent(r).x1 - 1  # beside the axes, not on the bars


def test_depth_shows_a_band_over_seeds():
    from mxfp4lab.models import get_model

    small = get_model("gpt-oss-20b").scaled(hidden=64, intermediate=64, experts=4)
    d = pd.concat([acc.accuracy_depth(small, 2, ("ocp",), "gaussian", 16, s).assign(seed=s) for s in (0, 1)])
    fig = afig.plot_accuracy_depth(d)
    assert any(len(ax.collections) for ax in fig.axes[:3])  # the min..max bands
    assert "2 seed(s)" in fig._suptitle.get_text()
    summ = acc.depth_summary(d)
    assert summ["mxfp4 ocp"]["min"] <= summ["mxfp4 ocp"]["mean"] <= summ["mxfp4 ocp"]["max"]


def test_layout_colour_bars_have_one_colour_per_value_and_fold_labels_are_readable():
    fig = layfig.plot_tile_destinations(lay.layout_tile_map())
    bars = [im.colorbar for ax in fig.axes for im in ax.collections if getattr(im, "colorbar", None)]
    assert [b.cmap.N for b in bars] == [16, 8, 4]
    assert [len(b.get_ticks()) for b in bars] == [16, 8, 4]
    fig2 = layfig.plot_scale_fold(lay.layout_scale_fold())
    sizes = [t.get_fontsize() for ax in fig2.axes for t in ax.texts]
    assert sizes and min(sizes) >= 9


def test_launch_panels_name_their_run_and_the_provenance_label_is_written_once():
    """plot_launches: a panel's title names its run (not the whole provenance label, which squeezed every panel when
    a merged file had many runs); the label is one wrapped text under the panels."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from mxfp4lab.studies.latency_figures import plot_launches

    rows = [{"backend": "decode_w4a16", "shape": s, "m": m, "launch": i, "kernel": f"k{i}(Args)", "start_us": 2.0 * i,
             "end_us": 2.0 * i + 10.0, "run": run} for s, m, run in (("gpt-oss-120b", 1, None), ("gpt-oss-20b", 64, "floors"))
            for i in range(3)]
    label = "recorded on NVIDIA H200 2026-12-03, commit 8cd24d3f49" + "; run r: 2026-12-04, commit 65ea218fc6" * 20
    fig = plot_launches(pd.DataFrame(rows), label=label)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["decode_w4a16, gpt-oss-120b, M = 1: span 14.0 us",
                      "decode_w4a16, gpt-oss-20b, M = 64: span 14.0 us  (run floors)"]
    texts = [t.get_text() for t in fig.texts]
    assert len(texts) == 1 and texts[0].replace("\n", " ") == label and max(map(len, texts[0].split("\n"))) <= 180
    plt.close(fig)
