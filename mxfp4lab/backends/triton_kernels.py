"""OpenAI ``triton_kernels`` MoE (``matmul_ogs``): what vLLM, SGLang and TensorRT-LLM run for GPT-OSS on Hopper.

The library is the copy bundled in vLLM 0.26.0 (:mod:`.triton_kernels_source`). It is called the way
vLLM 0.26.0's Hopper path calls it (read from, not copied):

* weights -- ``vllm/model_executor/layers/quantization/utils/mxfp4_utils.py`` ``_swizzle_mxfp4``:
  packed FP4 ``[E, N, K/2]`` viewed transposed (``[E, K, N]``, K-major), wrapped as ``FP4`` and converted
  to ``HopperMXValueLayout(mx_axis=1)``; E8M0 scales ``[E, N, K/32]``, K-groups zero-padded to a multiple
  of 4 (vLLM's fix for triton issue #47303), transposed, converted to ``HopperMXScaleLayout(mx_axis=1,
  num_warps=8)``; ``opt_flags`` constrained to ``split_k=1`` on SM90; biases fp32
  (``vllm/model_executor/layers/fused_moe/oracle/mxfp4.py``, TRITON backend). vLLM pads only the
  intermediate size, to a multiple of 64 (``mxfp4_round_up_hidden_size_and_intermediate_size``): the
  hidden size stays 2880 for GPT-OSS.
* forward -- ``vllm/model_executor/layers/fused_moe/experts/gpt_oss_triton_kernels_moe.py``
  ``triton_kernel_fused_experts``: GEMM1 ``matmul_ogs(x, w13, b13, routing, gather_indx, fused_activation=
  swiglu(alpha, limit), reduction_n=2)`` on gate/up columns interleaved as in the GPT-OSS checkpoint;
  GEMM2 ``matmul_ogs(h, w2, b2, routing, scatter_indx, gammas=gate_scal)``, which also sums the top-k
  rows per token (``_reduce_grouped``).
* routing -- our interface hands over ``topk_ids``/``topk_weights``, so the routing data is built from
  them as vLLM's ``make_routing_data`` does: a bitmatrix of each token's experts, then the library's
  ``routing_from_bitmatrix`` (:func:`routing_from_topk`, ``routing="triton"``). That routing kernel
  compiles only for a power-of-two top-k (``tl.arange(0, top_k * 32)``; vLLM patches it for
  DeepSeek-V4); for any top-k :func:`routing_torch` builds the same data structure with fixed-shape torch
  ops (``routing="torch"``, graph capturable). Experts outside this EP shard get id -1 and no rows.

Numerics (where this path rounds, vs ``moe_reference(mode="kernel")``, FlashInfer's):
  1. GEMM1 accumulates in fp32, adds the fp32 bias and applies SwiGLU to the fp32 accumulator in the
     epilogue: ONE bf16 rounding (FlashInfer rounds the GEMM output to bf16 before the activation).
  2. The router weights are bf16 (vLLM casts them, ``make_routing_data``): each is rounded once.
  3. GEMM2: fp32 accumulate + fp32 bias, times the bf16 router weight in fp32, stored bf16 per (token, k).
  4. ``_reduce_grouped`` sums the k rows in fp32 and stores bf16.
  So against ``mode="fp32"`` the error is bf16-level (a few 2**-8 relative); the GPU check's tolerance
  says so.

SwiGLU: the library's ``swiglu_fn`` is ``s * (up + 1)``, ``s = g * sigmoid(alpha * g)``, with
``g = min(gate, limit)``, ``up = clamp(up, -limit, limit)``: GPT-OSS exactly (beta = 1). DeepSeek-V4 needs
``s * up`` (beta = 0), which ``swiglu_fn`` cannot express (the +1 is hard-coded; a bias cannot shift it
past the clamp). It is run with :func:`~.triton_kernels_jit.swiglu_beta`, the same formula with beta as an argument,
through ``matmul_ogs``'s public fused-activation hook (``FnSpecs``), so DeepSeek-V4 stays fused and exact.
(vLLM itself runs DeepSeek-V4 on triton_kernels unfused: ``UnfusedOAITritonExperts``.)
"""

