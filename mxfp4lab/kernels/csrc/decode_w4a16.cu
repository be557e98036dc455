// mxfp4lab decode_w4a16: a weight-streaming W4A16 MXFP4 MoE forward for Hopper (sm_90a), made for
// decode (few tokens per expert), where an MoE layer is bound by the bytes of the active experts.
// This file: the host side (launches, the variant table, the C entry points). Included below, inside the namespace:
// decode_w4a16_common.cuh (arguments, copy / decode / MMA helpers, the routing, the combine kernel),
// decode_w4a16_split_k.cuh (the split-K items: gemm_phase, its L2 staging, the fused launch),
// decode_w4a16_wide.cuh (the wide items), decode_w4a16_ws.cuh and decode_w4a16_wsr.cuh (the warp-specialized wide
// items: the decode on a producer warpgroup, or on the consumers).
//
// Three launches per forward (two with the fused combine), chained with programmatic dependent
// launch (PDL):
//   fc1      routing in shared memory + GEMM1 (up and gate tiles of the same rows) + bias + clamped
//            SwiGLU  -> h [pairs, I16] bf16
//   fc2      routing in shared memory + GEMM2 -> y [pairs, H16] bf16, and the combine
//            out[m] = bf16( sum_{j=0..k-1, in order} w[m,j] * (fp32(y[m*k+j]) + b2[e_j]) )
//            of each (token, 32 output rows) by the CTA that stores its last y (a counter per token and
//            tile group, reset by that CTA); or, unfused, a third launch (combine_kernel) does it.
// Wide-item variants (decode_w4a16_wide.cuh, included below) decompose both GEMMs another way, for many tokens per
// expert: each warp 4 tiles x 32 tokens over the whole K, no cross-warp reduction.
// Fused-launch variants run fc1 and fc2 as one cooperative grid with a grid barrier between them
// (fused_kernel), then the combine; dynamic-items variants let CTAs claim items from a shared counter;
// split-grid variants give fc1 part of every SM's CTA slots and fc2 the rest, so fc2's CTAs start with fc1.
// A "pair" p = m * top_k + j is one (token, slot). Rounding points are those of the kernel-faithful
// reference (mxfp4lab.reference.moe_reference(mode="kernel")): GEMM outputs -> bf16, SwiGLU in fp32 ->
// bf16, fp32 combine -> bf16. No atomics on values (only on the fused combine's arrival counters, which
// pick who sums, not what): the output is deterministic, and the fused combine's bits are the unfused one's.
//
// Work decomposition (both GEMMs). An ITEM is (local expert e, token chunk of up to 8*G pairs routed to
// e, a group of NT 16-row weight tiles). Items are enumerated expert-major from the routing, and each
// persistent CTA takes a contiguous range of them. Inside a CTA the 8 warps split K (64-element chunks)
// and stream their chunks through a per-warp cp.async ring in shared memory (D stages deep, crossing
// item boundaries, so loads stay in flight through epilogues); the partial sums are reduced across warps
// in a fixed order in shared memory. fc2's CTAs start as fc1's leave the SMs (PDL): they build the routing
// and copy the weights of their first D2 - 1 ring steps (fc2's own ring depth) before they wait for fc1, so
// fc2's weight stream overlaps fc1's tail; only the activation rows (h) are copied after the wait.
//
// Per chunk a lane owns 16 bytes of each tile (the layout of mxfp4lab/layout/decode_w4a16.py): four
// 32-bit words, one per m16n8k16 MMA step, each holding the 8 E2M1 codes of that lane's A fragment
// (a0..a3: rows g, g+8; two K pairs), with K permuted inside the chunk so that the same lane's B fragment
// (tokens as the MMA's N) is 32 contiguous bytes of the activation row. Decode of one word (8 codes ->
// four bf16x2 registers, value 2^-126 * v, exact incl. the subnormal 0.5): 5 LOP3 + 4 shifts; one HMUL2
// per register by 2^(s-1) (the row's E8M0 byte s, times 2^126) gives v * 2^(s-127) exactly.
//
// Build: nvcc -O3 -std=c++17 -shared -Xcompiler -fPIC -gencode=arch=compute_90a,code=sm_90a
// (mxfp4lab.kernels.decode_w4a16.build_library).  Only libcudart (static) is linked.
// -DMXFP4LAB_DECODE_TRACE builds the traced twin: every CTA also writes the global timer at its phase
// boundaries (kTrace* below) to DecodeArgs::trace; without it no trace code is compiled.

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace mxfp4lab_decode {

#include "decode_w4a16_common.cuh"
#include "decode_w4a16_split_k.cuh"

// ------------------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------------------
template <int NT, int G, int D, int RB, int TA>
constexpr int smem_bytes(int num_experts, int num_pairs) {
  return Smem<NT, G, D, RB, TA>::kFixed + (5 * num_experts + 2 + 2 * kWarps + num_pairs + 32) * 4;  // + done_m
}

// One launch with one launch attribute (cudaLaunchKernelEx).
template <typename Kernel, typename... Args>
cudaError_t launch_with(Kernel kernel, int grid, int block, int smem, cudaStream_t stream, cudaLaunchAttribute attr,
                        const Args&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(block);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, args...);
}

// One launch; with ``pdl`` the kernel may start before the previous one on the stream ends (programmatic
// dependent launch: it calls griddepcontrol.wait before reading that kernel's output).
template <typename Kernel, typename Args>
cudaError_t launch_pdl(Kernel kernel, int grid, int block, int smem, cudaStream_t stream, bool pdl, const Args& args) {
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = pdl ? 1 : 0;
  return launch_with(kernel, grid, block, smem, stream, attr, args);
}

