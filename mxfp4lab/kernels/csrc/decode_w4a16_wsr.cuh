// mxfp4lab decode_w4a16, warp-specialized wide items with the decode on the consumers (WG = 7, the 16th column): a
// producer warpgroup only copies, consumer warpgroups decode their own A fragments in registers and run wgmma with A
// from registers. Included by decode_w4a16.cu after decode_w4a16_ws.cuh (its mbarriers, find_ws_item's even token
// tiles, ws_start, WsCursor, fence_acc16) and decode_w4a16_wide.cuh (WgmmaTile, cp_async4x4, wgmma_bf16_128, ActRef,
// WideItem).
//
// Why. The warp-specialized items that decode on the producer (WG = 5, 6) are bound by it: one producer warp per
// scheduler issues ~490 SASS instructions per chunk, ~280 of them the decode and the A stores, and the consumers wait
// for it half the time (findings 2026-12-05-decode-warp-specialized). The 128-token items (WG = 3) decode on every
// warp but copy there too, at two warps per scheduler with 255 registers. The mixed-input GEMMs of the field on Hopper
// (CUTLASS's mixed-input collectives) keep the decode on the consumer warps, in registers, feed wgmma's A from them,
// and leave the producer nothing but copies. This is that design on this package's layout:
//  * warpgroup 0, the producer: per K chunk copies the item's raw weights (fp4 codes and E8M0 scales, byte for byte as
//    the layout stores them) and its token rows (in the MMA's K order: WgmmaTile, four 4-byte pieces per 16 bytes)
//    into a ring of R stages (cp.async), waits for its own copies of the chunk, fences them for the async proxy and
//    arrives at the stage's FULL barrier; it refills a stage once the consumers' MMAs of its last chunk ended (EMPTY).
//  * warpgroups 1 .. NC, the consumers (NC = WT: 2 or 4): warp w of consumer warpgroup c owns one 16-row tile of the
//    item, so a warpgroup holds 64 weight rows and all of the item's up to 128 tokens (64 fp32 accumulators per lane).
//    Per chunk it waits for FULL, loads its lane's 16 bytes and two scale bytes, and per MMA step decodes one word
//    into the m64nNk16 A fragment (decode_word and the scale multiply: the bits every variant uses), fences, issues
//    the wgmma, commits it and waits for the step before: the decode of step st + 1 runs while step st's MMA does
//    (where ptxas keeps the wgmma in flight: at 384 threads, not at 640 -- there the other warpgroups' MMAs run).
//    Once chunk q's first step is issued and chunk q - 1's last one has ended, chunk q - 1's stage is freed (EMPTY,
//    lane 0 of each consumer warp).
// Each output is one warpgroup's wgmma chain over K in chunk order, the chunk's MMA steps in the layout's K order, the
// same A fragments and token rows as the 128-token items (WG = 3): the same sums, bit for bit (twin_of).
//
// An ITEM is (local expert e, a tile of up to 128 of e's pairs split evenly as find_ws_item does, a row block): fc1 NC
// layout groups (consumer warpgroup c: group NC block + c, warp w its tile w -- up tiles 0, 1, gate tiles 2, 3 of the
// group's 32 intermediate rows), fc2 2 NC layout groups (warpgroup c: groups 2 NC block + 2 c, + 1; warp w tile w % 2
// of group 2 NC block + 2 c + w / 2: 64 output rows). The MMA's N is the item's tokens rounded up to 8, or to 96 or 128
// above 64 (the shapes wgmma_bf16_128 has).
//
// fc1's SwiGLU needs a row's up and gate sums in one lane, and here they are in two warps: lane (g, tl) of warp w < 2
// holds the up sums of intermediate rows 16 w + g, + 8 for the same tokens as lane (g, tl) of warp w + 2 the gate sums.
// After the item's last MMA the up warps store their sums rounded to bf16 (the GEMM's output rounding, the first step
// of MXFP4LAB_SWIGLU, so the bits are the same) to the warpgroup's swap buffer, a named barrier, and the gate warps
// finish the SwiGLU and store h.
//
// Shared memory: R stages of [token tile (WgmmaTile: 128 rows x 64 elements, bf16) | the item's 4 NC tiles' codes
// (512 B each, lane L's 16 bytes at 16 L) | their scales (32 B each)], the swap buffers (NC x 8 KB), 2 R mbarriers,
// the routing (16-bit pair ids).

