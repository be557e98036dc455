# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
#   mxfp4lab:
#     min_figures: 2
#     results:
#     - recorded
#     - source
#     - roofline_floor_us
#     - crossovers
#     - dispatch_speedup
#     - claim_check
#     - launch_bounds
#     - findings
#     - parallel_recorded
#     - parallel_source
# ---

# %% [markdown]
# # MoE latency crossover on Hopper
#
# Latency of one MXFP4 MoE layer vs the number of tokens M, per backend and shape (GPT-OSS-20b/120b,
# DeepSeek-V4-Flash and the seed benchmark shape), against the roofline floor (`mxfp4lab.roofline`:
# active experts' weight bytes / copy bandwidth vs FLOPs / bf16 peak, with the ceilings recorded beside the
# sweep). From the sweep: the crossover points (M where one backend overtakes another, interpolated in
# log M), speedup ratios, the fraction of the roofline reached, the fastest backend per (shape, M)
# (`mxfp4lab.dispatch.Dispatch`), and the original claim (SGLang PR #24816: Marlin 12-15% faster at M <= 64,
# a tie near M ~ 256, FlashInfer 24-36% faster at M >= 1024 on the seed shape).
#
# On a CPU this notebook READS a recorded sweep: `data/results/latency/h200.json` (every backend), or where
# that does not exist `latency/h100.json` (written by `mxfp4lab bench moe`, read through `mxfp4lab.results`); every plot
# says which GPU, date and commit its numbers come from. With `measure=True` on a Hopper GPU it runs
# `mxfp4lab.bench.moe.sweep` itself.

# %% tags=["remove-input"]
from mxfp4lab import findings

summary = findings.placeholder()  # filled by the last cell from this run's results

# %% tags=["parameters"]
results_file = None  # recorded sweep JSON; None reads data/results/latency/h200.json
measure = False  # True on a Hopper GPU: measure with mxfp4lab.bench.moe.sweep instead of reading the file
backends = ["flashinfer_sm90", "marlin_mxfp4", "triton_w4a16", "torch_naive"]  # backends to measure (measure only)
shapes = ["gpt-oss-20b", "gpt-oss-120b", "dsv4-flash", "seed-bench"]  # MoE shapes
ms = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]  # tokens M (the roofline also covers every recorded M)
routing = "uniform"  # routing shown in the plots: uniform or skewed
baseline = "marlin_mxfp4"  # speedups are relative to this backend (the original change's baseline)
reps = 30  # timed repetitions per point (measure only)
checkpoint = None  # a GPT-OSS or DeepSeek-V4 checkpoint directory: section 4 routes tokens with its real routers
layers = None  # MoE layers of the checkpoint (a list); None: its first MoE layer
activations = "gaussian"  # checkpoint tokens: gaussian, heavy_tailed, or a .safetensors file of hidden states
tokens = 64  # tokens routed per checkpoint layer
parallel_results_file = None  # multi-GPU run JSON; None reads data/results/parallel_latency/h200.json
results_path = None  # set by mxfp4lab report: where save_results writes results.json

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from mxfp4lab import report
from mxfp4lab.studies import latency as study
from mxfp4lab.studies import latency_costs as costs
from mxfp4lab.studies import latency_figures as figures
from mxfp4lab.studies import checkpoint as ck_study
from mxfp4lab.studies import checkpoint_figures as ck_figures
from mxfp4lab.studies import latency_findings

df, prov, label, recorded = study.latency_results(results_file, measure=measure, backends=backends, shapes=shapes,
                                               ms=ms, routing=routing, reps=reps)
report.record("recorded", recorded)
report.record("source", label)
if recorded:
    print(f"{label}\nfrom {study.display_path(df.attrs.get('path'))}: {int(df.ok.sum())} timed points, "
          f"backends {sorted(df['backend'].dropna().unique())}, shapes {sorted(df['shape'].dropna().unique())}")
    print({k: prov.get(k) for k in ("gpu", "driver", "torch", "flashinfer", "mxfp4lab_commit", "date", "command")})
