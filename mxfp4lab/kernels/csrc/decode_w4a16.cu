// mxfp4lab decode_w4a16: a weight-streaming W4A16 MXFP4 MoE forward for Hopper (sm_90a), made for
// decode (few tokens per expert), where an MoE layer is bound by the bytes of the active experts.
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

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kChunkK = 64;       // K elements per chunk
constexpr int kTileBytes = 512;   // one 16-row tile x one chunk: 32 lanes x 16 B
constexpr int kScaleBytes = 32;   // one tile x one chunk: 16 rows x 2 E8M0 groups
constexpr int kMaxExperts = 1024;
constexpr int kMaxPairs = 8192;   // (token, slot) pairs one call routes in shared memory
constexpr int kMaxWidePairs = 32768;  // the same for wide items (their ring leaves more shared memory to the lists)
constexpr int kNT1 = 4;           // 16-row tiles per fc1 item: 2 up + 2 gate tiles of the same rows
constexpr int kNT2 = 2;           // 16-row tiles per fc2 item

// Trace record of one CTA (traced build only): ten uint64 per CTA, global timer in ns (0 = not reached).
// GEMM CTAs: entry, routing done, inputs ready (fc2: after griddepcontrol.wait; fc1: = routing done),
// warp 0's first step landed in shared memory, warp 0's last step consumed, exit, SM id, items, the routing's
// first part done (the pair ids loaded and counted per expert), and every warp's partial sums of the last item in
// shared memory (the slowest warp's last step consumed).
// Combine blocks: entry, -, inputs ready, -, -, exit, SM id, -, -, -.
enum TraceSlot { kTraceEntry, kTraceRouted, kTraceReady, kTraceFirst, kTraceStreamed, kTraceExit, kTraceSm,
                 kTraceItems, kTraceCounted, kTraceGathered, kTraceSlots };

// ------------------------------------------------------------------------------------------------
// Arguments (filled by the host launcher; one struct for both GEMM kernels)
// ------------------------------------------------------------------------------------------------
struct GemmArgs {
  const __nv_bfloat16* act;  // B operand rows: fc1 x [M, ld_act]; fc2 h [P, ld_act]
  int64_t ld_act;
  int act_row_div;           // act row of pair p = p / act_row_div (fc1: top_k; fc2: 1)
  int k_valid;               // activation columns >= k_valid read as zero
  const int32_t* topk_ids;   // [M, top_k] global expert ids
  int num_pairs;             // M * top_k
  int expert_offset;
  int num_experts;           // local experts
  const uint8_t* wq;         // [E, groups, chunks, NT * 544 B] (decode layout: weights, then scales)
  int groups;                // tile groups per expert
  int chunks;                // K chunks of 64
  int out_rows;              // real output columns (fc1: I, fc2: H); rows past it are padding
  // epilogue
  const __nv_bfloat16* bias;  // fc1: [E, 2, bias_ld] (up, gate) or null; fc2: unused
  int64_t bias_ld;
  const float* alpha;         // [E] or null (then alpha_s)
  const float* beta;
  const float* limit;
  float alpha_s, beta_s, limit_s;
  int use_limit;
  __nv_bfloat16* out;  // fc1: h [P, ld_out]; fc2: y [P, ld_out]
  int64_t ld_out;
  // L2 staging (fc1 only; see gemm_kernel): fc2's weights, prefetched into L2 while fc1 streams its own
  const uint8_t* pf_wq;  // fc2's decode-layout weights, or null (no prefetch)
  int pf_groups, pf_chunks;
  int64_t pf_bytes;      // at most this many bytes per CTA
  // fused combine (fc2 only; see gemm_kernel's CMB)
  int top_k;
  const float* topk_w;       // [M, top_k]
  const __nv_bfloat16* b2;   // [E, ld_b2] or null
  int64_t ld_b2;
  __nv_bfloat16* final_out;  // [M, ld_final]
  int64_t ld_final;
  int hidden;                // real output columns of final_out
  float out_scale;           // routed scaling factor (see final_bf16)
  int* counters;             // [M, groups] arrivals per (token, tile group); all zero between calls
  unsigned* barrier;         // fused launch: the grid barrier's counter and generation (fc2's args)
  int* sched;                // dynamic items (DY): [next item, CTAs done], zero between calls
  unsigned long long* trace;  // traced build: [gridDim.x, kTraceSlots] (see TraceSlot), or null
};

struct CombineArgs {
  const __nv_bfloat16* y;   // [P, ld_y]
  int64_t ld_y;
  const int32_t* topk_ids;  // [M, top_k]
  const float* topk_w;      // [M, top_k]
  const __nv_bfloat16* b2;  // [E, ld_b2] or null
  int64_t ld_b2;
  int m, top_k, hidden, expert_offset, num_experts;
  __nv_bfloat16* out;  // [M, ld_out]
  int64_t ld_out;
  float out_scale;     // routed scaling factor (see final_bf16)
  unsigned long long* trace;  // traced build: [gridDim.x, kTraceSlots], or null
};

// ------------------------------------------------------------------------------------------------
// Device helpers
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; src_bytes = 0 writes zeros (nothing is read).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n) : "memory");
}
// The same copy with an L2 cache-eviction policy (createpolicy), for weights read exactly once.
__device__ __forceinline__ void cp_async16_hint(uint32_t dst, const void* src, uint64_t policy) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, 16, %2;\n" ::"r"(dst), "l"(src), "l"(policy)
               : "memory");
}
__device__ __forceinline__ uint64_t policy_evict_first() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p));
}
__device__ __forceinline__ void prefetch_l1(const void* p) {
  asm volatile("prefetch.global.L1 [%0];\n" ::"l"(p));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}
__device__ __forceinline__ uint2 lds64(uint32_t addr) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0,%1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "r"(addr));
  return v;
}
__device__ __forceinline__ uint32_t lds8(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.u8 %0, [%1];\n" : "=r"(v) : "r"(addr));
  return v;
}

#ifdef MXFP4LAB_DECODE_TRACE
__device__ __forceinline__ unsigned long long global_timer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t)::"memory");
  return t;
}
__device__ __forceinline__ unsigned sm_id() {
  unsigned s;
  asm volatile("mov.u32 %0, %%smid;\n" : "=r"(s));
  return s;
}
// Thread 0 stamps slot `slot` of its CTA's record (the caller decides which thread calls).
#define MXFP4LAB_TRACE(args, slot, value)                                                          \
  do {                                                                                             \
    if ((args).trace) (args).trace[static_cast<int64_t>(blockIdx.x) * kTraceSlots + (slot)] = (value); \
  } while (0)
#else
#define MXFP4LAB_TRACE(args, slot, value) \
  do {                                    \
  } while (0)
#endif
#define MXFP4LAB_STAMP(args, slot) MXFP4LAB_TRACE(args, slot, global_timer())

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdl_launch_dependents() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

// One word = 8 E2M1 codes of a lane's A fragment (layout in the file header) -> four bf16x2
// registers holding 2^-126 * v (sign at bit 15 of each half, magnitude e1 e0 m at bits 8..6). Each
// register's bits sit in the word where one rotation puts them (r3: two), so the decode is 5 LOP3, two
// funnel shifts (ALU pipe) and two plain left shifts (the compiler's IMAD.SHL, FMA pipe).
__device__ __forceinline__ void decode_word(uint32_t q, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  constexpr uint32_t kField = 0x81C081C0u, kM = 0x00400040u;
  r0 = q & kField;
  r1 = ((q >> 4) | (q << 28)) & kField;
  r2 = (q << 6) & kField;
  r3 = ((q << 2) & kM) | (((q >> 6) | (q << 26)) & (kField ^ kM));
}