// A cooperative launch of both GEMMs' arguments: the driver starts it only with every CTA resident, so that a CTA
// that waits for others' work (a grid barrier, ready counters) never holds an SM slot one of them needs.
template <typename Kernel>
cudaError_t launch_cooperative(Kernel kernel, int grid, int smem, cudaStream_t stream, const GemmArgs& a1,
                               const GemmArgs& a2) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeCooperative;
  attr.val.cooperative = 1;
  return launch_with(kernel, grid, kThreads, smem, stream, attr, a1, a2);
}

// The fused launch (fused_kernel): one cooperative grid (the grid barrier waits for every CTA); the shared memory is
// the larger of the two phases'.
template <int G, int CPS, int D, int RB, int TA, int D2, int TA2>
cudaError_t launch_fused(const GemmArgs& a1, const GemmArgs& a2, int grid, cudaStream_t stream) {
  const int smem = max(smem_bytes<kNT1, G, D, RB, TA>(a1.num_experts, a1.num_pairs),
                       smem_bytes<kNT2, G, D2, RB, TA2>(a2.num_experts, a2.num_pairs));
  return launch_cooperative(fused_kernel<G, CPS, D, RB, TA, D2, TA2>, grid, smem, stream, a1, a2);
}

// shared: ask for the SM's largest shared-memory carveout (split grids: the driver sizes an SM's carveout for the
// first kernel it runs, which would leave no room for the other GEMM's CTAs).
template <int NT, int G, int D, int RB, int CPS, bool FC1, int L2, bool CMB, int TA, int DY>
cudaError_t launch_gemm(const GemmArgs& a, int grid, cudaStream_t stream, bool pdl, bool shared = false) {
  auto kernel = gemm_kernel<NT, G, D, RB, CPS, FC1, L2, CMB, TA, DY>;
  int smem = smem_bytes<NT, G, D, RB, TA>(a.num_experts, a.num_pairs);
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  if (shared) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    if (err != cudaSuccess) return err;
  }
  return launch_pdl(kernel, grid, kThreads, smem, stream, pdl, a);
}

#include "decode_w4a16_wide.cuh"
#include "decode_w4a16_ws.cuh"
#include "decode_w4a16_wsr.cuh"