else:
    print(f"NOTE: no recorded latency results yet (looked for {df.attrs.get('path')}).\n"
          "Showing the roofline floor only. Record them on a Hopper GPU with\n"
          "  mxfp4lab bench moe   (writes data/results/latency/<gpu>.json)")

# %% [markdown]
# ## 1. Latency vs M against the roofline floor
#
# The floor is bandwidth-bound while few experts are active, flattens once every expert is touched
# (all weights read once), and turns compute-bound at large M. `seed-bench` has the `dsv4-flash` shape:
# the figures draw one panel for both.

# %%
roof = study.latency_roofline(shapes, study.latency_ms(df, ms), ceilings=df.attrs.get("ceilings"))
report.record("roofline_floor_us", {s: dict(zip(g.m, g.floor_us.round(1))) for s, g in roof.groupby("shape")})
figures.plot_latency_vs_m(df, roof, label=label, routing=routing)
plt.show()

# %%
figures.plot_latency_roofline_only(roof, label=label)
plt.show()
roof.pivot(index="m", columns="shape", values="floor_us").round(1)

# %% [markdown]
# ## 2. Crossovers, speedups, dispatch
#
# Crossover M for every pair of recorded backends (per shape and routing): where `log(t_a / t_b)`
# changes sign, interpolated linearly in log M.

# %%
crossovers = study.latency_all_crossovers(df)
report.record("crossovers", crossovers.dropna(subset=["crossover_m"])[
    ["shape", "routing", "a", "b", "crossover_m", "faster_below", "faster_above"]].to_dict("records"))
if len(crossovers):
    display(crossovers[crossovers.routing == routing][["shape", "a", "b", "crossover_m", "m_lo", "m_hi", "faster_below",
                                                      "faster_above", "n_crossings"]].round(1))
else:
    print("no crossovers: " + ("fewer than two backends recorded" if recorded else
                               "no recorded latency results yet"))

# %%
if recorded and baseline in set(df.loc[df.ok, "backend"]):
    sp = study.latency_speedups(df, baseline)
    figures.plot_latency_speedup(sp, crossovers=crossovers, label=label, routing=routing)
    plt.show()
    display(study.latency_speedup_table(sp, routing=routing))
elif recorded:
    print(f"baseline {baseline!r} is not among the recorded backends: speedup plot skipped")

# %%
if recorded:
    figures.plot_latency_roofline_fraction(study.latency_roofline_fraction(df), label=label, routing=routing)
    plt.show()
    figures.plot_latency_dispatch(study.latency_dispatch_table(df), label=label, routing=routing)
    plt.show()
    speed = study.latency_dispatch_speedups(df, routing=routing)
    report.record("dispatch_speedup", speed.to_dict("records"))
    display(speed.round(3))
else:
    report.record("dispatch_speedup", None)
    print("dispatch table: not available (no recorded latency results yet)")

# %% [markdown]
# ### mxfp4lab's Triton kernel against its goals
#
# The kernel was written to be, at M <= 64, within 1.25x of the roofline floor and faster than Marlin,
# and at M >= 1024 within 1.2x of FlashInfer. `x_floor`: Triton's time over the floor (the table);
# below it, how many (shape, M) points meet each goal.

# %%
goals = study.latency_triton_goals(df, routing=routing) if recorded else None
report.record("triton_goals", study.latency_triton_goal_counts(goals))
if goals is not None and len(goals):
    report.record("triton_goals_met", int(goals["met"].fillna(False).astype(bool).sum()))
    display(goals.pivot_table(index="m", columns="shape", values="x_floor").round(2))
    display(goals[goals["met"].notna()].groupby("goal")["met"].agg(["sum", "count"]))
else:
    report.record("triton_goals_met", None)
    print("no Triton timings in the recorded sweep")

