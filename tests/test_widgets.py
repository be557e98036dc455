"""LayoutExplorer: drive the ipywidgets callbacks and compare with layout.explain."""

import matplotlib

matplotlib.use("Agg")

import pytest

from mxfp4lab.layout import explain
from mxfp4lab.models import get_model
from mxfp4lab.widgets import LayoutExplorer


def _expected_dst(row, k):
    d = explain.weight_element_destination(row, k)
    return [(int(d["dst_row"]), int(d["dst_byte"][b]), int(d["dst_bit"][b])) for b in range(4)]


@pytest.mark.parametrize("row,k", [(0, 0), (8, 45), (15, 63), (37, 130), (127, 255)])
def test_forward_highlight_matches_explain(row, k):
    ex = LayoutExplorer(None, draw=False)
    hl = ex.select(row=row, k=k)
    assert hl["src"] == (row, k)
    assert hl["src_tile"] == (row % 16, k % 64)
    assert hl["dst"] == _expected_dst(row, k)
    s = explain.scale_destination(row, k // 32)
    assert hl["scale"] == (row, k // 32)
    assert hl["scale_fold"] == tuple(int(s[key]) for key in ("block", "k128", "frow", "col"))


def test_each_widget_change_updates_state():
    ex = LayoutExplorer(None, row=0, k=0, draw=False)
    ex.k_w.value = 45  # as a user dragging the slider
    assert ex.highlight["dst"] == _expected_dst(0, 45)
    ex.row_w.value = 9
    assert ex.highlight["dst"] == _expected_dst(9, 45)
    ex.expert_w.value = 0
    assert "w_sm90" in ex.text.value and ex.error is None


def test_reverse_lookup_round_trips():
    ex = LayoutExplorer(None, row=8, k=45, draw=False)
    for dst in ex.highlight["dst"]:
        rv = ex.lookup(*dst)
        assert (rv["row"], rv["k"]) == (8, 45)
        assert "selected element" in ex.reverse_text.value
    ex.lookup(3, 17, 2)
    src = explain.weight_bit_source(3, 17, 2)
    assert (ex.reverse["row"], ex.reverse["k"], ex.reverse["code_bit"]) == tuple(
        int(src[key]) for key in ("row", "k", "code_bit"))
    ex._on_jump()  # "trace this element"
    assert ex.highlight["src"] == (int(src["row"]), int(src["k"]))
    assert (3, 17, 2) in ex.highlight["dst"]


def test_pre_stage_up_gate_and_offsets():
    cfg = get_model("gpt-oss-20b")
    ex = LayoutExplorer(cfg, row=17, k=45, pre_stage="auto", draw=False)
    tr = ex.trace
    assert tr["ckpt_row"] == 17 and tr["row"] == 8 and tr["pre"]["half"] == "up"  # 2j+1 -> up_j
    ex.row_w.value = 16  # gate_8 -> I_pad + 8
    assert ex.trace["row"] == cfg.padded_intermediate + 8
    assert ex.highlight["dst"] == _expected_dst(cfg.padded_intermediate + 8, 45)
    kb = cfg.padded_hidden // 2
    assert ex.trace["offsets"]["weight_byte"][0] == ex.trace["dst_row"] * kb + ex.trace["dst_byte"][0]
    assert ex.row_w.max == 2 * cfg.intermediate_size - 1 and ex.k_w.max == cfg.padded_hidden - 1
    # jump from a physical bit in the gate half back to the checkpoint row
    d = _expected_dst(cfg.padded_intermediate + 3, 70)[0]
    ex.lookup(*d)
    ex._on_jump()
    assert ex.row_w.value == 6 and ex.k_w.value == 70  # gate_3 = checkpoint row 6


def test_custom_pre_stage_hook_and_errors():
    calls = []

    def stage(ckpt_row, config):
        calls.append(ckpt_row)
        return {"w13_row": ckpt_row + 16, "half": "up", "j": ckpt_row}

    ex = LayoutExplorer(get_model("gpt-oss-20b"), row=1, k=2, pre_stage=stage, draw=False)
    assert calls and ex.trace["row"] == 17
    assert ex.highlight["dst"] == _expected_dst(17, 2)

    def broken(ckpt_row, config):
        raise ValueError("nope")

    ex2 = LayoutExplorer(get_model("gpt-oss-20b"), pre_stage=broken, draw=False)
    assert ex2.error and "nope" in ex2.text.value


def test_render_and_static_figure():
    ex = LayoutExplorer(None, row=5, k=77, draw=True)  # renders into the Output widget (Agg)
    fig = ex.figure()
    assert len(fig.axes) >= 5
    assert "fc1 row 5" in fig._suptitle.get_text()
    import matplotlib.pyplot as plt

    plt.close("all")


def test_jump_to_a_padding_row_keeps_the_trace_and_later_lookups_redraw():
    cfg = get_model("gpt-oss-20b")  # I = 2880, I_pad = 2944: fc1 rows 2880..2943 are padding of the up half
    ex = LayoutExplorer(cfg, row=17, k=45, pre_stage="auto", draw=True)
    table = ex.text.value
    ex.lookup(2900, 10, 3)
    assert 2880 <= ex.reverse["row"] < 2944  # (r and r+8 trade places: physical row 2900 holds fc1 row 2908)
    ex._on_jump()  # "trace this element" on padding
    assert ex.error is None and ex.text.value == table  # the forward trace is untouched
    assert "zero padding" in ex.reverse_text.value and "2880..2943" in ex.reverse_text.value
    assert ex.highlight["src"] == (8, 45)
    before = ex.renders
    ex.lookup(3, 17, 2)  # a valid lookup afterwards redraws at once and clears the note
    assert ex.renders > before and "zero padding" not in ex.reverse_text.value
    import matplotlib.pyplot as plt

    plt.close("all")


def test_sliders_reach_every_row_and_k():
    cfg = get_model("gpt-oss-20b")
    ex = LayoutExplorer(cfg, row=0, k=0, pre_stage="auto", draw=False)
    for ctl in (ex.row_ctl, ex.k_ctl):
        assert ctl.steps_per_pixel() <= 1.0, ctl.value_w.description
    ex.row_ctl.coarse_w.value = 100  # tile 100 = rows 1600..1615
    ex.row_ctl.fine_w.value = 5
    assert ex.row_w.value == 1605 and ex.trace["ckpt_row"] == 1605
    ex.k_ctl.coarse_w.value = ex.k_ctl.coarse_w.max
    ex.k_ctl.fine_w.value = 63
    assert ex.k_w.value == cfg.padded_hidden - 1
    ex.row_w.value = 2 * cfg.intermediate_size - 1  # typing a value moves both sliders
    assert (ex.row_ctl.coarse_w.value, ex.row_ctl.fine_w.value) == divmod(2 * cfg.intermediate_size - 1, 16)


def test_mimebundle_has_the_live_widget_and_a_static_snapshot():
    ex = LayoutExplorer(get_model("gpt-oss-20b"), row=17, k=45, pre_stage="auto", draw=False)
    data = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    snap = data["text/html"]
    assert "data:image/png;base64," in snap and "fc1 row 8" in snap and "Run All Cells" in snap
    import matplotlib.pyplot as plt

    plt.close("all")