__device__ __forceinline__ uint32_t hmul2_bf16(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// bf16x2 with 2^(s-1) in both halves (s: an E8M0 byte <= 128; the host checks it).
__device__ __forceinline__ uint32_t scale_factor(uint32_t s) { return (s + 126u) * 0x00800080u; }

__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float bf16_round(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// One slot's term of the combine, the same instruction in combine_kernel and the fused combine.
__device__ __forceinline__ float combine_step(float acc, float w, float y, float b) { return __fmaf_rn(w, y + b, acc); }
// A token's output: the fp32 sum rounded to bf16, then times the routed scaling factor s in fp32 and rounded again:
// the bits of the layer output scaled after the expert kernel, `(out.float() * s).to(bfloat16)`, without that
// launch (s = 1: the bf16 sum itself, which the second rounding leaves as it is).
__device__ __forceinline__ __nv_bfloat16 final_bf16(float acc, float s) {
  return __float2bfloat16_rn(__fmul_rn(bf16_round(acc), s));
}

// Slots of token m routed to this shard's experts (the arrivals its fused combine waits for).
__device__ __forceinline__ int valid_slots(const int32_t* ids, int m, int top_k, int expert_offset, int num_experts) {
  int n = 0;
  for (int j = 0; j < top_k; ++j)
    n += static_cast<unsigned>(ids[m * top_k + j] - expert_offset) < static_cast<unsigned>(num_experts);
  return n;
}

// ------------------------------------------------------------------------------------------------
// Routing in shared memory: per local expert the number of pairs, the pair list, and the item offsets.
// ------------------------------------------------------------------------------------------------
struct Routing {
  int* count;   // [E]
  int* start;   // [E + 1] offsets into plist
  int* istart;  // [E + 1] item offsets
  int* plist;   // [P]
};

// Block-wide exclusive scans of a pair count per expert (a, length n <= kMaxExperts, in shared memory) and of
// its items b = ceil(a / chunk) * groups (computed here, not stored); writes out_a[0..n], out_b[0..n] (element
// n = total). `tmp` holds 2 * kWarps ints.
__device__ void block_scan2(const int* in_a, int chunk, int groups, int n, int* out_a, int* out_b, int* tmp) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int per = (n + kThreads - 1) / kThreads;  // consecutive elements per thread
  const int lo = min(n, tid * per), hi = min(n, lo + per);
  auto items = [&](int c) { return (c + chunk - 1) / chunk * groups; };
  int sa = 0, sb = 0;
  for (int i = lo; i < hi; ++i) { sa += in_a[i]; sb += items(in_a[i]); }
  int ia = sa, ib = sb;  // inclusive warp scan
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    int va = __shfl_up_sync(0xffffffffu, ia, o), vb = __shfl_up_sync(0xffffffffu, ib, o);
    if (lane >= o) { ia += va; ib += vb; }
  }
  if (lane == 31) { tmp[warp] = ia; tmp[kWarps + warp] = ib; }
  __syncthreads();
  int wa = 0, wb = 0;
  for (int w = 0; w < warp; ++w) { wa += tmp[w]; wb += tmp[kWarps + w]; }
  int ea = wa + ia - sa, eb = wb + ib - sb;  // exclusive prefix of this thread's first element
  for (int i = lo; i < hi; ++i) {
    const int c = in_a[i];
    out_a[i] = ea; out_b[i] = eb;
    ea += c; eb += items(c);
  }
  if (tid == kThreads - 1) { out_a[n] = ea; out_b[n] = eb; }
  __syncthreads();
}

// At most 32 pairs (decode at M <= 32 / top_k): the same arrays as build_routing below, without its count, scan
// and list passes and their five barriers. Each warp that holds experts (thread x: expert x) reads the pairs
// into registers (lane p: pair p's expert and its rank among the lanes routed to the same expert,
// __match_any_sync) and fills its experts from the P lanes' keys (P independent shuffles, no dependent chain):
// count[x] = pairs of x, start[x] = pairs of experts below x, istart[x] = groups * the pairs of experts below x
// whose rank is a multiple of token_chunk (each opens a token chunk: ceil(count / token_chunk) per expert). Warp
// 0 lists the pairs: a pair's slot is the start of its expert plus its rank (pair order inside an expert, as in
// the walk). One block barrier. (Every warp computing it all -- 32 shuffles each, 24 warps per SM -- took longer
// than the block-wide build.)
__device__ void build_routing_warp(const GemmArgs& a, const Routing& r, int token_chunk, int groups) {
  const int lane = threadIdx.x & 31, E = a.num_experts, P = a.num_pairs;
  if ((threadIdx.x & ~31u) < static_cast<unsigned>(E) || E > kThreads) {  // warp-uniform: warps with experts
    int e = lane < P ? a.topk_ids[lane] - a.expert_offset : -1;
    const bool mine = static_cast<unsigned>(e) < static_cast<unsigned>(E);
    if (!mine) e = -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    // key: expert * 2 + (opens a token chunk); a lane without a pair of this shard sorts above every expert
    const int key = mine ? e * 2 + (rank % token_chunk == 0) : 2 * kMaxExperts + 2;
    for (int x0 = 0; x0 < E; x0 += kThreads) {
      const int x = x0 + static_cast<int>(threadIdx.x);
      const int xk = 2 * x, mk = 2 * e;  // keys below xk: experts below x; below mk: below this lane's expert
      int before = 0, chunks = 0, own = 0, mine_before = 0;
#pragma unroll 4
      for (int p = 0; p < P; ++p) {
        const int k = __shfl_sync(0xffffffffu, key, p);
        before += k < xk;
        chunks += k < xk && (k & 1);
        own += (k >> 1) == x;
        mine_before += k < mk;
      }
      if (x < E) {
        r.count[x] = own;
        r.start[x] = before;
        r.istart[x] = chunks * groups;
        if (x == E - 1) {
          r.start[E] = before + own;
          r.istart[E] = (chunks + (own + token_chunk - 1) / token_chunk) * groups;
        }
      }
      if (x0 == 0 && threadIdx.x < 32 && mine) r.plist[mine_before + rank] = lane;
    }
  }
  if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceCounted);
  __syncthreads();
}

