// mxfp4lab decode_w4a16, wide items: the two GEMMs for many tokens per expert (large batches, prefill).
// Included by decode_w4a16.cu inside namespace mxfp4lab_decode (its copy, decode, MMA and routing helpers, its
// weight layout and its combine launch); selected by the variants whose 15th column WT is not 0 (the 16th, WG, picks
// mma.sync or wgmma).
//
// Why a second schedule. The split-K items of gemm_phase are made for a few tokens per expert: an item is 4 tiles
// x 8 G tokens, its K split over the CTA's 8 warps and reduced in shared memory. With tens of tokens per expert
// that costs per 64 output rows a pass over the token rows' activations (as many bytes as the weights at 16
// tokens) and a cross-warp reduction of 4 x 16 x 8 G partial sums per warp, and an expert's weights are decoded
// once per 8 G tokens (GPT-OSS-120b at M = 1024: 3.0 ms, 7x its weights' bytes over the copy bandwidth).
//
// A WIDE ITEM is (local expert e, a tile of up to BN = 8 G = 32 WT of e's pairs, a block of WR = 8 / WT warp row
// groups).
// Warp w = (row warp wr = w % WR, token warp wt = w / WR) owns 4 16-row tiles -- fc1: one layout group (2 up + 2
// gate tiles of 32 intermediate rows); fc2: two consecutive layout groups (64 output rows; the layer's last odd
// group reads itself twice, rows never stored) -- and the item's tokens 32 wt .. 32 wt + 31 (4 m16n8k16 N blocks),
// and runs the whole K itself: 64 fp32 accumulators per lane, no partial sums in shared memory, fc1's SwiGLU and
// fc2's bf16 round straight from registers. With G = 2 WT (mma.sync only; variant 70) a warp holds 16 tokens (2 N
// blocks, 32 accumulators: 112-120 registers, two CTAs per SM) and an item BN = 16 WT: an expert with 9-16 tokens
// (GPT-OSS-20b at M = 64) has its weights decoded once, where the split-K items decode them once per 8 tokens. The WT
// warps of a row group decode the same weights, each for its own tokens; N blocks without tokens are skipped
// (warp-uniform). Per K chunk a CTA-wide cp.async ring stage (D
// stages, one barrier per chunk) holds the row groups' weights (one copy each, as the layout stores a step) and the
// token tile's activation rows (one copy, read by every row warp), so a CTA reads a weight byte once per BN tokens
// and an activation byte once per 32 WR intermediate (fc1) or 64 WR output (fc2) rows. Items are enumerated
// expert-major, row block-major inside an expert, token tile fastest: an expert's token tiles of one row block
// follow each other, and CTAs take them round-robin, so that neighbouring items run side by side and read shared
// weights and activations from L2. Every CTA routes as gemm_phase does (the same lists). fc2's CTAs copy the weights
// of their first D - 1 steps before they wait for fc1.
//
// The sums: each output is one warp's MMA chain over K in chunk order (no cross-warp reduction), so the bits differ
// from gemm_phase's (same products, another fp32 summation order); the rounding points are the same.

// One token row of a ring stage as mma.sync reads it (16-byte loads): a chunk's 64 bf16, padded so that 8 rows x 4
// lanes are conflict-free.
constexpr int kMmaRowBytes = 2 * kChunkK + 16;

template <int WT, int D, int WG, int G>
struct WideSmem {
  static_assert(WT == 1 || WT == 2, "one or two token warps per row group");
  static_assert(WG == 0 || D >= 3, "wgmma items copy into the slot two steps back: at least 3 stages");
  static_assert(WG < 2 || WT == 2, "split tiles: two warps per row group");
  static_assert(G == (WG == 3 ? 16 : 4 * WT) || (WG == 0 && G == 2 * WT), "32 or 16 (mma.sync) tokens per token warp");
  static constexpr int WR = kWarps / WT;                        // warp row groups per CTA
  static constexpr int BN = 8 * G;                              // tokens per item (split tiles, WG = 3: 128)
  static constexpr int NJ = WG >= 2 ? BN / 8 : G / WT;          // N blocks of 8 tokens per warp
  static constexpr int kWSlot = 4 * (kTileBytes + kScaleBytes);  // one row group's step: 4 tiles, then their scales
  // one token row of a step: kMmaRowBytes for mma.sync; wgmma (WG) reads the tile as core matrices (see WgmmaTile),
  // no pad
  static constexpr int kRowBytes = WG ? 2 * kChunkK : kMmaRowBytes;
  static constexpr int kStage = WR * kWSlot + BN * kRowBytes;
  static constexpr int kRing = D * kStage;
  // steps in flight ahead of the one consumed: the copy at step q refills step q - 1's slot (mma.sync: its reads
  // are done at the barrier) or, with wgmma, step q - 2's (step q - 1's last MMAs may still read theirs)
  static constexpr int kAhead = WG ? D - 2 : D - 1;
};

// A pair id in the routing lists: 16 bits at two CTAs per SM (their lists then fit beside the ring up to 16384
// pairs on 128 experts), else an int.
template <bool Short>
struct PairId {
  using T = int;
};
template <>
struct PairId<true> {
  using T = uint16_t;
};
static_assert(kMaxWidePairs <= 65536, "16-bit pair ids");

template <int WT, int D, int WG, int CPS, int G>
constexpr int wide_smem_bytes(int num_experts, int num_pairs) {
  constexpr int kId = sizeof(typename PairId<CPS == 2>::T);
  return WideSmem<WT, D, WG, G>::kRing + (5 * num_experts + 2 + 2 * kWarps + 32) * 4 +  // + the routing
         (kId * num_pairs + 3) / 4 * 4;
}

