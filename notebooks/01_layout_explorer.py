# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
#   mxfp4lab:
#     min_figures: 3
#     results:
#     - tile_elements
#     - tile_fraction_row_moved
#     - bit_permutation
#     - scale_fold_shape
#     - trace
#     - reverse
#     - check
#     - findings
# ---

# %% [markdown]
# # SM90 MXFP4 layout explorer
#
# Where does one FP4 element of an MXFP4 MoE weight end up in the tensors FlashInfer's SM90
# W4A16 grouped GEMM (`cutlass_fused_moe(..., use_w4_group_scaling=True)`) reads?
#
# 1. **Checkpoint -> logical fc1** (`mxfp4lab.prepare`): GPT-OSS stores gate/up rows interleaved
#    (row `2j` = gate_j, `2j+1` = up_j); the kernel wants `[up ; gate]` halves, each padded from
#    `I` to `I_pad` (a multiple of 128), and K = hidden padded from `H` to `H_pad`.
# 2. **Weight interleave** (`interleave_weights_sm90`): 16-row x 64-element tiles; each lane
#    gathers 4 bytes (rows r, r+8 x bytes c, c+4) into a 32-bit word, permutes its bits and stores
#    it at a new row/byte.
# 3. **Scale fold** (`fold_scales_sm90`): each 64-row x 128-K block of E8M0 scales becomes
#    16 rows x 16 bytes.
#
# Everything here is computed by `mxfp4lab.studies.layout` and drawn by `mxfp4lab.studies.layout_figures`;
# the notebook only wires parameters to calls. Runs in seconds on a CPU.

# %% tags=["remove-input"]
from mxfp4lab import findings

summary = findings.placeholder()  # filled by the last cell from this run's results

# %% tags=["parameters"]
model = "gpt-oss-20b"  # model config: sets I, I_pad, H_pad and the flat byte offsets
expert = 0  # expert index
row = 17  # checkpoint gate_up_proj row; GPT-OSS rows 2j / 2j+1 hold gate_j / up_j
k = 45  # element index along K, the hidden dimension for fc1
dst_row = 0  # reverse lookup: a physical bit of one expert's SM90 weight (row, byte, bit)
dst_byte = 27
dst_bit = 6
tile_row0 = 0  # first row of the 16x64 tile to map
tile_k0 = 0  # first k of that tile
checkpoint = None  # a GPT-OSS or DeepSeek-V4 checkpoint directory: trace expert/row/k of its layer (model ignored)
layers = None  # the checkpoint's MoE layer to trace in (a list, the first is used); None: its first MoE layer
results_path = None  # set by mxfp4lab report: where save_results writes results.json

# %%
import matplotlib.pyplot as plt

from mxfp4lab import report
from mxfp4lab.models import get_model
from mxfp4lab.studies import layout as study
from mxfp4lab.studies import layout_figures as figures
from mxfp4lab.studies import checkpoint as ck_study
from mxfp4lab.studies import layout_findings
from mxfp4lab.widgets import LayoutExplorer

src = ck_study.open_layer_source(checkpoint) if checkpoint else None
if src is not None:
    ck_layer = src.check_layers(layers)[0]
    print(src.detected.describe() + f"; tracing in layer {ck_layer}")
    report.record("checkpoint", ck_study.checkpoint_record(src, [ck_layer]))
config = src.config if src is not None else get_model(model)
print(f"{config.name}: H={config.hidden_size} -> H_pad={config.padded_hidden}, "
      f"I={config.intermediate_size} -> I_pad={config.padded_intermediate}, E={config.num_experts}")
print(f"fc1 (w13) per expert: [{2 * config.padded_intermediate}, {config.padded_hidden // 2}] bytes")

# %% [markdown]
# ## 1. Where each element of a 16x64 tile goes
#
# Rows `r` and `r+8` trade places in alternating groups of 8 bytes (16 elements), every 4 bytes of a
# destination row form one lane's 32-bit word, and each word mixes 4 source bytes A-D.

# %%
tile = study.layout_tile_map(tile_row0, tile_k0)
report.record("tile_elements", len(tile))
report.record("tile_fraction_row_moved", float(tile.row_moved.mean()))
figures.plot_tile_destinations(tile)
plt.show()

# %% [markdown]
# ## 2. The bit permutation inside one 32-bit word
#
# Magnitude fields of C, B, A are packed from bit 0, signs scattered to bits 9, 12, 15 (D fills the
# gaps), separately for the low nibbles (bits 0-15) and high nibbles (16-31): the layout the kernel's
# FP4 -> BF16 conversion wants.

