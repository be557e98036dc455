# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
#   mxfp4lab:
#     min_figures: 6
#     results:
#     - accuracy_table
#     - sqnr_db_table
#     - clipped_frac
#     - max_err_over_scale
#     - k_sweep_gemm_rel_err
#     - layer_rel_err
#     - emulated_vs_kernel_ref_max
#     - flashinfer
#     - depth_rel_err_final
#     - depth_summary
#     - findings
# ---

# %% [markdown]
# # MXFP4 accuracy drift
#
# How far do MXFP4 weights (FP4 E2M1 values, one E8M0 scale per 32 along K) move a MoE layer away
# from its bf16 origin, and how much of that depends on choices that differ between libraries?
#
# * **Scale rule** (`mxfp4lab.formats.ScaleRule`): `ocp` (OCP MX v1.0 / torchao: `floor(log2 amax) - 2`,
#   may saturate the block maximum to 6), `round_up` (triton_kernels: never saturates), `flashinfer`
#   (FlashInfer's torch quantizer: `ceil(log2(amax / 6))`, ties rounded down).
# * **Weight distribution** of the synthetic origin (`mxfp4lab.synthetic.make_origin_weights`):
#   gaussian, heavy-tailed (Student-t, df 3), outlier input channels (x10).
# * **Shapes**: the real GPT-OSS and DeepSeek-V4 matrices for the weight-level part (one expert,
#   a row sample: quantization is per row), a sweep of K, and scaled-down layers for the layer and
#   depth parts (`MoEConfig.scaled`).
# * **SwiGLU clamp** on (model limit) and off (`limit = None`).
# * **Depth**: the output of layer l plus the residual feeds layer l+1; MXFP4 path vs the bf16-origin path.
#
# Truth is always the bf16 origin through the fp32 reference (`mxfp4lab.reference.moe_reference`).
# On a CPU the MXFP4 paths are the references and the CPU emulation of the prepared SM90 tensors
# (`emulated_sm90`, kernel and fp32 modes); on a Hopper GPU (H100, H200) with FlashInfer the kernel's output is added.
# All numbers come from `mxfp4lab.studies.accuracy`, figures from `mxfp4lab.studies.accuracy_figures`.

# %% tags=["remove-input"]
from mxfp4lab import findings

summary = findings.placeholder()  # filled by the last cell from this run's results

# %% tags=["parameters"]
models = ["gpt-oss-20b", "dsv4-flash"]  # real shapes for the weight-level part and the bases of the scaled layers
rules = ["ocp", "round_up", "flashinfer"]  # E8M0 scale rules
dists = ["gaussian", "heavy_tailed", "outlier_channels"]  # origin weight distributions
seed = 0  # origin weights and tokens
max_rows = 256  # rows kept per real-size matrix; None keeps all (slower)
k_sweep = [128, 512, 2048, 8192]  # reduction lengths K for the K sweep
k_dists = ["gaussian", "outlier_channels"]  # distributions in the K sweep
hidden = 256  # scaled-down layer for the layer and depth parts: hidden size H
intermediate = 256  # scaled-down intermediate size I
experts = 8  # scaled-down expert count E (top-k kept, capped at E)
m = 32  # tokens per layer (layer part)
preact_std = 3.0  # std of the fc1 pre-activations; sets how often the SwiGLU clamp bites
depth_layers = 8  # layers in the stack
depth_m = 128  # tokens through the stack (routing agreement moves in steps of 1 / depth_m)
depth_seeds = [0, 1, 2]  # one stack per seed: the figure shows the mean and the min..max band
depth_rules = ["ocp", "flashinfer"]  # scale rules followed through the stack
depth_dist = "gaussian"  # origin distribution of the stack
depth_branch_scale = 0.25  # MoE output RMS relative to the residual stream; None lets the MoE branch dominate
checkpoint = None  # a GPT-OSS or DeepSeek-V4 checkpoint directory: section 0 studies its layers
layers = None  # MoE layers of the checkpoint (a list); None: its first MoE layer
activations = "gaussian"  # checkpoint tokens: gaussian, heavy_tailed, or a .safetensors file of hidden states
tokens = 64  # tokens routed through each checkpoint layer
max_experts = 16  # experts held dequantized at once (bounds memory on real-size layers)
synthetic = None  # also run the synthetic sections 1-5; None: only when no checkpoint is given
results_path = None  # set by mxfp4lab report: where save_results writes results.json

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd

from mxfp4lab import report
from mxfp4lab.models import get_model
from mxfp4lab.studies import accuracy as study
from mxfp4lab.studies import accuracy_figures as figures
from mxfp4lab.studies import accuracy_findings
from mxfp4lab.studies import checkpoint as ck_study
from mxfp4lab.studies import checkpoint_figures as ck_figures

t_start = time.perf_counter()
small = [get_model(name).scaled(hidden=hidden, intermediate=intermediate, experts=experts) for name in models]
fi_ok, fi_why = study.flashinfer_status()
report.record("flashinfer", {"available": fi_ok, "reason": fi_why or None})
if fi_ok:
    print("FlashInfer SM90 is available: the kernel output is compared with the references below.")
else:
    print(f"FlashInfer SM90 kernel NOT run here ({fi_why}).\n"
          "This is a CPU run: kernel-vs-reference comparisons are skipped; the MXFP4 paths shown are the "
          "fp32 and kernel-faithful references and the CPU emulation (emulated_sm90) of the prepared tensors.")
for c in small:
    print(f"scaled layer: {c.name} (top-{c.top_k}, swiglu limit {c.swiglu_limit})")

# %% [markdown]
# ## 0. Your checkpoint (parameters `checkpoint`, `layers`)
#
# With a checkpoint directory (GPT-OSS `model.layers.N.mlp.experts.*` or DeepSeek-V4 `layers.L.ffn.experts.*`,
# one file or shards with an index), the model is detected from the tensor names and `config.json` (a
# contradiction stops the run), and each chosen layer is read lazily, one expert at a time: its E8M0 scale and
# FP4 code histograms, zero and +-6 fractions, per-expert norms; then every backend available here runs the
# layer's real experts on `tokens` tokens routed by the layer's own router (DeepSeek-V4: noaux correction bias
# in the selection, routed scaling factor after the experts, hash layers through `tid2eid`) and is compared
# with the fp32 reference. There is no bf16 origin for real weights: the comparison measures the kernels'
# rounding, not the quantization.

# %%
src = ck_study.open_layer_source(checkpoint) if checkpoint else None
run_synthetic = (src is None) if synthetic is None else bool(synthetic)
if src is None:
    print("No checkpoint given (parameter checkpoint): this run studies synthetic weights (sections 1-5).")
else:
    ck_layers = src.check_layers(layers)
    print(src.detected.describe())
    print(f"layers studied: {ck_layers}; synthetic sections: {'yes' if run_synthetic else 'skipped'}")
    report.record("checkpoint", ck_study.checkpoint_record(src, ck_layers))

# %%
if src is not None:
    ck_stats, ck_backends = {}, {}
    for L in ck_layers:
        st = ck_study.layer_stats(src, L)
        ck_stats[L] = ck_study.stats_record(st)
        ck_figures.plot_layer_stats(st, title=f"{src.config.name}, layer {L}: MXFP4 weight statistics")
        plt.show()
        display(st["summary"].round(4))
        x, tid, desc = ck_study.layer_tokens(src, L, tokens, activations, seed)
        ids, w = ck_study.route_tokens(src, L, x, tid, seed)
        frame, info = ck_study.layer_backends(src, L, x, ids, w, max_experts=max_experts)
        ck_backends[L] = frame.to_dict("records")
        print(f"layer {L}: {desc}; {info['experts_routed']} experts routed, {info['chunks']} chunk(s); backends "
              f"{info['backends']}" + (f"; failed: {info['skipped']}" if info["skipped"] else ""))
        display(frame)
    report.record("checkpoint_stats", ck_stats)
    report.record("checkpoint_backends", ck_backends)
    report.record("checkpoint_backend_info", dict(info, activations=desc))