// Launch variants (mxfp4lab/kernels/decode_w4a16.py: VARIANTS mirrors this table). L2 staging (bits):
// 1 = fc1 prefetches fc2's weights into L2 (DecodeArgs::l2_prefetch_bytes per CTA), 2 = fc1 streams its
// own weights with L2 evict_first, 4 = the prefetch of bit 1 once a CTA has read its own weights (late
// staging), 8 = fc1 prefetches its first item's epilogue inputs into L1 (prefetch_epilogue_inputs). The bits
// are a template parameter of fc1, so an unstaged variant's kernels are exactly those without staging; staging
// changes no arithmetic: a variant and its staged twin compute the same bits. TA: token rows of a compact activation slot (0 = 8 G rows; see Smem).
// fc2 may run its own ring depth D2 and token rows TA2 (its items are enumerated independently of fc1's; it
// copies the weights of its first D2 - 1 steps before waiting for fc1, so a deeper fc2 ring streams more of
// fc2's weights while fc1 ends). FU = 1: fc1 and fc2 run as one cooperative launch with a grid barrier
// between them (fused_kernel). DY: dynamic items (gemm_phase), bit 0 in fc1, bit 1 in fc2. SP > 0: a split grid (launch_forward): fc1
// takes SP of the CPS CTA slots per SM and fc2 the rest, so fc2's CTAs are resident from fc1's start and copy
// the weights of their first D2 - 1 steps while fc1 streams (not only while it ends); their items stay static.
// IT1, IT2: tiles per item of fc1 and fc2 (ItemTiles: kNT1 = 4 and kNT2 = 2, the layout's groups, unless stated;
// fc1 2 = half a group, fc2 4 = two groups). The table's last seven columns: D2, TA2 (equal to D, TA unless stated),
// FU, DY, SP, IT1, IT2.
//   id  G  CTAs/SM  ring depth  partial buffers  L2  TA
//   1   1  1        6           2                0   0   decode, one CTA of 8 warps per SM, deep ring
//   2   1  2        3           1                0   0   decode, two CTAs per SM (16 warps), epilogues overlap
//   3   2  1        4           2                0   0   up to 16 tokens per item
//   4   4  1        2           1                0   0   up to 32 tokens per item (larger M)
//   5   1  3        2           1                0   0   three CTAs per SM (24 warps): latency hiding, small M
//   6   2  2        2           1                0   0   16 tokens per item, two CTAs per SM
//   7   1  3        2           1                3   0   variant 5, fc2's weights prefetched, fc1 evict_first
//   8   1  3        2           1                1   0   variant 5, fc2's weights prefetched
//   9   1  1        6           2                3   0   variant 1, staged
//   10  1  2        3           1                3   0   variant 2, staged
//   11  2  2        2           1                3   0   variant 6, staged
//   12  1  3        3           1                0   2   up to 2 tokens per item: a 3-deep ring at 3 CTAs per SM
//   13  1  2        5           2                0   2   up to 2 tokens per item, two CTAs per SM, 5-deep ring
//   14  1  4        2           1                0   2   up to 2 tokens per item, four CTAs per SM (32 warps, 64 regs)
//   15  1  3        2           1                0   0   variant 5, fc2: 2 token rows, a 6-deep ring (5 steps before the wait)
//   16  1  4        2           1                0   2   variant 14, fc2: a 4-deep ring
//   17  1  3        3           1                0   2   variant 12, fc2: a 6-deep ring
//   18  1  3        2           1                0   0   variant 15 as one fused launch
//   19  1  4        2           1                0   2   variant 16 as one fused launch
//   20  1  3        3           1                0   2   variant 17 as one fused launch
//   21  1  3        2           1                0   0   variant 5 with dynamic items
//   22  1  3        2           1                0   0   variant 15 with dynamic items
//   23  1  4        2           1                0   2   variant 14 with dynamic items
//   24  4  1        2           1                0   0   variant 4 with dynamic items
//   25  1  2        4           1                0   2   split 1 + 1: fc1 (dynamic items) and fc2 (a 12-deep ring) per SM
//   26  1  4        2           1                0   2   split 3 + 1: variant 14's fc1, fc2 a 7-deep ring
//   27  1  3        2           1                0   0   split 2 + 1: variant 5's fc1, fc2 a 7-deep ring
//   28  1  3        2           1                0   2   split 2 + 1: variant 14's fc1 at 3 CTAs/SM, fc2 an 11-deep ring
//   29  1  3        3           1                0   2   split 2 + 1: variant 12's fc1, fc2 an 8-deep ring
//   30  1  3        2           1                0   0   variant 15 with dynamic items in fc2 only (CTAs that start early
//                                                          take fc2's items; at M <= 8 fc2's CTAs start as fc1's leave)
//   31  1  3        3           1                0   2   variant 17 with dynamic items in fc2 only
//   32  1  3        2           1                0   0   variant 30, fc2: 1 token row, a 7-deep ring (M = 1: a warp's whole
//                                                          item of 5-6 steps copied before the wait)
//   33  1  3        2           1                4   0   variant 15, late staging: fc2's weights into L2 as fc1's CTAs end
//   34  1  3        2           1                8   0   variant 15, fc1's epilogue inputs (biases, alpha, beta, limit) early
//   35  1  3        2           1                8   0   variant 30, the same
//   36  1  3        2           1                8   0   variant 22, the same
//   37  1  3        2           1                0   0   variant 21, fc2 items of 4 tiles (two layout groups)
//   38  1  3        2           1                0   0   variant 5, fc2 items of 4 tiles
//   39  2  3        2           1                0   0   16 tokens per item at three CTAs per SM: fc1 items of 2 tiles (an
//                                                          up and a gate tile), dynamic items
//   40  2  3        2           1                0   0   variant 39 with static items
//   41  1  3        2           1                0   0   variant 15 with fc2 items of 4 tiles, fc2 a 3-deep ring
// WT > 0 (the 15th column): wide items (decode_w4a16_wide.cuh), 8 G tokens per item (G = 4 WT: 32 per token warp), a
// CTA-wide ring of D stages; the other columns but CPS and D do not apply.
//   42  4  1        4           -                -   -   wide items: 32 tokens, 8 row groups per item
//   43  8  1        4           -                -   -   wide items: 64 tokens, 4 row groups per item
//   44  4  1        6           -                -   -   variant 42 with a 6-deep ring
// WG = 1 (the 16th column): the wide items' MMAs as wgmma.mma_async (A from registers, the token tile from shared memory;
// decode_w4a16_wide.cuh), so that a warp decodes the next step while the tensor cores run this one.
//   46  4  1        4           -                -   -   variant 42 with wgmma
//   47  8  1        4           -                -   -   variant 43 with wgmma
//   48  4  1        6           -                -   -   variant 44 with wgmma
// WG = 2: wgmma with split tiles: a warp owns 2 of its row group's 4 tiles (fc1: an up and a gate tile; fc2: one layout
// group) and all 64 tokens of the item, so a weight is decoded once per 64 tokens and the MMA's N follows the item's
// tokens up to 64.
//   49  8  1        4           -                -   -   split tiles, 64 tokens, 4 row groups per item
//   50  8  1        6           -                -   -   variant 49 with a 6-deep ring
// Two CTAs per SM (16 warps, 128 registers: ptxas then runs each warp's wgmma groups one at a time -- C7511 -- and the
// other CTA's warps hide the decode instead):
//   51  8  2        4           -                -   -   variant 49 at two CTAs per SM
//   52  4  2        3           -                -   -   variant 46 at two CTAs per SM, a 3-deep ring
//   53  8  2        3           -                -   -   variant 49 at two CTAs per SM, a 3-deep ring (more routing lists)
// WG = 3: split tiles of 128 tokens (G = 16): a weight decoded once per 128 tokens, N up to 128 (above 64 rounded up to
// 96 or 128), 128 accumulators per lane, one CTA per SM.
//   56 16  1        4           -                -   -   split tiles, 128 tokens, 4 row groups per item
//   57 16  1        3           -                -   -   variant 56 with a 3-deep ring
// G = 2 WT (mma.sync): wide items of 16 tokens per warp (2 N blocks, 32 accumulators), so that two CTAs fit an SM.
//   70  2  2        4           -                -   -   wide items: 16 tokens, 8 row groups per item, two CTAs per SM
// IT2 = 2 with wide items (mma.sync): fc2 items of one layout group per warp (32 output rows, twice the items).
//   72  2  2        4           -                -   -   variant 70, fc2 items of one layout group per warp
// FU = 1 with wide items (mma.sync): one cooperative grid (wide_one_kernel) runs fc1's items and then fc2's, each fc2
// item after its expert's fc1 items, not after fc1's whole grid; then the combine.
//   73  2  2        4           -                -   -   variant 70 as one grid
//   74  2  2        4           -                -   -   variant 72 as one grid
// IT1 = 2 with wide items (mma.sync): fc1 items of half a layout group per warp (an up and a gate tile of 16 rows), so
// that a warp's 16 accumulators leave room for three CTAs per SM (24 warps).
//   75  2  3        3           -                -   -   fc1 half groups, fc2 one group per warp, three CTAs per SM
//   76  2  3        3           -                -   -   variant 75 as one grid
// DY = 2 with the one grid: fc2's items claimed one at a time from a counter in the sequence's order (the earliest
// experts' first) instead of dealt every grid-th.
//   82  2  2        4           -                -   -   variant 74, fc2's items claimed
// DY = 3: fc1's items claimed from a counter too.
//   83  2  2        4           -                -   -   variant 82, fc1's items claimed as well
//   84  2  2        4           -                -   -   variant 83 with fc1 items of half a layout group (76's):
//                                                        twice fc1's items at half the work each, a finer tail
// WG = 5: warp-specialized wide items of 128 tokens (decode_w4a16_ws.cuh): a producer warpgroup copies and decodes
// into shared memory, WT consumer warpgroups run wgmma from shared memory (64 accumulators per lane), a 4-stage ring
// (token rows two chunks ahead, raw weights three; the consumers free a chunk right after its own MMAs). (WG = 4,
// variants 77 and 78, freed a chunk only after the next chunk's MMAs were issued: the producer waited for each of the
// consumers' steps; 20-25 % slower, dropped.)
//   79 16  1        4           -                -   -   4 consumer warpgroups: items of 256 weight rows (640 threads)
//   80 16  1        4           -                -   -   2 consumer warpgroups: items of 128 weight rows (384 threads)
// WG = 6: WG = 5 with two producer warpgroups (each producer warp copies and decodes one tile per chunk).
//   81 16  1        4           -                -   -   variant 80, two producer warpgroups (512 threads)
// WG = 7: warp-specialized wide items of 128 tokens with the decode on the consumers (decode_w4a16_wsr.cuh): the
// producer warpgroup only copies (raw weights and token rows, R - 1 chunks ahead), each consumer warp decodes its own
// tile's A fragments in registers and its warpgroup runs wgmma with A from registers (64 accumulators per lane); the
// sums of WG = 3's items.
//   85 16  1        4           -                -   -   4 consumer warpgroups: items of 256 weight rows (640 threads)
//   86 16  1        4           -                -   -   2 consumer warpgroups: items of 128 weight rows (384 threads)
//   87 16  1        6           -                -   -   variant 86 with a 6-stage ring (five chunks ahead)
#define MXFP4LAB_DECODE_VARIANTS(X)                                                                            \
  X(1, 1, 1, 6, 2, 0, 0, 6, 0, 0, 0, 0, 4, 2, 0, 0) X(2, 1, 2, 3, 1, 0, 0, 3, 0, 0, 0, 0, 4, 2, 0, 0) X(3, 2, 1, 4, 2, 0, 0, 4, 0, 0, 0, 0, 4, 2, 0, 0)     \
  X(4, 4, 1, 2, 1, 0, 0, 2, 0, 0, 0, 0, 4, 2, 0, 0) X(5, 1, 3, 2, 1, 0, 0, 2, 0, 0, 0, 0, 4, 2, 0, 0) X(6, 2, 2, 2, 1, 0, 0, 2, 0, 0, 0, 0, 4, 2, 0, 0)     \
  X(7, 1, 3, 2, 1, 3, 0, 2, 0, 0, 0, 0, 4, 2, 0, 0) X(8, 1, 3, 2, 1, 1, 0, 2, 0, 0, 0, 0, 4, 2, 0, 0) X(9, 1, 1, 6, 2, 3, 0, 6, 0, 0, 0, 0, 4, 2, 0, 0)     \
  X(10, 1, 2, 3, 1, 3, 0, 3, 0, 0, 0, 0, 4, 2, 0, 0) X(11, 2, 2, 2, 1, 3, 0, 2, 0, 0, 0, 0, 4, 2, 0, 0) X(12, 1, 3, 3, 1, 0, 2, 3, 2, 0, 0, 0, 4, 2, 0, 0)  \
  X(13, 1, 2, 5, 2, 0, 2, 5, 2, 0, 0, 0, 4, 2, 0, 0) X(14, 1, 4, 2, 1, 0, 2, 2, 2, 0, 0, 0, 4, 2, 0, 0) X(15, 1, 3, 2, 1, 0, 0, 6, 2, 0, 0, 0, 4, 2, 0, 0)  \
  X(16, 1, 4, 2, 1, 0, 2, 4, 2, 0, 0, 0, 4, 2, 0, 0) X(17, 1, 3, 3, 1, 0, 2, 6, 2, 0, 0, 0, 4, 2, 0, 0) X(18, 1, 3, 2, 1, 0, 0, 6, 2, 1, 0, 0, 4, 2, 0, 0)  \
  X(19, 1, 4, 2, 1, 0, 2, 4, 2, 1, 0, 0, 4, 2, 0, 0) X(20, 1, 3, 3, 1, 0, 2, 6, 2, 1, 0, 0, 4, 2, 0, 0) X(21, 1, 3, 2, 1, 0, 0, 2, 0, 0, 3, 0, 4, 2, 0, 0)  \
  X(22, 1, 3, 2, 1, 0, 0, 6, 2, 0, 3, 0, 4, 2, 0, 0) X(23, 1, 4, 2, 1, 0, 2, 2, 2, 0, 3, 0, 4, 2, 0, 0) X(24, 4, 1, 2, 1, 0, 0, 2, 0, 0, 3, 0, 4, 2, 0, 0) \
  X(25, 1, 2, 4, 1, 0, 2, 12, 2, 0, 1, 1, 4, 2, 0, 0) X(26, 1, 4, 2, 1, 0, 2, 7, 2, 0, 0, 3, 4, 2, 0, 0) X(27, 1, 3, 2, 1, 0, 0, 7, 2, 0, 0, 2, 4, 2, 0, 0)   \
  X(28, 1, 3, 2, 1, 0, 2, 11, 2, 0, 0, 2, 4, 2, 0, 0) X(29, 1, 3, 3, 1, 0, 2, 8, 2, 0, 0, 2, 4, 2, 0, 0)                            \
  X(30, 1, 3, 2, 1, 0, 0, 6, 2, 0, 2, 0, 4, 2, 0, 0) X(31, 1, 3, 3, 1, 0, 2, 6, 2, 0, 2, 0, 4, 2, 0, 0) X(32, 1, 3, 2, 1, 0, 0, 7, 1, 0, 2, 0, 4, 2, 0, 0)   \
  X(33, 1, 3, 2, 1, 4, 0, 6, 2, 0, 0, 0, 4, 2, 0, 0) X(34, 1, 3, 2, 1, 8, 0, 6, 2, 0, 0, 0, 4, 2, 0, 0) X(35, 1, 3, 2, 1, 8, 0, 6, 2, 0, 2, 0, 4, 2, 0, 0)  \
  X(36, 1, 3, 2, 1, 8, 0, 6, 2, 0, 3, 0, 4, 2, 0, 0) X(37, 1, 3, 2, 1, 0, 0, 2, 0, 0, 3, 0, 4, 4, 0, 0)                            \
  X(38, 1, 3, 2, 1, 0, 0, 2, 0, 0, 0, 0, 4, 4, 0, 0) X(39, 2, 3, 2, 1, 0, 0, 2, 0, 0, 3, 0, 2, 2, 0, 0)                             \
  X(40, 2, 3, 2, 1, 0, 0, 2, 0, 0, 0, 0, 2, 2, 0, 0) X(41, 1, 3, 2, 1, 0, 0, 3, 2, 0, 0, 0, 4, 4, 0, 0) \
  X(42, 4, 1, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 1, 0) X(43, 8, 1, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 2, 0) X(44, 4, 1, 6, 1, 0, 0, 6, 0, 0, 0, 0, 4, 4, 1, 0) \
  X(46, 4, 1, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 1, 1) X(47, 8, 1, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 2, 1) X(48, 4, 1, 6, 1, 0, 0, 6, 0, 0, 0, 0, 4, 4, 1, 1) \
  X(49, 8, 1, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 2, 2) X(50, 8, 1, 6, 1, 0, 0, 6, 0, 0, 0, 0, 4, 4, 2, 2) X(51, 8, 2, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 2, 2) \
  X(52, 4, 2, 3, 1, 0, 0, 3, 0, 0, 0, 0, 4, 4, 1, 1) X(53, 8, 2, 3, 1, 0, 0, 3, 0, 0, 0, 0, 4, 4, 2, 2) \
  X(56, 16, 1, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 2, 3) X(57, 16, 1, 3, 1, 0, 0, 3, 0, 0, 0, 0, 4, 4, 2, 3) \
  X(70, 2, 2, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 1, 0) X(72, 2, 2, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 2, 1, 0) \
  X(73, 2, 2, 4, 1, 0, 0, 4, 0, 1, 0, 0, 4, 4, 1, 0) X(74, 2, 2, 4, 1, 0, 0, 4, 0, 1, 0, 0, 4, 2, 1, 0) \
  X(75, 2, 3, 3, 1, 0, 0, 3, 0, 0, 0, 0, 2, 2, 1, 0) X(76, 2, 3, 3, 1, 0, 0, 3, 0, 1, 0, 0, 2, 2, 1, 0) \
  X(79, 16, 1, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 4, 5) X(80, 16, 1, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 2, 5) \
  X(81, 16, 1, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 2, 6) X(82, 2, 2, 4, 1, 0, 0, 4, 0, 1, 2, 0, 4, 2, 1, 0) \
  X(83, 2, 2, 4, 1, 0, 0, 4, 0, 1, 3, 0, 4, 2, 1, 0) X(84, 2, 2, 4, 1, 0, 0, 4, 0, 1, 3, 0, 2, 2, 1, 0) \
  X(85, 16, 1, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 4, 7) X(86, 16, 1, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 2, 7) \
  X(87, 16, 1, 6, 1, 0, 0, 6, 0, 0, 0, 0, 4, 4, 2, 7)

}  // namespace mxfp4lab_decode