# %% [markdown]
# ### mxfp4lab's decode kernel against its goals
#
# `decode_w4a16` was written to be, at M <= 64, at least 1.15x faster than the best of the field's kernels
# (Marlin, FlashInfer, triton_kernels, Humming), at M = 1 within 2x of the roofline floor and at M = 4..64
# at 60 % of it or better, and at M >= 1024 within 1.1x of the best peer. `speedup`: the best peer's time
# over the kernel's; `floor_fraction`: the floor over the kernel's time.

# %%
dgoals = study.latency_decode_goals(df, routing=routing) if recorded else None
report.record("decode_goals", study.latency_decode_goal_counts(dgoals))
report.record("harness_floor", costs.latency_harness_floor())  # the harness's own cost, in every time
report.record("part_costs", costs.latency_part_costs())  # the wide items timed with one part removed
if dgoals is not None and len(dgoals):
    display(dgoals[["shape", "m", "decode_us", "best_peer", "peer_us", "speedup", "floor_us", "floor_fraction",
                    "met"]].round(3))  # 3 decimals: a speedup of 1.148 misses the 1.15x goal
else:
    print("no decode_w4a16 timings with a peer in the recorded sweep")

# %% [markdown]
# ### Where mxfp4lab's decode kernel's time goes
#
# One forward of `decode_w4a16`, launch by launch (`mxfp4lab bench launches --ncu`,
# `data/results/launches/<gpu>.json`): the bars are the launches on the GPU timeline of a CUDA-graph replay;
# bars that overlap are programmatic dependent launch (a kernel starts early, routes, and waits for its
# predecessor's output). The labels give Nsight Compute's serialised duration, DRAM bytes and bandwidth of
# the same launch; the table adds what the warps waited on (ncu's warp-stall reasons, warps per issued
# instruction) and how busy the ALU pipe was. Where waiting on the copy ring ("long_scoreboard") and
# barriers lead, a launch is bound by latency (few steps per warp, fill and drain); where "not_selected" and
# "math_pipe_throttle" lead with a busy ALU pipe, by the instructions it issues per weight. `variant` is the
# launch variant the breakdown ran, `sweep_variant` the one the latency sweep ran at that point: where they
# differ, the breakdown is of another kernel than the sweep's time (the findings list those to re-record).
#
# Each launch's floors say the same in microseconds: `dram_floor_us` (its DRAM bytes over the copy bandwidth
# measured beside the sweep), `issue_floor_us` (its warp instructions with every scheduler issuing one per
# cycle, from ncu's instruction counters; runs that recorded them), `alu_floor_us` (the ALU pipe's busy share of its
# duration: the decode's logic and funnel-shift instructions take two of that pipe's cycles each, so it can bound
# before the issue does) and `tensor_floor_us` (the tensor pipe's busy share). `bound` names the largest and
# `floor_frac` is that floor over ncu's duration: near 1 the launch runs at its bound; far below it, latency (fill,
# drain, waits, too few warps in flight) takes the rest.

# %%
from mxfp4lab.studies import launches as launch_study

launches = launch_study.latency_launches()
if len(launches):
    figures.plot_launches(launches, label=study.latency_source_label(launches.attrs.get("provenance"),
                                                                     launches.attrs.get("runs")))
    plt.show()
    cols = ["shape", "m", "variant", "sweep_variant", "launch", "start_us", "end_us", "ncu_us", "dram_read_MB",
            "dram_read_GBps", "issue_active_pct", "alu_pipe_pct", "top_stalls"]
    display(launches[[c for c in cols if c in launches]].round(1))
    floors = ["shape", "m", "launch", "ncu_us", "dram_floor_us", "issue_floor_us", "alu_floor_us", "tensor_floor_us",
              "bound", "floor_frac"]
    display(launches[[c for c in floors if c in launches]].round(2))
    report.record("launch_bounds", launch_study.launch_bounds(launches))
else:
    report.record("launch_bounds", [])
    print("no launch breakdown recorded: mxfp4lab bench launches --ncu on a Hopper GPU")

