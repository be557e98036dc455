"""Routing alignment of mxfp4lab's Triton MoE: the ``M*k`` (token, slot) pairs grouped by local expert, each
expert's run padded to ``BLOCK_M``, without a host synchronisation (so a forward can be CUDA-graph captured).

:func:`align_pairs` is torch (like vLLM's ``moe_align_block_size``); for up to
:data:`SMALL_ALIGN_MAX_PAIRS` pairs a single one-program Triton kernel (``_align_small_kernel``: histogram,
cumsum, rank by pairwise compare) replaces its ~12 torch launches (:func:`align_pairs_small`); both give
identical outputs (tested). Decode latency is a few microseconds per launch, so this matters at small M.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


# --------------------------------------------------------------------------------------------
# Kernel 0: routing alignment for small M, one program (replaces ~12 torch launches)
# --------------------------------------------------------------------------------------------
@triton.jit
def _align_small_kernel(
    ids_ptr, sorted_ids_ptr, block_expert_ptr,
    num_pairs, num_experts, expert_offset, num_blocks,
    P_BLOCK: tl.constexpr, E_BLOCK: tl.constexpr, NB_BLOCK: tl.constexpr, BLOCK_M: tl.constexpr,
    J: tl.constexpr, MAX_EXPERT_BLOCKS: tl.constexpr,
):
    """Same outputs as :func:`align_pairs` for ``num_pairs <= P_BLOCK``; ``E_BLOCK > num_experts``
    (bin ``num_experts`` .. collects the pairs routed elsewhere and is dropped)."""
    offs = tl.arange(0, P_BLOCK)
    in_range = offs < num_pairs
    e = tl.load(ids_ptr + offs, mask=in_range, other=0) - expert_offset
    valid = in_range & (e >= 0) & (e < num_experts)
    key = tl.where(valid, e, num_experts)  # [P_BLOCK], num_experts = the trash bin
    bins = tl.arange(0, E_BLOCK)
    counts = tl.histogram(key, E_BLOCK, mask=in_range)
    counts = tl.where(bins < num_experts, counts, 0)
    blocks = (counts + BLOCK_M - 1) // BLOCK_M  # [E_BLOCK] M-blocks per expert
    bend = tl.cumsum(blocks, 0)
    bstart = bend - blocks
    pstart = tl.gather(bstart, key, 0) * BLOCK_M  # [P_BLOCK] first padded slot of each pair's expert
    # rank of each pair among the earlier pairs of its expert (stable order), J columns at a time
    rank = tl.zeros((P_BLOCK,), dtype=tl.int32)
    for j0 in range(0, P_BLOCK, J):
        offs_j = j0 + tl.arange(0, J)
        ej = tl.load(ids_ptr + offs_j, mask=offs_j < num_pairs, other=0) - expert_offset
        ok_j = (offs_j < num_pairs) & (ej >= 0) & (ej < num_experts)
        kj = tl.where(ok_j, ej, num_experts)
        same = (key[:, None] == kj[None, :]) & (offs_j[None, :] < offs[:, None]) & ok_j[None, :]
        rank += tl.sum(same.to(tl.int32), 1)
    # padding first: every slot = num_pairs, every block = num_experts (unused) ...
    for s0 in range(0, NB_BLOCK * BLOCK_M, P_BLOCK):
        so = s0 + offs
        tl.store(sorted_ids_ptr + so, tl.full((P_BLOCK,), 0, tl.int32) + num_pairs, mask=so < num_blocks * BLOCK_M)
    ob = tl.arange(0, NB_BLOCK)
    tl.store(block_expert_ptr + ob, tl.full((NB_BLOCK,), 0, tl.int32) + num_experts, mask=ob < num_blocks)
    tl.debug_barrier()
    # ... then the pairs and each expert's run of blocks
    tl.store(sorted_ids_ptr + pstart + rank, offs.to(tl.int32), mask=valid)
    for t in range(MAX_EXPERT_BLOCKS):
        tl.store(block_expert_ptr + bstart + t, bins.to(tl.int32), mask=t < blocks)


# --------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------
@dataclass
class Alignment:
    """Pairs sorted by expert, padded per expert to BLOCK_M (vLLM's moe_align_block_size, in torch)."""

    sorted_ids: torch.Tensor  # int32 [max_blocks*BLOCK_M]: pair ids; padding = num_pairs
    block_expert: torch.Tensor  # int32 [max_blocks]: local expert of each block; E = unused block
    max_blocks: int


def max_blocks(num_pairs: int, num_experts: int, block_m: int) -> int:
    """Upper bound on sum_e ceil(count_e / BLOCK_M): floor(P/BM) + (number of non-empty experts)."""
    return num_pairs // block_m + min(num_experts, num_pairs)


def align_pairs(topk_ids: torch.Tensor, num_experts: int, expert_offset: int, block_m: int) -> Alignment:
    """Group the ``M*k`` (token, slot) pairs by local expert without a host synchronisation.

    Pairs routed to experts outside ``[expert_offset, expert_offset + E)`` get no block (they
    contribute nothing; the combine skips them). Within an expert, pairs keep ascending pair order.
    """
    dev = topk_ids.device
    p = topk_ids.numel()
    nb = max_blocks(p, num_experts, block_m)
    local = topk_ids.reshape(-1).to(torch.int64) - expert_offset
    valid = (local >= 0) & (local < num_experts)
    key = torch.where(valid, local, torch.full_like(local, num_experts))
    # scatter_add, not bincount: bincount on CUDA reads max(key) on the host (breaks graph capture)
    counts = torch.zeros(num_experts + 1, dtype=torch.int64, device=dev)
    counts.scatter_add_(0, key, torch.ones_like(key))
    counts = counts[:num_experts]
    blocks = (counts + block_m - 1) // block_m
    blocks_end = torch.cumsum(blocks, 0)
    padded_start = (blocks_end - blocks) * block_m  # [E]
    start = torch.cumsum(counts, 0) - counts  # [E] unpadded exclusive prefix
    order = torch.argsort(key, stable=True)
    skey = key[order]
    ok = skey < num_experts
    ek = skey.clamp(max=num_experts - 1)
    rank = torch.arange(p, device=dev) - start[ek]
    dest = torch.where(ok, padded_start[ek] + rank, torch.full_like(rank, nb * block_m))  # trash slot
    sorted_ids = torch.full((nb * block_m + 1,), p, dtype=torch.int32, device=dev)
    sorted_ids.scatter_(0, dest, order.to(torch.int32))
    bidx = torch.arange(nb, device=dev)
    block_expert = torch.searchsorted(blocks_end, bidx, right=True).to(torch.int32)  # E past the end
    return Alignment(sorted_ids[: nb * block_m], block_expert, nb)


#: up to this many (token, slot) pairs the one-program alignment kernel runs (M=256 at top-4)
SMALL_ALIGN_MAX_PAIRS = 1024


def align_pairs_small(topk_ids: torch.Tensor, num_experts: int, expert_offset: int, block_m: int) -> Alignment:
    """:func:`align_pairs` in one Triton launch (``topk_ids.numel() <= SMALL_ALIGN_MAX_PAIRS``)."""
    p = topk_ids.numel()
    if p > SMALL_ALIGN_MAX_PAIRS:
        raise ValueError(f"align_pairs_small: {p} pairs > SMALL_ALIGN_MAX_PAIRS={SMALL_ALIGN_MAX_PAIRS}")
    dev = topk_ids.device
    nb = max_blocks(p, num_experts, block_m)
    ids = topk_ids.reshape(-1).to(torch.int32).contiguous()
    sorted_ids = torch.empty(max(nb * block_m, 1), dtype=torch.int32, device=dev)
    block_expert = torch.empty(max(nb, 1), dtype=torch.int32, device=dev)
    p_block = max(triton.next_power_of_2(max(p, 1)), 16)
    big = p_block >= 512  # keep the [P_BLOCK, J] compare tile in registers (no local-memory spill)
    _align_small_kernel[(1,)](
        ids, sorted_ids, block_expert, p, num_experts, expert_offset, nb,
        P_BLOCK=p_block, E_BLOCK=triton.next_power_of_2(num_experts + 1),
        NB_BLOCK=triton.next_power_of_2(max(nb, 1)), BLOCK_M=block_m, J=16 if big else min(32, p_block),
        MAX_EXPERT_BLOCKS=triton.cdiv(p_block, block_m), num_warps=8 if big else 4,
    )
    return Alignment(sorted_ids[: nb * block_m], block_expert[:nb], nb)
