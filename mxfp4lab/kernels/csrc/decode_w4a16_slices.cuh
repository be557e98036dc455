// mxfp4lab decode_w4a16, fused slices (variants with FU = 2): for one or two tokens per expert, fc2 computed inside
// fc1's CTAs. Included by decode_w4a16.cu inside namespace mxfp4lab_decode, after decode_w4a16_split_k.cuh.
//
// An item is (local expert e, up to TC tokens, a pair q of fc1 layout groups 2q and 2q + 1: the up and gate tiles of
// intermediate columns 64q .. 64q + 63, 8 tiles). The CTA's 8 warps split fc1's K as the split-K items do and reduce
// in shared memory in the same fixed order; the SwiGLU (the reference's rounding points) writes the item's h into
// shared memory, in the layout of an activation slot -- which is exactly fc2's activation chunk q, since fc2's K
// chunks are 64 columns of h. The same CTA then runs fc2's product of that chunk with all of the expert's output rows
// (its "slice"): warp w takes fc2's layout groups w, w + 8, ... (2 tiles, 32 rows each), streams their chunk-q steps
// through its own ring (the first DS - 1 copies issued before fc1's epilogue, so they land while the CTA reduces),
// decodes them into the same m16n8k16 fragments with the chunk's h as the B operand (loaded once), and writes fp32
// partial sums part[q][pair][row]. combine_slices_kernel sums each (pair, row)'s partials over the chunks in a fixed
// order, rounds that slot's y to bf16 and combines the slots exactly as combine_kernel does.
//
// What follows the last fc1 item is then its own slice and the combine: no h or y round trip through L2, no second
// GEMM grid whose CTAs start as fc1's leave and wait for fc1's last one. Another fp32 summation order than the
// split-K items (fc2's K summed per chunk, then over chunks): its own twin.

template <int TC, int D, int DS>
struct SliceSmem {
  static constexpr int kNT = 2 * kNT1;                                // 8 tiles: two fc1 layout groups
  static constexpr int kLayoutStep1 = kNT1 * (kTileBytes + kScaleBytes);  // one step of one fc1 layout group
  static constexpr int kStep = kNT * (kTileBytes + kScaleBytes);     // a ring slot's weights and scales
  static constexpr int kActHalf = TC * 64;                            // [half][lane < 4 TC][16 B]
  static constexpr int kSlot = kStep + 2 * kActHalf;
  static constexpr int kRing = kWarps * D * kSlot;
  static constexpr int kStep2 = kNT2 * (kTileBytes + kScaleBytes);   // one fc2 layout step: the slice's ring slot
  static_assert(DS * kStep2 <= D * kSlot, "the slice's ring fits in the warp's fc1 ring");
  static constexpr int kRed = kWarps * kNT * 16 * TC * 4;             // fp32 partials [warp][tile][row][token]
  static constexpr int kH = 2 * kActHalf;                             // the item's h, as an activation slot
  static constexpr int kFixed = kRing + kRed + kH;
};

template <int TC, int D, int DS>
constexpr int slices_smem_bytes(int num_experts, int num_pairs) {
  return SliceSmem<TC, D, DS>::kFixed + (5 * num_experts + 2 + 2 * kWarps + num_pairs + 32) * 4;
}