template <int NC>
struct WsrSmem {
  static_assert(NC == 2 || NC == 4, "two or four consumer warpgroups");
  static constexpr int kThreads = 128 * (NC + 1);  // warpgroup 0 produces, 1 .. NC consume
  static constexpr int kTiles = 4 * NC;            // 16-row tiles per item: one per consumer warp
  static constexpr int BN = 128;                   // tokens per item
  static constexpr int kAct = BN * 2 * kChunkK;    // one chunk of the token tile (bf16, WgmmaTile)
  static constexpr int kRaw = kTiles * (kTileBytes + kScaleBytes);  // the tiles' codes, then their scales
  static constexpr int kStage = kAct + kRaw;
  static constexpr int kSwapSlot = 2 * 32 * 16;    // one 16-byte word of each lane of a warpgroup's two up warps
  static constexpr int kSwap = 8 * kSwapSlot;      // a warpgroup's swap buffer: 8 slots (64 bf16 per lane)
};

// Bytes: R ring stages, the swap buffers, 2 R mbarriers, then the routing (16-bit pair ids).
template <int NC, int R>
constexpr int wsr_smem_bytes(int num_experts, int num_pairs) {
  using S = WsrSmem<NC>;
  return R * S::kStage + NC * S::kSwap + 2 * R * 8 +
         (5 * num_experts + 2 + 2 * (S::kThreads / 32) + 32) * 4 + (2 * num_pairs + 3) / 4 * 4;
}

// Where the kernel reads and puts things (the CPU tests host-compile this struct): per consumer warpgroup c and its
// warp w (tile w of the warpgroup's four).
template <int NC, bool FC1>
struct WsrMap {
  static constexpr int kTiles = 4 * NC;
  // the layout group of warp w's tile in row block `block`, and the tile's bytes and its 32 scale bytes in that
  // group's step
  static __device__ __forceinline__ int group(int block, int c, int w) {
    return FC1 ? block * NC + c : block * 2 * NC + 2 * c + (w >> 1);
  }
  static __device__ __forceinline__ int tile_src(int w) { return (FC1 ? w : w & 1) * kTileBytes; }
  static __device__ __forceinline__ int scale_src(int w) {
    return FC1 ? kNT1 * kTileBytes + w * kScaleBytes : kNT2 * kTileBytes + (w & 1) * kScaleBytes;
  }
  // the tile's codes and scales in a stage's raw bytes (after the token tile)
  static __device__ __forceinline__ int raw_tile(int c, int w) { return (4 * c + w) * kTileBytes; }
  static __device__ __forceinline__ int raw_scale(int c, int w) {
    return kTiles * kTileBytes + (4 * c + w) * kScaleBytes;
  }
  // activation copy i (< 8) of producer thread tid: token row, 16-byte piece (chunk elements 8 piece ..)
  static __device__ __forceinline__ int act_row(int tid, int i) { return (tid >> 3) + 16 * i; }
  static __device__ __forceinline__ int act_piece(int tid) { return tid & 7; }
  // the output row of warp w's lane row g + 8 hr (accumulators i = 2 hr, 2 hr + 1): fc1 the intermediate row (up
  // sums in warps 0, 1, gate sums of the same rows in warps 2, 3), fc2 the output row
  static __device__ __forceinline__ int out_row(int block, int c, int w, int g, int hr) {
    return FC1 ? (block * NC + c) * 32 + 16 * (w & 1) + g + 8 * hr : (block * NC + c) * 64 + 16 * w + g + 8 * hr;
  }
  // fc1: the byte of slot k of lane `lane` of up warp w (< 2) in its warpgroup's swap buffer; gate warp w + 2 reads
  // the same byte (16 bytes: the bf16 up sums acc[2 k][0 .. 3], acc[2 k + 1][0 .. 3])
  static __device__ __forceinline__ int swap_at(int w, int lane, int k) {
    return k * WsrSmem<NC>::kSwapSlot + (w & 1) * 512 + lane * 16;
  }
};