using namespace mxfp4lab_decode;

// Flat argument block filled by ctypes (mxfp4lab/kernels/decode_w4a16.py: DecodeArgs); every field is
// 8 bytes so the two sides cannot disagree on padding.
struct DecodeArgs {
  int64_t x, topk_ids, topk_w;     // x [M, ld_x] bf16; ids int32 [M, k]; weights fp32 [M, k]
  int64_t w13, w2;                 // decode layout tensors (weights + scales per step)
  int64_t b13, b2;                 // fc1 bias [E, 2, ld_b13] and fc2 bias [E, ld_b2] bf16, or 0
  int64_t alpha, beta, limit;      // fp32 [E] or 0
  double alpha_s, beta_s, limit_s;
  int64_t use_limit;
  int64_t h, y, out;               // workspaces h [P, ld_h], y [P, ld_y]; out [M, ld_out]
  int64_t m, top_k, hidden, inter;
  int64_t ld_x, ld_h, ld_y, ld_out, ld_b13, ld_b2;
  int64_t groups1, groups2;        // tile groups per expert of fc1 (2 up + 2 gate tiles) and fc2 (2 tiles)
  int64_t chunks1, chunks2;        // K chunks of 64 of fc1 (hidden) and fc2 (intermediate)
  int64_t expert_offset, num_experts;
  int64_t variant;                 // launch variant (MXFP4LAB_DECODE_VARIANTS)
  int64_t grid;                    // CTAs per GEMM launch (persistent; SMs x CTAs per SM)
  int64_t pdl;                     // chain the launches with programmatic dependent launch
  int64_t l2_prefetch_bytes;       // L2 staging bit 1: fc2 weight bytes each fc1 CTA prefetches
  int64_t counters;                // fused combine: int32 [M, groups2], all zero (and left zero), or 0: unfused
  int64_t barrier;                 // fused launch (FU): uint32 [2], the grid barrier (zero before the first call, left
                                   // reusable), or 0
  int64_t sched;                   // dynamic items (DY): int32 [4], fc1's and fc2's counters (zero, left zero), or 0
  int64_t ready;                   // one-grid wide items (FU with WT): int32 [num_experts + 1 + claim counters: DY = 2
                                   // one, 3 two] (zero, left zero), or 0
  int64_t trace;                   // traced build: uint64 [2 * grid + combine blocks, kTraceSlots] (fc1's CTAs,
                                   // fc2's, the combine's), or 0
  double out_scale;                // the routed scaling factor the combine applies to each token's output (1: none)
};