// a: fc1 (x, w13, the SwiGLU epilogue); b: fc2 (w2: groups, chunks; out_rows = hidden); part: fp32
// [b.chunks][a.num_pairs][32 b.groups].
template <int TC, int D, int DS, int CPS>
__global__ void __launch_bounds__(kThreads, CPS) slices_kernel(const GemmArgs a, const GemmArgs b, float* part) {
  using S = SliceSmem<TC, D, DS>;
  static_assert(TC >= 1 && TC <= 4, "one m16n8 token block, at most 4 token rows per activation slot");
  extern __shared__ __align__(16) uint8_t smem[];
  const int E = a.num_experts;
  int* rbase = reinterpret_cast<int*>(smem + S::kFixed);
  Routing rt;
  rt.count = rbase;
  rt.start = rbase + E;
  rt.istart = rbase + 2 * E + 1;
  int* scratch = rbase + 3 * E + 2;
  rt.plist = scratch + 2 * E + 2 * kWarps;
  const int pairs = (a.groups + 1) / 2;  // items per (expert, token chunk)
  pdl_launch_dependents();  // the combine's CTAs may start (and wait) as this grid's SMs free up
  if (a.num_pairs <= 32) {
    build_routing_warp(a, rt, TC, pairs);
  } else {
    build_routing(a, rt, scratch, TC, pairs, reinterpret_cast<int*>(smem), S::kRing / 4);
  }
  const int n_items = rt.istart[E];
  const int first = static_cast<int>((static_cast<int64_t>(blockIdx.x) * n_items) / gridDim.x);
  const int last = static_cast<int>((static_cast<int64_t>(blockIdx.x + 1) * n_items) / gridDim.x);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, tl = lane & 3;
  const int c_begin = (warp * a.chunks) / kWarps, c_end = ((warp + 1) * a.chunks) / kWarps, ncw = c_end - c_begin;
  const uint32_t wring = smem_addr(smem) + warp * D * S::kSlot;
  float* red = reinterpret_cast<float*>(smem + S::kRing);
  const uint32_t hslot = smem_addr(smem) + S::kRing + S::kRed;
  uint8_t* hbytes = smem + S::kRing + S::kRed;
  const int64_t block1 = static_cast<int64_t>(a.chunks) * S::kLayoutStep1;  // the next fc1 layout group's blocks
  const int64_t h32 = static_cast<int64_t>(b.groups) * 32;
  const int nsteps2 = warp < b.groups ? (b.groups - warp + kWarps - 1) / kWarps : 0;  // this warp's fc2 groups

  for (int item = first; item < last; ++item) {
    const Item it = find_item(rt, E, item, TC, pairs);
    const int q = it.group;
    const int64_t second = 2 * q + 1 < a.groups ? block1 : 0;  // an odd last group: its tiles twice (rows never kept)
    const uint8_t* w1 = a.wq + ((static_cast<int64_t>(it.e) * a.groups + 2 * q) * a.chunks + c_begin) * S::kLayoutStep1;
    const __nv_bfloat16* xrow =
        g < it.ntok ? a.act + static_cast<int64_t>(rt.plist[it.tok0 + g] / a.act_row_div) * a.ld_act : nullptr;
    auto issue1 = [&](int j) {  // this warp's fc1 step j (chunk c_begin + j) into slot j % D
      if (j < ncw) {
        const uint32_t slot = wring + (j % D) * S::kSlot;
        const uint8_t* src = w1 + static_cast<int64_t>(j) * S::kLayoutStep1;
#pragma unroll
        for (int n = 0; n < S::kNT; ++n)
          cp_async16(slot + n * kTileBytes + lane * 16, src + (n >= kNT1 ? second : 0) + (n % kNT1) * kTileBytes + lane * 16,
                     true);
        if (lane < 2 * S::kNT) {  // scale lane l: half (l & 1) of tile l / 2's 32 bytes
          const int n = lane >> 1;
          cp_async16(slot + S::kNT * kTileBytes + lane * 16,
                     src + (n >= kNT1 ? second : 0) + kNT1 * kTileBytes + (n % kNT1) * kScaleBytes + (lane & 1) * 16, true);
        }
        if (g < TC) {
          const int col = (c_begin + j) * kChunkK + 16 * tl;
#pragma unroll
          for (int h = 0; h < 2; ++h)
            cp_async16(slot + S::kStep + h * S::kActHalf + lane * 16, xrow ? xrow + col + 8 * h : a.act,
                       xrow != nullptr && col + 8 * h + 8 <= a.k_valid);
        }
      }
      cp_async_commit();
    };
    const uint8_t* w2 = b.wq + (static_cast<int64_t>(it.e) * b.groups * b.chunks + q) * S::kStep2;  // group 0, chunk q
    auto issue2 = [&](int s) {  // this warp's fc2 step s (layout group warp + 8 s, chunk q) into slot s % DS
      if (s < nsteps2) {
        const uint32_t slot = wring + (s % DS) * S::kStep2;
        const uint8_t* src = w2 + static_cast<int64_t>(warp + kWarps * s) * b.chunks * S::kStep2;
        cp_async16(slot + lane * 16, src + lane * 16, true);
        cp_async16(slot + kTileBytes + lane * 16, src + kTileBytes + lane * 16, true);
        if (lane < 2 * kNT2) cp_async16(slot + kNT2 * kTileBytes + lane * 16, src + kNT2 * kTileBytes + lane * 16, true);
      }
      cp_async_commit();
    };

    // ---- fc1: this warp's chunks of the item's 8 tiles
    float acc[S::kNT][4];
#pragma unroll
    for (int n = 0; n < S::kNT; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[n][i] = 0.f;
#pragma unroll
    for (int j = 0; j < D - 1; ++j) issue1(j);
    for (int j = 0; j < ncw; ++j) {
      issue1(j + D - 1);
      cp_async_wait<D - 1>();
      __syncwarp();
      const uint32_t sbase = wring + (j % D) * S::kSlot;
      uint4 bw[2];
#pragma unroll
      for (int h = 0; h < 2; ++h)
        bw[h] = g < TC ? lds128(sbase + S::kStep + h * S::kActHalf + lane * 16) : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
      for (int n = 0; n < S::kNT; ++n) {
        const uint4 w = lds128(sbase + n * kTileBytes + lane * 16);
        const uint32_t saddr = sbase + S::kNT * kTileBytes + n * kScaleBytes + (g * 2 + (tl >> 1)) * 2;
        const uint32_t f_lo = scale_factor(lds8(saddr)), f_hi = scale_factor(lds8(saddr + 1));
        const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          uint32_t r0, r1, r2, r3;
          decode_word(words[s], r0, r1, r2, r3);
          const uint4& bb = bw[s >> 1];
          mma_bf16(acc[n], hmul2_bf16(r0, f_lo), hmul2_bf16(r1, f_hi), hmul2_bf16(r2, f_lo), hmul2_bf16(r3, f_hi),
                   (s & 1) ? bb.z : bb.x, (s & 1) ? bb.w : bb.y);
        }
      }
      __syncwarp();
    }
    // the warp's fc1 ring is free: its first slice steps' weights stream while the CTA reduces
#pragma unroll
    for (int s = 0; s < DS - 1; ++s) issue2(s);

    // ---- fc1's epilogue: the warps' partial sums in a fixed order, the SwiGLU, h into the slot
#pragma unroll
    for (int n = 0; n < S::kNT; ++n) {
      float* base = red + ((warp * S::kNT + n) * 16) * TC;
      const int col = 2 * tl;
      if (col < TC) {
        base[g * TC + col] = acc[n][0];
        base[(g + 8) * TC + col] = acc[n][2];
      }
      if (col + 1 < TC) {
        base[g * TC + col + 1] = acc[n][1];
        base[(g + 8) * TC + col + 1] = acc[n][3];
      }
    }
    __syncthreads();
    {
      const float alpha = a.alpha ? a.alpha[it.e] : a.alpha_s;
      const float beta = a.beta ? a.beta[it.e] : a.beta_s;
      const float limit = a.limit ? a.limit[it.e] : a.limit_s;
      for (int o = threadIdx.x; o < 64 * TC; o += kThreads) {
        const int tok = o / 64, rr = o % 64;  // h column 64 q + rr of the item's token tok
        const int grp = rr / 32, r16 = rr % 16;
        const int nu = grp * kNT1 + (rr % 32) / 16, ng = nu + kNT1 / 2;  // the group's up tile and its gate tile
        const int row = 64 * q + rr;
        float v = 0.f;  // tokens past the item's and columns past the layer's: zero (fc2's K padding)
        if (tok < it.ntok && row < a.out_rows) {
          float up = 0.f, gate = 0.f;
          for (int w = 0; w < kWarps; ++w) {
            up += red[((w * S::kNT + nu) * 16 + r16) * TC + tok];
            gate += red[((w * S::kNT + ng) * 16 + r16) * TC + tok];
          }
          up = bf16_round(up);
          gate = bf16_round(gate);
          if (a.bias) {
            const __nv_bfloat16* bias = a.bias + static_cast<int64_t>(it.e) * 2 * a.bias_ld;
            up += __bfloat162float(bias[row]);
            gate += __bfloat162float(bias[a.bias_ld + row]);
          }
          if (a.use_limit) {
            gate = fminf(gate, limit);
            up = fmaxf(fminf(up, limit), -limit);
          }
          v = gate * (1.0f / (1.0f + expf(-gate * alpha))) * (up + beta);
        }
        // activation slot layout: half (rr % 16) / 8 of lane 4 tok + rr / 16, element rr % 8
        reinterpret_cast<__nv_bfloat16*>(hbytes + ((rr % 16) / 8) * S::kActHalf + (4 * tok + rr / 16) * 16)[rr % 8] =
            __float2bfloat16_rn(v);
      }
    }
    __syncthreads();  // h is in the slot (and every warp's partial sums are read)

    // ---- fc2's slice: chunk q of the expert's every output row, h as B (the same fragments at every step)
    uint4 hb[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) hb[h] = g < TC ? lds128(hslot + h * S::kActHalf + lane * 16) : make_uint4(0u, 0u, 0u, 0u);
    for (int s = 0; s < nsteps2; ++s) {
      issue2(s + DS - 1);
      cp_async_wait<DS - 1>();
      __syncwarp();
      const uint32_t sbase = wring + (s % DS) * S::kStep2;
      float acc2[kNT2][4];
#pragma unroll
      for (int n = 0; n < kNT2; ++n) {
#pragma unroll
        for (int i = 0; i < 4; ++i) acc2[n][i] = 0.f;
        const uint4 w = lds128(sbase + n * kTileBytes + lane * 16);
        const uint32_t saddr = sbase + kNT2 * kTileBytes + n * kScaleBytes + (g * 2 + (tl >> 1)) * 2;
        const uint32_t f_lo = scale_factor(lds8(saddr)), f_hi = scale_factor(lds8(saddr + 1));
        const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          uint32_t r0, r1, r2, r3;
          decode_word(words[k], r0, r1, r2, r3);
          const uint4& bb = hb[k >> 1];
          mma_bf16(acc2[n], hmul2_bf16(r0, f_lo), hmul2_bf16(r1, f_hi), hmul2_bf16(r2, f_lo), hmul2_bf16(r3, f_hi),
                   (k & 1) ? bb.z : bb.x, (k & 1) ? bb.w : bb.y);
        }
      }
      __syncwarp();
      // fragment (row g or g + 8, token 2 tl or 2 tl + 1) of tile n: output row 32 (warp + 8 s) + 16 n + ...
      const int row0 = 32 * (warp + kWarps * s) + g;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int tok = 2 * tl + (i & 1);
        if (tok < it.ntok) {
          float* dst = part + (static_cast<int64_t>(q) * a.num_pairs + rt.plist[it.tok0 + tok]) * h32 + row0 + (i >> 1) * 8;
#pragma unroll
          for (int n = 0; n < kNT2; ++n) dst[16 * n] = acc2[n][i];
        }
      }
    }
  }
  cp_async_wait<0>();
}