# %% [markdown]
# The same forwards from the inside (`mxfp4lab bench launches --phases`): every CTA of the kernel's traced
# build stamps the GPU's global timer when it enters, when its routing is built, when its inputs are ready
# (fc2: fc1 has finished), when warp 0's first ring step has landed and its last one is consumed, and when it
# leaves. Medians over the CTAs (and over 20 replays), in microseconds from fc1's first CTA entry:
# `route` (of which `route_ids`: the pair ids read and counted), `ready_wait`, `first_step` (one load's
# latency), `stream` and `epilogue` (of which `slowest_warp`: waiting for the CTA's last warp) are the median
# CTA's phases; `median_exit` and `last_exit` say how long the launch's tail is. A fused launch (fc1 and fc2 in
# one grid) shows both phases. First when each launch starts and how long it takes to route, then where the
# median CTA spends its time and when the launch ends.

# %%
phases = launch_study.latency_phases()
if len(phases):
    key = ["shape", "m", "variant", "launch"]
    display(phases[key + ["first_entry", "last_entry", "route", "route_ids", "ready_wait"]].round(2))
    display(phases[key + ["first_step", "stream", "epilogue", "slowest_warp", "median_exit", "last_exit",
                          "busy"]].round(2))
else:
    print("no phase stamps recorded: mxfp4lab bench launches --phases on a Hopper GPU")

# %% [markdown]
# Where each GEMM launch's tail comes from: the phases of its latest 5 % of CTAs (`late_*`, and when they
# entered) beside the median CTA's, and the median exit of the CTAs on SMs that carried 1, 2, 3 busy CTAs
# (`exit_by_load`). A late `late_first_step` means the last CTAs' first copies were served last; a late
# `late_entry` (fc2) that they started last; exits rising with the SM's load, an uneven split of the items.

# %%
tails = launch_study.latency_tails()
if len(tails):
    display(tails.drop(columns=["backend", "variant", "run"]).set_index(["shape", "m", "launch"]).round(2))
else:
    print("no tail views recorded: mxfp4lab bench launches --phases on a Hopper GPU")

# %% [markdown]
# ## 3. The original claim (seed shape)
#
# `fi_faster` = t_marlin / t_flashinfer - 1 (negative: Marlin faster); a regime holds when every recorded
# M in it lies inside the claimed range.

# %%
claim = study.latency_claim_check(df)
if recorded and len(claim):
    report.record("claim_check", claim[["m", "regime", "fi_faster", "within_claim"]].to_dict("records"))
    print(claim.attrs.get("note"))
    display(study.latency_claim_verdicts(claim))
    display(claim[["m", "regime", "claim", "fi_faster", "within_claim"]].round(3))
else:
    note = claim.attrs.get("note") if recorded else "not measured: no recorded latency results yet"
    report.record("claim_check", note)
    print(f"Claim (SGLang PR #24816): Marlin 12-15% faster at M<=64, tie near M~256, FlashInfer 24-36% faster at "
          f"M>=1024 on the seed shape.\nCheck: {note}")

# %% [markdown]
# ## 4. Routing on your checkpoint (parameters `checkpoint`, `layers`)
#
# The expert load decides how many experts' weights a layer reads, so it moves the floor and the kernels'
# work balance. With a checkpoint, `tokens` tokens are routed by each chosen layer's real router and the load
# is set beside uniform and skewed synthetic routing of as many tokens; `floor_us` is the roofline floor with
# that routing's active experts. With `measure=True` on a GPU each backend is also timed under each routing.

# %%
if checkpoint:
    src = ck_study.open_layer_source(checkpoint)
    ck_layers = src.check_layers(layers)
    print(src.detected.describe())
    report.record("checkpoint", ck_study.checkpoint_record(src, ck_layers))
    routing_summary = {}
    for L in ck_layers:
        x, tid, desc = ck_study.layer_tokens(src, L, tokens, activations)
        ids, w = ck_study.route_tokens(src, L, x, tid)
        load = ck_study.routing_load(src.config, ids)
        ck_figures.plot_routing_load(load, title=f"{src.config.name}, layer {L}: expert load of {tokens} tokens "
                                                 f"({desc})")
        plt.show()
        summ = study.latency_load_floor(load.attrs["summary"], src.config, ceilings=df.attrs.get("ceilings"))
        display(summ.round(2))
        routing_summary[L] = summ.to_dict("records")
        if measure:
            sets = {"real router": (x, ids, w)}
            sets.update({r: ck_study.synthetic_routing(src.config, tokens, r) for r in ("uniform", "skewed")})
            timed = study.latency_routing_timings(src.config, sets, backends, reps=reps)
            display(timed if len(timed) else timed.attrs.get("note"))
    report.record("checkpoint_routing", routing_summary)