// items(e) = ceil(count(e) / token_chunk) * groups. `spare`: shared memory that is free while the routing is
// built (the copy ring and the partial sums), `spare_ints` ints of it.
__device__ void build_routing(const GemmArgs& a, Routing& r, int* scratch, int token_chunk, int groups, int* spare,
                              int spare_ints) {
  const int E = a.num_experts, P = a.num_pairs;
  int* fill = scratch;            // [E]  (scratch + E .. 2E: free)
  int* tmp = scratch + 2 * E;     // [2 * kWarps]
  // Each thread's first pair id is read before the counts are zeroed: at the start of a forward the ids come
  // from DRAM, and that latency now overlaps the zeroing and its barrier instead of following them.
  const int e_first = static_cast<int>(threadIdx.x) < P ? a.topk_ids[threadIdx.x] - a.expert_offset : -1;
  for (int e = threadIdx.x; e < E; e += kThreads) { r.count[e] = 0; fill[e] = 0; }
  __syncthreads();
  if (static_cast<unsigned>(e_first) < static_cast<unsigned>(E)) atomicAdd(&r.count[e_first], 1);
  for (int p = threadIdx.x + kThreads; p < P; p += kThreads) {
    int e = a.topk_ids[p] - a.expert_offset;
    if (static_cast<unsigned>(e) < static_cast<unsigned>(E)) atomicAdd(&r.count[e], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceCounted);
  block_scan2(r.count, token_chunk, groups, E, r.start, r.istart, tmp);
  // Pair lists in pair order (the same in every CTA and in both GEMMs, so token chunks of one expert
  // never overlap across CTAs). Up to kWalkPairs pairs: warp 0 walks them 32 at a time; lanes routed to the
  // same expert rank themselves with __match_any_sync, and the group's last lane advances the expert's fill
  // count. More pairs (where a per-warp count of every expert fits the spare shared memory): every warp ranks
  // its 32 pairs of a 256-pair chunk the same way at once, the group's first lane stores the group's size in
  // hist[warp][e], and a pair's slot adds the sizes of its expert's groups in the chunk's earlier warps -- the
  // same lists, in a few barriers per 256 pairs instead of 8 dependent warp steps (4-5 us at 256 pairs).
  constexpr int kWalkPairs = 64;
  if (P > kWalkPairs && kWarps * E <= spare_ints) {
    int* hist = spare;  // [kWarps][E]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned lt = (1u << lane) - 1u;
    for (int c0 = 0; c0 < P; c0 += kThreads) {
      for (int i = threadIdx.x; i < kWarps * E; i += kThreads) hist[i] = 0;
      __syncthreads();
      const int p = c0 + static_cast<int>(threadIdx.x);
      int e = p < P ? a.topk_ids[p] - a.expert_offset : -1;
      const bool mine = static_cast<unsigned>(e) < static_cast<unsigned>(E);
      if (!mine) e = -1;
      const unsigned peers = __match_any_sync(0xffffffffu, e);
      const int rank = __popc(peers & lt), size = __popc(peers);
      if (mine && rank == 0) hist[warp * E + e] = size;
      __syncthreads();
      if (mine) {
        int base = fill[e];
        for (int w = 0; w < warp; ++w) base += hist[w * E + e];
        r.plist[r.start[e] + base + rank] = p;
      }
      __syncthreads();  // every pair of the chunk has read fill (and hist) before they change
      if (mine && rank == 0) atomicAdd(&fill[e], size);
    }
  } else if (threadIdx.x < 32) {
    const unsigned lt = (1u << threadIdx.x) - 1u;
    for (int p0 = 0; p0 < P; p0 += 32) {
      const int p = p0 + threadIdx.x;
      int e = p < P ? a.topk_ids[p] - a.expert_offset : -1;
      bool mine = static_cast<unsigned>(e) < static_cast<unsigned>(E);
      if (!mine) e = -1;
      const unsigned peers = __match_any_sync(0xffffffffu, e);
      if (mine) {
        const int base = fill[e];
        r.plist[r.start[e] + base + __popc(peers & lt)] = p;
      }
      __syncwarp();
      if (mine && (peers >> threadIdx.x) == 1u) fill[e] += __popc(peers);  // the group's highest lane
      __syncwarp();
    }
  }
  __syncthreads();
}

// Item -> (expert, token chunk, tile group); binary search over istart.
struct Item {
  int e, tok0, ntok, group;
};
__device__ __forceinline__ Item find_item(const Routing& r, int E, int item, int token_chunk, int groups) {
  int lo = 0, hi = E;  // largest e with istart[e] <= item  (istart non-decreasing, istart[E] > item)
  while (hi - lo > 1) {
    int mid = (lo + hi) >> 1;
    if (r.istart[mid] <= item) lo = mid; else hi = mid;
  }
  Item it;
  it.e = lo;
  int rel = item - r.istart[lo];
  int tc = rel / groups;
  it.group = rel - tc * groups;
  it.tok0 = r.start[lo] + tc * token_chunk;
  it.ntok = min(token_chunk, r.count[lo] - tc * token_chunk);
  return it;
}

// L2 staging, called by fc1 right after routing (bit 1), or once its CTA has consumed its last step (bit 4:
// late, when this CTA's own DRAM reads are done and while it reduces, stores and leaves; an fc1 CTA without
// items at once): prefetch into L2 the weights that fc2's CTA of the same index will stream first (fc2's
// weights do not depend on fc1's output, so their DRAM reads can overlap fc1's instead of following it). fc2
// enumerates items like fc1 with its own tile groups: expert e starts at item istart[e] / groups1 * groups2
// (istart counts token chunks x fc1 groups). Items of later token chunks read the weights of the first chunk's
// item and are skipped. At most a.pf_bytes per CTA; a line is 128 bytes; plain (evict_normal) prefetches, so
// nothing stays pinned in L2 after the call.
__device__ void prefetch_fc2_weights(const GemmArgs& a, const Routing& r, int groups1) {
  constexpr int kStep2 = kNT2 * (kTileBytes + kScaleBytes);
  const int E = a.num_experts, g2 = a.pf_groups;
  const int n2 = r.istart[E] / groups1 * g2;
  const int first = static_cast<int>((static_cast<int64_t>(blockIdx.x) * n2) / gridDim.x);
  const int last = static_cast<int>((static_cast<int64_t>(blockIdx.x + 1) * n2) / gridDim.x);
  const int64_t item_bytes = static_cast<int64_t>(a.pf_chunks) * kStep2;
  int64_t budget = a.pf_bytes;
  for (int item = first; item < last && budget > 0; ++item) {
    int lo = 0, hi = E;  // largest e with fc2's first item of e <= item
    while (hi - lo > 1) {
      int mid = (lo + hi) >> 1;
      if (r.istart[mid] / groups1 * g2 <= item) lo = mid; else hi = mid;
    }
    const int rel = item - r.istart[lo] / groups1 * g2;
    if (rel >= g2) continue;  // a later token chunk: the same weights as item - g2
    const uint8_t* base = a.pf_wq + (static_cast<int64_t>(lo) * g2 + rel) * item_bytes;
    const int64_t n = min(item_bytes, budget);
    for (int64_t off = threadIdx.x * 128; off < n; off += kThreads * 128) prefetch_l2(base + off);
    if (threadIdx.x == 0) prefetch_l2(base + n - 1);  // the block need not start on a line
    budget -= n;
  }
}

// Staging bit 8 (fc1): threads 0..4 of a CTA prefetch into L1 what the SwiGLU epilogue of the item `it` reads
// besides the partial sums -- its rows of the up and gate biases (rows of the item: `rows`, from the item's tile
// group) and the expert's alpha, beta and limit where they are per expert -- so that their DRAM latency overlaps
// the item's streaming instead of following it (at M = 1 each CTA has one item, and the epilogue of the last
// fc1 CTA is on the forward's critical path).
__device__ __forceinline__ void prefetch_epilogue_inputs(const GemmArgs& a, const Item& it, int rows) {
  const int t = threadIdx.x;
  if (t < 2 && a.bias) {
    const __nv_bfloat16* b = a.bias + (static_cast<int64_t>(it.e) * 2 + t) * a.bias_ld + it.group * rows;
    prefetch_l1(b);
    prefetch_l1(b + rows - 1);  // the rows may cross a line
  }
  const float* per_expert = t == 2 ? a.alpha : t == 3 ? a.beta : t == 4 ? a.limit : nullptr;
  if (per_expert) prefetch_l1(per_expert + it.e);
}

// ------------------------------------------------------------------------------------------------
// The GEMM kernel (fc1 with SwiGLU epilogue, or fc2)
// ------------------------------------------------------------------------------------------------
// TA: 0 = up to 8 G tokens per item, the activation slot holds 8 G token rows; 1..7 (G = 1) = up to TA
// tokens per item and only TA rows in the slot (lanes of tokens >= TA feed the MMA zeros without loading), so
// a ring stage is smaller and the ring can run deeper in the same shared memory (few tokens per expert).
template <int TA, int G>
constexpr int tokens_per_item() {
  static_assert(TA == 0 || (G == 1 && TA < 8), "compact token rows need one token group");
  return TA ? TA : 8 * G;
}

// An item's NT tiles and where they lie in the layout's tile groups of LT tiles (LT = kNT1 for fc1, kNT2 for fc2;
// mxfp4lab/layout/decode_w4a16.py). One step of a layout group is one contiguous block: LT tiles of 512 B, then LT x
// 32 scale bytes. A ring slot holds the item's NT tiles the same way (tile n at n * 512, its scales at NT * 512 +
// n * 32), whichever layout groups they come from, so the MMA loop does not depend on the mapping:
//   NT == LT     whole: item group = layout group.
//   NT == 2 LT   pair (fc2): item group q = layout groups 2q and 2q + 1 (64 output rows); tiles LT.. come from the
//                second group's block (chunks steps further); where the layer has an odd number of groups, the last
//                item reads its first group again (those rows are past the layer's and never stored). Half the items,
//                each with twice the tiles: the per-step work of a warp (copies, addresses, the loop) is spread over
//                twice the weights.
//   NT == LT / 2 half (fc1): item group i = half i & 1 of layout group i >> 1 (up tile h and gate tile LT/2 + h, 16
//                intermediate rows): half the accumulators, so that 16 tokens per item (G = 2) fit three CTAs per SM.
// Which tiles an item holds changes no sum: every tile's MMAs, warps and reduction order are those of the whole item.
template <int NT, int LT>
struct ItemTiles {
  static_assert(NT == LT || NT == 2 * LT || 2 * NT == LT, "an item is a layout group, two of them, or half of one");
  static constexpr bool kPair = NT == 2 * LT, kHalf = 2 * NT == LT;
  static constexpr int kLayoutTiles = LT;
  static constexpr int kLayoutStep = LT * (kTileBytes + kScaleBytes);  // one step of one layout group
  __host__ __device__ static constexpr int item_groups(int layout_groups) {
    return kPair ? (layout_groups + 1) / 2 : kHalf ? 2 * layout_groups : layout_groups;
  }
  __host__ __device__ static constexpr int layout_group(int item_group) {
    return kPair ? 2 * item_group : kHalf ? item_group >> 1 : item_group;
  }
  // the tile of its layout group's block that item tile n is (half: of the item's half 0; the half adds half_shift)
  __host__ __device__ static constexpr int layout_tile(int n) {
    return kPair ? n % LT : kHalf ? (n / (NT / 2)) * (LT / 2) + n % (NT / 2) : n;
  }
  // item tile n's bytes from the block's first tile (pair: within its own block)
  __host__ __device__ static constexpr int tile_src(int n) { return layout_tile(n) * kTileBytes; }
  // scale lane l (< 2 NT) fills bytes 16 l .. 16 l + 15 of the slot's scales: half (l & 1) of tile l / 2's 32 bytes
  __host__ __device__ static constexpr int scale_src(int lane) {
    return LT * kTileBytes + layout_tile(lane >> 1) * kScaleBytes + (lane & 1) * 16;
  }
  // half: the item's shift of its tile copies (half h: h * NT / 2 tiles further), and what its scale copies add to it
  __host__ __device__ static constexpr int half_shift(int item_group) { return kHalf ? (item_group & 1) * (NT / 2) * kTileBytes : 0; }
  __host__ __device__ static constexpr int half_scale(int shift) { return kHalf ? shift / kTileBytes * kScaleBytes - shift : 0; }
};

template <int NT, int G, int D, int RB, int TA>
struct Smem {
  static constexpr int TC = tokens_per_item<TA, G>();
  static constexpr int kStepBytes = NT * (kTileBytes + kScaleBytes);  // one step of one tile group
  static constexpr int kSlotB = TC * 128;  // TC token rows x 64 elements x 2 B
  static constexpr int kSlot = kStepBytes + kSlotB;
  static constexpr int kRing = kWarps * D * kSlot;
  static constexpr int kRed = kWarps * NT * 16 * TC * 4;  // fp32 partials [warp][tile][row][token]
  static constexpr int kFixed = kRing + RB * kRed;  // RB = 2: double-buffered partials, one barrier per item
};

// NT tiles per item. fc1 (FC1): tiles 0..NT/2-1 of a group are up rows, NT/2..NT-1 the gate rows of the
// same intermediate columns; fc2: NT consecutive 16-row tiles of the output. Weights of one
// (expert, tile group, chunk) are one contiguous block of kStepBytes (layout in decode_w4a16.py).
// L2: the staging bits (fc1 only; 0 compiles exactly the unstaged kernel).
// CMB (fc2 only): fused combine. After an item's y rows are stored and fenced, one thread per token of the
// item counts an arrival at (token, tile group); the arrival that completes the token's valid slots sums
// them (in slot order, reading y from L2) into final_out and resets the counter. Tokens with no slot in
// this shard get zeros.
// Grid barrier of the fused launch (one cooperative grid runs fc1, then fc2): a counter and a generation,
// zero before the first call and reusable (the last arrival resets the counter and bumps the generation).
// Thread 0 of each CTA reads the generation at kernel entry, arrives after its CTA's fc1 stores, and waits
// for the generation to change before fc2 reads h.
__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void grid_arrive(unsigned* bar, unsigned nblocks) {  // thread 0, after __syncthreads
  __threadfence();  // the CTA's stores (ordered before thread 0 by the barrier) are visible device-wide
  if (atomicAdd(&bar[0], 1u) == nblocks - 1) {
    bar[0] = 0;     // every CTA has arrived: nobody touches the counter again in this launch
    __threadfence();
    atomicAdd(&bar[1], 1u);
  }
}
__device__ __forceinline__ void grid_wait(const unsigned* bar, unsigned gen0) {  // thread 0
  while (load_acquire(&bar[1]) == gen0) __nanosleep(64);
}

// The body of one GEMM (a GEMM kernel, or one phase of the fused launch). SYNC: how fc2 waits for h:
// 0 = griddepcontrol.wait (fc1 was the previous launch), 1 = the fused launch's grid barrier (a.barrier, the
// generation thread 0 read at kernel entry in gen0).
// DY = 1: dynamic items. Instead of a fixed contiguous range, a CTA claims its items from a counter shared by
// the grid (a.sched[0], one atomicAdd per item, kAhead positions ahead so that the copy ring never waits for a
// claim), so CTAs whose SM streams faster take more items and the grid ends together. Every item is computed
// exactly as with static ranges (same warps, same reduction order): the same bits. The last CTA to finish
// resets the counter for the next call.
template <int NT, int G, int D, int RB, int CPS, bool FC1, int L2, bool CMB, int TA, int SYNC, int DY>
__device__ __forceinline__ void gemm_phase(const GemmArgs& a, uint8_t* smem, unsigned gen0) {
  static_assert(FC1 || L2 == 0, "L2 staging is done by fc1");
  static_assert((L2 & 4) == 0 || DY == 0, "late staging follows a static item range (its last item is known)");
  static_assert(!(FC1 && CMB), "the combine follows fc2");
  static_assert(SYNC == 0 || (!FC1 && L2 == 0 && !CMB), "the fused launch's fc2 waits on the grid barrier");
  static_assert(DY == 0 || (!CMB && SYNC == 0), "dynamic items use the fused combine's scratch (done_m)");
  using S = Smem<NT, G, D, RB, TA>;
  using T = ItemTiles<NT, FC1 ? kNT1 : kNT2>;
  static_assert(!(T::kPair && FC1) && !(T::kHalf && !FC1), "pairs of layout groups in fc2, halves in fc1");
  constexpr int TC = S::TC;  // tokens per item
  // bytes of one half (K 16t..16t+7 or +8..+15) of a token group's rows in the slot: [group][half][lane]
  constexpr int kActHalf = TA ? TA * 64 : 512;
  uint8_t* ring = smem;
  float* red_base = reinterpret_cast<float*>(smem + S::kRing);
  int* rbase = reinterpret_cast<int*>(smem + S::kFixed);
  const int E = a.num_experts;
  Routing rt;
  rt.count = rbase;
  rt.start = rbase + E;
  rt.istart = rbase + 2 * E + 1;
  int* scratch = rbase + 3 * E + 2;          // 2E + 2*kWarps ints
  rt.plist = scratch + 2 * E + 2 * kWarps;   // [P]
  const int groups = T::item_groups(a.groups);  // item groups per expert (a.groups: the layout's)

  if (threadIdx.x == 0) {
    MXFP4LAB_STAMP(a, kTraceEntry);
    MXFP4LAB_TRACE(a, kTraceSm, sm_id());
  }
  pdl_launch_dependents();  // the next launch's CTAs may start (and route) as this grid's SMs free up
  if (a.num_pairs <= 32) {
    build_routing_warp(a, rt, TC, groups);
  } else {
    build_routing(a, rt, scratch, TC, groups, reinterpret_cast<int*>(smem), S::kFixed / 4);
  }
  if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceRouted);
  if constexpr ((L2 & 1) != 0) {
    if (a.pf_wq != nullptr) prefetch_fc2_weights(a, rt, groups);
  }
  const int n_items = rt.istart[E];
  const int first = static_cast<int>((static_cast<int64_t>(blockIdx.x) * n_items) / gridDim.x);
  const int last = static_cast<int>((static_cast<int64_t>(blockIdx.x + 1) * n_items) / gridDim.x);
  // DY: claimed items by position in this CTA's sequence, a ring of 2 D (in the fused combine's done_m area)
  // Claims ahead: the item being consumed plus every item the copy cursor (D - 1 steps ahead) can reach, i.e.
  // 2 + (D - 2) / ncw (at most D, the claims ring holds 2 D): CTAs that claim more than they can start soon
  // would take items from CTAs that start later (at M = 1 a grid has about as many items as CTAs).
  // One item per CTA when the grid has at least as many CTAs as items (M = 1 on every shape): a CTA claims one
  // item and no more, and every later position holds "none" (n_items), so the first n_items CTAs to claim take
  // one each and the CTAs that start last -- fc2's, on the SM slots of fc1's slowest CTAs -- find none, instead
  // of the first half of the grid taking two each and running them one after the other.
  constexpr int kClaims = 2 * D;
  int kAhead = D;
  int* claims = rt.plist + a.num_pairs;
  const bool one_each = DY && n_items <= static_cast<int>(gridDim.x);
  if constexpr (DY) {
    kAhead = min(D, 2 + (D - 2) / max(1, a.chunks / kWarps));  // a.chunks / kWarps: the fewest chunks of a warp
    if (threadIdx.x == 0) {
      const int base = atomicAdd(a.sched, one_each ? 1 : kAhead);
      for (int k = 0; k < kAhead; ++k) claims[k] = one_each && k > 0 ? n_items : base + k;
    }
    __syncthreads();
  }
  const int my_items = DY ? (claims[0] < n_items ? 0x7fffffff : 0) : max(0, last - first);  // DY: until a claim runs out
  if constexpr ((L2 & 8) != 0) {  // fc1: the first item's epilogue inputs into L1 while its weights stream
    if (my_items > 0 && threadIdx.x < 5) prefetch_epilogue_inputs(a, find_item(rt, E, DY ? claims[0] : first, TC,
                                                                               groups), NT / 2 * 16);
  }
  auto finish_dynamic = [&]() {  // DY: count this CTA done; the last one resets the counters for the next call
    if constexpr (DY) {
      __syncthreads();
      if (threadIdx.x == 0) {
        __threadfence();  // this CTA's claims are visible before it counts itself done
        if (atomicAdd(a.sched + 1, 1) == static_cast<int>(gridDim.x) - 1) {
          __threadfence();
          a.sched[0] = 0;
          a.sched[1] = 0;
        }
      }
    }
  };
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, tl = lane & 3;
  const int c_begin = (warp * a.chunks) / kWarps, c_end = ((warp + 1) * a.chunks) / kWarps;
  const int ncw = c_end - c_begin;
  // DY: issued until the claims run out (a warp without chunks, K < 8 chunks, issues nothing)
  const int total_steps = DY ? (ncw > 0 ? my_items : 0) : my_items * ncw;
  const uint32_t wring = smem_addr(ring) + warp * D * S::kSlot;
  constexpr int kScaleLanes = NT * kScaleBytes / 16;  // lanes that copy the step's scale bytes
  constexpr bool kEvictFirst = (L2 & 2) != 0;
  uint64_t wpolicy = 0;
  if constexpr (kEvictFirst) wpolicy = policy_evict_first();
  // Where a lane's copies of one step come from (ItemTiles): item tile n at its 16 bytes of the step's first layout
  // tile + tile_src(n) (a pair item's tiles >= LT one layout group further), the scale lanes' 16 bytes at that + the
  // item's scale offset; each step one layout step further.
  const int64_t block_stride = static_cast<int64_t>(a.chunks) * T::kLayoutStep;  // the next layout group's block

  // ---- issue side: a cursor over this warp's steps (item, chunk) that only moves forward. Bit 0 of `parts`
  // copies a step's weights and scales into its ring slot, bit 1 its activation rows.
  struct Cursor {
    int left;                        // steps still to issue
    int item, c;                     // item being issued and its next chunk (c = ncw: "advance first")
    int pos;                         // DY: position of the item in this CTA's claims
    int second;                      // pair: bytes from the item's first layout group to its second (0: none, the
                                     // layer's last group: its tiles read the first group's again; rows never stored)
    int scales;                      // pair, half: bytes from w to this lane's scale bytes (scale lanes)
    const uint8_t* w;                // this lane's 16 bytes of the item's first step's first tile (a half: of its half)
    const __nv_bfloat16* act[G];     // this lane's activation row per token group, or null
  };
  Cursor cur{total_steps, first - 1, ncw, -1, 0, 0, nullptr, {}};
  auto issue_into = [&](Cursor& cs, int parts) {
    if (cs.left > 0) {
      --cs.left;
      if (cs.c == ncw) {
        if constexpr (DY) {
          cs.item = claims[++cs.pos % kClaims];
          if (cs.item >= n_items) {  // no more items: nothing left to issue
            cs.left = 0;
            return;
          }
        } else {
          ++cs.item;
        }
        cs.c = 0;
        Item it = find_item(rt, E, cs.item, TC, groups);
        const int lg = T::layout_group(it.group), shift = T::half_shift(it.group);
        cs.second = T::kPair && lg + 1 < a.groups ? static_cast<int>(block_stride) : 0;
        cs.scales = T::scale_src(lane) - lane * 16 + T::half_scale(shift) +
                    (T::kPair && lane >= 2 * T::kLayoutTiles ? cs.second : 0);
        cs.w = a.wq + ((static_cast<int64_t>(it.e) * a.groups + lg) * a.chunks + c_begin) * T::kLayoutStep + lane * 16 +
               shift;
#pragma unroll
        for (int gi = 0; gi < G; ++gi) {
          int j = gi * 8 + g;
          cs.act[gi] = j < it.ntok ? a.act + static_cast<int64_t>(rt.plist[it.tok0 + j] / a.act_row_div) * a.ld_act
                                   : nullptr;
        }
      }
      const uint32_t slot = wring + static_cast<unsigned>(total_steps - 1 - cs.left) % D * S::kSlot;
      if (parts & 1) {
        const uint8_t* src = cs.w + cs.c * T::kLayoutStep;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
          const uint8_t* from = src + (T::kPair && n >= T::kLayoutTiles ? cs.second : 0) + T::tile_src(n);
          if constexpr (kEvictFirst) {
            cp_async16_hint(slot + n * kTileBytes + lane * 16, from, wpolicy);
          } else {
            cp_async16(slot + n * kTileBytes + lane * 16, from, true);
          }
        }
        if (lane < kScaleLanes) {
          const uint8_t* from = src + (T::kPair || T::kHalf ? cs.scales : NT * kTileBytes);  // whole: tiles, then scales
          if constexpr (kEvictFirst) {
            cp_async16_hint(slot + NT * kTileBytes + lane * 16, from, wpolicy);
          } else {
            cp_async16(slot + NT * kTileBytes + lane * 16, from, true);
          }
        }
      }
      if (parts & 2) {
        const int col = (c_begin + cs.c) * kChunkK + 16 * tl;
#pragma unroll
        for (int gi = 0; gi < G; ++gi) {
          const __nv_bfloat16* ap = cs.act[gi];
          const __nv_bfloat16* base = ap ? ap + col : a.act;
#pragma unroll
          for (int h = 0; h < 2; ++h)
            // A lane without a token zero-fills (a copy of 0 source bytes makes no memory request). Pointing such
            // lanes at one shared row instead, to drop this predicate, made every forward 20-220 % slower on the
            // H200 (the grid's token-less lanes all reading one L2 line; docs/findings/2026-12-03-decode-item-tiles.md).
            if (TA == 0 || g < TC)  // slot layout [h][token group][lane of the rows][16 B]
              cp_async16(slot + S::kStepBytes + gi * 1024 + h * kActHalf + lane * 16, base + 8 * h,
                         ap != nullptr && col + 8 * h + 8 <= a.k_valid);
        }
      }
      ++cs.c;
    }
  };
  auto issue = [&]() {
    issue_into(cur, 3);
    cp_async_commit();  // every lane commits one group per step, even an empty one
  };

  // ---- prologue: the first D - 1 steps. fc2's weights do not depend on fc1, so fc2 copies the weights of
  // its first D - 1 steps BEFORE waiting for fc1 (its CTAs start as fc1's leave the SMs, so these copies
  // overlap fc1's tail), then their activation rows (h, fc1's output), and drains both.
  Cursor cur_act = cur;
  if constexpr (!FC1) {
#pragma unroll
    for (int q = 0; q < D - 1; ++q) issue_into(cur, 1);
    if constexpr (SYNC == 0) {
      pdl_wait();  // h (fc1's output) is complete and visible after this
    } else {
      if (threadIdx.x == 0) grid_wait(a.barrier, gen0);  // every CTA's fc1 stores are visible after this
      __syncthreads();
    }
  }
  if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceReady);
  if constexpr (CMB) {  // tokens none of whose slots is in this shard: zeros (nobody arrives for them)
    const int M = a.num_pairs / a.top_k;
    for (int m = blockIdx.x * kThreads + threadIdx.x; m < M; m += gridDim.x * kThreads) {
      if (valid_slots(a.topk_ids, m, a.top_k, a.expert_offset, E) != 0) continue;
      for (int c = 0; c < a.hidden; ++c) a.final_out[static_cast<int64_t>(m) * a.ld_final + c] = __float2bfloat16_rn(0.f);
    }
  }
  if (threadIdx.x == 0) MXFP4LAB_TRACE(a, kTraceItems, DY ? 0 : my_items);
  if (my_items <= 0) {
    if constexpr ((L2 & 4) != 0) {
      if (a.pf_wq != nullptr) prefetch_fc2_weights(a, rt, groups);
    }
    cp_async_wait<0>();
    finish_dynamic();
    if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceExit);
    return;
  }
  if constexpr (FC1) {
#pragma unroll
    for (int q = 0; q < D - 1; ++q) issue();
  } else {
#pragma unroll
    for (int q = 0; q < D - 1; ++q) issue_into(cur_act, 2);
    cp_async_commit();
    cp_async_wait<0>();  // steps 0 .. D-2 complete: the main loop's wait<D-1> then holds as in fc1
  }

  int q = 0;
  int it = 0;
  for (; it < my_items; ++it) {
    int item_idx = first + it, claim = 0;
    if constexpr (DY) {
      item_idx = claims[it % kClaims];
      if (item_idx >= n_items) break;
      // position it + kAhead ("none" where one item each); stored before this item's barrier
      if (threadIdx.x == 0) claim = one_each ? n_items : atomicAdd(a.sched, 1);
    }
    float acc[NT][G][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int gi = 0; gi < G; ++gi)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[n][gi][i] = 0.f;

    for (int j = 0; j < ncw; ++j, ++q) {
      issue();  // step q + D - 1
      cp_async_wait<D - 1>();
      __syncwarp();
#ifdef MXFP4LAB_DECODE_TRACE
      if (q == 0 && threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceFirst);
#endif
      const uint32_t sbase = wring + static_cast<unsigned>(q) % D * S::kSlot;
      uint4 bw[G][2];
#pragma unroll
      for (int gi = 0; gi < G; ++gi)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          bw[gi][h] = (TA == 0 || g < TC) ? lds128(sbase + S::kStepBytes + gi * 1024 + h * kActHalf + lane * 16)
                                          : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        uint4 w = lds128(sbase + n * kTileBytes + lane * 16);
        const uint32_t saddr = sbase + NT * kTileBytes + n * kScaleBytes + (g * 2 + (tl >> 1)) * 2;
        uint32_t f_lo = scale_factor(lds8(saddr)), f_hi = scale_factor(lds8(saddr + 1));  // rows g, g + 8
        uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          uint32_t r0, r1, r2, r3;
          decode_word(words[s], r0, r1, r2, r3);
          uint32_t a0 = hmul2_bf16(r0, f_lo), a1 = hmul2_bf16(r1, f_hi);
          uint32_t a2 = hmul2_bf16(r2, f_lo), a3 = hmul2_bf16(r3, f_hi);
#pragma unroll
          for (int gi = 0; gi < G; ++gi) {
            const uint4& b = bw[gi][s >> 1];
            uint32_t b0 = (s & 1) ? b.z : b.x, b1 = (s & 1) ? b.w : b.y;
            mma_bf16(acc[n][gi], a0, a1, a2, a3, b0, b1);
          }
        }
      }
      __syncwarp();
    }
