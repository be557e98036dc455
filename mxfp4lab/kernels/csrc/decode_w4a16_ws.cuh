// mxfp4lab decode_w4a16, warp-specialized wide items (WG = 5, 6, the 16th column): producer warpgroups copy and
// decode, consumer warpgroups run wgmma with both operands in shared memory. Included by decode_w4a16.cu after
// decode_w4a16_wide.cuh (its WideItem, find_wide_item, WgmmaTile, ActRef, PairId and wgmma fences).
//
// Why. The wgmma wide items of 128 tokens (WG = 3) decode a weight once per 128 tokens, but each warp holds 2 tiles x
// 128 tokens of fp32 sums (128 accumulators per lane, 255 registers), so an SM runs 8 warps: two per scheduler, each
// one copying, decoding, multiplying scales and issuing its wgmma in turn. At M = 4096 they issue in a third of the
// cycles and the tensor pipe is busy a third of the time (findings 2026-12-03-decode-wgmma-128, 2026-12-04-decode-
// launch-floors): bound by the latency of that chain, not by bytes, instructions or MMAs.
//
// Here the chain is cut in two. A CTA is PWG + NC warpgroups (NC = WT: 2 or 4; PWG = 1, or 2 beside NC = 2: WG = 6).
//  * Warpgroups 0 .. PWG - 1, the producers: copy each K chunk's raw weights (fp4 codes and E8M0 scales; three chunks
//    ahead) and the item's token rows (two ahead) into a ring of 4 stages (cp.async), then decode the chunk's weights
//    into a bf16 A tile in shared memory (two A buffers), fence them for the async proxy and arrive at the buffer's
//    FULL barrier. A stage's raw weights are free once their warp decoded them, its token rows and the A buffer once
//    the consumers' MMAs of that chunk ended (EMPTY): step q waits for chunk q - 2's, never for the consumers' next
//    step (the decoupled ring).
//  * The other NC warpgroups, the consumers: each owns 64 of the item's 64 NC weight rows and all its tokens (up to
//    128): per chunk it waits for FULL, issues four m64nNk16 wgmma (A and B from shared memory), commits, waits for
//    the group and frees the chunk's A buffer and token rows (EMPTY barriers). 64 accumulators per lane. (Two producers
//    beside four consumers would be 768 threads at 80 registers: too few for an m64n128k16 and its accumulators --
//    ptxas allocates for the launch bound whatever setmaxnreg hands over at run time.)
// A weight is decoded once per item (up to 128 tokens) as with WG = 3, by warps that do nothing else, while the
// tensor pipe runs the chunk before. Measured (findings 2026-12-05-decode-warp-specialized): the producer bounds it --
// one producer warp per scheduler issues ~490 instructions per chunk in a fifth of the cycles.
//
// An ITEM is (local expert e, a tile of up to 128 of e's pairs, a row block): fc1 NC layout groups (consumer warpgroup
// c: group NC block + c, its 32 intermediate rows' up and gate tiles), fc2 2 NC layout groups (warpgroup c: groups
// 2 NC block + 2 c, + 1: 64 output rows). Items as find_wide_item enumerates them, dealt round-robin to the CTAs, but
// an expert's token tiles split its pairs evenly (find_ws_item) and the MMA's N is the tile's tokens rounded up to 16.
//
// Shared-memory tiles (WgmmaTile: K-major, no swizzle, 8-row x 16-byte core matrices, LBO 128 B, SBO 1024 B), both in
// the chunk's natural K order: granule c of a row holds K elements 8 c .. 8 c + 7 of the chunk, so a token row's
// 16-byte piece j is one cp.async to granule j, and the MMA step st reads granules 2 st, 2 st + 1.
//  * A (decoded weights, per consumer warpgroup 64 rows): fc1 row 16 w + x (x < 8) is the up row 8 w + x of the
//    warpgroup's 32 intermediate rows and row 16 w + 8 + x its gate row, so that lane (g, t) of consumer warp w
//    holds the up sum (accumulator i = 0, 1) and the gate sum (i = 2, 3) of the same intermediate row g; fc2 rows
//    are the two groups' 64 output rows in order.
//  * The raw weights of a stage: the producer lane L copies the 16-byte piece of layout lane 4 (L % 8) + L / 8 of
//    each of its tiles to byte 16 L (a permutation inside the tile's 512 bytes), so that the 8 lanes of a quarter warp
//    decode rows g = 0 .. 7 of one granule and store 8 x 16 bytes of one core matrix: no bank conflicts.
// The decode of a word is decode_word and the scale multiply hmul2_bf16 (the same bf16 products as every variant);
// the MMA's K order differs from the register-A variants' (another summation inside the MMA): its own twin.