// ---- wgmma (WG > 0): the same decoded A fragments, fed to wgmma.mma_async with A from registers.
// A warpgroup's 4 warps issue one m64nNk16 per tile n: rows 16 w .. 16 w + 15 of the 64 are warp w's tile n (its
// own rows, decoded by it: the A fragment of m64nNk16 is, per warp, the m16n8k16 one), N = 8 NJ tokens of the
// warpgroup's 32 (B from shared memory), and the accumulator fragment is, per warp, the m16n8k16 C fragments of
// its NJ N blocks in order -- acc[n][j][i] as with mma.sync. (PTX ISA 9.7.15.5.1.)
//
// WgmmaTile: the token tile of a stage as B, K-major without swizzle: 8 x 16-byte core matrices, granule c of token
// row r at ((r / 8) * 8 + c) * 128 + (r % 8) * 16 (LBO = 128 B between the two core matrices of a k16 step, SBO =
// 1024 B between 8-row groups). The MMA's K order is the layout's (file header of decode_w4a16.cu): at MMA step
// st = 2 h + s2 lane tl's A pairs u = 0, 1 hold chunk elements 16 tl + 8 h + 4 s2 + 2 u + {0, 1}, so granule
// c = 2 st + u holds, at bytes 4 tl .. 4 tl + 3, those two elements of the token's row: each 16-byte piece j of
// the row (elements 8 j ..) is copied as four 4-byte pieces p, to granule 4 (j % 2) + p at byte 4 (j / 2).
struct WgmmaTile {
  static constexpr uint32_t kLbo = 128, kSbo = 1024;
  // the byte of 16-byte piece j of token row r that piece p lands at
  static __device__ __forceinline__ uint32_t dst(int r, int j, int p) {
    return (r >> 3) * kSbo + ((j & 1) * 4 + p) * kLbo + (r & 7) * 16 + (j >> 1) * 4;
  }
  // the matrix descriptor of a tile at shared address `addr` (MMA step st adds st * 2 kLbo to the address)
  static __device__ __forceinline__ uint64_t desc(uint32_t addr) {
    return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(kLbo >> 4) << 16) |
           (static_cast<uint64_t>(kSbo >> 4) << 32);  // bits 62-63 = 0: no swizzle
  }
};

// The four 4-byte pieces of a 16-byte piece of a token row into a WgmmaTile (piece p at dst + p kLbo; cp.async.ca: the
// only cp.async below 16 bytes; valid = false writes zeros), from one source address with immediate offsets: one
// address and zero-fill select per 16 bytes, not per piece (a chunk's copies at 128 tokens per item: ~95 SASS
// instructions per thread instead of ~190).
__device__ __forceinline__ void cp_async4x4(uint32_t dst, const void* src, bool valid) {
  asm volatile(
      "cp.async.ca.shared.global [%0], [%1], 4, %2;\n"
      "cp.async.ca.shared.global [%0+%3], [%1+4], 4, %2;\n"
      "cp.async.ca.shared.global [%0+%4], [%1+8], 4, %2;\n"
      "cp.async.ca.shared.global [%0+%5], [%1+12], 4, %2;\n" ::"r"(dst),
      "l"(src), "r"(valid ? 4 : 0), "n"(WgmmaTile::kLbo), "n"(2 * WgmmaTile::kLbo), "n"(3 * WgmmaTile::kLbo)
      : "memory");
}
// This thread's completed writes to shared memory made visible to the async proxy (wgmma's operand reads).
__device__ __forceinline__ void fence_proxy_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator reads and writes across the wgmma fences and waits.
template <int J>
__device__ __forceinline__ void fence_acc(float (&acc)[4][J][4]) {
#pragma unroll
  for (int n = 0; n < 4; ++n)
#pragma unroll
    for (int j = 0; j < J; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) asm volatile("" : "+f"(acc[n][j][i])::"memory");
}