#ifdef MXFP4LAB_DECODE_TRACE
    // this CTA's last item (DY: no claim after it); claims[it + 1] is not rewritten before the item's barrier
    const bool traced_last = DY ? claims[(it + 1) % kClaims] >= n_items : it == my_items - 1;
    if (traced_last && threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceStreamed);
#endif
    if constexpr ((L2 & 4) != 0) {  // late staging: this CTA's weights are all read
      if (it == my_items - 1 && a.pf_wq != nullptr) prefetch_fc2_weights(a, rt, groups);
    }

    // ---- epilogue: reduce the warps' partial sums (fixed order), then SwiGLU / store ------------
    // With RB = 2 the partials alternate between two buffers: the barrier below also tells every
    // thread that all threads finished reducing the item before last (they passed this barrier since).
    float* red = red_base + (RB == 2 ? (it & 1) : 0) * (S::kRed / 4);
    Item cur = find_item(rt, E, item_idx, TC, groups);
    if constexpr (DY) {
      if (threadIdx.x == 0) claims[(it + kAhead) % kClaims] = claim;  // published by the barrier below
    }
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int gi = 0; gi < G; ++gi) {
        float* base = red + ((warp * NT + n) * 16) * TC;
        int col = gi * 8 + 2 * tl;
        if (TA == 0 || col + 1 < TC) {  // (TA: the MMA's columns >= TA are zero tokens, not stored)
          base[g * TC + col] = acc[n][gi][0];
          base[g * TC + col + 1] = acc[n][gi][1];
          base[(g + 8) * TC + col] = acc[n][gi][2];
          base[(g + 8) * TC + col + 1] = acc[n][gi][3];
        } else if (col < TC) {
          base[g * TC + col] = acc[n][gi][0];
          base[(g + 8) * TC + col] = acc[n][gi][2];
        }
      }
    __syncthreads();