// ---- mbarriers (PTX ISA 9.7.13.15): FULL (the producers' 128 PWG threads arrive) and EMPTY (lane 0 of each consumer
// warp)
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Returns once the phase of parity `parity` of the barrier has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred p;\nWS_WAIT:\n"
      "mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WS_WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void sts128(uint32_t addr, uint32_t x, uint32_t y, uint32_t z, uint32_t w) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(x), "r"(y), "r"(z), "r"(w) : "memory");
}

// d[j][i] += A x B over one k16 step, both from shared memory (WgmmaTile descriptors), N = 8 NJ tokens.
template <int NJ>
__device__ __forceinline__ void wgmma_ss(float (&d)[16][4], uint64_t da, uint64_t db);
template <>
__device__ __forceinline__ void wgmma_ss<2>(float (&d)[16][4], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3])
      : "l"(da), "l"(db), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_ss<4>(float (&d)[16][4], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
      : "l"(da), "l"(db), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_ss<6>(float (&d)[16][4], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %26, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n48k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23}, %24, %25, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3])
      : "l"(da), "l"(db), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_ss<8>(float (&d)[16][4], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
      : "l"(da), "l"(db), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_ss<10>(float (&d)[16][4], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %42, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n80k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39}, %40, %41, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3])
      : "l"(da), "l"(db), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_ss<12>(float (&d)[16][4], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %50, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n96k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47}, %48, %49, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3])
      : "l"(da), "l"(db), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_ss<14>(float (&d)[16][4], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %58, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n112k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55}, %56, %57, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3])
      : "l"(da), "l"(db), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_ss<16>(float (&d)[16][4], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
      : "l"(da), "l"(db), "r"(1));
}

template <int NC, int PWG = 1>
struct WsSmem {
  static_assert(NC == 2 || NC == 4, "two or four consumer warpgroups");
  static_assert(PWG == 1 || (PWG == 2 && NC == 2), "one producer warpgroup, or two beside two consumers");
  static constexpr int kThreads = 128 * (NC + PWG);  // warpgroups 0 .. PWG - 1 produce, the others consume
  static constexpr int kTiles = 4 * NC;              // 16-row tiles per item
  static constexpr int BN = 128;                     // tokens per item
  static constexpr int kA = kTiles * 16 * 2 * kChunkK;  // one chunk of decoded weights (bf16, WgmmaTile)
  static constexpr int kAct = BN * 2 * kChunkK;         // one chunk of the token tile (bf16, WgmmaTile)
  static constexpr int kRaw = kTiles * (kTileBytes + kScaleBytes);  // the tiles' codes, then their scales
  static constexpr int kStage = kAct + kRaw;
};

// Bytes: two A buffers, R ring stages, 4 + R mbarriers, then the routing (16-bit pair ids).
template <int NC, int R, int PWG = 1>
constexpr int ws_smem_bytes(int num_experts, int num_pairs) {
  using S = WsSmem<NC, PWG>;
  return 2 * S::kA + R * S::kStage + (4 + R) * 8 + (5 * num_experts + 2 + 2 * (S::kThreads / 32) + 32) * 4 +
         (2 * num_pairs + 3) / 4 * 4;
}