# %% [markdown]
# ## 1. Weight-level error at the real shapes
#
# One expert's `w_gate`, `w_up` `[I, H]` and `w_down` `[H, I]` at the real GPT-OSS (2880 x 2880) and
# DeepSeek-V4-Flash (2048 x 4096, 4096 x 2048) dimensions, quantized under each rule and compared
# with the bf16 origin.

# %%
if run_synthetic:
    quant = study.accuracy_quantization(models, rules, dists, seed, max_rows=max_rows)
    table = study.accuracy_table(quant)
    report.record("accuracy_table", table.to_dict())
    report.record("sqnr_db_table", study.accuracy_table(quant, "sqnr_db").to_dict())
    report.record("clipped_frac", quant.groupby("rule").clipped_frac.mean().to_dict())
    report.record("max_err_over_scale", quant.groupby("rule").max_err_over_scale.max().to_dict())
    print("relative error ||W_q - W|| / ||W|| (mean over models and matrices):")
    print(table.round(5).to_string())
    figures.plot_accuracy_heatmap(quant)
    plt.show()

# %%
if run_synthetic:
    display(quant.pivot_table(index=["model", "matrix", "rule"], columns="dist", values="rel_err").round(5))

# %% [markdown]
# ## 2. Where the error comes from: per-block worst error in units of the block scale
#
# `round_up` and `flashinfer` choose a scale so the block maximum fits under 6: the worst error is
# half the widest E2M1 gap (4 to 6), i.e. 1 scale unit. `ocp` picks a scale one binade smaller about
# half the time, which halves the rounding error of everything else in the block but saturates the
# elements that land in [6, 8): up to 2 scale units. `round_up` and `flashinfer` always agree on the
# scale here and differ only in how exact ties round (away from zero vs down): about 1% of the values.

# %%
if run_synthetic:
    blocks = study.accuracy_block_errors(models[0], rules, dists, seed, max_rows=max_rows)
    figures.plot_accuracy_block_errors(blocks)
    plt.show()
    display(
        (blocks.assign(saturated=blocks.amax_over_scale > 6)
         .groupby(["rule", "dist"]).agg(blocks=("saturated", "size"), saturated_blocks=("saturated", "mean"),
                                         worst=("max_err_over_scale", "max")).round(4))
    )

# %%
if run_synthetic:
    agree = study.accuracy_rule_agreement(models[0], rules, dists, seed, max_rows=max_rows)
    report.record("rule_agreement", {f"{r.rule_a}/{r.rule_b}/{r.dist}": {"scale_diff": r.scale_diff_frac,
                                                                         "value_diff": r.value_diff_frac}
                                     for r in agree.itertuples()})
    display(agree.round(4))

# %% [markdown]
# ## 3. Error vs K
#
# Blocks are independent, so the weight error does not depend on K; the GEMM error relative to its
# output does not grow with K either (errors and signal both add up like random walks). The outlier
# case is worse at small K only because it boosts at least one channel, a larger share of a short K.

# %%
if run_synthetic:
    ks = study.accuracy_k_sweep(k_sweep, rules, k_dists, seed=seed)
    report.record("k_sweep_gemm_rel_err", {f"{r}/{d}": dict(zip(g.K, g.gemm_rel_err))
                                           for (r, d), g in ks.groupby(["rule", "dist"])})
    figures.plot_accuracy_k_sweep(ks)
    plt.show()

# %% [markdown]
# ## 4. One MoE layer: MXFP4 paths vs the bf16 origin, clamp on and off
#
# Tokens are scaled so the fc1 pre-activations have std `preact_std`; `clamped_frac` is the share of
# routed gate/up values beyond the SwiGLU limit. The emulated SM90 backend (inverse layouts + kernel
# reference) must equal the kernel-faithful reference exactly: that proves the preparation.