#ifdef MXFP4LAB_DECODE_TRACE
    if (traced_last && threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceGathered);
#endif
    if (FC1) {
      constexpr int RT = NT / 2;
      const float alpha = a.alpha ? a.alpha[cur.e] : a.alpha_s;
      const float beta = a.beta ? a.beta[cur.e] : a.beta_s;
      const float limit = a.limit ? a.limit[cur.e] : a.limit_s;
      for (int o = threadIdx.x; o < RT * 16 * TC; o += kThreads) {
        int tok = o / (RT * 16), rr = o % (RT * 16);
        int row = cur.group * RT * 16 + rr;
        if (tok >= cur.ntok || row >= a.out_rows) continue;
        int n = rr / 16, r16 = rr % 16;
        float up = 0.f, gate = 0.f;
        for (int w = 0; w < kWarps; ++w) {
          up += red[((w * NT + n) * 16 + r16) * TC + tok];
          gate += red[((w * NT + RT + n) * 16 + r16) * TC + tok];
        }
        up = bf16_round(up);
        gate = bf16_round(gate);
        if (a.bias) {
          const __nv_bfloat16* b = a.bias + static_cast<int64_t>(cur.e) * 2 * a.bias_ld;
          up += __bfloat162float(b[row]);
          gate += __bfloat162float(b[a.bias_ld + row]);
        }
        if (a.use_limit) {
          gate = fminf(gate, limit);
          up = fmaxf(fminf(up, limit), -limit);
        }
        float act = gate * (1.0f / (1.0f + expf(-gate * alpha))) * (up + beta);
        int p = rt.plist[cur.tok0 + tok];
        a.out[static_cast<int64_t>(p) * a.ld_out + row] = __float2bfloat16_rn(act);
      }
    } else {
      for (int o = threadIdx.x; o < NT * 16 * TC; o += kThreads) {
        int tok = o / (NT * 16), rr = o % (NT * 16);
        int row = cur.group * NT * 16 + rr;
        if (tok >= cur.ntok || row >= a.out_rows) continue;
        int n = rr / 16, r16 = rr % 16;
        float v = 0.f;
        for (int w = 0; w < kWarps; ++w) v += red[((w * NT + n) * 16 + r16) * TC + tok];
        int p = rt.plist[cur.tok0 + tok];
        a.out[static_cast<int64_t>(p) * a.ld_out + row] = __float2bfloat16_rn(v);
      }
      if constexpr (CMB) {
        int* done_m = rt.plist + a.num_pairs;  // [TC] token of each item slot whose combine this CTA does, or -1
        __threadfence();               // this thread's y stores are visible device-wide ...
        __syncthreads();               // ... before any arrival of this item is counted
        if (threadIdx.x < TC) {
          int m = -1;
          if (threadIdx.x < cur.ntok) {
            m = rt.plist[cur.tok0 + threadIdx.x] / a.top_k;
            int* c = a.counters + static_cast<int64_t>(m) * groups + cur.group;
            if (atomicAdd(c, 1) == valid_slots(a.topk_ids, m, a.top_k, a.expert_offset, E) - 1) {
              *c = 0;  // the last arrival: all slots of (m, group) are stored; ready for the next call
            } else {
              m = -1;
            }
          }
          done_m[threadIdx.x] = m;
        }
        __syncthreads();
        __threadfence();
        for (int o = threadIdx.x; o < NT * 16 * TC; o += kThreads) {
          int tok = o / (NT * 16), rr = o % (NT * 16);
          int row = cur.group * NT * 16 + rr;
          const int m = done_m[tok];
          if (m < 0 || row >= a.hidden) continue;
          float acc = 0.f;
          for (int j = 0; j < a.top_k; ++j) {
            const int e = a.topk_ids[m * a.top_k + j] - a.expert_offset;
            if (static_cast<unsigned>(e) >= static_cast<unsigned>(E)) continue;
            const float y = __bfloat162float(__ldcg(a.out + static_cast<int64_t>(m * a.top_k + j) * a.ld_out + row));
            const float b = a.b2 ? __bfloat162float(a.b2[static_cast<int64_t>(e) * a.ld_b2 + row]) : 0.f;
            acc = combine_step(acc, a.topk_w[m * a.top_k + j], y, b);
          }
          a.final_out[static_cast<int64_t>(m) * a.ld_final + row] = final_bf16(acc, a.out_scale);
        }
      }
    }
    if (RB == 1) __syncthreads();  // the single buffer is rewritten by the next item (done_m: after its barrier)
  }
  cp_async_wait<0>();
  finish_dynamic();