// d[j][i] += A x B over one k16 step, N = 8 NJ (d: one tile's NJ N blocks; a: the m16n8k16 A fragment).
template <int NJ>
__device__ __forceinline__ void wgmma_bf16(float (&d)[4][4], const uint32_t (&a)[4], uint64_t desc);
template <>
__device__ __forceinline__ void wgmma_bf16<1>(float (&d)[4][4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %9, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0,%1,%2,%3}, {%4,%5,%6,%7}, %8, p, 1, 1, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_bf16<2>(float (&d)[4][4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9,%10,%11}, %12, p, 1, 1, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_bf16<3>(float (&d)[4][4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %17, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n24k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11}, {%12,%13,%14,%15}, %16, p, 1, 1, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_bf16<4>(float (&d)[4][4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, {%16,%17,%18,%19}, %20, p, 1, 1, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}

// An activation copy's source row at the chunk's column: a pointer (null: no token), or with 128 accumulators per lane
// (WG = 3) an element offset from the activations (-1: no token) -- 4 registers fewer, so that the kernel does not
// spill; the host keeps the offsets below 2^31 (launch_wide).
template <bool Offset>
struct ActRef {
  using T = const __nv_bfloat16*;
  static __device__ __forceinline__ T make(const __nv_bfloat16* base, int64_t off) { return base + off; }
  static __device__ __forceinline__ T none() { return nullptr; }
  static __device__ __forceinline__ bool has(T r) { return r != nullptr; }
  static __device__ __forceinline__ const __nv_bfloat16* at(const __nv_bfloat16*, T r) { return r; }
};
template <>
struct ActRef<true> {
  using T = int;
  static __device__ __forceinline__ T make(const __nv_bfloat16*, int64_t off) { return static_cast<int>(off); }
  static __device__ __forceinline__ T none() { return -1; }
  static __device__ __forceinline__ bool has(T r) { return r >= 0; }
  static __device__ __forceinline__ const __nv_bfloat16* at(const __nv_bfloat16* base, T r) { return base + r; }
};

struct WideItem {
  int e, tok0, ntok, block;
};
// Item -> (expert, token tile, row block): items(e) = ceil(count / bn) * blocks, row block-major, token tile fastest.
// TP: r.istart holds each expert's first token tile, not its first item (the one-grid kernel's routing serves both
// GEMMs, whose row blocks differ): its first item is istart[e] * blocks.
template <typename L, bool TP = false>
__device__ __forceinline__ WideItem find_wide_item(const RoutingT<L>& r, int E, int item, int bn, int blocks) {
  int lo = 0, hi = E;  // largest e with istart[e] <= item
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if ((TP ? r.istart[mid] * blocks : r.istart[mid]) <= item) lo = mid; else hi = mid;
  }
  WideItem it;
  it.e = lo;
  const int rel = item - (TP ? r.istart[lo] * blocks : r.istart[lo]), tiles = (r.count[lo] + bn - 1) / bn;
  it.block = rel / tiles;
  const int tt = rel - it.block * tiles;
  it.tok0 = r.start[lo] + tt * bn;
  it.ntok = min(bn, r.count[lo] - tt * bn);
  return it;
}

// The one-grid kernel (r.istart: token tiles): expert e's fc1 items, which its ready counter holds once all are stored.
template <typename L>
__device__ __forceinline__ int expert_items(const RoutingT<L>& r, int e, int blocks) {
  return (r.istart[e + 1] - r.istart[e]) * blocks;
}

// The items j < n of a round-robin sequence whose position skip + j is dealt to CTA (skip + j) % grid: CTA b's first
// (the j with skip + j = b mod grid) and how many it takes (the one-grid kernel: fc1's items at skip 0, fc2's at n1).
struct ItemRange {
  int first, count;
};
__device__ __forceinline__ ItemRange dealt_items(int b, int grid, int skip, int n) {
  const int first = ((b - skip % grid) % grid + grid) % grid;
  return {first, first < n ? (n - 1 - first) / grid + 1 : 0};
}

// One K chunk of one warp: its 4 tiles' weights and scales at wb (a stage's row-group slot), its NJ (of J) N blocks of 8
// token rows at ab (this lane's token row g of the first block, its 32 bytes 32 tl ..; rows kMmaRowBytes apart).
// Each weight word is decoded once and multiplies every N block.
template <int NJ, int NT, int J>
__device__ __forceinline__ void wide_step(float (&acc)[4][J][4], uint32_t wb, uint32_t ab, int lane) {
  static_assert(NT == 4 || NT == 2, "4 tiles per warp, or 2 (fc2 items of one layout group per warp)");
  static_assert(NJ >= 1 && NJ <= J, "N blocks with tokens");
  const int g = lane >> 2, tl = lane & 3;
  uint32_t f_lo[4], f_hi[4];
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    const uint32_t saddr = wb + 4 * kTileBytes + n * kScaleBytes + (g * 2 + (tl >> 1)) * 2;
    f_lo[n] = scale_factor(lds8(saddr));      // row g
    f_hi[n] = scale_factor(lds8(saddr + 1));  // row g + 8
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // MMA steps 2h, 2h + 1: words 2h, 2h + 1 of each tile (8 bytes, not 16: registers)
    uint2 w[4];
#pragma unroll
    for (int n = 0; n < NT; ++n) w[n] = lds64(wb + n * kTileBytes + lane * 16 + h * 8);
    uint4 b[NJ];
#pragma unroll
    for (int j = 0; j < NJ; ++j) b[j] = lds128(ab + j * 8 * kMmaRowBytes + h * 16);
#pragma unroll
    for (int s2 = 0; s2 < 2; ++s2) {
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        uint32_t r0, r1, r2, r3;
        decode_word(s2 ? w[n].y : w[n].x, r0, r1, r2, r3);
        const uint32_t a0 = hmul2_bf16(r0, f_lo[n]), a1 = hmul2_bf16(r1, f_hi[n]);
        const uint32_t a2 = hmul2_bf16(r2, f_lo[n]), a3 = hmul2_bf16(r3, f_hi[n]);
#pragma unroll
        for (int j = 0; j < NJ; ++j) mma_bf16(acc[n][j], a0, a1, a2, a3, s2 ? b[j].z : b[j].x, s2 ? b[j].w : b[j].y);
      }
    }
  }
}

// The same for N = 8 NJ up to 64 tokens (split tiles, WG = 2): d holds 8 N blocks; NJ <= 4 is wgmma_bf16 on the first 4.
template <int NJ>
__device__ __forceinline__ void wgmma_bf16_wide(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc) {
  static_assert(NJ >= 1 && NJ <= 4, "N = 40 .. 64: the specializations below");
  wgmma_bf16<NJ>(reinterpret_cast<float(&)[4][4]>(d), a, desc);
}
template <>
__device__ __forceinline__ void wgmma_bf16_wide<5>(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %25, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n40k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19}, {%20,%21,%22,%23}, %24, p, 1, 1, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_bf16_wide<6>(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %29, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n48k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23}, {%24,%25,%26,%27}, %28, p, 1, 1, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_bf16_wide<7>(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %33, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n56k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27}, {%28,%29,%30,%31}, %32, p, 1, 1, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_bf16_wide<8>(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}

// The same for N = 8 NJ up to 128 tokens (split tiles of 128 tokens, WG = 3): d holds 16 N blocks; NJ <= 8 is
// wgmma_bf16_wide on the first 8, and above 64 tokens N is 96 or 128 (the caller rounds NJ up to 12 or 16: the token
// tile's rows past the item's tokens are zeros, their sums are not stored).
template <int NJ>
__device__ __forceinline__ void wgmma_bf16_128(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc) {
  static_assert(NJ >= 1 && NJ <= 8, "N = 96, 128: the specializations below");
  wgmma_bf16_wide<NJ>(reinterpret_cast<float(&)[8][4]>(d), a, desc);
}
template <>
__device__ __forceinline__ void wgmma_bf16_128<12>(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %53, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n96k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47}, {%48,%49,%50,%51}, %52, p, 1, 1, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_bf16_128<16>(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
}

// wide_step with wgmma: per MMA step the warp decodes its NT tiles' A fragments (as wide_step; tile n of the row group's
// slot is tile[n]), the warpgroup issues one m64n(8 NJ)k16 per tile slot on the token tile at `desc` (WgmmaTile) and
// commits them as one group, then waits for the previous step's group: the decode of step st + 1 runs while step
// st's MMAs do, and the A registers of at most two steps are live. WG = 1: the warp's 4 tiles, R = 4 N blocks each
// (the warpgroup's 32 tokens); split tiles (WG = 2): 2 tiles, fc1 the up and the gate tile of the same 16 rows, fc2
// one layout group, R = 8 N blocks (all 64 tokens): a weight decoded once per 64 tokens, N as wide as the item's;
// WG = 3: the same with R = 16 (128 tokens, a weight decoded once per 128).
template <int NJ, int NT, int R>
__device__ __forceinline__ void wide_step_wgmma(float (&acc)[NT][R][4], uint32_t wb, uint64_t desc, int lane,
                                                const int (&tile)[NT]) {
  const int g = lane >> 2, tl = lane & 3;
  uint32_t f_lo[NT], f_hi[NT];
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    const uint32_t saddr = wb + 4 * kTileBytes + tile[n] * kScaleBytes + (g * 2 + (tl >> 1)) * 2;
    f_lo[n] = scale_factor(lds8(saddr));      // row g
    f_hi[n] = scale_factor(lds8(saddr + 1));  // row g + 8
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    uint2 w[NT];
#pragma unroll
    for (int n = 0; n < NT; ++n) w[n] = lds64(wb + tile[n] * kTileBytes + lane * 16 + h * 8);
#pragma unroll
    for (int s2 = 0; s2 < 2; ++s2) {
      uint32_t a[NT][4];
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        uint32_t r0, r1, r2, r3;
        decode_word(s2 ? w[n].y : w[n].x, r0, r1, r2, r3);
        a[n][0] = hmul2_bf16(r0, f_lo[n]);
        a[n][1] = hmul2_bf16(r1, f_hi[n]);
        a[n][2] = hmul2_bf16(r2, f_lo[n]);
        a[n][3] = hmul2_bf16(r3, f_hi[n]);
      }
      wgmma_fence();
      const uint64_t d = desc + (((2 * h + s2) * 2 * WgmmaTile::kLbo) >> 4);
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        if constexpr (R == 4) {
          wgmma_bf16<NJ>(acc[n], a[n], d);
        } else if constexpr (R == 8) {
          wgmma_bf16_wide<NJ>(acc[n], a[n], d);
        } else {
          wgmma_bf16_128<NJ>(acc[n], a[n], d);
        }
      }
      wgmma_commit();
      wgmma_wait<1>();
    }
  }
}