// The combine of the slices: block (token m, 32 output rows rb); lane = row, warp w sums the partials of chunks
// [w C / 8, (w + 1) C / 8) of every slot of the token; the slot's y is the fixed-order sum over the warps rounded to
// bf16, then the slots are combined as in combine_kernel (combine_step, final_bf16).
__global__ void __launch_bounds__(kThreads) combine_slices_kernel(const CombineArgs a, const float* part, int chunks,
                                                                   int64_t h32) {
  __shared__ float red[kWarps][8][32];  // [warp][slot][row]; the host allows top_k <= 8
  const int nb = static_cast<int>(h32 / 32);
  const int m = blockIdx.x / nb, row = (blockIdx.x % nb) * 32 + (threadIdx.x & 31), warp = threadIdx.x >> 5;
  const int c0 = (warp * chunks) / kWarps, c1 = ((warp + 1) * chunks) / kWarps;
  const int64_t P = static_cast<int64_t>(a.m) * a.top_k;
  pdl_wait();
  for (int j = 0; j < a.top_k; ++j) {
    const int e = a.topk_ids[m * a.top_k + j] - a.expert_offset;
    float s = 0.f;
    if (static_cast<unsigned>(e) < static_cast<unsigned>(a.num_experts))
      for (int c = c0; c < c1; ++c) s += part[(c * P + m * a.top_k + j) * h32 + row];
    red[warp][j][threadIdx.x & 31] = s;
  }
  __syncthreads();
  if (warp != 0 || row >= a.hidden) return;
  float acc = 0.f;
  for (int j = 0; j < a.top_k; ++j) {
    const int e = a.topk_ids[m * a.top_k + j] - a.expert_offset;
    if (static_cast<unsigned>(e) >= static_cast<unsigned>(a.num_experts)) continue;
    float y = 0.f;
    for (int w = 0; w < kWarps; ++w) y += red[w][j][threadIdx.x];
    const float bias = a.b2 ? __bfloat162float(a.b2[static_cast<int64_t>(e) * a.ld_b2 + row]) : 0.f;
    acc = combine_step(acc, a.topk_w[m * a.top_k + j], bf16_round(y), bias);
  }
  a.out[static_cast<int64_t>(m) * a.ld_out + row] = final_bf16(acc, a.out_scale);
}