#ifdef MXFP4LAB_DECODE_TRACE
  if constexpr (DY) {
    if (threadIdx.x == 0) MXFP4LAB_TRACE(a, kTraceItems, it);
  }
  __syncthreads();  // every thread's epilogue is done
  if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceExit);
#endif
}

template <int NT, int G, int D, int RB, int CPS, bool FC1, int L2, bool CMB, int TA, int DY>
__global__ void __launch_bounds__(kThreads, CPS) gemm_kernel(const GemmArgs a) {
  extern __shared__ __align__(16) uint8_t smem[];
  gemm_phase<NT, G, D, RB, CPS, FC1, L2, CMB, TA, 0, DY>(a, smem, 0u);
}

// The fused launch: fc1 and fc2 in one cooperative grid (every CTA resident), separated by a grid barrier.
// A CTA that finishes its fc1 items arrives, builds fc2's routing and copies the weights of its first D2 - 1
// fc2 steps while the other CTAs finish fc1, then waits: fc2's weight stream overlaps fc1's tail without a
// second launch, its CTAs' start or a kernel boundary. The combine follows as its own launch (PDL).
template <int G, int CPS, int D, int RB, int TA, int D2, int TA2>
__global__ void __launch_bounds__(kThreads, CPS) fused_kernel(const GemmArgs a1, const GemmArgs a2) {
  extern __shared__ __align__(16) uint8_t smem[];
  unsigned gen0 = 0;
  if (threadIdx.x == 0) gen0 = load_acquire(&a2.barrier[1]);  // before this CTA arrives: nobody can bump it yet
  gemm_phase<kNT1, G, D, RB, CPS, true, 0, false, TA, 0, 0>(a1, smem, 0u);
  __syncthreads();  // this CTA's h stores are done (and its shared memory is free for fc2)
  if (threadIdx.x == 0) grid_arrive(a2.barrier, gridDim.x);
  gemm_phase<kNT2, G, D2, RB, CPS, false, 0, false, TA2, 1, 0>(a2, smem, gen0);
}