// The MMA's N in 8-token blocks for an item of ntok tokens: up to 64 rounded up to 8, then 96 or 128.
__device__ __forceinline__ int wsr_nj(int ntok) { return ntok <= 64 ? (ntok + 7) / 8 : ntok <= 96 ? 12 : 16; }

__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// One item's chunks on a consumer warp, from global chunk q on: per chunk wait for FULL, this lane's 16 code bytes
// (words st = 0 .. 3: MMA step st) and scales, then per step decode, fence, wgmma, commit and wait for the step
// before; chunk q - 1's stage is freed after chunk q's first step (its last MMA has ended then). The item's last
// chunk is freed by the caller, after its wait for every MMA.
template <int NJ, int R, int STAGE>
__device__ __forceinline__ void wsr_consume(float (&acc)[16][4], int q, int chunks, uint32_t ring, uint32_t tile,
                                            uint32_t scales, uint32_t full, uint32_t empty, int lane) {
  const int g = lane >> 2, tl = lane & 3;
  for (int ch = 0; ch < chunks; ++ch, ++q) {
    const int s = q % R;
    mbar_wait(full + 8 * s, (q / R) & 1);
    const uint32_t stage = ring + s * STAGE;
    const uint4 wv = lds128(stage + tile + lane * 16);
    const uint32_t sa = stage + scales + (g * 2 + (tl >> 1)) * 2;
    const uint32_t f_lo = scale_factor(lds8(sa)), f_hi = scale_factor(lds8(sa + 1));  // rows g, g + 8
    const uint64_t desc = WgmmaTile::desc(stage);
#pragma unroll
    for (int st = 0; st < 4; ++st) {
      uint32_t r0, r1, r2, r3;
      decode_word(st == 0 ? wv.x : st == 1 ? wv.y : st == 2 ? wv.z : wv.w, r0, r1, r2, r3);
      const uint32_t a[4] = {hmul2_bf16(r0, f_lo), hmul2_bf16(r1, f_hi), hmul2_bf16(r2, f_lo), hmul2_bf16(r3, f_hi)};
      wgmma_fence();
      wgmma_bf16_128<NJ>(acc, a, desc + ((st * 2 * WgmmaTile::kLbo) >> 4));
      wgmma_commit();
      wgmma_wait<1>();
      if (st == 0 && ch > 0 && lane == 0) mbar_arrive(empty + 8 * ((q - 1) % R));
    }
  }
}