from __future__ import annotations

import os

import torch

from ..moe_tensors import LogicalMoE
from .base import MoEBackend
from .peer_layout import INTERLEAVED, PeerLayout, logical_from_peer_layout, peer_layout_from_logical

#: ``_swizzle_mxfp4``: scale K-groups padded to a multiple of 4 on SM90 (triton issue #47303)
SCALE_GROUP_MULTIPLE = 4
#: ``make_default_matmul_mxfp4_w_scale_layout(mx_axis=1, num_warps=8)``: vLLM's default
SCALE_LAYOUT_WARPS = 8
#: block sizes ``matmul_ogs`` may pick on CUDA (``routing.py``: block_m_log2_start 4 .. end 8)
ROUTING_BLOCK_MS = (16, 32, 64, 128)
#: GEMM kernels in a profile (``_matmul_ogs`` / persistent ``_p_matmul_ogs``; not ``_reduce_grouped``)
GEMM_KERNEL_PATTERN = r"_(p_)?matmul_ogs"


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# --------------------------------------------------------------------------------------------
# Layout: logical -> the orientation matmul_ogs reads (before the library's Hopper swizzle)
# --------------------------------------------------------------------------------------------
def triton_kernels_layout_from_logical(logical: LogicalMoE) -> PeerLayout:
    """Logical -> :class:`~.peer_layout.PeerLayout` for triton_kernels: fc1 rows INTERLEAVED gate_0, up_0,
    gate_1, ... (the GPT-OSS checkpoint order, what ``swiglu_fn`` splits); scale groups zero-padded to
    a multiple of 4 (``G1 = round_up(H/32, 4)``, ``G2 = round_up(I/32, 4)``); biases fp32. H unpadded,
    I rounded up to 64. Exact inverse: :func:`logical_from_triton_kernels_layout`."""
    return peer_layout_from_logical(logical, INTERLEAVED, scale_group_multiple=SCALE_GROUP_MULTIPLE,
                                    bias_dtype=torch.float32)


def logical_from_triton_kernels_layout(layout: PeerLayout, intermediate_size: int) -> dict:
    """Inverse of :func:`triton_kernels_layout_from_logical` (tests): dict of LogicalMoE fields."""
    return logical_from_peer_layout(layout, INTERLEAVED, intermediate_size)


def to_matmul_ogs_weights(layout: PeerLayout, swizzle: str = "auto"):
    """-> (w13, pc13, w2, pc2): triton_kernels ``Tensor`` s in the library's layouts plus their
    ``PrecisionConfig`` s. ``swizzle``: ``"auto"`` (the library's default for this GPU: Hopper MX layouts
    on SM90), ``"hopper"``, or ``"strided"`` (no swizzle: the CPU interpreter)."""
    from triton_kernels.matmul_ogs import FlexCtx, PrecisionConfig
    from triton_kernels.numerics import InFlexData
    from triton_kernels.tensor import FP4, convert_layout, wrap_torch_tensor
    from triton_kernels.tensor_details import layout as L

    if swizzle == "auto":
        vl, vopt = L.make_default_matmul_mxfp4_w_layout(mx_axis=1)
        sl, sopt = L.make_default_matmul_mxfp4_w_scale_layout(mx_axis=1, num_warps=SCALE_LAYOUT_WARPS)
    elif swizzle == "hopper":
        vl, vopt = L.HopperMXValueLayout, {"mx_axis": 1}
        sl, sopt = L.HopperMXScaleLayout, {"mx_axis": 1, "num_warps": SCALE_LAYOUT_WARPS}
    elif swizzle == "strided":
        vl, vopt, sl, sopt = L.StridedLayout, {}, L.StridedLayout, {}
    else:
        raise ValueError(f"swizzle must be 'auto', 'hopper' or 'strided', got {swizzle!r}")

    def one(g):
        # [E, N, K/2] -> transposed view [E, K/2, N] (K-major, stride(-2) == 1) as FP4 [E, K, N]
        wq = convert_layout(wrap_torch_tensor(g.weight.transpose(-2, -1), dtype=FP4), vl, **vopt)
        sq = convert_layout(wrap_torch_tensor(g.scale.transpose(-2, -1)), sl, **sopt)
        return wq, PrecisionConfig(weight_scale=sq, flex_ctx=FlexCtx(rhs_data=InFlexData()))

    w13, pc13 = one(layout.fc1)
    w2, pc2 = one(layout.fc2)
    return w13, pc13, w2, pc2