// Where the warp-specialized kernel reads and puts things, per consumer warpgroup c and its tiles u = 0 .. 3 (the CPU
// tests host-compile this struct and read the tiles back through the PTX ISA's canonical layout).
template <int NC, bool FC1, int PWG = 1>
struct WsMap {
  // the layout group of warpgroup c's tile u in row block `block` (fc1: one group of 4 tiles per warpgroup; fc2: two
  // of 2), the tile's bytes and its 32 scale bytes in that group's step
  static __device__ __forceinline__ int group(int block, int c, int u) {
    return FC1 ? block * NC + c : block * 2 * NC + 2 * c + (u >> 1);
  }
  static __device__ __forceinline__ int tile_src(int u) { return (FC1 ? u : u & 1) * kTileBytes; }
  static __device__ __forceinline__ int scale_src(int u) {
    return FC1 ? kNT1 * kTileBytes + u * kScaleBytes : kNT2 * kTileBytes + (u & 1) * kScaleBytes;
  }
  // the layout lane (4 g + tl) whose 16-byte piece of a tile producer lane `lane` copies to byte 16 lane and decodes:
  // g = lane % 8, tl = lane / 8, so that a quarter warp stores rows g = 0 .. 7 of one granule
  static __device__ __forceinline__ int piece(int lane) { return 4 * (lane & 7) + (lane >> 3); }
  // the warpgroup's A row of tile u's row g + 8 hr: fc1 up tiles 0, 1 and gate tiles 2, 3 interleaved by 8 rows (row
  // 16 w + x, x < 8: up row 8 w + x of the group's 32; 16 w + 8 + x: its gate row), fc2 in order
  static __device__ __forceinline__ int a_row(int u, int hr, int g) {
    return FC1 ? 32 * (u & 1) + 8 * (u >> 1) + 16 * hr + g : 16 * u + 8 * hr + g;
  }
  // the byte of granule `gran` (chunk elements 8 gran .. 8 gran + 7) of row `row` in a K-major tile (WgmmaTile)
  static __device__ __forceinline__ uint32_t at(int row, int gran) {
    return (row >> 3) * WgmmaTile::kSbo + gran * WgmmaTile::kLbo + (row & 7) * 16;
  }
  // activation copy i (< 8 / PWG) of producer thread tid: token row, 16-byte piece (= granule)
  static __device__ __forceinline__ int act_row(int tid, int i) { return (tid & 7) + 8 * ((tid >> 6) + 2 * PWG * i); }
  static __device__ __forceinline__ int act_piece(int tid) { return (tid >> 3) & 7; }
  // the output row of consumer warp w's lane row g (+ 8 hr): fc1 the intermediate row whose up sum is in i = 0, 1
  // and gate sum in i = 2, 3 (hr unused); fc2 the output row of accumulators i = 2 hr, 2 hr + 1
  static __device__ __forceinline__ int out_row(int block, int c, int w, int g, int hr) {
    return FC1 ? (block * NC + c) * 32 + 8 * w + g : (block * NC + c) * 64 + 16 * w + g + 8 * hr;
  }
};

// N (tokens) of an item's MMAs: its tokens rounded up to a multiple of 16 (the token tile's rows past them are zeros
// and their sums are not stored).
__device__ __forceinline__ int ws_pad(int ntok) { return (ntok + 15) & ~15; }

// An item with EVEN token tiles: the expert's ceil(count / 128) tiles split its tokens evenly (sizes differ by at most
// one; the first count % tiles hold one more) instead of 128, 128, ..., the rest. A trailing tile of a few tokens costs
// a whole decode of its row block's weights for an MMA of N = 16 -- GPT-OSS-120b at M = 4096 (128 +- 11 tokens per
// expert) and GPT-OSS-20b at M = 1024 give half their experts one; split evenly, both tiles run N ~ 70. Items and
// their order as find_wide_item's (the routing's item counts are the same).
template <typename L>
__device__ __forceinline__ WideItem find_ws_item(const RoutingT<L>& r, int E, int item, int blocks) {
  WideItem it = find_wide_item(r, E, item, 128, blocks);
  const int count = r.count[it.e], tiles = (count + 127) / 128, tt = (it.tok0 - r.start[it.e]) / 128;
  const int base = count / tiles, extra = count - base * tiles;
  it.tok0 = r.start[it.e] + tt * base + min(tt, extra);
  it.ntok = base + (tt < extra ? 1 : 0);
  return it;
}

