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