# --------------------------------------------------------------------------------------------
# Routing data from (topk_ids, topk_weights)
# --------------------------------------------------------------------------------------------
def _local_ids(topk_ids, num_local, expert_offset):
    local = topk_ids.to(torch.int64) - expert_offset
    valid = (local >= 0) & (local < num_local)
    return local, valid


def max_tiles(num_gates: int, num_local: int, min_block: int = ROUTING_BLOCK_MS[0]) -> int:
    """``routing.py`` ``_compute_expt_data_internal``: an upper bound on sum_e ceil(hist_e / block)."""
    if num_gates <= num_local:
        return num_gates
    return num_local - 1 - ((num_local - num_gates - 1) // min_block)


def routing_torch(topk_ids, topk_weights, num_local: int, expert_offset: int = 0):
    """(RoutingData, GatherIndx, ScatterIndx) for ``matmul_ogs`` from ``topk_ids`` ``[M, k]`` (global)
    and ``topk_weights`` ``[M, k]``: fixed-shape torch ops, any k, CUDA-graph capturable.

    The same structure ``routing_from_bitmatrix`` builds: gates (flat ``m*k + j``) sorted by local expert,
    stable; ``topk_indx[p]`` = gate at sorted position p (-1 past the valid ones), ``gate_indx[g]`` =
    position of gate g (-1 if its expert is outside the shard), ``gate_scal`` = bf16 weights in sorted
    order, ``hist`` = gates per expert, and per block size b: ``token_offs_pad[b]`` (exclusive prefix of
    ceil(hist/b) tiles) and ``block_pid_map[b][t] = (tile_in_expert << 16) | expert`` (-1 unused tiles).
    """
    from triton_kernels.routing import ExptData, GatherIndx, RoutingData, ScatterIndx

    m, k = topk_ids.shape
    n, dev = m * k, topk_ids.device
    local, valid = _local_ids(topk_ids.reshape(-1), num_local, expert_offset)
    key = torch.where(valid, local, torch.full_like(local, num_local))
    order = torch.argsort(key, stable=True)  # sorted position -> gate
    pos = torch.arange(n, device=dev)
    # scatter_add, not bincount: bincount reads max(key) on the host (breaks graph capture)
    hist = torch.zeros(num_local + 1, dtype=torch.int32, device=dev).scatter_add_(0, key, torch.ones_like(key, dtype=torch.int32))
    hist = hist[:num_local]
    n_valid = hist.sum()
    topk_indx = torch.where(pos < n_valid, order, -1).to(torch.int32)
    gate_indx = torch.empty(n, dtype=torch.int64, device=dev).scatter_(0, order, pos)
    gate_indx = torch.where(valid, gate_indx, -1).to(torch.int32)
    gate_scal = topk_weights.reshape(-1).to(torch.bfloat16)[order]
    zero = torch.zeros(1, dtype=torch.int32, device=dev)
    token_offs_raw = torch.cat((zero, torch.cumsum(hist, 0, dtype=torch.int32)))
    nt = max_tiles(n, num_local)
    tiles = torch.arange(nt, device=dev)
    offs_pad, pid_map = {}, {}
    for b in ROUTING_BLOCK_MS:
        ends = torch.cumsum((hist + b - 1) // b, 0, dtype=torch.int32)
        offs_pad[b] = torch.cat((zero, ends))
        e = torch.searchsorted(ends, tiles.to(torch.int32), right=True)
        blk = tiles - offs_pad[b][e.clamp(max=num_local - 1)]
        pid_map[b] = torch.where(e < num_local, (blk << 16) | e, -1).to(torch.int32)
    expt = ExptData(hist, token_offs_raw, offs_pad, pid_map)
    return (RoutingData(gate_scal, hist, num_local, k, expt),
            GatherIndx(src_indx=topk_indx, dst_indx=gate_indx), ScatterIndx(src_indx=gate_indx, dst_indx=topk_indx))


def pack_bitmatrix(topk_ids, topk_weights, num_local: int, expert_offset: int = 0):
    """One launch: -> (bits uint32 ``[M, ceil(E/32)]``: bit e%32 of word e//32 set for each local expert e
    of a token; local ids int16 ``[M, k]`` (-1 outside the shard); weights bf16 ``[M, k]`` (-1 outside:
    ``matmul_ogs`` expects -1 for invalid gates, vLLM ``make_routing_data``)."""
    import triton

    m, k = topk_ids.shape
    words = triton.cdiv(num_local, 32)
    dev = topk_ids.device
    bits = torch.empty(m, words, dtype=torch.uint32, device=dev)
    lids = torch.empty(m, k, dtype=torch.int16, device=dev)
    scal = torch.empty(m, k, dtype=torch.bfloat16, device=dev)
    if m:
        block_m = 64
        from .triton_kernels_jit import pack_bitmatrix_kernel

        pack_bitmatrix_kernel[(triton.cdiv(m, block_m),)](
            topk_ids.contiguous(), topk_weights.float().contiguous(), bits, lids, scal, m, num_local, expert_offset,
            TOPK=k, K_BLOCK=triton.next_power_of_2(k), WORDS=words, BLOCK_M=block_m)
    return bits, lids, scal


def routing_from_topk(topk_ids, topk_weights, num_local: int, expert_offset: int = 0):
    """vLLM's ``make_routing_data`` (legacy triton_kernels API) with our own bitmatrix packing: the
    library's Triton ``routing_from_bitmatrix`` (top-k must be a power of two: module docstring)."""
    from triton_kernels.routing import routing_from_bitmatrix
    from triton_kernels.tensor import Bitmatrix

    m, k = topk_ids.shape
    if k & (k - 1):
        raise ValueError(f"routing='triton' needs a power-of-two top_k (routing_from_bitmatrix), got {k}; use 'torch'")
    bits, lids, scal = pack_bitmatrix(topk_ids, topk_weights, num_local, expert_offset)
    bm = Bitmatrix(bits, shape=[m, bits.shape[1] * 32], shape_max=[m, None], scratchpad=None)
    return routing_from_bitmatrix(bm, scal, lids, num_local, k)


# --------------------------------------------------------------------------------------------
# SwiGLU with beta (DeepSeek-V4), for matmul_ogs's fused-activation hook
# --------------------------------------------------------------------------------------------
def fused_swiglu(alpha: float, beta: float, limit: float | None):
    """The ``FusedActivation`` for GEMM1: the library's ``swiglu_fn`` when beta == 1 (GPT-OSS, what vLLM
    runs), else :func:`~.triton_kernels_jit.swiglu_beta`. ``reduction_n=2``: 2I accumulator columns -> I
    outputs."""
    import triton_kernels.swiglu
    from triton_kernels.matmul_ogs import FnSpecs, FusedActivation

    from .triton_kernels_jit import swiglu_beta

    if beta == 1.0:
        return FusedActivation(FnSpecs("swiglu", triton_kernels.swiglu.swiglu_fn, ("alpha", "limit")), (alpha, limit), 2)
    return FusedActivation(FnSpecs("swiglu_beta", swiglu_beta, ("alpha", "beta", "limit")), (alpha, beta, limit), 2)


def one_value(v, name: str) -> float | None:
    """A SwiGLU parameter -- None, a number, or a per-expert tensor whose entries are all equal -> None or
    float (the peers' kernels take one value per call); ``ValueError`` naming it otherwise."""
    if not isinstance(v, torch.Tensor):
        return v if v is None else float(v)
    values = sorted(set(v.float().flatten().tolist()))
    if len(values) != 1:
        raise ValueError(f"{name}: one value for all experts is needed here, got {values[:4]}")
    return values[0]


# --------------------------------------------------------------------------------------------
# Backend
# --------------------------------------------------------------------------------------------
class TritonKernelsMoE(MoEBackend):
    """``matmul_ogs`` x 2 (module docstring). Options: ``routing`` ("auto": "triton" for a power-of-two
    top-k, else "torch"), ``swizzle`` ("auto": the library's layouts for this GPU; "strided" under the
    interpreter)."""

    name = "triton_kernels"
    graph_capturable = True  # vLLM captures it; buffer sizes depend on M, k, E only
    gpu_only = True  # (the CPU interpreter runs it in tests, constructed directly)
    gemm_kernel_pattern = GEMM_KERNEL_PATTERN

    def __init__(self, moe: LogicalMoE, config=None, *, routing: str = "auto", swizzle: str = "auto"):
        super().__init__(moe, config)
        from .triton_kernels_source import import_triton_kernels

        self.tk = import_triton_kernels()
        self.layout = triton_kernels_layout_from_logical(moe)
        k = None if config is None else config.top_k
        if routing == "auto":
            routing = "triton" if k is not None and not k & (k - 1) and not _interpreting() else "torch"
        if routing not in ("triton", "torch"):
            raise ValueError(f"routing must be 'auto', 'triton' or 'torch', got {routing!r}")
        self.routing = routing
        if swizzle == "auto" and _interpreting():
            swizzle = "strided"
        self.swizzle_mode = swizzle
        if not _interpreting() and torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9:
            from triton_kernels.matmul_ogs_details import opt_flags

            opt_flags.update_opt_flags_constraints({"split_k": 1})  # vLLM's SM90 constraint
        self.w13, self.pc13, self.w2, self.pc2 = to_matmul_ogs_weights(self.layout, swizzle)
        alpha = one_value(self.swiglu["swiglu_alpha"], "swiglu_alpha")
        beta = one_value(self.swiglu["swiglu_beta"], "swiglu_beta")
        limit = one_value(self.swiglu["swiglu_limit"], "swiglu_limit")
        self.act = fused_swiglu(1.0 if alpha is None else alpha, 0.0 if beta is None else beta, limit)
        self._zero_out = moe.shard.ep_size > 1  # tokens with no expert in this shard get no row
        #: checks (tests, scripts/gpu/check_peers.py): fill both GEMM outputs with NaN before each call, so
        #: an element no kernel wrote shows up (an EP shard's final output starts at zero instead)
        self.poison = False

    @classmethod
    def available(cls) -> tuple[bool, str]:
        from .triton_kernels_source import SourceError, find_source

        try:
            import triton  # noqa: F401

            find_source()
        except (ImportError, SourceError) as exc:
            return False, str(exc)
        if _interpreting():
            return True, "Triton interpreter (TRITON_INTERPRET=1): CPU, for tests"
        if not torch.cuda.is_available():
            return False, "needs a CUDA GPU (Hopper: the HopperMX layouts), or TRITON_INTERPRET=1"
        return True, ""

    def describe(self, m: int) -> dict:
        from .triton_kernels_source import VLLM_VERSION

        return {"source": f"vllm-{VLLM_VERSION}", "routing": self.routing, "value_layout": self.w13.storage.layout.name,
                "scale_layout": self.pc13.weight_scale.storage.layout.name, "activation": self.act.specs.name}

    def route(self, topk_ids, topk_weights):
        fn = routing_from_topk if self.routing == "triton" else routing_torch
        return fn(topk_ids, topk_weights, self.layout.num_local_experts, self.layout.expert_offset)

    def forward(self, x, topk_ids, topk_weights):
        from triton_kernels.matmul_ogs import matmul_ogs

        m, h = x.shape[0], self.layout.hidden_size
        if m == 0:
            return x.new_empty(0, h)
        rd, gi, si = self.route(topk_ids, topk_weights)
        nan = float("nan")
        h1 = x.new_full((1, topk_ids.numel(), self.layout.intermediate_size), nan) if self.poison else None
        act = matmul_ogs(x.contiguous(), self.w13, self.layout.fc1.bias, rd, gather_indx=gi,
                         precision_config=self.pc13, fused_activation=self.act, y=h1)
        y = x.new_zeros(1, m, h) if self._zero_out else x.new_full((1, m, h), nan) if self.poison else None
        out = matmul_ogs(act, self.w2, self.layout.fc2.bias, rd, scatter_indx=si, precision_config=self.pc2,
                         gammas=rd.gate_scal, y=y)
        return out.view(m, h)