# %%
if run_synthetic:
    backends = ["emulated_sm90", study.EMULATED_FP32] + (["flashinfer_sm90"] if fi_ok else [])
    layer_frames = {}
    for c in small:
        layer_frames[c.name] = study.accuracy_layer(c, rules, dists, clamp=(True, False), m=m, backends=backends, seed=seed,
                                           preact_std=preact_std)
    layer_all = pd.concat(layer_frames.values(), ignore_index=True)
    main = layer_all[(layer_all.path == "mxfp4 kernel") & (layer_all.reference == "origin fp32") & layer_all.clamp]
    report.record("layer_rel_err", main.pivot_table(index="rule", columns="dist", values="rel_err").to_dict())
    emu = layer_all[(layer_all.path == "emulated_sm90") & (layer_all.reference == "mxfp4 kernel")]
    report.record("emulated_vs_kernel_ref_max", float(emu.rel_err.max()))
    fi_rows = layer_all[(layer_all.path == "flashinfer_sm90") & (layer_all.reference == "mxfp4 kernel")]
    report.record("flashinfer_vs_kernel_ref_max", float(fi_rows.rel_err.max()) if len(fi_rows) else None)
    print(f"emulated_sm90 vs kernel-faithful reference: max rel err {emu.rel_err.max():.3g} (0 = bit-exact)")
    print("flashinfer_sm90 vs kernel-faithful reference: " + (f"max rel err {fi_rows.rel_err.max():.3g}" if len(fi_rows)
          else "not measured (no Hopper GPU with FlashInfer here)"))
    clamped = layer_all.groupby(["model", "dist"]).clamped_frac.first()
    report.record("clamped_frac_routed", {f"{mo}/{d}": v for (mo, d), v in clamped.items()})
    print("clamped fraction of routed fc1 values:", clamped.round(4).to_dict())

# %%
if run_synthetic:
    figures.plot_accuracy_layer(layer_frames[small[0].name])
    plt.show()

# %%
if run_synthetic:
    figures.plot_accuracy_layer(layer_frames[small[-1].name])
    plt.show()

# %%
if run_synthetic:
    display(
        (layer_all.pivot_table(index=["model", "path", "reference"], columns=["rule", "clamp"], values="rel_err",
                               aggfunc="max").map(lambda v: "-" if pd.isna(v) else f"{v:.2e}"))
    )

# %% [markdown]
# ## 5. Through a stack of layers
#
# Each layer has its own origin weights and router; every path carries its own hidden state (bf16
# between layers, as a model would) and routes on it, so routing decisions can flip. `origin kernel`
# isolates the bf16 activation roundings; `mxfp4 <rule>` adds the quantized weights. There is no
# attention; each layer's MoE output is scaled (the same factor on every path) to `depth_branch_scale`
# times the residual stream's RMS on the truth path. Synthetic random weights have no redundancy a
# trained model would have, so read the growth rate rather than the absolute level.

# %%
if run_synthetic:
    depth = pd.concat([study.accuracy_depth(c, depth_layers, depth_rules, depth_dist, depth_m, sd, preact_std=preact_std,
                                            branch_scale=depth_branch_scale,
                                            backends=["flashinfer_sm90"] if fi_ok else []).assign(seed=sd)
                       for c in small for sd in depth_seeds], ignore_index=True)
    last = depth[depth.layer == depth.layer.max()]
    report.record("depth_layers", depth_layers)
    report.record("depth_summary", study.depth_summary(depth))
    report.record("depth_rel_err_final", {f"{mo}/{p}": v for (mo, p), v in last.groupby(["model", "path"]).rel_err_hidden.mean().items()})
    report.record("depth_routing_agreement_final",
                  {f"{mo}/{p}": v for (mo, p), v in last.groupby(["model", "path"]).routing_agreement.mean().items()})
    figures.plot_accuracy_depth(depth)
    plt.show()
    display(last.pivot_table(index="path", columns="model", values=["rel_err_hidden", "routing_agreement"], aggfunc="mean").round(4))

# %%
plt.close("all")
report.record("runtime_s", round(time.perf_counter() - t_start, 1))
report.record("findings", findings.publish(summary, accuracy_findings.findings(report.recorded())))
results = report.save_results(results_path)
print(f"recorded {len(results)} results" + (" -> results.json" if results_path else " (not written: results_path is None)"))
