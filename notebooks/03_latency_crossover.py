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
# ---

# %% [markdown]
# # MoE latency crossover on H100
#
# Latency of one MXFP4 MoE layer vs the number of tokens M, per backend and shape (GPT-OSS-20b/120b,
# DeepSeek-V4-Flash and the seed benchmark shape), against the H100 roofline floor
# (`mxfp4lab.roofline`: active experts' weight bytes / 3.0 TB/s vs FLOPs / 800 TFLOP/s).
# From the sweep: the crossover points (M where one backend overtakes another, interpolated in
# log M), speedup ratios, the fraction of the roofline reached, the fastest backend per (shape, M)
# (`mxfp4lab.dispatch.Dispatch`), and the original claim (SGLang PR #24816: Marlin 12-15% faster at M <= 64,
# a tie near M ~ 256, FlashInfer 24-36% faster at M >= 1024 on the seed shape).
#
# On a CPU this notebook READS a recorded sweep: `data/results/latency/h100.json`, or where that does not
# exist yet `latency/h200.json` (written by `mxfp4lab bench moe`, read through `mxfp4lab.results`);
# every plot says which GPU, date and commit its numbers come from. With `measure=True` on a Hopper GPU it runs
# `mxfp4lab.bench.moe.sweep` itself.

# %% tags=["parameters"]
results_file = None  # recorded sweep JSON; None reads data/results/latency/h100.json
measure = False  # True on an H100/H200: measure with mxfp4lab.bench.moe.sweep instead of reading the file
backends = ["flashinfer_sm90", "marlin_mxfp4", "triton_w4a16", "torch_naive"]  # backends to measure (measure only)
shapes = ["gpt-oss-20b", "gpt-oss-120b", "dsv4-flash", "seed-bench"]  # MoE shapes
ms = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]  # tokens M
routing = "uniform"  # routing shown in the plots: uniform or skewed
baseline = "marlin_mxfp4"  # speedups are relative to this backend (the original change's baseline)
reps = 30  # timed repetitions per point (measure only)
results_path = None  # set by mxfp4lab report: where save_results writes results.json

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from mxfp4lab import report
from mxfp4lab.studies import latency as study
from mxfp4lab.studies import latency_figures as figures

df, prov, label, recorded = study.latency_results(results_file, measure=measure, backends=backends, shapes=shapes,
                                               ms=ms, routing=routing, reps=reps)
report.record("recorded", recorded)
report.record("source", label)
if recorded:
    print(f"{label}\nfrom {df.attrs.get('path')}: {int(df.ok.sum())} timed points, "
          f"backends {sorted(df['backend'].dropna().unique())}, shapes {sorted(df['shape'].dropna().unique())}")
    print({k: prov.get(k) for k in ("gpu", "driver", "torch", "flashinfer", "mxfp4lab_commit", "date", "command")})
else:
    print(f"NOTE: no recorded H100 latency results yet (looked for {df.attrs.get('path')}).\n"
          "Showing the roofline floor only. Record them on an H100 with\n"
          "  mxfp4lab bench moe   (writes data/results/latency/<gpu>.json)")

# %% [markdown]
# ## 1. Latency vs M against the roofline floor
#
# The floor is bandwidth-bound while few experts are active, flattens once every expert is touched
# (all weights read once), and turns compute-bound at large M. (`seed-bench` has the `dsv4-flash`
# shape, so their floors coincide.)

# %%
roof = study.latency_roofline(shapes, ms, ceilings=df.attrs.get("ceilings"))
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
                               "no recorded H100 latency results yet"))

# %%
if recorded and baseline in set(df.loc[df.ok, "backend"]):
    sp = study.latency_speedups(df, baseline)
    figures.plot_latency_speedup(sp, crossovers=crossovers, label=label, routing=routing)
    plt.show()
    display(sp[sp.routing == routing].pivot_table(index="m", columns=["shape", "backend"], values="speedup").round(2))
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
    print("dispatch table: not available (no recorded H100 latency results yet)")

# %% [markdown]
# ### mxfp4lab's Triton kernel against its goals
#
# Its goals: at M <= 64 within 1.25x of the roofline floor and faster than Marlin; at M >= 1024 within
# 1.2x of FlashInfer. `x_floor`, `x_marlin`, `x_flashinfer`: Triton's time over each.

# %%
goals = study.latency_triton_goals(df, routing=routing) if recorded else None
if goals is not None and len(goals):
    report.record("triton_goals_met", int(goals["met"].fillna(False).astype(bool).sum()))
    display(goals.pivot_table(index="m", columns="shape", values="x_floor").round(2))
    display(goals[goals["met"].notna()].groupby("goal")["met"].agg(["sum", "count"]))
else:
    report.record("triton_goals_met", None)
    print("no Triton timings in the recorded sweep")

# %% [markdown]
# ## 3. The original claim (seed shape, H100)

# %%
claim = study.latency_claim_check(df)
if recorded and len(claim):
    report.record("claim_check", claim[["m", "regime", "fi_faster", "within_claim"]].to_dict("records"))
    print(claim.attrs.get("note"))
    display(claim.round(3))
else:
    note = claim.attrs.get("note") if recorded else "not measured: no recorded H100 latency results yet"
    report.record("claim_check", note)
    print(f"Claim (SGLang PR #24816): Marlin 12-15% faster at M<=64, tie near M~256, FlashInfer 24-36% faster at "
          f"M>=1024 on the seed shape.\nCheck: {note}")

# %%
plt.close("all")
results = report.save_results(results_path)
print(f"recorded {len(results)} results" + (f" -> {results_path}" if results_path else " (not written: results_path is None)"))
