"""The accuracy study (mxfp4lab.studies.accuracy): columns, bounds that hold by construction, and verified
orderings."""

import math

import pytest
import torch

from mxfp4lab.formats import MX_BLOCK_SIZE, decode_e8m0, dequantize_mxfp4, quantize_mxfp4
from mxfp4lab.models import DSV4_FLASH, GPT_OSS_20B
from mxfp4lab.studies import accuracy as ex

GPT_SMALL = GPT_OSS_20B.scaled(hidden=160, intermediate=128, experts=4, top_k=2)
DSV4_SMALL = DSV4_FLASH.scaled(hidden=128, intermediate=96, experts=6, top_k=3)


@pytest.fixture(scope="module")
def quant():
    return ex.accuracy_quantization([GPT_SMALL, DSV4_SMALL], seed=0)


def test_quantization_columns_and_sanity(quant):
    cols = {"model", "dist", "matrix", "rows", "K", "rule", "rel_err", "sqnr_db", "mean_abs_err", "max_abs_err",
            "max_err_over_scale", "clipped_frac", "mean_scale_exp"}
    assert cols <= set(quant.columns)
    assert len(quant) == 2 * 3 * 3 * 3  # models x dists x matrices x rules
    assert ((quant.rel_err > 0.05) & (quant.rel_err < 0.3)).all()  # 4-bit: ~0.1-0.15 relative error
    assert quant.sqnr_db.between(10, 26).all()
    w = quant[(quant.model == GPT_SMALL.name) & (quant.matrix == "w_down")]
    assert set(w.rows) == {160} and set(w.K) == {128}


def test_max_rows_keeps_real_k():
    q = ex.accuracy_quantization(["gpt-oss-20b"], ["flashinfer"], ["gaussian"], matrices=["w_down"], max_rows=32)
    assert (q.rows == 32).all() and (q.K == 2880).all()


def test_never_clipping_rules_stay_within_half_the_top_gap(quant):
    # round_up / flashinfer choose scale >= amax / 6: every scaled element <= 6, so the worst error is
    # half the widest E2M1 gap (4 -> 6) times the scale; OCP may clip [6, 8) to 6 (< 2 scale units).
    for rule in ("round_up", "flashinfer"):
        q = quant[quant.rule == rule]
        assert (q.max_err_over_scale <= ex.E2M1_HALF_TOP_GAP).all() and (q.clipped_frac == 0).all()
    ocp = quant[quant.rule == "ocp"]
    assert (ocp.max_err_over_scale < ex.OCP_CLIP_BOUND).all()
    assert (ocp.clipped_frac > 0).all()


@pytest.mark.parametrize("dist", ["gaussian", "heavy_tailed", "outlier_channels"])
def test_block_bound_directly(dist):
    blocks = ex.accuracy_block_errors(GPT_SMALL, dists=[dist], max_rows=64)
    for rule, g in blocks.groupby("rule"):
        if rule == "ocp":
            assert g.max_err_over_scale.max() < 2.0
            assert (g.amax_over_scale > 6).any()  # some block maxima saturate
        else:
            assert g.max_err_over_scale.max() <= 1.0 and g.amax_over_scale.max() <= 6.0
    # the same bound, independently of the experiment code
    w = torch.randn(64, 256) * 0.02
    for rule in ("round_up", "flashinfer"):
        p, s = quantize_mxfp4(w, scale_rule=rule)
        err = (dequantize_mxfp4(p, s) - w).abs().reshape(64, -1, MX_BLOCK_SIZE).amax(-1)
        assert (err <= decode_e8m0(s) * 1.0).all()


@pytest.mark.parametrize("seed", range(4))
def test_ocp_has_lower_mean_error_than_round_up_on_gaussian(seed):
    # Verified first: OCP's smaller scale halves the rounding step for ~40% of blocks and that outweighs
    # its clipped block maxima (gaussian: mean |err| ~0.00167 vs ~0.00186 at std 0.02, ~10% apart).
    q = ex.accuracy_quantization([GPT_SMALL], ["ocp", "round_up"], ["gaussian"], seed=seed)
    m = q.groupby("rule").mean_abs_err.mean()
    r = q.groupby("rule").rel_err.mean()
    assert m["ocp"] < m["round_up"] and r["ocp"] < r["round_up"]