// The combine launch (after fc2, or after the fused launch), chained with PDL.
cudaError_t launch_combine(const DecodeArgs* d, const GemmArgs& g1, cudaStream_t stream, bool pdl) {
  CombineArgs c = {};
  c.y = reinterpret_cast<const __nv_bfloat16*>(d->y);
  c.ld_y = d->ld_y;
  c.topk_ids = g1.topk_ids;
  c.topk_w = reinterpret_cast<const float*>(d->topk_w);
  c.b2 = reinterpret_cast<const __nv_bfloat16*>(d->b2);
  c.ld_b2 = d->ld_b2;
  c.m = static_cast<int>(d->m);
  c.top_k = static_cast<int>(d->top_k);
  c.hidden = static_cast<int>(d->hidden);
  c.expert_offset = g1.expert_offset;
  c.num_experts = g1.num_experts;
  c.out = reinterpret_cast<__nv_bfloat16*>(d->out);
  c.ld_out = d->ld_out;
  c.out_scale = static_cast<float>(d->out_scale);
  if (d->trace != 0) c.trace = reinterpret_cast<unsigned long long*>(d->trace) + 2 * d->grid * kTraceSlots;
  const int64_t threads = d->m * (d->hidden / 8);
  return launch_pdl(combine_kernel, static_cast<int>((threads + 255) / 256), 256, 0, stream, pdl, c);
}

