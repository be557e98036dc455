"""mxfp4lab's own W4A16 MXFP4 fused-MoE kernels in Triton, plus their host-side launch wrappers.

Pipeline for ``x [M, H]`` bf16, ``topk_ids [M, k]`` (global ids), ``topk_weights [M, k]`` fp32; a
*pair* ``p = m*k + j`` is one (token m, slot j)::

    align (torch)    sort pairs by local expert, pad each expert's run to BLOCK_M; per M-block its expert
    fc1 kernel       gather x rows of a block's pairs, GEMM1 against up rows n and gate rows I_pad+n of
                     the same N tile, round each to bf16, + bias (fp32), clamped SwiGLU (fp32),
                     store bf16 h [M*k, I_pad] at row p
    fc2 kernel       rows p of h @ W2 (same M-blocks), store bf16 y [M*k, H] at row p (no bias)
    combine kernel   out[m] = sum_{j=0..k-1, in order} w[m,j] * (fp32(y[m*k+j]) + b2[e_j]) in fp32, bf16 store

Rounding points are those of :func:`mxfp4lab.reference.moe_reference` ``mode="kernel"`` (FlashInfer's
SM90 path): GEMM1 output -> bf16 before the bias, activation -> bf16, GEMM2 output -> bf16, final sum
-> bf16. Only the fp32 summation order inside each GEMM differs. No atomics: deterministic.

Weights are read in the layout of :mod:`mxfp4lab.layout.triton_w4a16` (``w [E, K/2, N]`` packed E2M1
bytes, ``s [E, K/32, N]`` E8M0). Dequantization in registers, exact: E2M1 magnitude -> fp32 bit
pattern (codes 2..7: ``(em + 252) << 22``; code 1: ``0.5``; code 0: ``0``), sign bit OR'ed in, times
the scale ``2**(byte-127)`` built as fp32 bits (``byte << 23``; byte 0 -> the subnormal ``1 << 22``),
then cast to bf16: the product has at most 2 significant bits, so it is exact in fp32 and bf16 unless
it falls under fp32's normal range (scale bytes <= 1 with non-zero codes; flush-to-zero hardware would
zero those).

Dequantization paths (:class:`mxfp4lab.kernels.tiles.DequantPath`, the ``DEQUANT`` constexpr; the tuner
times the table's candidates): ``EXPLICIT`` (0) the bit-level decode above followed by ``tl.dot``;
``PTX`` (2) a K-parity split (``x[:, 0::2] @ W_even + x[:, 1::2] @ W_odd``) with a PTX register decode
(:data:`E2M1X8_BF16_PTX`, ~3.75 instructions per weight), GPU only; ``SWAP_AB_PTX`` (3) "swap AB" -- the
transposed product ``acc^T [BN, BM] = W^T [BN, BK] @ x^T [BK, BM]`` with the K-parity split and PTX decode,
so the decoded weight is the MMA's A operand, which Hopper's wgmma reads from registers (tokens become the
MMA's N); the accumulators are transposed back before the unchanged epilogue. GPU only;
``SWAP_AB_EXPLICIT`` (4) the same swap-AB structure with the explicit decode in plain Triton ops: what 3
runs as under the interpreter (so its indexing is tested on the CPU). (Triton's own ``tl.dot_scaled``
decode gave wrong results on the H100 and is not a path: :mod:`mxfp4lab.kernels.tiles`.)

Routing alignment (sorting the pairs by expert, padded to BLOCK_M, no host sync): :mod:`.align`.

Shape constants (``H``, ``I_pad``, ``top_k``) are ``tl.constexpr``: one compile per model shape (loop
bounds known to the compiler), and Triton's CPU interpreter with numpy >= 2.4 cannot take a run-time
scalar as a ``range`` bound.

The host side allocates worst-case-sized buffers and launches fixed grids (no host synchronisation),
so a forward can be captured in a CUDA graph: blocks past the last used one see expert id ``E`` and exit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .align import SMALL_ALIGN_MAX_PAIRS, align_pairs, align_pairs_small
from .tiles import TileConfig

# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _e2m1_bf16(c, s):
    """E2M1 codes ``c`` (int32, 0..15) times E8M0 scales ``s`` (int32 bytes, same shape) -> bf16, with the
    explicit fp32-bit decode of path 0 (exact; see the module docstring)."""
    em = c & 7
    mag = tl.where(em >= 2, (em + 252) << 22, em * (252 << 22))
    bits = mag | ((c & 8) << 28)
    sbits = tl.where(s == 0, 1 << 22, s << 23)
    return (bits.to(tl.float32, bitcast=True) * sbits.to(tl.float32, bitcast=True)).to(tl.bfloat16)


@triton.jit
def _dequant_tile(wb, sb):
    """Packed bytes ``wb [BK/2, BN]`` (uint8) and scales ``sb [BK, BN]`` (uint8, already broadcast
    along K) -> bf16 ``[BK, BN]`` with row ``2i`` from the low nibble of byte row ``i``."""
    w = wb.to(tl.int32)
    lo = w & 15
    hi = w >> 4
    # [BK/2, BN, 2] -> [BK/2, 2, BN] -> [BK, BN]: row 2i = low nibble, row 2i+1 = high nibble
    c = tl.reshape(tl.permute(tl.join(lo, hi), (0, 2, 1)), (lo.shape[0] * 2, lo.shape[1]))
    return _e2m1_bf16(c, sb.to(tl.int32))


@triton.jit
def _mma(a, b, acc, INTERPRET: tl.constexpr):
    """``acc + a @ b`` for bf16 ``a``, ``b``. Under the CPU interpreter (``INTERPRET``; its ``tl.dot``
    multiplies bf16's raw uint16 storage) both are upcast first: bf16 products are exact in fp32 and the
    sum is fp32 either way, so it is the same function."""
    if INTERPRET:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _to_bf16(x, INTERPRET: tl.constexpr):
    """fp32 -> bf16, round to nearest even. The GPU's conversion does that; Triton 3.6's interpreter
    truncates, so there the rounding is done on the fp32 bits first (finite inputs)."""
    if INTERPRET:
        bits = x.to(tl.int32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & -65536
        return bits.to(tl.float32, bitcast=True).to(tl.bfloat16)
    else:
        return x.to(tl.bfloat16)


#: Decode path 2 (GPU only): one PTX block turns 4 weight bytes (8 E2M1 codes: the low nibble of byte j is
#: element j of the even-k tile, the high nibble element j of the odd-k tile) and their 4 E8M0 scale bytes
#: into 8 bf16, two per 32-bit register, with integer ops on whole registers (SIMD within a register)
#: instead of Triton's one-element-per-register code. Operands (``tl.inline_asm_elementwise``, pack=4,
#: outputs grouped per result, 16-bit results two per register, element 0 in the low half):
#:   $0, $1  even-k (low nibble) values of bytes (0, 1) and (2, 3);  $2, $3  odd-k (high nibble) values;
#:   $4      the 4 weight bytes (byte j in bits 8j..8j+7);           $5      the 4 scale bytes.
#: Bits, per 16-bit lane h (0, 1) after ``prmt`` moved bytes (0, 1) or (2, 3) to bits 0-7 and 16-23:
#:   lane   .... .... hhhh llll      l = code of even k (s e e m), h = code of odd k
#:   even   s -> bit 15, eem -> bits 6..8  (shl 12 / shl 6, masks 0x8000 / 0x01C0)
#:   odd    s -> bit 15, eem -> bits 6..8  (shl 8 / shl 2)
#:   giving the bf16 value E2M1 * 2^-126 (code 1 is the subnormal 2^-127); then x 2^126 (exact) and
#:   x 2^(s-127) (E8M0 byte << 7), exact for scale bytes 1..254 while the product is a normal bf16 or
#:   overflows like the reference. Scale byte 0 (2^-127) decodes as 0 here.
#: ~3.75 instructions per weight element (the explicit decode: ~12-20 per element in sm_90a SASS).
E2M1X8_BF16_PTX = """
{
.reg .b32 t0, t1, s0, s1, x, y, c;
mov.b32 c, 0x7E807E80;
prmt.b32 t0, $4, 0, 0x4140;
prmt.b32 t1, $4, 0, 0x4342;
prmt.b32 s0, $5, 0, 0x4140;
prmt.b32 s1, $5, 0, 0x4342;
shl.b32 s0, s0, 7;
shl.b32 s1, s1, 7;
shl.b32 x, t0, 6;
shl.b32 y, t0, 12;
and.b32 y, y, 0x80008000;
lop3.b32 $0, x, 0x01C001C0, y, 0xEA;
shl.b32 x, t1, 6;
shl.b32 y, t1, 12;
and.b32 y, y, 0x80008000;
lop3.b32 $1, x, 0x01C001C0, y, 0xEA;
shl.b32 x, t0, 2;
shl.b32 y, t0, 8;
and.b32 y, y, 0x80008000;
lop3.b32 $2, x, 0x01C001C0, y, 0xEA;
shl.b32 x, t1, 2;
shl.b32 y, t1, 8;
and.b32 y, y, 0x80008000;
lop3.b32 $3, x, 0x01C001C0, y, 0xEA;
mul.rn.bf16x2 $0, $0, c;
mul.rn.bf16x2 $1, $1, c;
mul.rn.bf16x2 $2, $2, c;
mul.rn.bf16x2 $3, $3, c;
mul.rn.bf16x2 $0, $0, s0;
mul.rn.bf16x2 $1, $1, s1;
mul.rn.bf16x2 $2, $2, s0;
mul.rn.bf16x2 $3, $3, s1;
}
"""
_E2M1X8_BF16_ASM = tl.constexpr(E2M1X8_BF16_PTX)  # a jitted function may only read constexpr globals


@triton.jit
def _e2m1x8_asm(wb, sb):
    """Weight bytes and their scale bytes (same shape, uint8) -> bf16 (low-nibble values, high-nibble
    values) through :data:`E2M1X8_BF16_PTX`, 4 bytes per PTX block (GPU only)."""
    return tl.inline_asm_elementwise(_E2M1X8_BF16_ASM, "=r,=r,=r,=r,r,r", [wb, sb],
                                     dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)


@triton.jit
def _dequant_pair_asm(wb, sg, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """Packed bytes ``wb [BK/2, BN]`` and per-group scales ``sg [BK/32, BN]`` -> bf16 ``(even-k rows,
    odd-k rows)``, each ``[BK/2, BN]`` (decode path 2, :data:`E2M1X8_BF16_PTX`)."""
    # [BK/32, BN] -> [BK/32, 16, BN] -> [BK/2, BN]: byte row i uses scale group i // 16
    sb = tl.reshape(tl.broadcast_to(sg[:, None, :], (BLOCK_K // 32, 16, BLOCK_N)), (BLOCK_K // 2, BLOCK_N))
    return _e2m1x8_asm(wb, sb)


@triton.jit
def _split_k_parity(a, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """``a [BM, BK]`` -> (columns 0, 2, 4, ..., columns 1, 3, 5, ...), each ``[BM, BK/2]``."""
    return tl.split(tl.reshape(a, (BLOCK_M, BLOCK_K // 2, 2)))


@triton.jit
def _dequant_pair_t(wb, sg, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, ASM: tl.constexpr):
    """Swap-AB decode (paths 3, 4): packed bytes ``wb [BN, BK/2]`` (byte column i = k 2i and 2i+1 of row n)
    and per-group scales ``sg [BN, BK/32]`` -> bf16 ``(even-k, odd-k)``, each ``[BN, BK/2]`` -- the LHS of
    the transposed product. ``ASM``: the PTX register decode (:data:`E2M1X8_BF16_PTX`, GPU only), else
    the explicit decode in plain Triton ops (runs under the interpreter too)."""
    # [BN, BK/32] -> [BN, BK/32, 16] -> [BN, BK/2]: byte column i uses scale group i // 16
    sb = tl.reshape(tl.broadcast_to(sg[:, :, None], (BLOCK_N, BLOCK_K // 32, 16)), (BLOCK_N, BLOCK_K // 2))
    if ASM:
        return _e2m1x8_asm(wb, sb)
    else:
        w = wb.to(tl.int32)
        s = sb.to(tl.int32)
        return _e2m1_bf16(w & 15, s), _e2m1_bf16(w >> 4, s)


# --------------------------------------------------------------------------------------------
# Kernel 1: gather + GEMM1 (up and gate halves) + bias + clamped SwiGLU
# --------------------------------------------------------------------------------------------
@triton.jit
def _fc1_swiglu_kernel(
    x_ptr, w_ptr, s_ptr, b_ptr, alpha_ptr, beta_ptr, limit_ptr,
    sorted_ids_ptr, block_expert_ptr, h_ptr,
    num_pairs, num_experts,
    stride_xm, stride_we, stride_wk, stride_se, stride_sk, stride_be, stride_hm,
    alpha_default, beta_default, limit_default,
    H: tl.constexpr, I_pad: tl.constexpr, top_k: tl.constexpr,
    HAS_BIAS: tl.constexpr, PER_EXPERT_ACT: tl.constexpr, HAS_LIMIT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, INTERPRET: tl.constexpr,
    DEQUANT: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_expert_ptr + pid_m)
    if expert >= num_experts:  # a block past the last used one
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ids_ptr + offs_m)
    row_ok = pair < num_pairs
    token = tl.where(row_ok, pair // top_k, 0)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # < I_pad (I_pad % BLOCK_N == 0)
    offs_k = tl.arange(0, BLOCK_K)
    offs_kp = tl.arange(0, BLOCK_K // 2)
    offs_g = tl.arange(0, BLOCK_K // 32)

    e64 = expert.to(tl.int64)
    w_base = w_ptr + e64 * stride_we
    s_base = s_ptr + e64 * stride_se
    x_rows = x_ptr + token.to(tl.int64)[:, None] * stride_xm
    if DEQUANT >= 3:  # swap AB: transposed accumulators [BN, BM] (weights = MMA M, tokens = MMA N)
        acc_up = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        acc_gate = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):  # the last tile reads padded weights (H_pad % BLOCK_K == 0), x masked
        kk = k0 + offs_k
        a = tl.load(x_rows + kk[None, :], mask=row_ok[:, None] & (kk[None, :] < H), other=0.0)
        kp = k0 // 2 + offs_kp
        if DEQUANT >= 3:
            # weights as [BN, BK/2] (the same bytes, read transposed: N still contiguous), scales [BN, BK/32]
            g = k0 // 32 + offs_g
            a_ev, a_od = _split_k_parity(a, BLOCK_M, BLOCK_K)
            wu = tl.load(w_base + kp[None, :] * stride_wk + offs_n[:, None])
            wg = tl.load(w_base + kp[None, :] * stride_wk + (I_pad + offs_n)[:, None])
            su = tl.load(s_base + g[None, :] * stride_sk + offs_n[:, None])
            sg = tl.load(s_base + g[None, :] * stride_sk + (I_pad + offs_n)[:, None])
            u_ev, u_od = _dequant_pair_t(wu, su, BLOCK_K, BLOCK_N, DEQUANT == 3)
            g_ev, g_od = _dequant_pair_t(wg, sg, BLOCK_K, BLOCK_N, DEQUANT == 3)
            acc_up = _mma(u_od, tl.trans(a_od), _mma(u_ev, tl.trans(a_ev), acc_up, INTERPRET), INTERPRET)
            acc_gate = _mma(g_od, tl.trans(a_od), _mma(g_ev, tl.trans(a_ev), acc_gate, INTERPRET), INTERPRET)
        else:
            wu = tl.load(w_base + kp[:, None] * stride_wk + offs_n[None, :])
            wg = tl.load(w_base + kp[:, None] * stride_wk + (I_pad + offs_n)[None, :])
            if DEQUANT == 2:
                g = k0 // 32 + offs_g
                a_ev, a_od = _split_k_parity(a, BLOCK_M, BLOCK_K)
                su = tl.load(s_base + g[:, None] * stride_sk + offs_n[None, :])
                sg = tl.load(s_base + g[:, None] * stride_sk + (I_pad + offs_n)[None, :])
                u_ev, u_od = _dequant_pair_asm(wu, su, BLOCK_K, BLOCK_N)
                g_ev, g_od = _dequant_pair_asm(wg, sg, BLOCK_K, BLOCK_N)
                acc_up = tl.dot(a_od, u_od, tl.dot(a_ev, u_ev, acc_up))
                acc_gate = tl.dot(a_od, g_od, tl.dot(a_ev, g_ev, acc_gate))
            else:
                kg = kk // 32
                su = tl.load(s_base + kg[:, None] * stride_sk + offs_n[None, :])
                sg = tl.load(s_base + kg[:, None] * stride_sk + (I_pad + offs_n)[None, :])
                acc_up = _mma(a, _dequant_tile(wu, su), acc_up, INTERPRET)
                acc_gate = _mma(a, _dequant_tile(wg, sg), acc_gate, INTERPRET)
    if DEQUANT >= 3:
        acc_up = tl.trans(acc_up)
        acc_gate = tl.trans(acc_gate)
    # round 1: GEMM output stored as bf16 (before the bias)
    up = _to_bf16(acc_up, INTERPRET).to(tl.float32)
    gate = _to_bf16(acc_gate, INTERPRET).to(tl.float32)
    if HAS_BIAS:
        up += tl.load(b_ptr + e64 * stride_be + offs_n).to(tl.float32)[None, :]
        gate += tl.load(b_ptr + e64 * stride_be + I_pad + offs_n).to(tl.float32)[None, :]
    if PER_EXPERT_ACT:
        alpha = tl.load(alpha_ptr + expert)
        beta = tl.load(beta_ptr + expert)
        limit = tl.load(limit_ptr + expert)
    else:
        alpha = alpha_default
        beta = beta_default
        limit = limit_default
    if HAS_LIMIT:
        gate = tl.minimum(gate, limit)
        up = tl.minimum(tl.maximum(up, -limit), limit)
    act = gate * tl.sigmoid(gate * alpha) * (up + beta)
    # round 2: activation stored as bf16
    h_ptrs = h_ptr + pair.to(tl.int64)[:, None] * stride_hm + offs_n[None, :]
    tl.store(h_ptrs, _to_bf16(act, INTERPRET), mask=row_ok[:, None])


# --------------------------------------------------------------------------------------------
# Kernel 2: GEMM2 over the same M-blocks (rows = pairs), bf16 store without bias
# --------------------------------------------------------------------------------------------
@triton.jit
def _fc2_kernel(
    h_ptr, w_ptr, s_ptr, sorted_ids_ptr, block_expert_ptr, y_ptr,
    num_pairs, num_experts,
    stride_hm, stride_we, stride_wk, stride_se, stride_sk, stride_ym,
    H: tl.constexpr, I_pad: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, INTERPRET: tl.constexpr,
    DEQUANT: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_expert_ptr + pid_m)
    if expert >= num_experts:
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ids_ptr + offs_m)
    row_ok = pair < num_pairs
    prow = tl.where(row_ok, pair, 0).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # < H_pad (H_pad % BLOCK_N == 0)
    offs_k = tl.arange(0, BLOCK_K)
    offs_kp = tl.arange(0, BLOCK_K // 2)
    offs_g = tl.arange(0, BLOCK_K // 32)
    e64 = expert.to(tl.int64)
    w_base = w_ptr + e64 * stride_we
    s_base = s_ptr + e64 * stride_se
    if DEQUANT >= 3:  # swap AB: transposed accumulator [BN, BM]
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, I_pad, BLOCK_K):  # I_pad % BLOCK_K == 0
        kk = k0 + offs_k
        a = tl.load(h_ptr + prow[:, None] * stride_hm + kk[None, :], mask=row_ok[:, None], other=0.0)
        kp = k0 // 2 + offs_kp
        if DEQUANT >= 3:
            a_ev, a_od = _split_k_parity(a, BLOCK_M, BLOCK_K)
            wb = tl.load(w_base + kp[None, :] * stride_wk + offs_n[:, None])
            sg = tl.load(s_base + (k0 // 32 + offs_g)[None, :] * stride_sk + offs_n[:, None])
            w_ev, w_od = _dequant_pair_t(wb, sg, BLOCK_K, BLOCK_N, DEQUANT == 3)
            acc = _mma(w_od, tl.trans(a_od), _mma(w_ev, tl.trans(a_ev), acc, INTERPRET), INTERPRET)
        else:
            wb = tl.load(w_base + kp[:, None] * stride_wk + offs_n[None, :])
            if DEQUANT == 2:
                a_ev, a_od = _split_k_parity(a, BLOCK_M, BLOCK_K)
                sg = tl.load(s_base + (k0 // 32 + offs_g)[:, None] * stride_sk + offs_n[None, :])
                w_ev, w_od = _dequant_pair_asm(wb, sg, BLOCK_K, BLOCK_N)
                acc = tl.dot(a_od, w_od, tl.dot(a_ev, w_ev, acc))
            else:
                sb = tl.load(s_base + (kk // 32)[:, None] * stride_sk + offs_n[None, :])
                acc = _mma(a, _dequant_tile(wb, sb), acc, INTERPRET)
    if DEQUANT >= 3:
        acc = tl.trans(acc)
    # round 3: GEMM2 output stored as bf16; the fc2 bias is added in the combine (fp32)
    y_ptrs = y_ptr + prow[:, None] * stride_ym + offs_n[None, :]
    tl.store(y_ptrs, _to_bf16(acc, INTERPRET), mask=row_ok[:, None] & (offs_n[None, :] < H))


# --------------------------------------------------------------------------------------------
# Kernel 3: top-k weighted combine, k = 0..top_k-1 in order, fc2 bias per (token, slot)
# --------------------------------------------------------------------------------------------
@triton.jit
def _combine_kernel(
    y_ptr, ids_ptr, wts_ptr, b_ptr, out_ptr,
    expert_offset, num_experts,
    stride_ym, stride_be, stride_om,
    H: tl.constexpr, top_k: tl.constexpr,
    HAS_BIAS: tl.constexpr, BLOCK_H: tl.constexpr, INTERPRET: tl.constexpr,
):
    m = tl.program_id(0)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    hmask = offs_h < H
    acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for j in range(top_k):
        p = m.to(tl.int64) * top_k + j
        e = tl.load(ids_ptr + p) - expert_offset
        if (e >= 0) & (e < num_experts):
            w = tl.load(wts_ptr + p)
            v = tl.load(y_ptr + p * stride_ym + offs_h, mask=hmask, other=0.0).to(tl.float32)
            if HAS_BIAS:
                v += tl.load(b_ptr + e.to(tl.int64) * stride_be + offs_h, mask=hmask, other=0.0).to(tl.float32)
            acc += w * v
    # round 4
    tl.store(out_ptr + m.to(tl.int64) * stride_om + offs_h, _to_bf16(acc, INTERPRET), mask=hmask)


# --------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------
def _act_args(alpha, beta, limit, num_experts: int, device):
    """-> (PER_EXPERT_ACT, HAS_LIMIT, (alpha, beta, limit) fp32 [E] tensors or dummies, scalar defaults).

    Each parameter is None (alpha 1, beta 0, no limit), a Python number, or a tensor ``[E_local]``.
    """
    has_limit = limit is not None
    vals = (1.0 if alpha is None else alpha, 0.0 if beta is None else beta, 0.0 if limit is None else limit)
    if not any(isinstance(v, torch.Tensor) for v in vals):
        dummy = torch.empty(1, dtype=torch.float32, device=device)  # never read (PER_EXPERT_ACT False)
        return False, has_limit, (dummy, dummy, dummy), tuple(float(v) for v in vals)

    def t(v):
        if isinstance(v, torch.Tensor):
            v = v.to(device=device, dtype=torch.float32).reshape(-1)
            return v.expand(num_experts).contiguous() if v.numel() == 1 else v.contiguous()
        return torch.full((num_experts,), float(v), dtype=torch.float32, device=device)

    return True, has_limit, tuple(t(v) for v in vals), (1.0, 0.0, 0.0)


def fused_moe_w4a16(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    layout,
    *,
    swiglu_alpha=1.0,
    swiglu_beta=0.0,
    swiglu_limit=None,
    config: TileConfig,
    out: torch.Tensor | None = None,
    scratch_fill: float | None = None,
    block_h: int = 256,
) -> torch.Tensor:
    """One MoE layer: ``[M, H]`` bf16 (no routed scaling). ``layout``: a
    :class:`mxfp4lab.layout.triton_w4a16.TritonW4A16Layout` on the same device as ``x``.

    ``out``: optional ``[M, H]`` bf16 buffer to write (tests poison it first). ``scratch_fill``:
    fill the intermediate buffers with this value first (NaN in tests: any element that a kernel reads
    without another having written it shows up in the output).
    """
    m, h = x.shape
    k = topk_ids.shape[1]
    e = layout.num_local_experts
    h_pad, i_pad = layout.padded_hidden, layout.padded_intermediate
    config.check(h_pad, i_pad)
    dev = x.device
    x = x.contiguous()
    ids = topk_ids.to(torch.int32).contiguous()
    wts = topk_weights.to(torch.float32).contiguous()
    p = m * k
    small = p <= SMALL_ALIGN_MAX_PAIRS and dev.type == "cuda"
    al = (align_pairs_small if small else align_pairs)(ids, e, layout.expert_offset, config.block_m)
    alloc = torch.empty if scratch_fill is None else (lambda *s, **kw: torch.full(s, scratch_fill, **kw))
    hbuf = alloc(max(p, 1), i_pad, dtype=torch.bfloat16, device=dev)
    ybuf = alloc(max(p, 1), h, dtype=torch.bfloat16, device=dev)
    if out is None:
        out = torch.empty(m, h, dtype=torch.bfloat16, device=dev)
    per_e, has_lim, (ta, tb, tlim), (da, db, dl) = _act_args(swiglu_alpha, swiglu_beta, swiglu_limit, e, dev)
    b13 = layout.w13_bias
    b2 = layout.w2_bias
    dummy = torch.empty(1, dtype=torch.bfloat16, device=dev)  # never read (HAS_BIAS False): no fill launch
    cfg = config
    interpret = dev.type == "cpu"  # only the interpreter runs on CPU tensors
    # the interpreter has no inline PTX: it runs the explicit decode, swap AB keeps its structure
    dequant = int(cfg.dequant.under_interpreter() if interpret else cfg.dequant)
    _fc1_swiglu_kernel[(al.max_blocks, i_pad // cfg.block_n1)](
        x, layout.w13, layout.w13_scale, b13 if b13 is not None else dummy, ta, tb, tlim,
        al.sorted_ids, al.block_expert, hbuf,
        p, e,
        x.stride(0), layout.w13.stride(0), layout.w13.stride(1), layout.w13_scale.stride(0),
        layout.w13_scale.stride(1), b13.stride(0) if b13 is not None else 0, hbuf.stride(0),
        da, db, dl,
        H=h, I_pad=i_pad, top_k=k,
        HAS_BIAS=b13 is not None, PER_EXPERT_ACT=per_e, HAS_LIMIT=has_lim,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n1, BLOCK_K=cfg.block_k1, INTERPRET=interpret, DEQUANT=dequant,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    _fc2_kernel[(al.max_blocks, triton.cdiv(h, cfg.block_n2))](
        hbuf, layout.w2, layout.w2_scale, al.sorted_ids, al.block_expert, ybuf,
        p, e,
        hbuf.stride(0), layout.w2.stride(0), layout.w2.stride(1), layout.w2_scale.stride(0),
        layout.w2_scale.stride(1), ybuf.stride(0),
        H=h, I_pad=i_pad,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n2, BLOCK_K=cfg.block_k2, INTERPRET=interpret, DEQUANT=dequant,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    bh = min(block_h, triton.next_power_of_2(h))
    _combine_kernel[(m, triton.cdiv(h, bh))](
        ybuf, ids, wts, b2 if b2 is not None else dummy, out,
        layout.expert_offset, e,
        ybuf.stride(0), b2.stride(0) if b2 is not None else 0, out.stride(0),
        H=h, top_k=k, HAS_BIAS=b2 is not None, BLOCK_H=bh, INTERPRET=interpret,
    )
    return out