// One GEMM of a wide-items CTA: routing, then its items.
// ONE = 0: the GEMM is a kernel of its own (wide_kernel): CTA b takes items b, b + grid, ...; fc2 waits for fc1's grid
// (griddepcontrol.wait). ONE = 1: a phase of the one-grid kernel (wide_one_kernel): fc1 builds the routing with the
// token tiles' offsets in istart (TP), which fc2 reuses from shared memory; both GEMMs' items form one round-robin
// sequence, fc1's then fc2's; fc1 counts each item it has stored at its expert's ready counter (a.ready[e]), and fc2,
// before the first activation copy of an item, waits until its expert's counter holds all of that expert's fc1 items
// (token tiles x blocks1, fc1's row blocks). ONE = 2 (fc2 only): the CTA claims its fc2 items one at a time from a
// counter (a.ready[E + 1]) in the sequence's order -- the earliest experts' first -- instead of taking every grid-th:
// a CTA done early takes the next item whose expert is ready soonest, not one dealt to it in advance. ONE = 3 (fc1
// only): fc1's items claimed the same way from a.ready[E + 2], so that a CTA whose items streamed fast takes more.
template <int WT, int D, int CPS, bool FC1, int WG, int G, int T, int ONE>
__device__ __forceinline__ void wide_gemm(const GemmArgs& a, int blocks1) {
  using S = WideSmem<WT, D, WG, G>;
  // T: tiles per warp. 4: fc1 a layout group, fc2 two. 2 (mma.sync only; twice the items, the slot's other half
  // unused): fc1 half a layout group -- an up tile and the gate tile of the same 16 rows (layout tiles h, h + 2) --,
  // fc2 one layout group (32 output rows)
  static_assert(T == 4 || (T == 2 && WG == 0), "two tiles per warp: mma.sync");
  static_assert(ONE == 0 || WG == 0, "the one-grid kernel runs mma.sync items");
  constexpr int NTW = T;
  constexpr int WR = S::WR, BN = S::BN;
  constexpr int LT = FC1 ? kNT1 : kNT2;                     // tiles of one layout group
  constexpr int kLStep = LT * (kTileBytes + kScaleBytes);   // one step of one layout group in the layout
  // 16-byte activation copies per thread per step (16 tokens per item: one, by the first 128 threads)
  constexpr int kActCopies = (BN * (2 * kChunkK / 16) + kThreads - 1) / kThreads;
  constexpr bool kAllCopy = BN * (2 * kChunkK / 16) >= kThreads;
  extern __shared__ __align__(16) uint8_t smem[];
  const int E = a.num_experts;
  int* rbase = reinterpret_cast<int*>(smem + S::kRing);
  using L = typename PairId<CPS == 2>::T;
  RoutingT<L> rt;
  rt.count = rbase;
  rt.start = rbase + E;
  rt.istart = rbase + 2 * E + 1;
  int* scratch = rbase + 3 * E + 2;
  rt.plist = reinterpret_cast<L*>(scratch + 2 * E + 2 * kWarps);
  // warp row groups per expert
  const int wgroups = FC1 ? (NTW == 2 ? 2 * a.groups : a.groups) : (NTW == 2 ? a.groups : (a.groups + 1) / 2);
  const int blocks = (wgroups + WR - 1) / WR;               // row blocks per expert

  if (threadIdx.x == 0) {
    MXFP4LAB_STAMP(a, kTraceEntry);
    MXFP4LAB_TRACE(a, kTraceSm, sm_id());
  }
  if constexpr (!(ONE && !FC1)) {  // (the one-grid kernel's fc2: fc1's lists)
    pdl_launch_dependents();
    if (a.num_pairs <= 32) {
      build_routing_warp(a, rt, BN, ONE ? 1 : blocks);
    } else {
      build_routing(a, rt, scratch, BN, ONE ? 1 : blocks, reinterpret_cast<int*>(smem), S::kRing / 4);
    }
  }
  if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceRouted);
  // Items are dealt round-robin (CTA b: items b, b + grid, ...): the CTAs running at one time hold neighbouring items,
  // so an expert's token tiles of one row block (and a token tile's row blocks) run side by side and the second
  // read of their weights (activations) comes from L2. (Contiguous ranges put them one after the other on one CTA,
  // with a grid's worth of other weights -- ~100 MB at GPT-OSS-120b M = 1024 -- read in between: fc1 read 1.53x its
  // weights from DRAM.) ONE: the sequence is fc1's n1 items, then fc2's, so that a CTA with fewer fc1 items takes
  // fc2's first ones: fc2's item j is the sequence's n1 + j.
  const int n_items = ONE ? rt.istart[E] * blocks : rt.istart[E];
  const int grid = gridDim.x;
  const ItemRange mine = dealt_items(blockIdx.x, grid, ONE && !FC1 ? rt.istart[E] * blocks1 : 0, n_items);  // (ONE)
  const int first = mine.first;
  constexpr bool DYN = (ONE == 2 && !FC1) || (ONE == 3 && FC1);  // items claimed at run time: as many as the counter
                                                                  // hands out
  const int my_items = DYN ? (1 << 30)
                       : ONE ? mine.count
                             : static_cast<int>(blockIdx.x) < n_items ? (n_items - 1 - blockIdx.x) / gridDim.x + 1 : 0;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, tl = lane & 3, wr = warp % WR, wt = warp / WR;
  const int chunks = a.chunks;
  const int total_steps = DYN ? (1 << 30) : my_items * chunks;
  const uint32_t ring = smem_addr(smem);
  // DYN: the CTA's k-th item (this GEMM's item index, or -1: none left) in claimq[k % 4] -- fc1's routing scratch,
  // free once the routing is built --, claimed by thread 0 when a cursor first needs it (every thread calls this at
  // the same points: a barrier)
  int* const claimq = scratch;
  int n_claimed = 0;
  auto claimed_item = [&](int k) -> int {
    if (k == n_claimed) {
      if (tid == 0) {
        const int j = atomicAdd(a.ready + E + (FC1 ? 2 : 1), 1);
        claimq[k & 3] = j < n_items ? j : -1;
      }
      __syncthreads();
      ++n_claimed;
    }
    return claimq[k & 3];
  };
  const int64_t block_stride = static_cast<int64_t>(chunks) * kLStep;  // the next layout group's block
  const uint32_t wdst = wr * S::kWSlot + lane * 16;                    // this lane's weight bytes in a stage
  // its first activation copy's (token row tid / 8, piece tid % 8; WG: piece 0 of its four, WgmmaTile), and the next
  // copy's: 32 token rows further
  const uint32_t adst = WR * S::kWSlot + (WG ? WgmmaTile::dst(tid >> 3, tid & 7, 0)
                                              : (tid >> 3) * S::kRowBytes + (tid & 7) * 16);
  constexpr uint32_t kActStride = WG ? kThreads / 8 / 8 * WgmmaTile::kSbo : kThreads / 8 * S::kRowBytes;

  // ---- issue side: a cursor over the CTA's steps (item, chunk); every thread keeps its own copy of it, with its
  // sources at the next chunk. Bit 0 of `parts`: this lane's weight copies (its row group's tiles n with n % WT == wt;
  // token warp 0's lanes 0..7 the 128 scale bytes), bit 1: its activation copies (kActCopies 16-byte pieces of the
  // tile's token rows: token rows tid / 8 + 32 i, elements 8 (tid % 8) .. of the chunk).
  using Act = ActRef<WG == 3>;
  struct Cursor {
    int left, item, c, slot;
    const uint8_t* w;   // this lane's 16 bytes of tile 0 of the row group's first layout group; null: no row group
    int second;         // fc2: bytes to the second layout group (0: the layer's last odd group reads itself twice)
    int scales;         // bytes from w to this lane's 16 scale bytes (lanes 0..7 of token warp 0)
    int col;            // the chunk's first activation column of this thread's copies
    typename Act::T act[kActCopies];  // the activation row of each copy at col (none: no token, zero fill)
  };
  Cursor cur{total_steps, (ONE ? first : static_cast<int>(blockIdx.x)) - static_cast<int>(gridDim.x), chunks, 0, nullptr, 0, 0, 0, {}};
  auto issue_into = [&](Cursor& cs, int parts) {
    if (cs.left <= 0) return;
    --cs.left;
    if (cs.c == chunks) {
      if constexpr (DYN) {  // the CTA's item ordinal: the steps issued so far over the chunks of an item
        cs.item = claimed_item((total_steps - cs.left - 1) / chunks);
        if (cs.item < 0) {  // none left: this cursor is done
          cs.left = 0;
          return;
        }
      } else {
        cs.item += gridDim.x;
      }
      cs.c = 0;
      const WideItem it = find_wide_item<L, ONE != 0>(rt, E, cs.item, BN, blocks);
      const int rg = it.block * WR + wr;  // this warp's row group
      // fc1 with two tiles a warp: half of a layout group, mapped as the split-K half items' (ItemTiles<2, 4>: half
      // rg & 1 of group rg / 2, its up tile and the gate tile of the same 16 rows, their scales)
      using Half = ItemTiles<2, kNT1>;
      constexpr bool kHalf = FC1 && NTW == 2;
      const int lg = kHalf ? Half::layout_group(rg) : FC1 ? rg : NTW == 2 ? rg : 2 * rg;  // its (first) layout group
      const int shift = kHalf ? Half::half_shift(rg) : 0;
      cs.w = rg < wgroups ? a.wq + ((static_cast<int64_t>(it.e) * a.groups + lg) * chunks) * kLStep + lane * 16 + shift
                          : nullptr;
      cs.second = !FC1 && NTW == 4 && lg + 1 < a.groups ? static_cast<int>(block_stride) : 0;
      const int sn = (lane >> 1) & 3;  // scale lanes: half (lane & 1) of the 32 bytes of the slot's tile sn
      cs.scales = kHalf ? Half::scale_src(lane) - lane * 16 + Half::half_scale(shift)
                  : FC1 ? 4 * kTileBytes
                        : (sn >> 1) * cs.second + 2 * kTileBytes + (sn & 1) * kScaleBytes + (lane & 1) * 16 - lane * 16;
      cs.col = (tid & 7) * 8;
#pragma unroll
      for (int i = 0; i < kActCopies; ++i) {
        const int tok = (tid >> 3) + i * (kThreads / 8);
        cs.act[i] = tok < it.ntok ? Act::make(a.act, static_cast<int64_t>(rt.plist[it.tok0 + tok] / a.act_row_div) *
                                                         a.ld_act + cs.col)
                                  : Act::none();
      }
    }
    const uint32_t slot = ring + cs.slot * S::kStage;
    if ((parts & 1) && cs.w != nullptr) {
#pragma unroll
      for (int n = 0; n < 4; ++n)  // tile n: fc1 tile n of the group (a half: ItemTiles' tile n); fc2 tile n % 2 of group n / 2
        if (n < NTW && (WT == 1 || n % WT == wt))
          cp_async16(slot + wdst + n * kTileBytes,
                     cs.w + (FC1 ? (NTW == 2 ? ItemTiles<2, kNT1>::tile_src(n) : n * kTileBytes)
                                 : (n >> 1) * cs.second + (n & 1) * kTileBytes),
                     true);
      if (wt == 0 && lane < 2 * NTW) cp_async16(slot + wdst + 4 * kTileBytes, cs.w + cs.scales, true);  // 32 B a tile
    }
    if ((parts & 2) && (kAllCopy || tid < BN * (2 * kChunkK / 16))) {
      if constexpr (ONE && !FC1) {  // the item's first copy of h: every fc1 item of its expert has stored its rows
        if (cs.c == 0) {
          const int e = find_wide_item<L, true>(rt, E, cs.item, BN, blocks).e;  // (DYN: the claimed item)
          const int need = expert_items(rt, e, blocks1);
          while (static_cast<int>(load_acquire(reinterpret_cast<const unsigned*>(a.ready + e))) < need) __nanosleep(32);
        }
      }
      const bool in_k = cs.col + 8 <= a.k_valid;
#pragma unroll
      for (int i = 0; i < kActCopies; ++i) {
        const bool ok = Act::has(cs.act[i]) && in_k;
        if constexpr (WG) {
          cp_async4x4(slot + adst + i * kActStride, ok ? Act::at(a.act, cs.act[i]) : a.act, ok);
        } else {
          cp_async16(slot + adst + i * kActStride, ok ? Act::at(a.act, cs.act[i]) : a.act, ok);
        }
      }
    }
    // the next chunk
    ++cs.c;
    cs.slot = cs.slot == D - 1 ? 0 : cs.slot + 1;
    if (cs.w != nullptr) cs.w += kLStep;
    cs.col += kChunkK;
#pragma unroll
    for (int i = 0; i < kActCopies; ++i)
      if (Act::has(cs.act[i])) cs.act[i] += kChunkK;
  };

  // ---- prologue: the first kAhead steps (fc2: their weights before it waits for fc1, their activations after)
  constexpr int kAhead = S::kAhead;
  if constexpr (FC1) {
#pragma unroll
    for (int q = 0; q < kAhead; ++q) {
      issue_into(cur, 3);
      cp_async_commit();
    }
  } else {
    Cursor cur_act = cur;
#pragma unroll
    for (int q = 0; q < kAhead; ++q) issue_into(cur, 1);
    if constexpr (!ONE) pdl_wait();  // h (fc1's output) is complete and visible after this (ONE: per item, above)
#pragma unroll
    for (int q = 0; q < kAhead; ++q) issue_into(cur_act, 2);
    cp_async_commit();
    cp_async_wait<0>();  // steps 0 .. kAhead - 1 complete: the main loop's wait<kAhead - 1> then holds as for fc1
  }
  if (threadIdx.x == 0) {
    MXFP4LAB_STAMP(a, kTraceReady);
    MXFP4LAB_TRACE(a, kTraceItems, DYN ? 0 : my_items);  // (DYN: the items it claimed, at its exit)
  }

  int q = 0;
  int prev_e = 0;  // ONE (fc1): the previous item's expert, counted ready at the next item's first barrier
  int items_run = 0;  // DYN (fc1): items this CTA ran, for the last one's count
  for (int it = 0; it < my_items; ++it) {
    // DYN: item `it` was claimed by the copy cursor at least one barrier ago (it runs kAhead steps ahead)
    if (DYN && claimq[it & 3] < 0) break;
    if constexpr (DYN && FC1) ++items_run;
    const WideItem ci = find_wide_item<L, ONE != 0>(rt, E, (DYN ? claimq[it & 3] : ONE ? first + it * grid : static_cast<int>(blockIdx.x + it * gridDim.x)), BN, blocks);
    // split tiles (WG >= 2): wt is the warp's tile half and it holds all the item's tokens (8 or 16 N blocks)
    constexpr int kJ = S::NJ;
    const int rg = ci.block * WR + wr, tw0 = WG >= 2 ? 0 : wt * 8 * kJ;
    // N blocks of this warp with tokens (warp-uniform; 0: a row group past the layer's, or no tokens here)
    const int nj = rg < wgroups ? min(kJ, max(0, (ci.ntok - tw0 + 7) / 8)) : 0;
    // wgmma: the warpgroup's N blocks (its 4 warps share the token rows; a warp whose row group is past the layer's
    // still takes part, on its slot's stale bytes, and stores nothing; 0: none of the 4 row groups is the layer's)
    int nj_mma = nj;
    if constexpr (WG) nj_mma = ci.block * WR + (warp & ~3) % WR < wgroups ? min(kJ, max(0, (ci.ntok - tw0 + 7) / 8)) : 0;
    // 64 fp32 accumulators per lane (WG = 3: 128; 16 tokens per warp: 32)
    constexpr int kAccJ = WG == 3 ? 8 : WG == 2 ? 4 : kJ;
    float acc[4][kAccJ][4];
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int j = 0; j < kAccJ; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[n][j][i] = 0.f;
    if constexpr (WG) fence_acc(acc);

    for (int c = 0; c < chunks; ++c, ++q) {
      cp_async_wait<kAhead - 1>();
      if constexpr (WG) fence_proxy_async_shared();  // this thread's landed bytes, for the wgmma reads
      // step q landed for every thread's copies, and every warp is done with step q - kAhead's slot (wgmma: this
      // warp's MMAs of step q - 2 ended at its wait in step q - 1)
      __syncthreads();
      if constexpr (ONE && FC1) {  // the previous item's h stores all precede this barrier: count it at its expert
        if (c == 0 && it > 0 && tid == 0) {
          __threadfence();  // the CTA's stores (ordered before thread 0 by the barrier) are visible device-wide
          atomicAdd(a.ready + prev_e, 1);
        }
      }
      issue_into(cur, 3);  // step q + kAhead, into that slot
      cp_async_commit();
      if (nj_mma == 0) continue;
      const uint32_t slot = ring + static_cast<unsigned>(q) % D * S::kStage;
      const uint32_t wb = slot + wr * S::kWSlot;
      if constexpr (WG == 3) {  // split tiles of 128 tokens: N rounded up to 96 or 128 above 64
        const uint64_t desc = WgmmaTile::desc(slot + WR * S::kWSlot);
        auto& acc2 = reinterpret_cast<float(&)[2][16][4]>(acc);
        const int tiles[2] = {FC1 ? wt : 2 * wt, FC1 ? wt + 2 : 2 * wt + 1};
        switch (nj_mma) {  // warpgroup-uniform
          case 1: wide_step_wgmma<1>(acc2, wb, desc, lane, tiles); break;
          case 2: wide_step_wgmma<2>(acc2, wb, desc, lane, tiles); break;
          case 3: wide_step_wgmma<3>(acc2, wb, desc, lane, tiles); break;
          case 4: wide_step_wgmma<4>(acc2, wb, desc, lane, tiles); break;
          case 5: wide_step_wgmma<5>(acc2, wb, desc, lane, tiles); break;
          case 6: wide_step_wgmma<6>(acc2, wb, desc, lane, tiles); break;
          case 7: wide_step_wgmma<7>(acc2, wb, desc, lane, tiles); break;
          case 8: wide_step_wgmma<8>(acc2, wb, desc, lane, tiles); break;
          case 9: case 10: case 11: case 12: wide_step_wgmma<12>(acc2, wb, desc, lane, tiles); break;
          default: wide_step_wgmma<16>(acc2, wb, desc, lane, tiles); break;
        }
      } else if constexpr (WG == 2) {  // this warp's tiles: fc1 up and gate tile wt, fc2 layout group wt of the row group's two
        const uint64_t desc = WgmmaTile::desc(slot + WR * S::kWSlot);
        auto& acc2 = reinterpret_cast<float(&)[2][8][4]>(acc);
        const int tiles[2] = {FC1 ? wt : 2 * wt, FC1 ? wt + 2 : 2 * wt + 1};
        switch (nj_mma) {  // warpgroup-uniform
          case 1: wide_step_wgmma<1>(acc2, wb, desc, lane, tiles); break;
          case 2: wide_step_wgmma<2>(acc2, wb, desc, lane, tiles); break;
          case 3: wide_step_wgmma<3>(acc2, wb, desc, lane, tiles); break;
          case 4: wide_step_wgmma<4>(acc2, wb, desc, lane, tiles); break;
          case 5: wide_step_wgmma<5>(acc2, wb, desc, lane, tiles); break;
          case 6: wide_step_wgmma<6>(acc2, wb, desc, lane, tiles); break;
          case 7: wide_step_wgmma<7>(acc2, wb, desc, lane, tiles); break;
          default: wide_step_wgmma<8>(acc2, wb, desc, lane, tiles); break;
        }
      } else if constexpr (WG) {
        const uint64_t desc = WgmmaTile::desc(slot + WR * S::kWSlot + wt * 4 * WgmmaTile::kSbo);
        constexpr int kAllTiles[4] = {0, 1, 2, 3};
        switch (nj_mma) {  // warpgroup-uniform
          case 1: wide_step_wgmma<1>(acc, wb, desc, lane, kAllTiles); break;
          case 2: wide_step_wgmma<2>(acc, wb, desc, lane, kAllTiles); break;
          case 3: wide_step_wgmma<3>(acc, wb, desc, lane, kAllTiles); break;
          default: wide_step_wgmma<4>(acc, wb, desc, lane, kAllTiles); break;
        }
      } else {
        const uint32_t ab = slot + WR * S::kWSlot + (tw0 + g) * S::kRowBytes + tl * 32;
        if constexpr (kJ == 2) {  // 16 tokens per warp
          if (nj == 1) wide_step<1, NTW>(acc, wb, ab, lane); else wide_step<2, NTW>(acc, wb, ab, lane);
        } else {
          switch (nj) {  // one branch per step instead of a predicate (and a warp sync) per MMA
            case 1: wide_step<1, NTW>(acc, wb, ab, lane); break;
            case 2: wide_step<2, NTW>(acc, wb, ab, lane); break;
            case 3: wide_step<3, NTW>(acc, wb, ab, lane); break;
            default: wide_step<4, NTW>(acc, wb, ab, lane); break;
          }
        }
      }
    }
    if constexpr (WG) {  // the item's last MMAs
      wgmma_wait<0>();
      fence_acc(acc);
    }
    // the epilogue's item, row group and N blocks; WG = 3 finds the item again, so that it is not live over the chunks
    // beside 128 accumulators
    const WideItem ce = WG == 3 ? find_wide_item(rt, E, (ONE ? first + it * grid : static_cast<int>(blockIdx.x + it * gridDim.x)), BN, blocks) : ci;
    if constexpr (ONE && FC1) prev_e = ci.e;
    const int rge = WG == 3 ? ce.block * WR + wr : rg;
    const int nje = WG == 3 ? (rge < wgroups ? min(kJ, max(0, (ce.ntok - tw0 + 7) / 8)) : 0) : nj;

    // ---- epilogue from registers: lane (g, tl) holds rows g, g + 8 of each tile and tokens 2 tl, 2 tl + 1 of each
    // N block (acc[n][j][i]: row g + 8 (i >> 1), token 8 j + 2 tl + (i & 1) of the warp's 32, or 16 with G = 2 WT;
    // split tiles: N block j of tile slot n is acc[2 n + j / kAccJ][j % kAccJ], the up tile's in slot 0 and the gate
    // tile's in slot 1)
    if (nje == 0) continue;
    auto at = [&](int n, int j, int i) -> float& {
      return WG >= 2 ? acc[2 * n + j / kAccJ][j % kAccJ][i] : acc[n][j][i];
    };
    auto each_output = [&](auto&& store) {  // store(j, i, pair) for this lane's outputs with a token
#pragma unroll
      for (int j = 0; j < kJ; ++j) {
        if (j >= nje) break;
#pragma unroll
        for (int u = 0; u < 2; ++u) {  // token 8 j + 2 tl + u: its pair id read once for rows g (i = u) and g + 8
          const int tok = tw0 + 8 * j + 2 * tl + u;
          if (tok >= ce.ntok) continue;
          const int64_t p = rt.plist[ce.tok0 + tok];
          store(j, u, p);
          store(j, u + 2, p);
        }
      }
    };
    if constexpr (FC1) {  // gemm_phase's SwiGLU epilogue, operation for operation (bf16 sums, bias, clamp, fp32 SwiGLU)
      const float alpha = a.alpha ? a.alpha[ce.e] : a.alpha_s;
      const float beta = a.beta ? a.beta[ce.e] : a.beta_s;
      const float limit = a.limit ? a.limit[ce.e] : a.limit_s;
      const __nv_bfloat16* bias = a.bias ? a.bias + static_cast<int64_t>(ce.e) * 2 * a.bias_ld : nullptr;
      constexpr int kT = WG >= 2 || NTW == 2 ? 1 : 2;  // up tiles per warp
      // the first row of up tile t (T = 2: the warp's half group)
      auto row0 = [&](int t) { return NTW == 2 ? rge * 16 : rge * 32 + (WG >= 2 ? wt : t) * 16; };
      // this lane's rows' up and gate biases, read once per item (not per output: the stores to h may alias them)
      float b_up[kT][2] = {}, b_gate[kT][2] = {};
      if (bias) {
#pragma unroll
        for (int t = 0; t < kT; ++t)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int row = row0(t) + g + 8 * r;
            if (row < a.out_rows) {
              b_up[t][r] = __bfloat162float(bias[row]);
              b_gate[t][r] = __bfloat162float(bias[a.bias_ld + row]);
            }
          }
      }
      each_output([&](int j, int i, int64_t p) {
#pragma unroll
        for (int t = 0; t < kT; ++t) {  // up tile t, gate tile t + kT: the same 16 intermediate rows
          const int row = row0(t) + g + 8 * (i >> 1);
          if (row >= a.out_rows) continue;
          MXFP4LAB_SWIGLU(act, WG >= 2 ? at(0, j, i) : acc[t][j][i], WG >= 2 ? at(1, j, i) : acc[t + kT][j][i], bias,
                          b_up[t][i >> 1], b_gate[t][i >> 1], a.use_limit, limit, alpha, beta);
          a.out[p * a.ld_out + row] = __float2bfloat16_rn(act);
        }
      });
    } else {
      each_output([&](int j, int i, int64_t p) {
#pragma unroll
        for (int n = 0; n < (WG >= 2 ? 2 : NTW); ++n) {  // rows 64 rge + 16 n + ...: tiles 0, 1 of group 2 rge, then of
                                                       // group 2 rge + 1 (split tiles: tiles n of group 2 rge + wt)
          const int row = rge * (NTW == 4 ? 64 : 32) + (WG >= 2 ? 2 * wt + n : n) * 16 + g + 8 * (i >> 1);
          if (row < a.out_rows) a.out[p * a.ld_out + row] = __float2bfloat16_rn(WG >= 2 ? at(n, j, i) : acc[n][j][i]);
        }
      });
    }
  }
  cp_async_wait<0>();
  if constexpr (ONE && FC1) {  // the last item's h stores: count it
    __syncthreads();
    if (tid == 0 && (DYN ? items_run > 0 : my_items > 0)) {
      __threadfence();
      atomicAdd(a.ready + prev_e, 1);
    }
  }
