"""Triton code of the ``triton_kernels`` backend (imported lazily: needs ``triton``).

* :func:`pack_bitmatrix_kernel` -- one launch turns ``topk_ids`` into the routing bitmatrix, the local
  expert ids and the bf16 gate weights that ``routing_from_bitmatrix`` reads.
* :func:`swiglu_beta` -- the fused activation for ``matmul_ogs`` when beta != 1 (DeepSeek-V4).
"""

import triton
import triton.language as tl


@triton.jit
def pack_bitmatrix_kernel(ids_ptr, wts_ptr, bits_ptr, lids_ptr, scal_ptr, n_rows, num_local, expert_offset,
                          TOPK: tl.constexpr, K_BLOCK: tl.constexpr, WORDS: tl.constexpr, BLOCK_M: tl.constexpr):
    """Rows ``[BLOCK_M]`` of ``ids`` ``[n_rows, TOPK]`` (global expert ids) and ``wts`` (fp32) ->
    ``bits`` uint32 ``[n_rows, WORDS]`` (bit e%32 of word e//32 per local expert e), ``lids`` int16 and
    ``scal`` bf16 ``[n_rows, TOPK]`` (-1 for experts outside ``[expert_offset, expert_offset + num_local)``)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    ks = tl.arange(0, K_BLOCK)
    inb = (rows < n_rows)[:, None] & (ks < TOPK)[None, :]
    offs = rows[:, None] * TOPK + ks[None, :]
    e = tl.load(ids_ptr + offs, mask=inb, other=-1) - expert_offset
    ok = inb & (e >= 0) & (e < num_local)
    w = tl.load(wts_ptr + offs, mask=inb, other=0.0)
    tl.store(lids_ptr + offs, tl.where(ok, e, -1).to(tl.int16), mask=inb)
    tl.store(scal_ptr + offs, tl.where(ok, w, -1.0).to(tl.bfloat16), mask=inb)
    one = tl.full((BLOCK_M, K_BLOCK), 1, tl.uint32)
    el = tl.where(ok, e, 0)  # shift amounts in [0, 32) also where the lane is masked off
    for word in tl.static_range(WORDS):
        # a token's experts are distinct, so the sum of its bits is their OR
        bit = tl.where(ok & (el // 32 == word), one << (el % 32).to(tl.uint32), 0)
        tl.store(bits_ptr + rows * WORDS + word, tl.sum(bit, axis=1), mask=rows < n_rows)


@triton.jit(repr=lambda _: "_swiglu_beta")  # the GEMM1 kernel is then named _matmul_ogs_..._swiglu_beta
def swiglu_beta(input, alpha, beta, limit):
    """``input [BM, 2n]`` (gate/up interleaved, the fp32 GEMM1 accumulator) -> ``[BM, n]`` fp32:
    ``s * (clamp(up, -limit, limit) + beta)``, ``s = g * sigmoid(alpha * g)``, ``g = min(gate, limit)``.
    triton_kernels' ``swiglu_fn`` formula (``fma(s, up, s)``, ``swiglu_details/_swiglu.py``) with beta
    in place of its fixed 1."""
    gate, up = tl.split(tl.reshape(input, (input.shape[0], input.shape[1] // 2, 2)))
    gate = gate.to(tl.float32)
    up = up.to(tl.float32)
    if limit is not None:
        gate = tl.minimum(gate, limit)
        up = tl.maximum(tl.minimum(up, limit), -limit)
    s = gate / (1 + tl.exp(-alpha * gate))
    return tl.fma(s, up, s * beta)