// ------------------------------------------------------------------------------------------------
// Combine: one thread per 8 output columns of one token.
// ------------------------------------------------------------------------------------------------
__global__ void __launch_bounds__(256) combine_kernel(const CombineArgs a) {
  if (threadIdx.x == 0) {
    MXFP4LAB_STAMP(a, kTraceEntry);
    MXFP4LAB_TRACE(a, kTraceSm, sm_id());
  }
  const int per_row = a.hidden / 8;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = idx < static_cast<int64_t>(a.m) * per_row;
  const int m = active ? static_cast<int>(idx / per_row) : 0, c0 = active ? static_cast<int>(idx % per_row) * 8 : 0;
  if (active) {  // routing and biases do not depend on fc2: into L1 before the wait (this launch starts early)
    for (int j = 0; j < a.top_k; ++j) {
      prefetch_l1(a.topk_ids + m * a.top_k + j);
      prefetch_l1(a.topk_w + m * a.top_k + j);
      const int e = a.topk_ids[m * a.top_k + j] - a.expert_offset;
      if (a.b2 && static_cast<unsigned>(e) < static_cast<unsigned>(a.num_experts))
        prefetch_l1(a.b2 + static_cast<int64_t>(e) * a.ld_b2 + c0);
    }
  }
  pdl_wait();
  if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceReady);
  if (!active) return;
  float acc[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = 0.f;
  for (int j = 0; j < a.top_k; ++j) {
    int e = a.topk_ids[m * a.top_k + j] - a.expert_offset;
    if (static_cast<unsigned>(e) >= static_cast<unsigned>(a.num_experts)) continue;
    float w = a.topk_w[m * a.top_k + j];
    uint4 yv = *reinterpret_cast<const uint4*>(a.y + static_cast<int64_t>(m * a.top_k + j) * a.ld_y + c0);
    const __nv_bfloat16* yy = reinterpret_cast<const __nv_bfloat16*>(&yv);
    float bb[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (a.b2) {
      uint4 bv = *reinterpret_cast<const uint4*>(a.b2 + static_cast<int64_t>(e) * a.ld_b2 + c0);
      const __nv_bfloat16* b = reinterpret_cast<const __nv_bfloat16*>(&bv);
#pragma unroll
      for (int i = 0; i < 8; ++i) bb[i] = __bfloat162float(b[i]);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] = combine_step(acc[i], w, __bfloat162float(yy[i]), bb[i]);
  }
  uint4 ov;
  __nv_bfloat16* o = reinterpret_cast<__nv_bfloat16*>(&ov);
#pragma unroll
  for (int i = 0; i < 8; ++i) o[i] = final_bf16(acc[i], a.out_scale);
  *reinterpret_cast<uint4*>(a.out + static_cast<int64_t>(m) * a.ld_out + c0) = ov;
  if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceExit);  // thread 0's store (a block's threads do the same work)
}

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