template <int NC, int R, bool FC1>
__global__ void __launch_bounds__(WsrSmem<NC>::kThreads, 1) wsr_kernel(const GemmArgs a) {
  static_assert(R >= 3, "the producer copies R - 1 chunks ahead and refills the stage of the chunk before");
  using S = WsrSmem<NC>;
  using Map = WsrMap<NC, FC1>;
  constexpr int NT = S::kThreads, BN = S::BN;
  constexpr int PT = NC;                                   // tiles a producer warp copies (warpgroup pw PT / 4's)
  constexpr int LT = FC1 ? kNT1 : kNT2;                    // tiles of one layout group
  constexpr int kLStep = LT * (kTileBytes + kScaleBytes);  // one step of one layout group in the layout
  constexpr int kGroups = FC1 ? NC : 2 * NC;               // layout groups per item
  extern __shared__ __align__(16) uint8_t smem[];
  const uint32_t ring = smem_addr(smem), swap = ring + R * S::kStage, bars = swap + NC * S::kSwap;
  const uint32_t full = bars, empty = bars + 8 * R;  // full[R], empty[R]
  const int E = a.num_experts;
  const int blocks = (a.groups + kGroups - 1) / kGroups;  // row blocks per expert
  int* const rbase = reinterpret_cast<int*>(smem + R * S::kStage + NC * S::kSwap + 2 * R * 8);
  const RoutingT<uint16_t> rt = ws_start<NT, BN>(a, smem, rbase, blocks, R * S::kStage / 4, bars, 2 * R,
                                                 [](int i) { return i < R ? 128 : 4 * NC; });

  const int n_items = rt.istart[E];
  const int my_items = static_cast<int>(blockIdx.x) < n_items ? (n_items - 1 - blockIdx.x) / gridDim.x + 1 : 0;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int chunks = a.chunks;
  const int total_steps = my_items * chunks;
  using Act = ActRef<true>;

  if (warp < 4) {
    // ================= producer: warp pw copies PT tiles of consumer warpgroup c = pw PT / 4, and every thread 8 of
    // the token tile's 16-byte pieces
    const int pw = warp, c = pw * PT / 4, t0 = (pw % (4 / PT)) * PT;  // its warpgroup and first tile of its 4
    using Cursor = WsCursor<Map, FC1, PT, 8>;
    Cursor cur{total_steps, static_cast<int>(blockIdx.x) - static_cast<int>(gridDim.x), chunks, 0, {nullptr, nullptr},
               0, 0, {}};
    const int64_t gstride = static_cast<int64_t>(chunks) * kLStep;  // the next layout group's block
    const uint32_t adst = WgmmaTile::dst(Map::act_row(tid, 0), Map::act_piece(tid), 0);  // copy 0's first piece
    auto issue_into = [&](Cursor& cs, int parts) {
      if (cs.left <= 0) return;
      --cs.left;
      if (cs.c == chunks) cs.start_item(a, rt, E, blocks, gstride, c, t0, tid, [](int n) { return 8 * wsr_nj(n); });
      const uint32_t stage = ring + cs.slot * S::kStage, raw = stage + S::kAct;
      if (parts & 1) {
#pragma unroll
        for (int i = 0; i < PT; ++i) {  // tile t0 + i of warpgroup c: fc1 tile t0 + i of the group, fc2 tile
                                        // (t0 + i) % 2 of group (t0 + i) / 2
          const int u = t0 + i;
          const uint8_t* w = cs.w[FC1 ? 0 : i >> 1];  // (t0 is a multiple of PT: even)
          if (w != nullptr) cp_async16(raw + Map::raw_tile(c, u) + lane * 16, w + Map::tile_src(u) + lane * 16, true);
        }
        if (lane < 2 * PT) {  // the PT tiles' scales: 32 bytes each, two lanes per tile
          const int u = t0 + lane / 2;
          const uint8_t* w = FC1 || lane < 4 ? cs.w[0] : cs.w[1];  // (a select, not a local array)
          if (w != nullptr)
            cp_async16(raw + Map::raw_scale(c, u) + (lane & 1) * 16, w + Map::scale_src(u) + (lane & 1) * 16, true);
        }
      }
      if (parts & 2) {
        const bool in_k = cs.col + 8 <= a.k_valid;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          if (Map::act_row(tid, i) >= cs.npad) break;  // (rows grow with i; npad is a multiple of 8)
          const bool ok = Act::has(cs.act[i]) && in_k;
          cp_async4x4(stage + adst + i * 2 * WgmmaTile::kSbo, ok ? Act::at(a.act, cs.act[i]) : a.act, ok);
        }
      }
      cs.template advance<R, kLStep>();
    };

    // Prologue: chunks 0 .. R - 2, one cp.async group each (fc2: their weights before the wait for fc1, their token
    // rows after it, as one group, then empty groups: the loop's count holds as for fc1).
    if constexpr (FC1) {
#pragma unroll 1
      for (int q = 0; q < R - 1; ++q) {
        issue_into(cur, 3);
        cp_async_commit();
      }
    } else {
      Cursor cur_a = cur;
#pragma unroll 1
      for (int q = 0; q < R - 1; ++q) issue_into(cur, 1);
      pdl_wait();  // h (fc1's output) is complete and visible after this
#pragma unroll 1
      for (int q = 0; q < R - 1; ++q) issue_into(cur_a, 2);
      cp_async_commit();
#pragma unroll 1
      for (int q = 0; q < R - 2; ++q) cp_async_commit();
    }
    if (threadIdx.x == 0) {
      MXFP4LAB_STAMP(a, kTraceReady);
      MXFP4LAB_TRACE(a, kTraceItems, my_items);
    }
    // Step q: chunk q's copies landed (the oldest of R - 1 groups) -> fence, FULL; then chunk q + R - 1 into the stage
    // of chunk q - 1, once its MMAs ended (EMPTY, which the consumers arrive at after chunk q's first MMA step).
    for (int q = 0; q < total_steps; ++q) {
      cp_async_wait<R - 2>();
      fence_proxy_async_shared();  // this thread's landed bytes, for the wgmma reads (token rows) and the consumers'
      mbar_arrive(full + 8 * (q % R));
      if (q + R - 1 < total_steps) {
        if (q >= 1) mbar_wait(empty + 8 * ((q - 1) % R), ((q - 1) / R) & 1);
        issue_into(cur, 3);
      }
      cp_async_commit();
    }
    cp_async_wait<0>();
  } else {
    // ================= consumers: warpgroup c = warp / 4 - 1, warp w its tile w
    const int c = warp / 4 - 1, w = warp & 3, g = lane >> 2, tl = lane & 3;
    const uint32_t tile = S::kAct + Map::raw_tile(c, w), scales = S::kAct + Map::raw_scale(c, w);
    int q = 0;
    for (int it = 0; it < my_items; ++it) {
      const int item = static_cast<int>(blockIdx.x + it * gridDim.x);
      const int nj = wsr_nj(find_ws_item(rt, E, item, blocks).ntok);
      float acc[16][4];
#pragma unroll
      for (int j = 0; j < 16; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[j][i] = 0.f;
      fence_acc16(acc);
      switch (nj) {  // warpgroup-uniform; one chunk loop per MMA shape
        case 1: wsr_consume<1, R, S::kStage>(acc, q, chunks, ring, tile, scales, full, empty, lane); break;
        case 2: wsr_consume<2, R, S::kStage>(acc, q, chunks, ring, tile, scales, full, empty, lane); break;
        case 3: wsr_consume<3, R, S::kStage>(acc, q, chunks, ring, tile, scales, full, empty, lane); break;
        case 4: wsr_consume<4, R, S::kStage>(acc, q, chunks, ring, tile, scales, full, empty, lane); break;
        case 5: wsr_consume<5, R, S::kStage>(acc, q, chunks, ring, tile, scales, full, empty, lane); break;
        case 6: wsr_consume<6, R, S::kStage>(acc, q, chunks, ring, tile, scales, full, empty, lane); break;
        case 7: wsr_consume<7, R, S::kStage>(acc, q, chunks, ring, tile, scales, full, empty, lane); break;
        case 8: wsr_consume<8, R, S::kStage>(acc, q, chunks, ring, tile, scales, full, empty, lane); break;
        case 12: wsr_consume<12, R, S::kStage>(acc, q, chunks, ring, tile, scales, full, empty, lane); break;
        default: wsr_consume<16, R, S::kStage>(acc, q, chunks, ring, tile, scales, full, empty, lane); break;
      }
      q += chunks;
      wgmma_wait<0>();
      if (lane == 0) mbar_arrive(empty + 8 * ((q - 1) % R));  // the item's last chunk: its MMAs ended
      const WideItem ci = find_ws_item(rt, E, item, blocks);  // again: not live beside the accumulators over the chunks
      fence_acc16(acc);

      // ---- epilogue from registers: lane (g, tl) of warp w holds its tile's rows g (i = 0, 1) and g + 8 (i = 2, 3)
      // for tokens 8 j + 2 tl + (i & 1)
      if constexpr (FC1) {
        if (Map::group(ci.block, c, 0) >= a.groups) continue;  // the warpgroup's layout group is past the layer's
        const uint32_t sw = swap + c * S::kSwap;
        if (w < 2) {  // up warps: the sums rounded to bf16, for the gate warp of the same rows
#pragma unroll
          for (int k = 0; k < 8; ++k) {
            if (2 * k >= nj) break;
            __nv_bfloat162 p[4] = {__floats2bfloat162_rn(acc[2 * k][0], acc[2 * k][1]),
                                   __floats2bfloat162_rn(acc[2 * k][2], acc[2 * k][3]),
                                   __floats2bfloat162_rn(acc[2 * k + 1][0], acc[2 * k + 1][1]),
                                   __floats2bfloat162_rn(acc[2 * k + 1][2], acc[2 * k + 1][3])};
            const uint32_t* pw32 = reinterpret_cast<const uint32_t*>(p);
            sts128(sw + Map::swap_at(w, lane, k), pw32[0], pw32[1], pw32[2], pw32[3]);
          }
        }
        named_barrier(1 + c, 128);  // the warpgroup's up sums are in its swap buffer
        if (w >= 2) {  // gate warps: gemm_phase's SwiGLU epilogue, operation for operation, on the up warp's bf16 sums
          const float alpha = a.alpha ? a.alpha[ci.e] : a.alpha_s;
          const float beta = a.beta ? a.beta[ci.e] : a.beta_s;
          const float limit = a.limit ? a.limit[ci.e] : a.limit_s;
          const __nv_bfloat16* bias = a.bias ? a.bias + static_cast<int64_t>(ci.e) * 2 * a.bias_ld : nullptr;
          int row[2];
          float b_up[2], b_gate[2];
#pragma unroll
          for (int hr = 0; hr < 2; ++hr) {
            row[hr] = Map::out_row(ci.block, c, w, g, hr);
            const bool in = row[hr] < a.out_rows;
            b_up[hr] = bias && in ? __bfloat162float(bias[row[hr]]) : 0.f;
            b_gate[hr] = bias && in ? __bfloat162float(bias[a.bias_ld + row[hr]]) : 0.f;
          }
          auto swiglu = [&](float up_sum, float gate_sum, int hr) -> __nv_bfloat16 {
            MXFP4LAB_SWIGLU(act, up_sum, gate_sum, bias, b_up[hr], b_gate[hr], a.use_limit, limit, alpha, beta);
            return __float2bfloat16_rn(act);
          };
#pragma unroll
          for (int k = 0; k < 8; ++k) {
            if (2 * k >= nj) break;
            const uint4 v = lds128(sw + Map::swap_at(w, lane, k));
            const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int jj = 0; jj < 2; ++jj) {
              const int j = 2 * k + jj;
#pragma unroll
              for (int i = 0; i < 4; ++i) {  // token 8 j + 2 tl + (i & 1), row g + 8 (i >> 1)
                const int tok = 8 * j + 2 * tl + (i & 1), hr = i >> 1;
                const uint32_t bits = words[2 * jj + hr];
                const float up_bf = __uint_as_float((i & 1 ? bits >> 16 : bits & 0xFFFFu) << 16);
                if (j < nj && tok < ci.ntok && row[hr] < a.out_rows)
                  a.out[static_cast<int64_t>(rt.plist[ci.tok0 + tok]) * a.ld_out + row[hr]] =
                      swiglu(up_bf, acc[j][i], hr);
              }
            }
          }
        }
        named_barrier(1 + c, 128);  // the swap buffer is free for the next item's up sums
      } else {
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          if (j >= nj) break;
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int tok = 8 * j + 2 * tl + (i & 1), row = Map::out_row(ci.block, c, w, g, i >> 1);
            if (tok < ci.ntok && row < a.out_rows)
              a.out[static_cast<int64_t>(rt.plist[ci.tok0 + tok]) * a.ld_out + row] = __float2bfloat16_rn(acc[j][i]);
          }
        }
      }
    }
  }
#ifdef MXFP4LAB_DECODE_TRACE
  __syncthreads();
  if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceExit);
#endif
}

template <int NC, int R, bool FC1>
cudaError_t launch_wsr_gemm(const GemmArgs& a, int grid, cudaStream_t stream, bool pdl) {
  auto kernel = wsr_kernel<NC, R, FC1>;
  const int smem = wsr_smem_bytes<NC, R>(a.num_experts, a.num_pairs);
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  return launch_pdl(kernel, grid, WsrSmem<NC>::kThreads, smem, stream, pdl, a);
}