#ifdef MXFP4LAB_DECODE_TRACE
  __syncthreads();
  if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceExit);
  if (DYN && threadIdx.x == 0) MXFP4LAB_TRACE(a, kTraceItems, n_claimed - 1);  // the last claim found none left
#endif
}

template <int WT, int D, int CPS, bool FC1, int WG, int G, int T>
__global__ void __launch_bounds__(kThreads, CPS) wide_kernel(const GemmArgs a) {
  wide_gemm<WT, D, CPS, FC1, WG, G, T, 0>(a, 0);
}

// The one-grid kernel (FU = 1 with wide items): fc1's and fc2's items in one cooperative grid, so that fc2's items
// fill the SM slots fc1's last items leave, with no kernel boundary and no wait for fc1's whole grid. The items of
// both GEMMs form one round-robin sequence -- fc1's n1, then fc2's n2, both expert-major; CTA b takes items b, b +
// grid, ... -- so a CTA with fewer fc1 items takes fc2's first ones. An fc2 item waits (its first copy of h) until
// every fc1 item of its expert has counted itself at the expert's ready counter (a1.ready[e], after its h stores);
// an expert's fc1 items precede all fc2 items of it in every CTA's order and never wait, and the cooperative launch
// keeps every CTA resident, so the waits end. The last CTA to finish zeroes the counters and the done count
// (a1.ready[E]) for the next call. The sums are those of the two-launch variant (the same items, other CTAs).
// DY = 2: fc2's items claimed from a counter (wide_gemm's ONE = 2), which the last CTA zeroes too; DY = 3: fc1's items
// as well (ONE = 3), from a third counter. fc1's items never wait, and a CTA claims fc2 items only once fc1's counter
// is spent, so every fc1 item is claimed by a CTA that runs it before any fc2 wait.
template <int WT, int D, int CPS, int WG, int G, int T1, int T2, int DY>
__global__ void __launch_bounds__(kThreads, CPS) wide_one_kernel(const GemmArgs a1, const GemmArgs a2) {
  constexpr int WR = WideSmem<WT, D, WG, G>::WR;
  const int blocks1 = ((T1 == 2 ? 2 * a1.groups : a1.groups) + WR - 1) / WR;  // fc1's row blocks (wide_gemm's)
  wide_gemm<WT, D, CPS, true, WG, G, T1, DY == 3 ? 3 : 1>(a1, blocks1);
  __syncthreads();  // every warp is done with fc1's ring slots (and the routing scratch) before fc2's first copies
  wide_gemm<WT, D, CPS, false, WG, G, T2, DY >= 2 ? 2 : 1>(a2, blocks1);
  __syncthreads();  // every thread's waits on the counters are over
  if (threadIdx.x == 0) {
    __threadfence();
    const int E = a1.num_experts;
    if (atomicAdd(a1.ready + E, 1) == static_cast<int>(gridDim.x) - 1) {  // the last CTA: nobody reads them again
      for (int e = 0; e <= E + (DY >= 2 ? DY - 1 : 0); ++e) a1.ready[e] = 0;
    }
  }
}

template <int WT, int D, int CPS, bool FC1, int WG, int G, int T = 4>
cudaError_t launch_wide_gemm(const GemmArgs& a, int grid, cudaStream_t stream, bool pdl) {
  auto kernel = wide_kernel<WT, D, CPS, FC1, WG, G, T>;
  const int smem = wide_smem_bytes<WT, D, WG, CPS, G>(a.num_experts, a.num_pairs);
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  return launch_pdl(kernel, grid, kThreads, smem, stream, pdl, a);
}

// The one-grid launch (wide_one_kernel): cooperative (an fc2 item's wait would otherwise hold an SM slot that a CTA
// with the fc1 items it waits for needs).
template <int WT, int D, int CPS, int WG, int G, int T1, int T2, int DY>
cudaError_t launch_wide_one(const GemmArgs& a1, const GemmArgs& a2, int grid, cudaStream_t stream) {
  return launch_cooperative(wide_one_kernel<WT, D, CPS, WG, G, T1, T2, DY>, grid,
                            wide_smem_bytes<WT, D, WG, CPS, G>(a1.num_experts, a1.num_pairs), stream, a1, a2);
}