def test_accuracy_table_shape(quant):
    t = ex.accuracy_table(quant)
    assert list(t.index) == sorted(ex.ACCURACY_RULES) and set(t.columns) == set(ex.ACCURACY_DISTS)


def test_rule_agreement():
    a = ex.accuracy_rule_agreement(GPT_SMALL, max_rows=64)
    assert set(a.columns) == {"dist", "rule_a", "rule_b", "scale_diff_frac", "value_diff_frac"}
    ru_fi = a[(a.rule_a == "round_up") & (a.rule_b == "flashinfer")]
    assert (ru_fi.scale_diff_frac < 0.01).all() and (ru_fi.value_diff_frac < 0.05).all()  # ties only
    ocp_ru = a[(a.rule_a == "ocp") & (a.rule_b == "round_up")]
    assert (ocp_ru.scale_diff_frac > 0.2).all()


def test_k_sweep():
    k = ex.accuracy_k_sweep([64, 256], ["ocp", "flashinfer"], ["gaussian"], rows=32, m=4)
    assert set(k.columns) == {"dist", "rule", "K", "rel_err", "gemm_rel_err", "max_err_over_scale"}
    assert len(k) == 4 and k.gemm_rel_err.between(0.02, 0.4).all()


@pytest.fixture(scope="module", params=[GPT_SMALL, DSV4_SMALL], ids=["gpt_oss", "dsv4"])
def layer(request):
    return ex.accuracy_layer(request.param, dists=["gaussian", "outlier_channels"], m=16)


def test_layer_columns_and_paths(layer):
    assert {"model", "dist", "clamp", "limit", "rule", "path", "reference", "rel_err", "clamped_frac"} <= set(layer.columns)
    assert set(layer.path) == {"origin kernel", "mxfp4 fp32", "mxfp4 kernel", "emulated_sm90", "emulated_sm90 mode=fp32"}
    assert set(layer.clamp) == {True, False}
    assert layer[~layer.clamp].limit.isna().all() and layer[layer.clamp].limit.notna().all()
    assert layer.rel_err.map(math.isfinite).all()


def test_layer_emulation_is_exact_and_references_ordered(layer):
    sel = lambda p, r: layer[(layer.path == p) & (layer.reference == r)].rel_err  # noqa: E731
    assert (sel("emulated_sm90", "mxfp4 kernel") == 0).all()  # the prepared tensors hold exactly the weights
    assert sel("emulated_sm90 mode=fp32", "mxfp4 kernel").max() < 0.02  # bf16 roundings only
    assert sel("mxfp4 kernel", "mxfp4 fp32").max() < 0.02
    assert sel("origin kernel", "origin fp32").max() < 0.02
    quant_err = sel("mxfp4 fp32", "origin fp32")
    assert quant_err.between(0.05, 0.6).all()
    # the quantization error dwarfs the kernel's bf16 roundings
    assert quant_err.min() > 5 * sel("mxfp4 kernel", "mxfp4 fp32").max()


def test_depth_grows_and_bf16_path_stays_close():
    d = ex.accuracy_depth(GPT_SMALL, layers=4, rules=["flashinfer"], m=16, branch_scale=0.25)
    assert {"model", "dist", "rule", "path", "layer", "rel_err_hidden", "rel_err_out", "routing_agreement"} <= set(d.columns)
    assert set(d.path) == {"origin fp32", "origin kernel", "mxfp4 flashinfer"}
    truth = d[d.path == "origin fp32"]
    assert (truth.rel_err_hidden == 0).all() and (truth.routing_agreement == 1).all()
    mx = d[d.path == "mxfp4 flashinfer"].sort_values("layer")
    assert mx.rel_err_hidden.iloc[-1] > mx.rel_err_hidden.iloc[0] > 0
    bf = d[d.path == "origin kernel"]
    assert (bf.rel_err_hidden < mx.rel_err_hidden.to_numpy()).all()


def test_flashinfer_status_on_cpu():
    ok, why = ex.flashinfer_status()
    if not torch.cuda.is_available():
        assert not ok and why