// One item's chunks on a consumer warpgroup, from global step q on: per chunk wait for its A buffer (FULL), four
// m64n(8 NJ)k16 from the A buffer (this warpgroup's 64 rows at a_wg) and the ring stage's token tile, commit, wait for
// this group and free the A buffer and stage at once (EMPTY: lane 0 of each warp), so that the producer, two chunks
// later, waits on an MMA and not on this warpgroup's next FULL.
template <int NJ, int R>
__device__ __forceinline__ void ws_consume(float (&acc)[16][4], int q, int chunks, uint32_t a_wg, int a_bytes,
                                           uint32_t ring, int stage_bytes, uint32_t full, uint32_t empty_a,
                                           uint32_t empty_r, int lane) {
  for (int ch = 0; ch < chunks; ++ch, ++q) {
    const int b = q & 1, s = q % R;
    mbar_wait(full + 8 * b, (q >> 1) & 1);
    wgmma_fence();
    const uint64_t da = WgmmaTile::desc(a_wg + b * a_bytes), db = WgmmaTile::desc(ring + s * stage_bytes);
#pragma unroll
    for (int st = 0; st < 4; ++st) {  // MMA step st: granules 2 st, 2 st + 1 of A and of the token tile
      const uint64_t o = (st * 2 * WgmmaTile::kLbo) >> 4;
      wgmma_ss<NJ>(acc, da + o, db + o);
    }
    wgmma_commit();
    wgmma_wait<0>();  // chunk q's MMAs are done: its A buffer and token rows are free
    if (lane == 0) {
      mbar_arrive(empty_a + 8 * b);
      mbar_arrive(empty_r + 8 * s);
    }
  }
}

// Keeps the compiler from moving a warpgroup's 64 accumulators per lane across the wgmma fences and waits.
__device__ __forceinline__ void fence_acc16(float (&acc)[16][4]) {
#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) asm volatile("" : "+f"(acc[j][i])::"memory");
}

// A warp-specialized producer thread's cursor over its CTA's steps (item, chunk), with its sources at the next chunk:
// the layout group of its warp's first tile t0 of consumer warpgroup `wg` (and, fc2 with PT = 4 tiles a warp, of its
// third) and its NA token rows (copy i: row Map::act_row(tid, i), 16-byte piece Map::act_piece(tid)). Map, FC1, PT,
// NA: the kernel's (ws_kernel, wsr_kernel).
template <class Map, bool FC1, int PT, int NA>
struct WsCursor {
  int left, item, c, slot;
  const uint8_t* w[2];      // tile t0's (and fc2 with PT = 4: tile t0 + 2's) layout group at the chunk, or null
  int col, npad;            // the chunk's first column of this thread's token copies; the item's MMA N
  ActRef<true>::T act[NA];  // the token row of copy i at col (none: no token, zero fill)

  // At an item's first chunk: the CTA's next item (every grid-th), its layout groups, token rows and MMA N
  // (npad_of(tokens)).
  template <class Npad>
  __device__ __forceinline__ void start_item(const GemmArgs& a, const RoutingT<uint16_t>& rt, int E, int blocks,
                                             int64_t gstride, int wg, int t0, int tid, Npad npad_of) {
    using Act = ActRef<true>;
    item += gridDim.x;
    c = 0;
    const WideItem it = find_ws_item(rt, E, item, blocks);
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      // fc1: group NC block + wg (q = 0 only); fc2: group 2 NC block + 2 wg + tile / 2 of the warp's first tile, and
      // (PT = 4) of its third
      const int lg = Map::group(it.block, wg, t0 + 2 * q);
      w[q] = (q == 0 || (!FC1 && PT == 4)) && lg < a.groups
                 ? a.wq + (static_cast<int64_t>(it.e) * a.groups + lg) * gstride
                 : nullptr;
    }
    col = Map::act_piece(tid) * 8;
    npad = npad_of(it.ntok);
#pragma unroll
    for (int i = 0; i < NA; ++i) {
      const int r = Map::act_row(tid, i);
      act[i] = r < it.ntok ? Act::make(a.act, static_cast<int64_t>(rt.plist[it.tok0 + r] / a.act_row_div) * a.ld_act +
                                                  col)
                           : Act::none();
    }
  }
  // After a step's copies: the next chunk (ring stage, sources)
  template <int R, int kLStep>
  __device__ __forceinline__ void advance() {
    ++c;
    slot = slot == R - 1 ? 0 : slot + 1;
#pragma unroll
    for (int q = 0; q < 2; ++q)
      if (w[q] != nullptr) w[q] += kLStep;
    col += kChunkK;
#pragma unroll
    for (int i = 0; i < NA; ++i)
      if (ActRef<true>::has(act[i])) act[i] += kChunkK;
  }
};

