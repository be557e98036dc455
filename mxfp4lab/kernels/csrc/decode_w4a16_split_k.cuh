// mxfp4lab decode_w4a16, split-K items: the GEMM schedule for a few tokens per expert (items of up to 8 G tokens, K
// split over the CTA's 8 warps, a per-warp cp.async ring, partial sums reduced in shared memory), its L2 staging,
// the fused launch. Included by decode_w4a16.cu inside namespace mxfp4lab_decode, after decode_w4a16_common.cuh.

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