// Both GEMMs' arguments from the flat block (fc1: x -> h with the SwiGLU epilogue; fc2: h -> y).
static void gemm_args(const DecodeArgs* d, GemmArgs& g1, GemmArgs& g2) {
  g1 = {};
  g1.act = reinterpret_cast<const __nv_bfloat16*>(d->x);
  g1.ld_act = d->ld_x;
  g1.act_row_div = static_cast<int>(d->top_k);
  g1.k_valid = static_cast<int>(d->hidden);
  g1.topk_ids = reinterpret_cast<const int32_t*>(d->topk_ids);
  g1.num_pairs = static_cast<int>(d->m * d->top_k);
  g1.expert_offset = static_cast<int>(d->expert_offset);
  g1.num_experts = static_cast<int>(d->num_experts);
  g1.wq = reinterpret_cast<const uint8_t*>(d->w13);
  g1.groups = static_cast<int>(d->groups1);
  g1.chunks = static_cast<int>(d->chunks1);
  g1.out_rows = static_cast<int>(d->inter);
  g1.bias = reinterpret_cast<const __nv_bfloat16*>(d->b13);
  g1.bias_ld = d->ld_b13;
  g1.alpha = reinterpret_cast<const float*>(d->alpha);
  g1.beta = reinterpret_cast<const float*>(d->beta);
  g1.limit = reinterpret_cast<const float*>(d->limit);
  g1.alpha_s = static_cast<float>(d->alpha_s);
  g1.beta_s = static_cast<float>(d->beta_s);
  g1.limit_s = static_cast<float>(d->limit_s);
  g1.use_limit = static_cast<int>(d->use_limit);
  g1.out = reinterpret_cast<__nv_bfloat16*>(d->h);
  g1.ld_out = d->ld_h;

  g2 = g1;
  g2.act = reinterpret_cast<const __nv_bfloat16*>(d->h);
  g2.ld_act = d->ld_h;
  g2.act_row_div = 1;
  g2.k_valid = static_cast<int>(d->inter);
  g2.wq = reinterpret_cast<const uint8_t*>(d->w2);
  g2.groups = static_cast<int>(d->groups2);
  g2.chunks = static_cast<int>(d->chunks2);
  g2.out_rows = static_cast<int>(d->hidden);
  g2.bias = nullptr;
  g2.out = reinterpret_cast<__nv_bfloat16*>(d->y);
  g2.ld_out = d->ld_y;
  if (d->trace != 0) {
    g1.trace = reinterpret_cast<unsigned long long*>(d->trace);
    g2.trace = g1.trace + d->grid * kTraceSlots;
  }
}