# %%
perm = study.layout_bit_permutation()
report.record("bit_permutation", perm.dst_bit.tolist())
figures.plot_bit_permutation(perm)
plt.show()

# %% [markdown]
# ## 3. The 64x128 scale fold

# %%
fold = study.layout_scale_fold()
report.record("scale_fold_shape", [int(fold.frow.max()) + 1, int(fold.col.max()) + 1])
figures.plot_scale_fold(fold)
plt.show()

# %% [markdown]
# ## 4. One element's path (the parameters `expert`, `row`, `k`)

# %%
trace = study.layout_trace(row, k, expert=expert, config=config, pre_stage="auto")
report.record("trace", {key: trace[key] for key in ("expert", "ckpt_row", "row", "k", "dst_row", "dst_byte",
                                                    "dst_bit", "scale_fold")})
report.record("pre_stage", (trace["pre"] or {}).get("source"))
study.layout_trace_table(trace).style.hide(axis="index")

# %%
if src is not None:  # the same element in the checkpoint: its code and value, and its bits in the SM90 layout
    el = ck_study.checkpoint_element(src, ck_layer, expert, row, k)
    report.record("checkpoint_trace", el)
    print(ck_study.element_text(src, ck_layer, expert, row, k))
    print(f"code bits m0 e0 e1 s = {el['code_bits']}; read back from the interleaved expert at row {el['dst_row']}, "
          f"bytes {el['dst_byte']}, bits {el['dst_bit']}: {el['found_bits']}")
else:
    print("No checkpoint given (parameter checkpoint): the element is traced through the layout only.")

# %%
rev = study.layout_reverse(dst_row, dst_byte, dst_bit)
report.record("reverse", dict(rev, dst_row=dst_row, dst_byte=dst_byte, dst_bit=dst_bit))
print(f"w_sm90[e, {dst_row}, {dst_byte}] bit {dst_bit} <- code bit {rev['code_bit_name']} of "
      f"(fc1 row {rev['row']}, k {rev['k']})")

# %% [markdown]
# Cross-check: the tracing agrees with the actual transforms on random bytes (every bit of a 32x128
# window, every scale of a 64x256 window).

# %%
check = study.layout_tile_check()
report.record("check", check)
exact = check["bit_mismatches"] == 0 and check["scale_mismatches"] == 0
print(("Bit-exact: " if exact else "MISMATCH: ") + f"{check['bits_checked'] - check['bit_mismatches']} of "
      f"{check['bits_checked']} bits and {check['scales_checked'] - check['scale_mismatches']} of "
      f"{check['scales_checked']} scales land where the tracing says.")
assert exact, check

# %% [markdown]
# ## 5. Interactive explorer
#
# In JupyterLab: pick the checkpoint row and k by typing them or with the sliders (a coarse slider over
# 16-row / 64-k tiles and a fine one inside the tile), and see the path highlighted; or type a physical
# (row, byte, bit) to find which element's code bit lives there ("trace this element" jumps to it).
# The widget lives in the running kernel: a notebook reopened without running shows "Error displaying
# widget: model not found" until you run it (Run > Run All Cells). The HTML report shows a static
# snapshot of the explorer's state instead of the widget.

# %%
info = (lambda e, r, kk: ck_study.element_text(src, ck_layer, e, r, kk)) if src is not None else None
explorer = LayoutExplorer(config, expert=expert, row=row, k=k, pre_stage="auto", element_info=info)
explorer.lookup(dst_row, dst_byte, dst_bit)
explorer

# %% [markdown]
# ## 6. Beside it: mxfp4lab's Triton W4A16 layout
#
# The SM90 layout above serves CUTLASS's mixed-input `wgmma` mainloop: in each 16-row x 64-element tile
# the bytes of rows r / r+8 and columns c / c+4 form 32-bit words whose bits are permuted so that the
# LUT-based FP4 -> bf16 conversion in registers lands in the fragment order `wgmma` wants, and the scales
# of a 64 x 128 block are one 16-byte load per thread. It is tied to one instruction shape.
#
# mxfp4lab's own Triton kernel (`mxfp4lab.kernels.triton_moe`, `docs/triton-kernel.md`) uses a plain
# transpose, `[E, N, K/2] -> [E, K/2, N]` with scales `[E, K/32, N]`: N contiguous (16-byte vector loads
# along N), K pairs packed in a byte, no bit moves. After the nibble unpack a loaded tile already is the
# `[K, N]` operand of `tl.dot`, for any tile shape, and up row n / gate row I_pad + n are two column
# windows of the same rows, so one program computes both halves and fuses the SwiGLU.