// The warp-specialized kernels' start (ws_kernel, wsr_kernel): the routing lists (16-bit pair ids) from `rbase` in
// shared memory, built by all NT threads -- its scratch may use the first `spare_ints` ints of shared memory --, the
// entry and routing stamps, and thread 0's initialization of the ring's `nbars` mbarriers from `bars` (barrier i
// expects count(i) arrivals), then a CTA barrier. BN: tokens per item; blocks: row blocks per expert.
template <int NT, int BN, typename Count>
__device__ __forceinline__ RoutingT<uint16_t> ws_start(const GemmArgs& a, uint8_t* smem, int* rbase, int blocks,
                                                       int spare_ints, uint32_t bars, int nbars, Count count) {
  using L = uint16_t;
  const int E = a.num_experts;
  RoutingT<L> rt;
  rt.count = rbase;
  rt.start = rbase + E;
  rt.istart = rbase + 2 * E + 1;
  int* scratch = rbase + 3 * E + 2;
  rt.plist = reinterpret_cast<L*>(scratch + 2 * E + 2 * (NT / 32));
  if (threadIdx.x == 0) {
    MXFP4LAB_STAMP(a, kTraceEntry);
    MXFP4LAB_TRACE(a, kTraceSm, sm_id());
  }
  pdl_launch_dependents();
  if (a.num_pairs <= 32) {
    build_routing_warp<L, NT>(a, rt, BN, blocks);
  } else {
    build_routing<L, NT>(a, rt, scratch, BN, blocks, reinterpret_cast<int*>(smem), spare_ints);
  }
  if (threadIdx.x == 0) {
    MXFP4LAB_STAMP(a, kTraceRouted);
    for (int i = 0; i < nbars; ++i) mbar_init(bars + 8 * i, count(i));
  }
  __syncthreads();  // the barriers are initialized (and the routing's spare bytes are free)
  return rt;
}