// The fused launch (fused_kernel): one cooperative grid, so that the driver starts it only with every CTA
// resident (the grid barrier would otherwise wait for CTAs that cannot start); the shared memory is the larger
// of the two phases'.
template <int G, int CPS, int D, int RB, int TA, int D2, int TA2>
cudaError_t launch_fused(const GemmArgs& a1, const GemmArgs& a2, int grid, cudaStream_t stream) {
  auto kernel = fused_kernel<G, CPS, D, RB, TA, D2, TA2>;
  const int smem = max(smem_bytes<kNT1, G, D, RB, TA>(a1.num_experts, a1.num_pairs),
                       smem_bytes<kNT2, G, D2, RB, TA2>(a2.num_experts, a2.num_pairs));
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeCooperative;
  attr.val.cooperative = 1;
  return launch_with(kernel, grid, kThreads, smem, stream, attr, a1, a2);
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
// WT > 0 (the last column): wide items (decode_w4a16_wide.cuh), 32 WT tokens per item (G = 4 WT), a CTA-wide ring of D
// stages, one CTA per SM; the other columns but CPS and D do not apply.
//   42  4  1        4           -                -   -   wide items: 32 tokens, 8 row groups per item
//   43  8  1        4           -                -   -   wide items: 64 tokens, 4 row groups per item
//   44  4  1        6           -                -   -   variant 42 with a 6-deep ring
#define MXFP4LAB_DECODE_VARIANTS(X)                                                                            \
  X(1, 1, 1, 6, 2, 0, 0, 6, 0, 0, 0, 0, 4, 2, 0) X(2, 1, 2, 3, 1, 0, 0, 3, 0, 0, 0, 0, 4, 2, 0) X(3, 2, 1, 4, 2, 0, 0, 4, 0, 0, 0, 0, 4, 2, 0)     \
  X(4, 4, 1, 2, 1, 0, 0, 2, 0, 0, 0, 0, 4, 2, 0) X(5, 1, 3, 2, 1, 0, 0, 2, 0, 0, 0, 0, 4, 2, 0) X(6, 2, 2, 2, 1, 0, 0, 2, 0, 0, 0, 0, 4, 2, 0)     \
  X(7, 1, 3, 2, 1, 3, 0, 2, 0, 0, 0, 0, 4, 2, 0) X(8, 1, 3, 2, 1, 1, 0, 2, 0, 0, 0, 0, 4, 2, 0) X(9, 1, 1, 6, 2, 3, 0, 6, 0, 0, 0, 0, 4, 2, 0)     \
  X(10, 1, 2, 3, 1, 3, 0, 3, 0, 0, 0, 0, 4, 2, 0) X(11, 2, 2, 2, 1, 3, 0, 2, 0, 0, 0, 0, 4, 2, 0) X(12, 1, 3, 3, 1, 0, 2, 3, 2, 0, 0, 0, 4, 2, 0)  \
  X(13, 1, 2, 5, 2, 0, 2, 5, 2, 0, 0, 0, 4, 2, 0) X(14, 1, 4, 2, 1, 0, 2, 2, 2, 0, 0, 0, 4, 2, 0) X(15, 1, 3, 2, 1, 0, 0, 6, 2, 0, 0, 0, 4, 2, 0)  \
  X(16, 1, 4, 2, 1, 0, 2, 4, 2, 0, 0, 0, 4, 2, 0) X(17, 1, 3, 3, 1, 0, 2, 6, 2, 0, 0, 0, 4, 2, 0) X(18, 1, 3, 2, 1, 0, 0, 6, 2, 1, 0, 0, 4, 2, 0)  \
  X(19, 1, 4, 2, 1, 0, 2, 4, 2, 1, 0, 0, 4, 2, 0) X(20, 1, 3, 3, 1, 0, 2, 6, 2, 1, 0, 0, 4, 2, 0) X(21, 1, 3, 2, 1, 0, 0, 2, 0, 0, 3, 0, 4, 2, 0)  \
  X(22, 1, 3, 2, 1, 0, 0, 6, 2, 0, 3, 0, 4, 2, 0) X(23, 1, 4, 2, 1, 0, 2, 2, 2, 0, 3, 0, 4, 2, 0) X(24, 4, 1, 2, 1, 0, 0, 2, 0, 0, 3, 0, 4, 2, 0) \
  X(25, 1, 2, 4, 1, 0, 2, 12, 2, 0, 1, 1, 4, 2, 0) X(26, 1, 4, 2, 1, 0, 2, 7, 2, 0, 0, 3, 4, 2, 0) X(27, 1, 3, 2, 1, 0, 0, 7, 2, 0, 0, 2, 4, 2, 0)   \
  X(28, 1, 3, 2, 1, 0, 2, 11, 2, 0, 0, 2, 4, 2, 0) X(29, 1, 3, 3, 1, 0, 2, 8, 2, 0, 0, 2, 4, 2, 0)                            \
  X(30, 1, 3, 2, 1, 0, 0, 6, 2, 0, 2, 0, 4, 2, 0) X(31, 1, 3, 3, 1, 0, 2, 6, 2, 0, 2, 0, 4, 2, 0) X(32, 1, 3, 2, 1, 0, 0, 7, 1, 0, 2, 0, 4, 2, 0)   \
  X(33, 1, 3, 2, 1, 4, 0, 6, 2, 0, 0, 0, 4, 2, 0) X(34, 1, 3, 2, 1, 8, 0, 6, 2, 0, 0, 0, 4, 2, 0) X(35, 1, 3, 2, 1, 8, 0, 6, 2, 0, 2, 0, 4, 2, 0)  \
  X(36, 1, 3, 2, 1, 8, 0, 6, 2, 0, 3, 0, 4, 2, 0) X(37, 1, 3, 2, 1, 0, 0, 2, 0, 0, 3, 0, 4, 4, 0)                            \
  X(38, 1, 3, 2, 1, 0, 0, 2, 0, 0, 0, 0, 4, 4, 0) X(39, 2, 3, 2, 1, 0, 0, 2, 0, 0, 3, 0, 2, 2, 0)                             \
  X(40, 2, 3, 2, 1, 0, 0, 2, 0, 0, 0, 0, 2, 2, 0) X(41, 1, 3, 2, 1, 0, 0, 3, 2, 0, 0, 0, 4, 4, 0) \
  X(42, 4, 1, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 1) X(43, 8, 1, 4, 1, 0, 0, 4, 0, 0, 0, 0, 4, 4, 2) X(44, 4, 1, 6, 1, 0, 0, 6, 0, 0, 0, 0, 4, 4, 1)

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

// A wide-items variant (WT > 0, decode_w4a16_wide.cuh): fc1 and fc2 as wide_kernel, then the combine (PDL).
// No fused combine, fused launch or dynamic items.
template <int WT, int CPS, int D>
cudaError_t launch_wide(const DecodeArgs* d, cudaStream_t stream) {
  if (d->counters != 0 || d->barrier != 0 || d->sched != 0) return cudaErrorInvalidValue;
  GemmArgs g1, g2;
  gemm_args(d, g1, g2);
  const int grid = static_cast<int>(d->grid);
  const bool pdl = d->pdl != 0;
  cudaError_t err = launch_wide_gemm<WT, D, CPS, true>(g1, grid, stream, false);
  if (err != cudaSuccess) return err;
  err = launch_wide_gemm<WT, D, CPS, false>(g2, grid, stream, pdl);
  if (err != cudaSuccess) return err;
  return launch_combine(d, g1, stream, pdl);
}

template <int G, int CPS, int D, int RB, int L2, int TA, int D2, int TA2, int FU, int DY, int SP, int IT1, int IT2, int WT>
cudaError_t launch_variant(const DecodeArgs* d, cudaStream_t stream) {
  if constexpr (WT > 0) {
    static_assert(G == 4 * WT && D2 == D && IT1 == kNT1 && IT2 == 2 * kNT2, "a wide variant's table entry");
    return launch_wide<WT, CPS, D>(d, stream);
  } else {
    return launch_forward<G, CPS, D, RB, L2, TA, D2, TA2, FU, DY, SP, IT1, IT2>(d, stream);
  }
}

// Shared-memory bytes of one CTA of fc1 (gemm = 1), fc2 (2) or the larger of the two (0).
template <int G, int D, int RB, int TA, int D2, int TA2, int IT1, int IT2, int WT>
int64_t variant_smem(int E, int P, int64_t gemm) {
  if constexpr (WT > 0) {
    return wide_smem_bytes<WT, D>(E, P);
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
#define X(ID, G, CPS, D, RB, L2, TA, D2, TA2, FU, DY, SP, IT1, IT2, WT) \
  case ID:                                                       \
    return static_cast<int>(launch_variant<G, CPS, D, RB, L2, TA, D2, TA2, FU, DY, SP, IT1, IT2, WT>(d, stream));
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
#define X(ID, G, CPS, D, RB, L2, TA, D2, TA2, FU, DY, SP, IT1, IT2, WT)                                       \
  case ID:                                                                                             \
    return variant_smem<G, D, RB, TA, D2, TA2, IT1, IT2, WT>(E, P, gemm);
    MXFP4LAB_DECODE_VARIANTS(X)
#undef X
    default: return -1;
  }
}

// The variant table as WT*1e16 + IT2*1e15 + IT1*1e14 + SP*1e13 + DY*1e12 + FU*1e11 + TA2*1e10 + D2*1e8 (two digits) + TA*1e7 + L2*1e6 + ID*1e4 +
// G*1000 + CPS*100 + D*10 + RB per entry, for the host to check.
int64_t mxfp4lab_decode_w4a16_variant(int64_t index) {
  const int64_t table[] = {
#define X(ID, G, CPS, D, RB, L2, TA, D2, TA2, FU, DY, SP, IT1, IT2, WT)                                           \
  WT * 10000000000000000LL + IT2 * 1000000000000000LL + IT1 * 100000000000000LL + SP * 10000000000000LL + DY * 1000000000000LL + FU * 100000000000LL + TA2 * 10000000000LL + D2 * 100000000LL + \
      TA * 10000000LL + \
      L2 * 1000000 + ID * 10000 + G * 1000 + CPS * 100 + D * 10 + RB,
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