template <int G, int CPS, int D, int RB, int L2, int TA, int D2, int TA2, int FU, int DY, int SP, int IT1, int IT2>
cudaError_t launch_forward(const DecodeArgs* d, cudaStream_t stream) {
  static_assert(SP == 0 || (SP < CPS && FU == 0 && L2 == 0), "a split grid: SP of the CPS CTAs per SM run fc1");
  static_assert(FU == 0 || (IT1 == kNT1 && IT2 == kNT2), "the fused launch runs whole layout groups");
  static_assert((L2 & 5) == 0 || IT2 == kNT2, "L2 staging enumerates fc2's items as whole layout groups");
  if (d->m * d->top_k > kMaxPairs) return cudaErrorInvalidValue;
  GemmArgs g1, g2;
  gemm_args(d, g1, g2);
  if ((L2 & 5) && d->l2_prefetch_bytes > 0) {
    g1.pf_wq = g2.wq;
    g1.pf_groups = g2.groups;
    g1.pf_chunks = g2.chunks;
    g1.pf_bytes = d->l2_prefetch_bytes;
  }

  const int grid = static_cast<int>(d->grid);
  // SP > 0 (split residency): fc1 runs SP of every CPS CTA slots, fc2 the others, so that fc2's CTAs are resident
  // from fc1's start (PDL) and copy their first D2 - 1 steps' weights while fc1 streams. Their items stay static
  // ranges (those copies are issued before the wait, in item order).
  const int grid1 = SP ? max(1, grid * SP / CPS) : grid, grid2 = SP ? max(1, grid - grid1) : grid;
  const bool pdl = d->pdl != 0;
  cudaError_t err;
  if constexpr (FU) {  // fc1 and fc2 in one cooperative grid; the combine follows
    if (d->barrier == 0 || d->counters != 0) return cudaErrorInvalidValue;
    g2.barrier = reinterpret_cast<unsigned*>(d->barrier);
    err = launch_fused<G, CPS, D, RB, TA, D2, TA2>(g1, g2, grid, stream);
    if (err != cudaSuccess) return err;
    return launch_combine(d, g1, stream, pdl);
  }
  if constexpr (DY) {  // dynamic items: fc1's and fc2's counters
    if (d->sched == 0 || d->counters != 0) return cudaErrorInvalidValue;
    g1.sched = reinterpret_cast<int*>(d->sched);
    g2.sched = g1.sched + 2;
  }
  err = launch_gemm<IT1, G, D, RB, CPS, true, L2, false, TA, DY & 1>(g1, grid1, stream, false, SP > 0);
  if (err != cudaSuccess) return err;
  if (d->counters != 0) {  // fc2 with the fused combine: two launches
    g2.top_k = static_cast<int>(d->top_k);
    g2.topk_w = reinterpret_cast<const float*>(d->topk_w);
    g2.b2 = reinterpret_cast<const __nv_bfloat16*>(d->b2);
    g2.ld_b2 = d->ld_b2;
    g2.final_out = reinterpret_cast<__nv_bfloat16*>(d->out);
    g2.ld_final = d->ld_out;
    g2.hidden = static_cast<int>(d->hidden);
    g2.out_scale = static_cast<float>(d->out_scale);
    g2.counters = reinterpret_cast<int*>(d->counters);
    return launch_gemm<IT2, G, D2, RB, CPS, false, 0, true, TA2, 0>(g2, grid2, stream, pdl, SP > 0);
  }
  err = launch_gemm<IT2, G, D2, RB, CPS, false, 0, false, TA2, SP ? 0 : (DY >> 1) & 1>(g2, grid2, stream, pdl, SP > 0);
  if (err != cudaSuccess) return err;
  return launch_combine(d, g1, stream, pdl);
}

// A wide-items variant (WT > 0, decode_w4a16_wide.cuh): fc1 and fc2 as wide_kernel, or (FU) both as one grid
// (wide_one_kernel; DY = 2: fc2's items claimed at run time, 3: fc1's as well), or (WG >= 5) as ws_kernel
// (decode_w4a16_ws.cuh), then the combine (PDL). No fused combine.
template <int WT, int CPS, int D, int WG, int G, int IT1, int IT2, int FU, int DY>
cudaError_t launch_wide(const DecodeArgs* d, cudaStream_t stream) {
  if (d->counters != 0 || d->barrier != 0 || d->sched != 0 || (d->ready != 0) != (FU != 0))
    return cudaErrorInvalidValue;
  // WG >= 3 addresses the activation rows by 32-bit element offsets (ActRef)
  if (WG >= 3 && (d->m * d->ld_x >= (int64_t{1} << 31) || d->m * d->top_k * d->ld_h >= (int64_t{1} << 31)))
    return cudaErrorInvalidValue;
  GemmArgs g1, g2;
  gemm_args(d, g1, g2);
  const int grid = static_cast<int>(d->grid);
  const bool pdl = d->pdl != 0;
  if constexpr (WG == 7) {  // warp-specialized, the decode on the WT consumer warpgroups
    cudaError_t err = launch_wsr_gemm<WT, D, true>(g1, grid, stream, false);
    if (err != cudaSuccess) return err;
    err = launch_wsr_gemm<WT, D, false>(g2, grid, stream, pdl);
    if (err != cudaSuccess) return err;
    return launch_combine(d, g1, stream, pdl);
  } else if constexpr (WG >= 5) {  // warp-specialized: WT consumer warpgroups, 1 (WG = 5) or 2 (6) producer warpgroups
    cudaError_t err = launch_ws_gemm<WT, D, true, WG == 6 ? 2 : 1>(g1, grid, stream, false);
    if (err != cudaSuccess) return err;
    err = launch_ws_gemm<WT, D, false, WG == 6 ? 2 : 1>(g2, grid, stream, pdl);
    if (err != cudaSuccess) return err;
    return launch_combine(d, g1, stream, pdl);
  } else if constexpr (FU) {
    g1.ready = g2.ready = reinterpret_cast<int*>(d->ready);
    cudaError_t err = launch_wide_one<WT, D, CPS, WG, G, IT1, IT2, DY>(g1, g2, grid, stream);
    if (err != cudaSuccess) return err;
    return launch_combine(d, g1, stream, pdl);
  } else {
    cudaError_t err = launch_wide_gemm<WT, D, CPS, true, WG, G, IT1>(g1, grid, stream, false);
    if (err != cudaSuccess) return err;
    err = launch_wide_gemm<WT, D, CPS, false, WG, G, IT2>(g2, grid, stream, pdl);
    if (err != cudaSuccess) return err;
    return launch_combine(d, g1, stream, pdl);
  }
}

template <int G, int CPS, int D, int RB, int L2, int TA, int D2, int TA2, int FU, int DY, int SP, int IT1, int IT2, int WT,
          int WG>
cudaError_t launch_variant(const DecodeArgs* d, cudaStream_t stream) {
  static_assert(WG == 0 || WT > 0, "wgmma runs the wide items");
  if constexpr (WT > 0) {
    // (IT1, IT2: a warp's tiles -- fc1 4 = a layout group, 2 = half of one; fc2 4 = two groups, 2 = one)
    static_assert(WG != 4 && (WG >= 5 ? G == 16 && CPS == 1 && (WT == 2 || WT == 4) &&
                                             (D == 4 || (WG == 7 && D >= 3 && D <= 6)) && (WG != 6 || WT == 2) &&
                                             IT1 == kNT1 && IT2 == 2 * kNT2 && FU == 0 && DY == 0 && SP == 0 && D2 == D
                                       : (G == (WG == 3 ? 16 : 4 * WT) || (WG == 0 && G == 2 * WT)) && D2 == D &&
                                             (IT1 == kNT1 || (WG == 0 && IT1 == kNT1 / 2)) &&
                                             (IT2 == 2 * kNT2 || (WG == 0 && IT2 == kNT2)) &&
                                             (FU == 0 || (FU == 1 && WG == 0)) && (DY == 0 || ((DY == 2 || DY == 3) && FU == 1)) &&
                                             SP == 0),
                  "a wide variant's table entry");
    return launch_wide<WT, CPS, D, WG, G, IT1, IT2, FU, DY>(d, stream);
  } else {
    return launch_forward<G, CPS, D, RB, L2, TA, D2, TA2, FU, DY, SP, IT1, IT2>(d, stream);
  }
}