template <int NC, int R, bool FC1, int PWG>
__global__ void __launch_bounds__(WsSmem<NC, PWG>::kThreads, 1) ws_kernel(const GemmArgs a) {
  static_assert(R == 4, "the decoupled ring: token rows two chunks ahead, raw weights three, in four stages");
  using S = WsSmem<NC, PWG>;
  using Map = WsMap<NC, FC1, PWG>;
  constexpr int NT = S::kThreads, BN = S::BN;
  constexpr int PT = NC / PWG;    // tiles a producer warp copies and decodes
  constexpr int NA = 8 / PWG;     // token-row copies per producer thread and chunk
  constexpr int LT = FC1 ? kNT1 : kNT2;                    // tiles of one layout group
  constexpr int kLStep = LT * (kTileBytes + kScaleBytes);  // one step of one layout group in the layout
  constexpr int kGroups = FC1 ? NC : 2 * NC;               // layout groups per item
  extern __shared__ __align__(16) uint8_t smem[];
  const uint32_t a_buf = smem_addr(smem), ring = a_buf + 2 * S::kA, bars = ring + R * S::kStage;
  const uint32_t full = bars, empty_a = bars + 16, empty_r = bars + 32;  // full[2], empty_a[2], empty_r[R]
  const int E = a.num_experts;
  const int blocks = (a.groups + kGroups - 1) / kGroups;  // row blocks per expert
  int* const rbase = reinterpret_cast<int*>(smem + 2 * S::kA + R * S::kStage + (4 + R) * 8);
  const RoutingT<uint16_t> rt = ws_start<NT, BN>(a, smem, rbase, blocks, (2 * S::kA + R * S::kStage) / 4, bars, 4 + R,
                                                 [](int i) { return i < 2 ? 128 * PWG : 4 * NC; });

  const int n_items = rt.istart[E];
  const int my_items = static_cast<int>(blockIdx.x) < n_items ? (n_items - 1 - blockIdx.x) / gridDim.x + 1 : 0;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int chunks = a.chunks;
  const int total_steps = my_items * chunks;
  using Act = ActRef<true>;

  if (warp < 4 * PWG) {
    // ================= producer: warp pw copies and decodes PT tiles of consumer warpgroup c = pw PT / 4
    const int pw = warp, c = pw * PT / 4, t0 = (pw % (4 / PT)) * PT;  // its warpgroup and first tile of its 4
    const int g = lane & 7, tl = lane >> 3;                            // the layout lane whose pieces it decodes
    const int src = Map::piece(lane) * 16;                             // their bytes in a tile
    // the first group of the warp's tiles (fc2: tiles 0, 1 of group 2 c, tiles 2, 3 of group 2 c + 1)
    using Cursor = WsCursor<Map, FC1, PT, NA>;
    Cursor cur{total_steps, static_cast<int>(blockIdx.x) - static_cast<int>(gridDim.x), chunks, 0, {nullptr, nullptr}, 0,
               0, {}};
    const int64_t gstride = static_cast<int64_t>(chunks) * kLStep;  // the next layout group's block
    auto issue_into = [&](Cursor& cs, int parts) {
      if (cs.left <= 0) return;
      --cs.left;
      if (cs.c == chunks) cs.start_item(a, rt, E, blocks, gstride, c, t0, tid, [](int n) { return ws_pad(n); });
      const uint32_t stage = ring + cs.slot * S::kStage, raw = stage + S::kAct;
      if (parts & 1) {
#pragma unroll
        for (int i = 0; i < PT; ++i) {  // tile t0 + i of warpgroup c: fc1 tile t0 + i of the group, fc2 tile i % 2 of
                                        // group (t0 + i) / 2
          const int u = t0 + i;
          const uint8_t* w = cs.w[FC1 ? 0 : i >> 1];  // (t0 is a multiple of NC: even)
          if (w != nullptr) cp_async16(raw + (c * 4 + u) * kTileBytes + lane * 16, w + Map::tile_src(u) + src, true);
        }
        if (lane < 2 * PT) {  // the PT tiles' scales: 32 bytes each, two lanes per tile
          const int u = t0 + lane / 2;
          const uint8_t* w = FC1 || lane < 4 ? cs.w[0] : cs.w[1];  // (a select, not a local array)
          if (w != nullptr)
            cp_async16(raw + S::kTiles * kTileBytes + (c * 4 + u) * kScaleBytes + (lane & 1) * 16,
                       w + Map::scale_src(u) + (lane & 1) * 16, true);
        }
      }
      if (parts & 2) {
        const bool in_k = cs.col + 8 <= a.k_valid;
#pragma unroll
        for (int i = 0; i < NA; ++i) {
          if ((Map::act_row(tid, i) & ~7) >= cs.npad) break;  // (rows grow with i by 8-row blocks)
          const bool ok = Act::has(cs.act[i]) && in_k;
          cp_async16(stage + Map::at(Map::act_row(tid, i), Map::act_piece(tid)), ok ? Act::at(a.act, cs.act[i]) : a.act,
                     ok);
        }
      }
      cs.template advance<R, kLStep>();
    };

    // The decoupled ring: chunk q's raw weights are copied at step q - 3 into stage q % 4 (free once this warp
    // decoded chunk q - 1 from it: the raw bytes are the warp's own), its token rows at step q - 2 (free once
    // chunk q - 2's MMAs ended: EMPTY, which the consumers arrive at right after them). Step q waits for that, copies,
    // waits for chunk q's bytes, decodes and arrives at FULL: no wait on the consumers' next step.
    Cursor cur_a = cur;  // the token rows' cursor, one chunk behind the weights'
    if constexpr (FC1) {
#pragma unroll 1
      for (int q = 0; q < 2; ++q) {
        issue_into(cur, 1);
        issue_into(cur_a, 2);
        cp_async_commit();
      }
      issue_into(cur, 1);
      cp_async_commit();
    } else {
#pragma unroll 1
      for (int q = 0; q < 3; ++q) issue_into(cur, 1);
      pdl_wait();  // h (fc1's output) is complete and visible after this
#pragma unroll 1
      for (int q = 0; q < 2; ++q) issue_into(cur_a, 2);
      cp_async_commit();
      cp_async_wait<0>();
      cp_async_commit();  // two empty groups: the loop's wait<2> then holds as for fc1
      cp_async_commit();
    }
    if (threadIdx.x == 0) {
      MXFP4LAB_STAMP(a, kTraceReady);
      MXFP4LAB_TRACE(a, kTraceItems, my_items);
    }
    for (int q = 0; q < total_steps; ++q) {
      const int b = q & 1, s = q % R;
      if (q >= 2) {  // chunk q - 2's MMAs ended: A buffer b and stage (q + 2) % 4's token rows are free
        mbar_wait(empty_a + 8 * b, ((q >> 1) + 1) & 1);
        mbar_wait(empty_r + 8 * ((q - 2) % R), ((q - 2) / R) & 1);
      }
      __syncwarp();  // every lane of the warp read chunk q - 1's scale bytes (stage (q + 3) % 4)
      issue_into(cur_a, 2);  // chunk q + 2's token rows
      issue_into(cur, 1);    // chunk q + 3's raw weights
      cp_async_commit();
      cp_async_wait<2>();  // the group of step q - 2 (and older): chunk q's token rows and raw weights landed
      __syncwarp();        // and the scale bytes its warp's lanes 0 .. 2 PT - 1 copied
      const uint32_t raw = ring + s * S::kStage + S::kAct;
      const uint32_t abase = a_buf + b * S::kA + c * (S::kA / NC);
      uint4 wv[PT];
      uint32_t f_lo[PT], f_hi[PT];
#pragma unroll
      for (int i = 0; i < PT; ++i) wv[i] = lds128(raw + (c * 4 + t0 + i) * kTileBytes + lane * 16);
#pragma unroll
      for (int i = 0; i < PT; ++i) {
        const uint32_t sa = raw + S::kTiles * kTileBytes + (c * 4 + t0 + i) * kScaleBytes + (g * 2 + (tl >> 1)) * 2;
        f_lo[i] = lds8(sa);
        f_hi[i] = lds8(sa + 1);
      }
#pragma unroll
      for (int i = 0; i < PT; ++i) {
        const int u = t0 + i;
        const uint32_t flo = scale_factor(f_lo[i]), fhi = scale_factor(f_hi[i]);
        const int row0 = Map::a_row(u, 0, g), row1 = Map::a_row(u, 1, g);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          uint32_t r[4], v[4];
          decode_word(h ? wv[i].z : wv[i].x, r[0], r[1], r[2], r[3]);
          decode_word(h ? wv[i].w : wv[i].y, v[0], v[1], v[2], v[3]);
          sts128(abase + Map::at(row0, 2 * tl + h), hmul2_bf16(r[0], flo), hmul2_bf16(r[2], flo),
                 hmul2_bf16(v[0], flo), hmul2_bf16(v[2], flo));
          sts128(abase + Map::at(row1, 2 * tl + h), hmul2_bf16(r[1], fhi), hmul2_bf16(r[3], fhi),
                 hmul2_bf16(v[1], fhi), hmul2_bf16(v[3], fhi));
        }
      }
      fence_proxy_async_shared();  // this thread's A stores and landed token rows, for the wgmma reads
      mbar_arrive(full + 8 * b);
    }
    cp_async_wait<0>();
  } else {
    // ================= consumers: warpgroup c = warp / 4 - PWG owns A rows 64 c .. 64 c + 63 of each item
    const int c = warp / 4 - PWG, w = warp & 3, g = lane >> 2, tl = lane & 3;
    const uint32_t a_wg = a_buf + c * (S::kA / NC);  // this warpgroup's 64 rows of A buffer 0
    int q = 0;
    for (int it = 0; it < my_items; ++it) {
      const int item = static_cast<int>(blockIdx.x + it * gridDim.x);
      const int nj = ws_pad(find_ws_item(rt, E, item, blocks).ntok) / 8;
      float acc[16][4];
#pragma unroll
      for (int j = 0; j < 16; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[j][i] = 0.f;
      fence_acc16(acc);
      switch (nj) {  // warpgroup-uniform; one chunk loop per MMA shape (a shape switch per MMA would make ptxas
                     // wait for each wgmma before the next: no accumulator may be in flight across a merge)
        case 2: ws_consume<2, R>(acc, q, chunks, a_wg, S::kA, ring, S::kStage, full, empty_a, empty_r, lane); break;
        case 4: ws_consume<4, R>(acc, q, chunks, a_wg, S::kA, ring, S::kStage, full, empty_a, empty_r, lane); break;
        case 6: ws_consume<6, R>(acc, q, chunks, a_wg, S::kA, ring, S::kStage, full, empty_a, empty_r, lane); break;
        case 8: ws_consume<8, R>(acc, q, chunks, a_wg, S::kA, ring, S::kStage, full, empty_a, empty_r, lane); break;
        case 10: ws_consume<10, R>(acc, q, chunks, a_wg, S::kA, ring, S::kStage, full, empty_a, empty_r, lane); break;
        case 12: ws_consume<12, R>(acc, q, chunks, a_wg, S::kA, ring, S::kStage, full, empty_a, empty_r, lane); break;
        case 14: ws_consume<14, R>(acc, q, chunks, a_wg, S::kA, ring, S::kStage, full, empty_a, empty_r, lane); break;
        default: ws_consume<16, R>(acc, q, chunks, a_wg, S::kA, ring, S::kStage, full, empty_a, empty_r, lane); break;
      }
      q += chunks;
      wgmma_wait<0>();
      const WideItem ci = find_ws_item(rt, E, item, blocks);  // again: not live beside the accumulators over the chunks
      fence_acc16(acc);

      // ---- epilogue from registers: lane (g, tl) of warp w holds A rows 16 w + g (i = 0, 1) and 16 w + g + 8 (i = 2,
      // 3) for tokens 8 j + 2 tl + (i & 1)
      auto each_token = [&](auto&& store) {  // store(j, u, pair) for this lane's tokens
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          if (j >= nj) break;
#pragma unroll
          for (int u = 0; u < 2; ++u) {
            const int tok = 8 * j + 2 * tl + u;
            if (tok < ci.ntok) store(j, u, static_cast<int64_t>(rt.plist[ci.tok0 + tok]));
          }
        }
      };
      if constexpr (FC1) {  // gemm_phase's SwiGLU epilogue, operation for operation
        const int row = Map::out_row(ci.block, c, w, g, 0);  // this lane's intermediate row: up in i = 0, 1, gate in 2, 3
        if (Map::group(ci.block, c, 0) >= a.groups || row >= a.out_rows) continue;
        const float alpha = a.alpha ? a.alpha[ci.e] : a.alpha_s;
        const float beta = a.beta ? a.beta[ci.e] : a.beta_s;
        const float limit = a.limit ? a.limit[ci.e] : a.limit_s;
        const __nv_bfloat16* bias = a.bias ? a.bias + static_cast<int64_t>(ci.e) * 2 * a.bias_ld : nullptr;
        const float b_up = bias ? __bfloat162float(bias[row]) : 0.f;
        const float b_gate = bias ? __bfloat162float(bias[a.bias_ld + row]) : 0.f;
        each_token([&](int j, int u, int64_t p) {
          MXFP4LAB_SWIGLU(act, acc[j][u], acc[j][u + 2], bias, b_up, b_gate, a.use_limit, limit, alpha, beta);
          a.out[p * a.ld_out + row] = __float2bfloat16_rn(act);
        });
      } else {
        each_token([&](int j, int u, int64_t p) {
#pragma unroll
          for (int hr = 0; hr < 2; ++hr) {
            const int row = Map::out_row(ci.block, c, w, g, hr);
            if (row < a.out_rows) a.out[p * a.ld_out + row] = __float2bfloat16_rn(acc[j][u + 2 * hr]);
          }
        });
      }
    }
  }
#ifdef MXFP4LAB_DECODE_TRACE
  __syncthreads();
  if (threadIdx.x == 0) MXFP4LAB_STAMP(a, kTraceExit);
#endif
}

template <int NC, int R, bool FC1, int PWG>
cudaError_t launch_ws_gemm(const GemmArgs& a, int grid, cudaStream_t stream, bool pdl) {
  auto kernel = ws_kernel<NC, R, FC1, PWG>;
  const int smem = ws_smem_bytes<NC, R, PWG>(a.num_experts, a.num_pairs);
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  return launch_pdl(kernel, grid, WsSmem<NC, PWG>::kThreads, smem, stream, pdl, a);
}
