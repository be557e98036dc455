// mxfp4lab decode_w4a16: what both GEMM schedules share -- constants, the launch arguments, the copy, decode and
// MMA helpers, the routing in shared memory, and the combine kernel. Included by decode_w4a16.cu inside namespace
// mxfp4lab_decode (file header there: launches, rounding points, the weight layout).

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
  // the one-grid wide items (wide_one_kernel): [E + 1] fc1 items stored per local expert, then the CTAs done; zero
  // between calls (the last CTA resets them)
  int* ready;
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

// fc1's output `act` for one intermediate row and token from its fp32 up and gate sums, as the kernel-faithful
// reference computes it: each sum rounded to bf16 (the GEMM's output), plus its bias (when `has_bias`), clamped
// (use_limit: gate <= limit, |up| <= limit), then the SwiGLU in fp32. A macro, not a function: the wide kernels'
// epilogue is these statements token for token, so its SASS does not move; the warp-specialized kernel's uses it too.
#define MXFP4LAB_SWIGLU(act, up_sum, gate_sum, has_bias, b_up, b_gate, use_limit, limit, alpha, beta) \
  float up = bf16_round(up_sum), gate = bf16_round(gate_sum);                                         \
  if (has_bias) {                                                                                      \
    up += b_up;                                                                                        \
    gate += b_gate;                                                                                    \
  }                                                                                                    \
  if (use_limit) {                                                                                     \
    gate = fminf(gate, limit);                                                                         \
    up = fmaxf(fminf(up, limit), -limit);                                                              \
  }                                                                                                    \
  const float act = gate * (1.0f / (1.0f + expf(-gate * alpha))) * (up + beta)

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
// L: a pair id in the list (int; the wide items at two CTAs per SM: 16 bits, so that their lists fit at M = 4096).
template <typename L = int>
struct RoutingT {
  int* count;   // [E]
  int* start;   // [E + 1] offsets into plist
  int* istart;  // [E + 1] item offsets
  L* plist;     // [P]
};
using Routing = RoutingT<int>;

// Block-wide exclusive scans of a pair count per expert (a, length n <= kMaxExperts, in shared memory) and of
// its items b = ceil(a / chunk) * groups (computed here, not stored); writes out_a[0..n], out_b[0..n] (element
// n = total). `tmp` holds 2 * NT / 32 ints. NT: the CTA's threads (every one calls this).
template <int NT = kThreads>
__device__ void block_scan2(const int* in_a, int chunk, int groups, int n, int* out_a, int* out_b, int* tmp) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  constexpr int NW = NT / 32;
  const int per = (n + NT - 1) / NT;  // consecutive elements per thread
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
  if (lane == 31) { tmp[warp] = ia; tmp[NW + warp] = ib; }
  __syncthreads();
  int wa = 0, wb = 0;
  for (int w = 0; w < warp; ++w) { wa += tmp[w]; wb += tmp[NW + w]; }
  int ea = wa + ia - sa, eb = wb + ib - sb;  // exclusive prefix of this thread's first element
  for (int i = lo; i < hi; ++i) {
    const int c = in_a[i];
    out_a[i] = ea; out_b[i] = eb;
    ea += c; eb += items(c);
  }
  if (tid == NT - 1) { out_a[n] = ea; out_b[n] = eb; }
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
template <typename L, int NT = kThreads>
__device__ void build_routing_warp(const GemmArgs& a, const RoutingT<L>& r, int token_chunk, int groups) {
  const int lane = threadIdx.x & 31, E = a.num_experts, P = a.num_pairs;
  if ((threadIdx.x & ~31u) < static_cast<unsigned>(E) || E > NT) {  // warp-uniform: warps with experts
    int e = lane < P ? a.topk_ids[lane] - a.expert_offset : -1;
    const bool mine = static_cast<unsigned>(e) < static_cast<unsigned>(E);
    if (!mine) e = -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    // key: expert * 2 + (opens a token chunk); a lane without a pair of this shard sorts above every expert
    const int key = mine ? e * 2 + (rank % token_chunk == 0) : 2 * kMaxExperts + 2;
    for (int x0 = 0; x0 < E; x0 += NT) {
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
      if (x0 == 0 && threadIdx.x < 32 && mine) r.plist[mine_before + rank] = static_cast<L>(lane);
    }
  }
  if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceCounted);
  __syncthreads();
}

// items(e) = ceil(count(e) / token_chunk) * groups. `spare`: shared memory that is free while the routing is
// built (the copy ring and the partial sums), `spare_ints` ints of it.
template <typename L, int NT = kThreads>
__device__ void build_routing(const GemmArgs& a, RoutingT<L>& r, int* scratch, int token_chunk, int groups, int* spare,
                              int spare_ints) {
  const int E = a.num_experts, P = a.num_pairs;
  int* fill = scratch;            // [E]  (scratch + E .. 2E: free)
  int* tmp = scratch + 2 * E;     // [2 * NT / 32]
  // Each thread's first pair id is read before the counts are zeroed: at the start of a forward the ids come
  // from DRAM, and that latency now overlaps the zeroing and its barrier instead of following them.
  const int e_first = static_cast<int>(threadIdx.x) < P ? a.topk_ids[threadIdx.x] - a.expert_offset : -1;
  for (int e = threadIdx.x; e < E; e += NT) { r.count[e] = 0; fill[e] = 0; }
  __syncthreads();
  if (static_cast<unsigned>(e_first) < static_cast<unsigned>(E)) atomicAdd(&r.count[e_first], 1);
  for (int p = threadIdx.x + NT; p < P; p += NT) {
    int e = a.topk_ids[p] - a.expert_offset;
    if (static_cast<unsigned>(e) < static_cast<unsigned>(E)) atomicAdd(&r.count[e], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceCounted);
  block_scan2<NT>(r.count, token_chunk, groups, E, r.start, r.istart, tmp);
  // Pair lists in pair order (the same in every CTA and in both GEMMs, so token chunks of one expert
  // never overlap across CTAs). Up to kWalkPairs pairs: warp 0 walks them 32 at a time; lanes routed to the
  // same expert rank themselves with __match_any_sync, and the group's last lane advances the expert's fill
  // count. More pairs (where a per-warp count of every expert fits the spare shared memory): every warp ranks
  // its 32 pairs of a 256-pair chunk the same way at once, the group's first lane stores the group's size in
  // hist[warp][e], and a pair's slot adds the sizes of its expert's groups in the chunk's earlier warps -- the
  // same lists, in a few barriers per 256 pairs instead of 8 dependent warp steps (4-5 us at 256 pairs).
  constexpr int kWalkPairs = 64;
  if (P > kWalkPairs && (NT / 32) * E <= spare_ints) {
    int* hist = spare;  // [NT / 32][E]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned lt = (1u << lane) - 1u;
    for (int c0 = 0; c0 < P; c0 += NT) {
      for (int i = threadIdx.x; i < (NT / 32) * E; i += NT) hist[i] = 0;
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
        r.plist[r.start[e] + base + rank] = static_cast<L>(p);
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
        r.plist[r.start[e] + base + __popc(peers & lt)] = static_cast<L>(p);
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