# %%
from mxfp4lab.prepare import trace_fc1_row

study.layout_compare_triton(row=trace_fc1_row(row, config)["w13_row"], k=k)

# %% [markdown]
# ## 7. Beside it: mxfp4lab's decode kernel layout
#
# mxfp4lab's CUDA decode kernel (`decode_w4a16`, `docs/decode-kernel.md`) feeds `mma.sync.m16n8k16` from
# registers, the weights as the A operand (16 output rows) and up to 8 tokens as B. Per 16-row x 64-element
# tile each of the 32 lanes copies 16 bytes: the codes of rows g and g+8 (g = lane // 4) at 16 consecutive
# K (16 t .. 16 t + 15, t = lane % 4), one 32-bit word per MMA step. Inside the chunk K is permuted so that
# step s takes K 16 t + 4 s .. + 3 from every lane: then the same lane's activations for all four steps
# are 32 contiguous bytes, two 16-byte copies. Each register's 8 bits sit in the word where one rotation
# brings them to a bf16's sign (bit 15) and e1 e0 m (bits 8..6), so five LOP3, two funnel shifts and two
# left shifts make four bf16x2 registers (the bit map: `mxfp4lab.layout.decode_w4a16`), and
# one bf16x2 multiply per register applies the E8M0 scale (one per row and lane). Left: the lane of every
# element; right: the MMA step. The element traced above is outlined.
#
# Tiles are stored in groups, each (group, chunk) one contiguous block of weights then scales: fc1 2 up + 2 gate
# tiles of the same rows, fc2 2 tiles. A kernel item need not be one group: at M = 2..128 the tuner's fc2 items
# hold two (a step copies the same chunk of both blocks into one 4-tile slot), which spreads a warp's per-step
# work over twice the weights (`docs/findings/2026-12-03-decode-item-tiles.md`); the layout stays the same.
# With many tokens per expert (M >= 128-256) the kernel reads the same blocks another way ("wide items"): a warp
# takes one fc1 group (or two fc2 groups) and 32 tokens and walks the group's blocks chunk by chunk over the whole
# K, so each 16-byte lane word is decoded once and multiplies four N blocks of 8 tokens
# (`docs/findings/2026-12-03-decode-wide-items.md`). Its wgmma variants feed the same decoded registers to
# `wgmma.mma_async` as A (per warp the A fragment of m64nNk16 is this m16n8k16 one, so the layout is unchanged) and
# read the tokens from shared memory as wgmma's B: K-major core matrices of 8 tokens x 8 K, into which each 16-byte
# piece of a token row is copied as four 4-byte pieces, so that core matrix u of step s holds, at lane t's 4 bytes,
# the same K 16 t + 4 s + 2 u .. + 1 the table above gives lane t's registers
# (`docs/findings/2026-12-03-decode-wgmma.md`).
#
# The warp-specialized variants (79-81; correct on the H200, 2-10 % slower than the wgmma variants: the one
# producer warp per scheduler cannot decode fast enough, `docs/findings/2026-12-05-decode-warp-specialized.md`) read
# the same blocks a third way: a producer warpgroup decodes each lane's 16 bytes and stores the two rows' 8 + 8 elements of each
# MMA step pair as 16-byte rows of a bf16 A tile in shared memory, back in the chunk's natural K order (granule
# 2 t + h holds K 16 t + 8 h .. + 7), so that wgmma reads both operands from shared memory and the token rows
# are plain 16-byte copies; fc1's up and gate rows alternate by 8 in that tile, so that one accumulator lane holds
# both sums of an intermediate row (`docs/decode-kernel.md`, "Warp-specialized wide items").

# %%
figures.plot_decode_lanes(study.layout_decode_tile_map(), highlight=(trace_fc1_row(row, config)["w13_row"] % 16, k % 64));

# %%
study.layout_compare_decode(row=trace_fc1_row(row, config)["w13_row"], k=k)

# %%
plt.close("all")
report.record("findings", findings.publish(summary, layout_findings.findings(report.recorded())))
results = report.save_results(results_path)
print(f"recorded {len(results)} results" + (" -> results.json" if results_path else " (not written: results_path is None)"))
