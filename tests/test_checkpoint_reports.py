"""Reports on a user's checkpoint: model detection (and contradictions), per-layer statistics, the real router,
backends in bounded-memory chunks, one element through the SM90 layout, the notebooks and the CLI -- on small
synthetic checkpoints in the real on-disk layout (shards + index.json, float8_e8m0fnu scales, config.json)."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from mxfp4lab import cli, models, report
from mxfp4lab.checkpoints import CheckpointError
from mxfp4lab.checkpoints.detect import CheckpointMismatch, detect_checkpoint
from mxfp4lab.formats import dequantize_mxfp4
from mxfp4lab.reference import expert_weights_from_dsv4, expert_weights_from_gpt_oss, moe_reference, route
from mxfp4lab.studies import checkpoint as ck
from mxfp4lab.synthetic import write_synthetic

GPT = models.GPT_OSS_20B.scaled(hidden=224, intermediate=192, experts=8, top_k=2)
DS = models.DSV4_FLASH.scaled(hidden=160, intermediate=192, experts=8, top_k=3)


def _write(path, cfg, layers):
    res = write_synthetic(path, cfg, scale_rule="ocp", layers=layers, max_shard_bytes=300_000,
                          scale_dtype=torch.float8_e8m0fnu)
    assert res.index is not None and len(res.files) > 1  # sharded, with an index: the real layout
    return res


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("gpt") / "ck", GPT, (0, 1, 2)).path


@pytest.fixture(scope="module")
def ds_dir(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("ds") / "ck", DS, (0, 3, 4)).path  # layer 0 hash-routed, 3-4 scored


def test_detects_the_model_from_names_shapes_and_config_json(gpt_dir, ds_dir):
    g = detect_checkpoint(gpt_dir)
    assert (g.checkpoint_format, g.layers) == ("gpt_oss", (0, 1, 2))
    c = g.config
    assert (c.hidden_size, c.intermediate_size, c.num_experts, c.top_k) == (224, 192, 8, 2)
    assert c.swiglu_limit == 7.0 and c.routing == "softmax_topk" and c.has_bias
    assert g.sources["hidden_size"] == "tensors" and g.sources["top_k"] == "config.json:num_experts_per_tok"
    d = detect_checkpoint(ds_dir)
    assert (d.checkpoint_format, d.layers, d.hash_layers) == ("dsv4", (0, 3, 4), (0,))
    assert (d.config.num_experts, d.config.top_k, d.config.routed_scaling_factor) == (8, 3, 1.5)


def test_a_contradiction_between_config_json_and_tensors_is_an_error(tmp_path):
    res = _write(tmp_path / "ck", GPT, (0,))
    cfg_path = res.path / "config.json"
    good = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(dict(good, hidden_size=2880)))
    with pytest.raises(CheckpointMismatch, match=r"hidden_size.*hidden_size = 2880.*tensors say 224"):
        detect_checkpoint(res.path)
    cfg_path.write_text(json.dumps(dict(good, model_type="deepseek_v4")))
    with pytest.raises(CheckpointMismatch, match="model_type 'deepseek_v4'.*gpt_oss"):
        detect_checkpoint(res.path)
    cfg_path.write_text(json.dumps(dict(good, num_local_experts=32)))
    with pytest.raises(CheckpointMismatch, match="num_experts.*32.*8"):
        detect_checkpoint(res.path)
    cfg_path.unlink()  # without config.json: the tensors alone, top-k from the registered model
    d = detect_checkpoint(res.path)
    assert d.config.hidden_size == 224 and d.sources["top_k"].startswith("registered model")
    with pytest.raises(CheckpointError, match="no MXFP4 MoE expert tensors"):
        save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
        detect_checkpoint(tmp_path / "other.safetensors")


def test_layer_stats_match_a_direct_count(gpt_dir):
    src = ck.open_layer_source(gpt_dir)
    st = ck.layer_stats(src, 1)
    full = src.read(1)
    b = full.down_packed.reshape(-1)
    codes = torch.cat([b & 0xF, b >> 4]).long()
    down = st["code_hist"][st["code_hist"].proj == "down"].sort_values("code")
    assert down["count"].tolist() == torch.bincount(codes, minlength=16).tolist()
    summ = st["summary"].set_index("proj")
    assert summ.loc["down", "zero_frac"] == pytest.approx(float(((codes == 0) | (codes == 8)).double().mean()))
    assert summ.loc["down", "max_mag_frac"] == pytest.approx(float(((codes == 7) | (codes == 15)).double().mean()))
    sh = st["scale_hist"][st["scale_hist"].proj == "down"]
    assert sh["count"].sum() == full.down_scales.numel()
    n = st["norms"]
    want = dequantize_mxfp4(full.down_packed[5], full.down_scales[5], torch.float32).norm().item()
    assert n[(n.expert == 5) & (n.proj == "down")]["norm"].item() == pytest.approx(want, rel=1e-6)


def test_real_router_gpt_oss_and_dsv4(gpt_dir, ds_dir, tmp_path):
    src = ck.open_layer_source(gpt_dir)
    x, tid, _ = ck.layer_tokens(src, 0, 16)
    r = src.read(0, experts=[0])
    ids, w = ck.route_tokens(src, 0, x, tid)
    want = route(x.float() @ r.router_weight.float().T + r.router_bias.float(), src.config)
    assert torch.equal(ids, want[0]) and torch.equal(w, want[1])
    ds = ck.open_layer_source(ds_dir)
    x, tid, _ = ck.layer_tokens(ds, 3, 32)
    g = ds.read(3, experts=[0])
    ids, w = ck.route_tokens(ds, 3, x)
    scores = torch.sqrt(torch.nn.functional.softplus(x.float() @ g.gate_weight.float().T))
    sel = torch.topk(scores + g.gate_bias, DS.top_k, dim=-1).indices
    assert torch.equal(ids.long(), sel)  # the correction bias steers the selection
    picked = scores.gather(-1, sel)
    assert torch.allclose(w, picked / picked.sum(-1, keepdim=True))  # weights: unbiased scores, normalized
    hashed_x, _, _ = ck.layer_tokens(ds, 0, 8)
    tok = torch.arange(8) * 3
    ids0, _ = ck.route_tokens(ds, 0, hashed_x, tok)
    assert torch.equal(ids0.long(), ds.read(0, experts=[0]).tid2eid[tok].long())
    # captured hidden states from a file
    f = tmp_path / "h.safetensors"
    save_file({"hidden_states": torch.randn(40, DS.hidden_size).bfloat16(), "token_ids": torch.arange(40)}, str(f))
    xf, tidf, desc = ck.layer_tokens(ds, 0, 20, str(f))
    assert xf.shape == (20, DS.hidden_size) and torch.equal(tidf, torch.arange(20)) and "captured" in desc


def test_backends_in_chunks_equal_one_pass_and_read_only_their_experts(ds_dir):
    src = ck.open_layer_source(ds_dir)
    x, tid, _ = ck.layer_tokens(src, 3, 24)
    ids, w = ck.route_tokens(src, 3, x, tid)
    whole, info1 = ck.layer_backends(src, 3, x, ids, w, backends=["emulated_sm90"], max_experts=64)
    src.ckpt.reads.clear()
    chunked, info2 = ck.layer_backends(src, 3, x, ids, w, backends=["emulated_sm90"], max_experts=3)
    assert info1["chunks"] == 1 and info2["chunks"] > 1
    # tokens are independent: chunking moves only the fp32 GEMMs' blocking (rows per expert), i.e. the last bits
    for a, b in zip(whole.itertuples(), chunked.itertuples()):
        assert (a.path, a.reference, a.bit_exact) == (b.path, b.reference, b.bit_exact)
        assert a.rel_err == pytest.approx(b.rel_err, rel=1e-3, abs=1e-6)
    emu = chunked[(chunked.path == "emulated_sm90") & (chunked.reference == "kernel-faithful reference")]
    assert emu.bit_exact.all()
    per_chunk = [n for n in src.ckpt.reads if ".ffn.experts." in n and n.endswith("w1.weight")]
    assert len(per_chunk) <= info2["chunks"] * 3  # each chunk read at most its 3 experts
    # the fp32 reference applies DeepSeek-V4's routed scaling factor, as the model does
    full = src.read(3)
    ref = moe_reference(x, ids, w, expert_weights_from_dsv4(full), mode="fp32", **DS.swiglu_kwargs,
                        routed_scaling_factor=1.5)
    kref = chunked[(chunked.path == "kernel-faithful reference")].rel_err.item()
    unscaled = moe_reference(x, ids, w, expert_weights_from_dsv4(full), mode="fp32", **DS.swiglu_kwargs)
    assert kref < 2e-2 and (ref - 1.5 * unscaled).abs().max() < 1e-5


def test_gpt_oss_bias_layer_backends(gpt_dir):
    src = ck.open_layer_source(gpt_dir)
    x, tid, _ = ck.layer_tokens(src, 2, 16)
    ids, w = ck.route_tokens(src, 2, x, tid)
    frame, info = ck.layer_backends(src, 2, x, ids, w, max_experts=4)
    ref = moe_reference(x, ids, w, expert_weights_from_gpt_oss(src.read(2)), mode="kernel", **GPT.swiglu_kwargs)
    emu = frame[(frame.path == "emulated_sm90") & (frame.reference == "kernel-faithful reference")]
    assert emu.bit_exact.all() and ref.isfinite().all() and not info["skipped"]


def test_element_bits_are_found_in_the_sm90_layout(gpt_dir, ds_dir):
    for d, row in ((gpt_dir, 17), (ds_dir, DS.intermediate_size + 5)):  # DeepSeek row I+5 = w3 (up) row 5
        src = ck.open_layer_source(d)
        layer = src.detected.layers[-1]
        e = ck.checkpoint_element(src, layer, 3, row, 45)
        assert e["bits_match"] and e["found_bits"] == e["code_bits"]
        assert ("w3" in e["tensor"]) == (d == ds_dir)
    with pytest.raises(ValueError, match="outside"):
        ck.checkpoint_element(ck.open_layer_source(gpt_dir), 0, 0, 10_000, 0)


def test_routing_load_beside_uniform_and_skewed(ds_dir):
    src = ck.open_layer_source(ds_dir)
    x, tid, _ = ck.layer_tokens(src, 4, 32)
    ids, _ = ck.route_tokens(src, 4, x, tid)
    load = ck.routing_load(src.config, ids)
    s = load.attrs["summary"].set_index("routing")
    assert list(s.index) == ["real router", "uniform", "skewed"]
    assert s.loc["real router", "active_experts"] == torch.unique(ids).numel()
    assert load.groupby("routing")["tokens"].sum().tolist() == [32 * DS.top_k] * 3


def test_report_accuracy_on_a_checkpoint_in_the_real_layout(gpt_dir, tmp_path):
    path = report.run_report("accuracy", {"checkpoint": str(gpt_dir), "layers": [0, 2], "tokens": 24},
                             out_dir=tmp_path, progress=False)
    res = json.loads((path / "results.json").read_text())
    assert res["checkpoint"]["layers"] == [0, 2] and "accuracy_table" not in res  # synthetic part skipped
    qs = {f["question"]: f for f in res["findings"]}
    assert qs["checkpoint"]["verdict"].startswith("gpt_oss-h224")
    assert qs["layer 0: MXFP4 weights"]["verdict"].startswith("scale exponents")
    assert qs["layer 2: emulated_sm90 vs the kernel-faithful reference (real experts)"]["verdict"] == "bit-exact"
    assert "layer 2: backends vs the fp32 reference (real router)" in qs
    assert "data:image/png;base64," in next(path.glob("*.html")).read_text()


def test_cli_checkpoint_and_report_parameters(ds_dir, tmp_path, capsys):
    assert cli.main(["checkpoint", str(ds_dir), "--layers", "0,4", "--tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert "dsv4-h160-i192-e8-k3" in out and "layer 4: weight statistics" in out and "peak RSS" in out
    assert cli.main(["checkpoint", str(ds_dir), "--layers", "7"]) == 2
    assert "not MoE layers" in capsys.readouterr().err
    rc = cli.main(["report", "layout", "--out", str(tmp_path), "--no-progress", "-p", "checkpoint", str(ds_dir),
                   "-p", "layers", "[3]", "-p", "row", str(DS.intermediate_size + 2)])
    assert rc == 0
    res = json.loads(next(tmp_path.glob("*-layout/results.json")).read_text())
    assert res["checkpoint_trace"]["bits_match"] and "w3" in res["checkpoint_trace"]["tensor"]


@pytest.mark.slow
def test_real_size_gpt_oss_20b_layer(tmp_path, request, capsys):
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("MXFP4LAB_RUN_SLOW"):
        pytest.skip("a real-size layer takes minutes; run with -m slow or MXFP4LAB_RUN_SLOW=1")
    res = write_synthetic(tmp_path / "g20", models.GPT_OSS_20B, scale_rule="ocp", layers=(3,), return_origin=False,
                          max_shard_bytes=1 << 29)
    d = detect_checkpoint(res.path)
    assert d.config.name == "gpt-oss-20b" and d.layers == (3,)
    assert cli.main(["checkpoint", str(res.path), "--tokens", "16"]) == 0
    out = capsys.readouterr().out
    assert "True" in out and "peak RSS" in out  # emulated_sm90 bit-exact on the real-size layer
