"""The layout study (mxfp4lab.studies.layout): tracing agrees with the real transforms; one pre-stage key."""

import pytest

from mxfp4lab.models import get_model
from mxfp4lab.prepare import trace_fc1_row
from mxfp4lab.studies import layout as study


def test_tracing_agrees_with_the_real_interleave_and_fold():
    chk = study.layout_tile_check(seed=3)
    assert chk["bits_checked"] == 4 * chk["elements"] > 0 and chk["bit_mismatches"] == 0
    assert chk["scales_checked"] > 0 and chk["scale_mismatches"] == 0


def test_pre_stage_contract_is_one_key():
    cfg = get_model("gpt-oss-20b")
    assert study.resolve_pre_stage("auto") is trace_fc1_row
    st = study.normalize_stage(trace_fc1_row(7, cfg))
    assert st["w13_row"] == 3 and "up_3 -> fc1 row 3" in st["note"]
    assert study.normalize_stage(5) == {"w13_row": 5}
    with pytest.raises(ValueError, match="no 'w13_row'"):
        study.normalize_stage({"fc1_row": 5})  # the old alias is not accepted
    tr = study.layout_trace(7, 45, config=cfg, pre_stage="auto")
    assert tr["row"] == 3 and tr["ckpt_row"] == 7
    assert [s[0] for s in tr["stages"]][:3] == ["checkpoint", "[up ; gate] + pad", "logical fc1"]


def test_decode_tile_map_gives_each_lane_its_rows_and_k_quarter():
    from mxfp4lab.studies.layout import layout_decode_tile_map

    t = layout_decode_tile_map()
    assert len(t) == 16 * 64 and (t.groupby("lane").size() == 32).all()
    for lane, grp in t.groupby("lane"):
        g, q = divmod(lane, 4)
        assert set(grp["row"]) == {g, g + 8} and set(grp["k"]) == set(range(16 * q, 16 * q + 16))
    # each MMA step (word) takes K pairs 4s..4s+3 of every lane's 16: a0/a1 the first pair, a2/a3 the second
    assert set(t[(t.k % 16) // 4 == 2]["word"]) == {2}
    assert set(t[t.row >= 8]["register"]) == {"a1", "a3"}


def test_compare_decode_lists_the_same_code_bits_in_both_layouts():
    from mxfp4lab.layout.decode_w4a16 import element_location
    from mxfp4lab.studies.layout import layout_compare_decode

    df = layout_compare_decode(17, 45)
    assert list(df["layout"].value_counts().sort_index()) == [4, 4]
    dec = df[df.layout == "decode_w4a16"].set_index("code_bit")
    loc = element_location(17, 45)
    assert 8 * dec.loc["s", "byte"] + dec.loc["s", "bit"] == 4 * 8 * loc["word"] + loc["sign_bit"]