// Shared-memory bytes of one CTA of fc1 (gemm = 1), fc2 (2) or the larger of the two (0).
template <int G, int CPS, int D, int RB, int TA, int D2, int TA2, int IT1, int IT2, int WT, int WG>
int64_t variant_smem(int E, int P, int64_t gemm) {
  if constexpr (WG == 7) {
    return wsr_smem_bytes<WT, D>(E, P);
  } else if constexpr (WG >= 5) {
    return ws_smem_bytes<WT, D, WG == 6 ? 2 : 1>(E, P);
  } else if constexpr (WT > 0) {
    return wide_smem_bytes<WT, D, WG, CPS, G>(E, P);
  } else {
    const int64_t s1 = smem_bytes<IT1, G, D, RB, TA>(E, P), s2 = smem_bytes<IT2, G, D2, RB, TA2>(E, P);
    return gemm == 1 ? s1 : gemm == 2 ? s2 : max(s1, s2);
  }
}

extern "C" {

// 0 = success, otherwise a cudaError_t (cudaErrorInvalidValue for arguments outside the kernel's range).
int mxfp4lab_decode_w4a16_forward(const DecodeArgs* d, int64_t stream_handle) {
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const int64_t P = d->m * d->top_k;
  if (P <= 0 || P > kMaxWidePairs || d->num_experts <= 0 || d->num_experts > kMaxExperts || d->hidden % 8 != 0 ||
      d->grid <= 0)
    return static_cast<int>(cudaErrorInvalidValue);
  switch (d->variant) {
#define X(ID, G, CPS, D, RB, L2, TA, D2, TA2, FU, DY, SP, IT1, IT2, WT, WG) \
  case ID:                                                           \
    return static_cast<int>(launch_variant<G, CPS, D, RB, L2, TA, D2, TA2, FU, DY, SP, IT1, IT2, WT, WG>(d, stream));
    MXFP4LAB_DECODE_VARIANTS(X)
#undef X
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

// Shared-memory bytes of one CTA of a variant's fc1 (gemm = 1), fc2 (2) or the larger of the two (0), or -1 for an
// unknown variant.
int64_t mxfp4lab_decode_w4a16_smem_bytes(int64_t variant, int64_t num_experts, int64_t num_pairs, int64_t gemm) {
  int E = static_cast<int>(num_experts), P = static_cast<int>(num_pairs);
  switch (variant) {
#define X(ID, G, CPS, D, RB, L2, TA, D2, TA2, FU, DY, SP, IT1, IT2, WT, WG)                                   \
  case ID:                                                                                             \
    return variant_smem<G, CPS, D, RB, TA, D2, TA2, IT1, IT2, WT, WG>(E, P, gemm);
    MXFP4LAB_DECODE_VARIANTS(X)
#undef X
    default: return -1;
  }
}

// The variant table as (G / 10)*1e18 + WG*1e17 + WT*1e16 + IT2*1e15 + IT1*1e14 + SP*1e13 + DY*1e12 + FU*1e11 + TA2*1e10 + D2*1e8 (two digits) + TA*1e7 + L2*1e6 + ID*1e4 +
// (G % 10)*1000 + CPS*100 + D*10 + RB per entry, for the host to check.
int64_t mxfp4lab_decode_w4a16_variant(int64_t index) {
  const int64_t table[] = {
#define X(ID, G, CPS, D, RB, L2, TA, D2, TA2, FU, DY, SP, IT1, IT2, WT, WG)                                       \
  G / 10 * 1000000000000000000LL + WG * 100000000000000000LL + WT * 10000000000000000LL + IT2 * 1000000000000000LL + IT1 * 100000000000000LL + SP * 10000000000000LL + DY * 1000000000000LL + FU * 100000000000LL + TA2 * 10000000000LL + D2 * 100000000LL + \
      TA * 10000000LL + \
      L2 * 1000000 + ID * 10000 + G % 10 * 1000 + CPS * 100 + D * 10 + RB,
      MXFP4LAB_DECODE_VARIANTS(X)
#undef X
  };
  return index >= 0 && index < static_cast<int64_t>(sizeof(table) / sizeof(table[0])) ? table[index] : -1;
}

// 1 in the traced build (-DMXFP4LAB_DECODE_TRACE: DecodeArgs::trace is written), else 0.
int64_t mxfp4lab_decode_w4a16_traced() {
#ifdef MXFP4LAB_DECODE_TRACE
  return 1;
#else
  return 0;
#endif
}

// Constants the Python layout must agree with: tiles per fc1 item * 100 + tiles per fc2 item.
int64_t mxfp4lab_decode_w4a16_tiles_per_group() { return kNT1 * 100 + kNT2; }

// The digest of this source file the library was built from (build_library defines it), or "" when built by hand:
// the host refuses a library built from other source, whose kernels would not be the ones in the file.
#ifndef MXFP4LAB_DECODE_SOURCE_DIGEST
#define MXFP4LAB_DECODE_SOURCE_DIGEST ""
#endif
const char* mxfp4lab_decode_w4a16_source_digest() { return MXFP4LAB_DECODE_SOURCE_DIGEST; }

}  // extern "C"