else:
    print("No checkpoint given (parameter checkpoint): routing statistics of a real router are skipped.")

# %% [markdown]
# ## 5. Across GPUs: one layer split by TP and EP on one host
#
# How one MoE layer's latency scales when it is split over 1, 2, 4 and 8 GPUs of one host, communication
# included: each rank's experts, then the all-reduce of the partial outputs (bf16), timed as one CUDA graph on
# every rank; the slowest rank counts. TP cuts every expert's intermediate dimension (in whole 32-column scale
# blocks: GPT-OSS's 2880 is 736 x 3 + 672 at TP=4), EP gives each GPU a block of experts; every GPU sees every
# token (EP inside a TP group, not DeepEP's all-to-all). The roofline per point is the slowest GPU's weight bytes
# over one GPU's bandwidth plus the all-reduce's bytes over the all-reduce bandwidth the same run measured.
# Recorded by `torchrun --nproc-per-node gpu -m mxfp4lab bench parallel` (every point checked against the
# kernel-faithful model of the sharded run first) into `data/results/parallel_latency/<gpu>.json`.

# %%
from mxfp4lab.studies import latency_parallel as par_study

pdf, pprov = par_study.parallel_load(parallel_results_file)
scaling = par_study.parallel_scaling(pdf)
plabel = par_study.parallel_source_label(pprov, pdf)
report.record("parallel_recorded", not scaling.empty)
report.record("parallel_source", plabel)
if scaling.empty:
    single = par_study.single_gpu_ceilings()
    print(f"NOTE: {pdf.attrs.get('note')}.\nShowing the per-GPU part of the floor only (weight bytes over "
          f"{(single.get('copy_bytes_per_s') or 3.0e12) / 1e12:.2f} TB/s per GPU; the all-reduce needs a measured "
          "bandwidth). Record it on an 8-GPU host with\n"
          "  torchrun --nproc-per-node gpu -m mxfp4lab bench parallel   (docs/parallel.md)")
    floor = par_study.parallel_floor_only(ceilings=single)
    figures.plot_parallel_scaling(scaling, floor, label="per-GPU weight bytes / bandwidth of the recorded single-GPU "
                                  "sweep; all-reduce not included")
    plt.show()
    report.record("parallel_speedup", None)
else:
    print(f"{plabel}\nfrom {pdf.attrs.get('path')}: {int(pdf.ok.sum())} timed points")
    figures.plot_parallel_scaling(scaling, label=plabel)
    plt.show()
    best = par_study.parallel_best(scaling)
    figures.plot_parallel_allreduce_share(best, label=plabel)
    plt.show()
    report.record("parallel_speedup", best[["shape", "parallel", "world", "m", "backend", "layer_us", "speedup",
                                            "allreduce_share"]].to_dict("records"))
    display(best.pivot_table(index=["shape", "m"], columns=["parallel", "world"], values="layer_us").round(1))

# %%
plt.close("all")
if recorded:
    report.record("fastest", study.latency_fastest(df, routing=routing))
    report.record("best_fraction_of_floor", study.latency_best_fraction(df, routing=routing))
report.record("shape_aliases", study.shape_aliases(shapes))
report.record("findings", findings.publish(summary, latency_findings.findings(report.recorded())))
results = report.save_results(results_path)
print(f"recorded {len(results)} results" + (" -> results.json" if results_path else " (not written: results_path is None)"))
