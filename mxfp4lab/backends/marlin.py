"""Marlin MXFP4 MoE (vLLM's ``fused_marlin_moe`` kernels), a peer in the latency study.

What runs, per forward (the same data flow as vLLM 0.26's ``fused_marlin_moe`` /
``_fused_marlin_moe`` in ``vllm/model_executor/layers/fused_moe/experts/marlin_moe.py``, re-written
here; no vLLM Python is imported or copied):

1. ``torch.ops._moe_C.moe_align_block_size``: sorts the (token, k) pairs by expert into blocks of
   ``block_size_m`` rows (vLLM's heuristic: the first of 8, 16, 32, 48, 64 with
   ``M*k/E/block < 0.9``); for an EP shard, global ids outside it are dropped through ``expert_map``.
2. ``torch.ops._moe_C.moe_wna16_marlin_gemm`` GEMM1: ``x [M, H_pad]`` (bf16) x w13 (MXFP4,
   ``b_type`` float4_e2m1f, E8M0 scales per 32 along K) + fc1 bias (fused in the kernel) ->
   ``[M*k, 2*I_pad]`` bf16, halves ``[gate ; up]``.
3. Clamped SwiGLU ``min(g, L) * sigmoid(alpha*min(g, L)) * (clamp(u, -L, L) + beta)`` -> ``[M*k, I_pad]``
   bf16: one fused Triton kernel here. vLLM computes the same with ``torch.ops._C.silu_and_mul_with_clamp``
   (``MoEActivation.SWIGLUOAI_UNINTERLEAVE``, or ``swigluoai_and_mul`` on interleaved rows for GPT-OSS);
   that op lives in vLLM's 75 MB ``_C`` library, which is not carried (docs/marlin.md).
4. GEMM2: ``[M*k, I_pad]`` x w2 + fc2 bias, times the router weight (``mul_topk_weights``) ->
   ``[M*k, H_pad]`` bf16.
5. ``sum`` over k (``torch.sum(.., dim=1)``, as vLLM does without an expert map) -> ``[M, H]``.

All five are timed (the bench times ``forward``). Nothing syncs with the host: buffer sizes depend on
M, k and E only, so the whole forward is CUDA-graph capturable (vLLM captures it too).

Weights (once, in ``__init__``, on the GPU): the logical tensors (:class:`~mxfp4lab.moe_tensors.LogicalMoE`)
hold packed FP4 ``w13 [E, 2*I_pad, H_pad/2]`` with halves ``[up ; gate]``; the halves are swapped to ``[gate ; up]``
(Marlin/vLLM order, :func:`swap_halves`), and every expert's ``[N, K/2]`` bytes are repacked into
Marlin tiles by :func:`marlin_repack_fp4` (a torch re-implementation of what
``torch.ops._C.gptq_marlin_repack`` produces for 4-bit weights; checked against vLLM's pure-Python
``marlin_weights`` in the tests). Scales: :func:`marlin_permute_mx_scales` (vLLM's
``marlin_permute_scales`` + ``mxfp4_marlin_process_scales``, re-implemented on the E8M0 bytes),
biases :func:`marlin_permute_bias`.

Library: vLLM's ``_moe_C*.so`` (0.26.0, CUDA 13, torch 2.11 stable ABI), found in
``$MXFP4LAB_MARLIN_LIBS`` (a directory; ``*.so.xz`` from ``scripts/gpu/stage-marlin.sh`` is unpacked
into ``$MXFP4LAB_MARLIN_CACHE``, default ``/tmp/mxfp4lab-marlin``) or next to an importable ``vllm``
package (located, not imported). Its bf16 x FP4 Marlin kernels ship only as compute_80 PTX (plus
sm_80/sm_120 SASS): on an H100 the driver JIT-compiles them on first use (seconds to minutes, cached in
``~/.nv/ComputeCache``); stock vLLM does the same on SM90.
"""

from __future__ import annotations

import glob
import importlib.util
import lzma
import os
import shutil

import torch
import torch.nn.functional as F

from ..formats import unpack_fp4
from .base import BackendUnavailable, MoEBackend

#: ``vllm.scalar_type.scalar_types.float4_e2m1f.id`` (vLLM 0.22-0.27: exponent 2, mantissa 1, signed,
#: finite values only, no NaN): the ``b_type_id`` argument of ``moe_wna16_marlin_gemm``.
FLOAT4_E2M1F_ID = 562949953487106
#: ``scalar_types.bfloat16.id`` (only for the library check / docs)
BFLOAT16_ID = 1125899906909960
MARLIN_TILE = 16  # GPTQ_MARLIN_TILE

_LOADED: tuple[bool, str] | None = None


# --------------------------------------------------------------------------------------------
# Layout helpers (pure torch; CPU or GPU)
# --------------------------------------------------------------------------------------------
def swap_halves(t: torch.Tensor | None) -> torch.Tensor | None:
    """``[E, 2I, ...]`` halves ``[a ; b]`` -> ``[b ; a]`` (``[up ; gate]`` <-> ``[gate ; up]``)."""
    if t is None:
        return None
    i = t.shape[1] // 2
    return torch.cat((t[:, i:], t[:, :i]), dim=1).contiguous()


def marlin_weight_perm(device=None) -> torch.Tensor:
    """The 1024-entry permutation applied to each 16 x 64 group of a Marlin weight tile row (4-bit, bf16
    activations). Lane ``t`` of a warp (0..31) owns column ``t // 4`` of each 8-column half of a 16 x 16
    tile and rows ``2(t%4) + {0, 1, 8, 9}``; its 32 values (2 halves x 4 rows x 4 tiles) sit together,
    then every 8 of them are interleaved ``0 2 4 6 1 3 5 7`` (the order the FP4 -> bf16 dequantizer
    unpacks nibbles). Equals vLLM's ``get_weight_perm(4)`` (marlin_utils_test.py)."""
    lane = torch.arange(32).view(32, 1, 1, 1)
    tile = torch.arange(4).view(1, 4, 1, 1)
    half = torch.arange(2).view(1, 1, 2, 1)
    rows = 2 * (lane % 4) + torch.tensor([0, 1, 8, 9]).view(1, 1, 1, 4)
    perm = (16 * rows + lane // 4 + 8 * half + 256 * tile).reshape(-1, 8)
    return perm[:, [0, 2, 4, 6, 1, 3, 5, 7]].reshape(-1).to(device)


def marlin_repack_fp4(w: torch.Tensor) -> torch.Tensor:
    """Packed FP4 ``[E, N, K/2]`` uint8 (low nibble = even k) -> Marlin int32 ``[E, K/16, 2N]``.

    The same result as vLLM's per expert ``gptq_marlin_repack(w[e].view(int32).T, perm=[], K, N, 4)``:
    the ``[K, N]`` code matrix is cut into 16 x 16 tiles (each flattened row-major, tiles of a tile-row
    side by side), every 1024 values permuted by :func:`marlin_weight_perm`, and each 8 consecutive
    codes packed into one int32, the first in the lowest 4 bits."""
    e, n, kh = w.shape
    k = kh * 2
    if k % MARLIN_TILE or n % 64:
        raise ValueError(f"Marlin needs K % 16 == 0 and N % 64 == 0, got K={k}, N={n}")
    chunk = max(1, (1 << 27) // (k * n))  # experts per pass: the int64 packing step below stays <= 1 GiB
    if e > chunk:  # (DSv4-Flash w13 in one pass would need 32 GiB)
        return torch.cat([marlin_repack_fp4(w[i:i + chunk]) for i in range(0, e, chunk)])
    codes = unpack_fp4(w).transpose(1, 2)  # [E, K, N]
    t = codes.reshape(e, k // 16, 16, n // 16, 16).permute(0, 1, 3, 2, 4).reshape(e, k // 16, n * 16)
    perm = marlin_weight_perm(w.device)
    t = t.reshape(e, -1, perm.numel())[:, :, perm].reshape(e, k // 16, n * 16 // 8, 8).to(torch.int64)
    shifts = torch.arange(0, 32, 4, device=w.device, dtype=torch.int64)
    packed = (t << shifts).sum(-1)  # < 2**32
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)
    return packed.to(torch.int32).contiguous()


def marlin_permute_mx_scales(s: torch.Tensor) -> torch.Tensor:
    """E8M0 scale bytes ``[E, N, K/32]`` -> Marlin order ``[E, K/32, N]`` uint8 (view it as
    ``torch.float8_e8m0fnu`` for the kernel).

    vLLM (``marlin_permute_scales`` with group 32 < K, then ``mxfp4_marlin_process_scales`` for 16-bit
    activations): transpose to ``[K/32, N]``; in each run of 64 consecutive values, entry ``8i + j``
    takes entry ``i + 8j`` (an 8 x 8 transpose); then in each run of 4, the middle two swap
    (``0 2 1 3``). Pure byte moves (vLLM's E8M0 -> bf16 -> E8M0 round trip is exact)."""
    e, n, g = s.shape
    if n % 64:
        raise ValueError(f"Marlin scale permutation needs N % 64 == 0, got N={n}")
    t = s.transpose(1, 2).reshape(e, -1, 8, 8).transpose(-1, -2)
    t = t.reshape(e, -1, 4)[:, :, [0, 2, 1, 3]]
    return t.reshape(e, g, n).contiguous()


def marlin_permute_bias(b: torch.Tensor | None) -> torch.Tensor | None:
    """Bias ``[E, N]`` -> Marlin order: in each run of 32, position ``8i + j`` takes
    ``2i + (0, 1, 8, 9, 16, 17, 24, 25)[j]`` (vLLM's ``marlin_permute_bias``)."""
    if b is None:
        return None
    idx = (2 * torch.arange(4).view(4, 1) + torch.tensor([0, 1, 8, 9, 16, 17, 24, 25])).reshape(-1)
    e, n = b.shape
    return b.reshape(e, -1, 32)[:, :, idx.to(b.device)].reshape(e, n).contiguous()


def block_size_m(m: int, topk: int, num_experts: int) -> int:
    """vLLM's ``fused_marlin_moe`` choice of the M block (rows of one expert per Marlin tile)."""
    for b in (8, 16, 32, 48, 64):
        if m * topk / num_experts / b < 0.9:
            return b
    return 64


def swiglu_packed_torch(h: torch.Tensor, alpha: float, beta: float, limit: float | None) -> torch.Tensor:
    """``[T, 2I]`` halves ``[gate ; up]`` -> ``[T, I]`` clamped SwiGLU in fp32, cast to ``h.dtype``."""
    from ..reference import swiglu

    i = h.shape[-1] // 2
    return swiglu(h[..., :i].float(), h[..., i:].float(), alpha, beta, limit).to(h.dtype)


_swiglu_kernel = None


def _get_swiglu_kernel():
    global _swiglu_kernel
    if _swiglu_kernel is None:
        import triton
        import triton.language as tl

        @triton.jit
        def _kernel(h_ptr, o_ptr, n_inter, alpha, beta, limit, HAS_LIMIT: tl.constexpr, BLOCK: tl.constexpr):
            row = tl.program_id(0).to(tl.int64)
            cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
            mask = cols < n_inter
            g = tl.load(h_ptr + row * 2 * n_inter + cols, mask=mask, other=0.0).to(tl.float32)
            u = tl.load(h_ptr + row * 2 * n_inter + n_inter + cols, mask=mask, other=0.0).to(tl.float32)
            if HAS_LIMIT:
                g = tl.minimum(g, limit)
                u = tl.minimum(tl.maximum(u, -limit), limit)
            y = g * tl.sigmoid(alpha * g) * (u + beta)
            tl.store(o_ptr + row * n_inter + cols, y.to(o_ptr.dtype.element_ty), mask=mask)

        _swiglu_kernel = _kernel
    return _swiglu_kernel


def swiglu_packed(h: torch.Tensor, alpha: float, beta: float, limit: float | None,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Fused Triton version of :func:`swiglu_packed_torch` (one read of ``h``, one write)."""
    t, two_i = h.shape
    i = two_i // 2
    out = torch.empty(t, i, dtype=h.dtype, device=h.device) if out is None else out
    if t == 0:
        return out
    block = 1024 if i >= 1024 else max(16, 1 << (i - 1).bit_length())
    _get_swiglu_kernel()[(t, (i + block - 1) // block)](
        h, out, i, float(alpha), float(beta), 0.0 if limit is None else float(limit),
        HAS_LIMIT=limit is not None, BLOCK=block)
    return out


# --------------------------------------------------------------------------------------------
# Library discovery and loading
# --------------------------------------------------------------------------------------------
def _candidate_dirs():
    d = os.environ.get("MXFP4LAB_MARLIN_LIBS")
    if d:
        yield "MXFP4LAB_MARLIN_LIBS", d
    try:
        spec = importlib.util.find_spec("vllm")  # locates the package without running its __init__
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            yield "vllm package", loc


def find_moe_library() -> tuple[str | None, str]:
    """Path of vLLM's ``_moe_C*.so`` (unpacking a staged ``.so.xz``), or (None, where it looked)."""
    looked = []
    for what, d in _candidate_dirs():
        looked.append(f"{what} {d}")
        libs = sorted(glob.glob(os.path.join(d, "_moe_C*.so")))
        if libs:
            return libs[0], ""
        packed = sorted(glob.glob(os.path.join(d, "_moe_C*.so.xz")))
        if packed:
            cache = os.environ.get("MXFP4LAB_MARLIN_CACHE", "/tmp/mxfp4lab-marlin")
            os.makedirs(cache, exist_ok=True)
            st = os.stat(packed[0])
            dst = os.path.join(cache, f"{st.st_size}-{int(st.st_mtime)}", os.path.basename(packed[0])[:-3])
            if not os.path.exists(dst):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                tmp = dst + f".tmp{os.getpid()}"
                with lzma.open(packed[0]) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 24)
                os.replace(tmp, dst)
            return dst, ""
    if not looked:
        looked.append("$MXFP4LAB_MARLIN_LIBS (unset) and an importable vllm package (none)")
    return None, "no _moe_C*.so(.xz) in " + "; ".join(looked)


def load_ops() -> tuple[bool, str]:
    """Load ``_moe_C`` once (``torch.ops.load_library``); (ok, why not)."""
    global _LOADED
    if _LOADED is not None:
        return _LOADED
    if not torch.cuda.is_available():
        return False, "needs a CUDA GPU (vLLM's Marlin MoE kernels); none is visible"
    if not (hasattr(torch.ops, "_moe_C") and hasattr(torch.ops._moe_C, "moe_wna16_marlin_gemm")):
        path, why = find_moe_library()
        if path is None:
            return False, (f"vLLM's Marlin ops library not found: {why}. Run scripts/gpu/stage-marlin.sh and "
                           "set MXFP4LAB_MARLIN_LIBS=.devcarry/marlin, or install vllm (0.22-0.26, torch 2.11)")
        try:
            torch.ops.load_library(path)
        except Exception as exc:  # noqa: BLE001
            _LOADED = (False, f"loading {path} failed: {exc}")
            return _LOADED
    for op in ("moe_wna16_marlin_gemm", "moe_align_block_size"):
        if not hasattr(torch.ops._moe_C, op):
            _LOADED = (False, f"torch.ops._moe_C.{op} is missing after loading the library")
            return _LOADED
    _LOADED = (True, "")
    return _LOADED


# --------------------------------------------------------------------------------------------
# Backend
# --------------------------------------------------------------------------------------------
class MarlinMXFP4(MoEBackend):
    name = "marlin_mxfp4"
    gpu_only = True
    graph_capturable = True  # align + 2 GEMMs + Triton activation + sum: no host syncs

    def __init__(self, moe, config=None, *, torch_activation: bool = False):
        super().__init__(moe, config)
        lg = moe.to("cuda")
        self.h, self.h_pad, self.i_pad = lg.hidden_size, lg.padded_hidden, lg.padded_intermediate
        self.e_local, self.e_total, self.offset = lg.num_local_experts, lg.num_experts_total, lg.expert_offset
        self.w13 = marlin_repack_fp4(swap_halves(lg.w13))
        self.w2 = marlin_repack_fp4(lg.w2)
        e8m0 = torch.float8_e8m0fnu
        self.w13_scale = marlin_permute_mx_scales(swap_halves(lg.w13_scale)).view(e8m0)
        self.w2_scale = marlin_permute_mx_scales(lg.w2_scale).view(e8m0)
        self.b13 = marlin_permute_bias(swap_halves(lg.w13_bias))
        self.b2 = marlin_permute_bias(lg.w2_bias)
        del lg
        self.alpha, self.beta, self.limit = (self._scalar(self.swiglu[k], k) for k in
                                             ("swiglu_alpha", "swiglu_beta", "swiglu_limit"))
        self.torch_activation = torch_activation
        dev = self.w13.device
        sms = torch.cuda.get_device_properties(dev).multi_processor_count
        self.workspace = torch.zeros(sms * 4, dtype=torch.int32, device=dev)  # marlin_make_workspace_new(dev, 4)
        self.expert_map = None
        if self.e_local != self.e_total:  # EP shard: global id -> local id, else -1 (dropped by the align)
            m = torch.full((self.e_total,), -1, dtype=torch.int32)
            m[self.offset:self.offset + self.e_local] = torch.arange(self.e_local, dtype=torch.int32)
            self.expert_map = m.to(dev)
        schema = torch.ops._moe_C.moe_wna16_marlin_gemm.default._schema
        # vLLM >= 0.24 adds thread_k, thread_n, blocks_per_sm (-1: the kernel's own choice)
        self._tail = (-1,) * (len(schema.arguments) - 26)

    @staticmethod
    def _scalar(v, name):
        if v is None or not isinstance(v, torch.Tensor):
            return None if v is None else float(v)
        vals = torch.unique(v.float().cpu())
        if vals.numel() != 1:
            raise BackendUnavailable(f"marlin_mxfp4 takes one {name} for all experts, got {vals.tolist()}")
        return float(vals[0])

    @classmethod
    def available(cls):
        ok, why = load_ops()
        if not ok:
            return ok, why
        major, minor = torch.cuda.get_device_capability()
        if major < 8:
            return False, f"Marlin's bf16 MoE kernels need compute capability >= 8.0, this GPU is {major}.{minor}"
        return True, ""

    def _gemm(self, a, c, w, bias, scales, sorted_ids, expert_ids, n_post, topk_weights, block, top_k,
              mul_topk, size_m, size_n, size_k):
        return torch.ops._moe_C.moe_wna16_marlin_gemm(
            a, c, w, bias, scales, None, None, None, None, None, self.workspace, sorted_ids, expert_ids,
            n_post, topk_weights, block, top_k, mul_topk, FLOAT4_E2M1F_ID, size_m, size_n, size_k,
            True, False, True, False, *self._tail)  # is_k_full, use_atomic_add, use_fp32_reduce, is_zp_float

    def align(self, topk_ids: torch.Tensor, block: int):
        """``moe_align_block_size`` with vLLM's buffer sizes (``fused_moe/moe_align_block_size.py``)."""
        numel, e = topk_ids.numel(), self.e_total
        max_padded = numel + e * (block - 1)
        if numel < e:
            max_padded = min(numel * block, max_padded)
        dev = topk_ids.device
        sorted_ids = torch.empty(max_padded, dtype=torch.int32, device=dev)
        expert_ids = torch.empty((max_padded + block - 1) // block, dtype=torch.int32, device=dev)
        n_post = torch.empty(1, dtype=torch.int32, device=dev)
        torch.ops._moe_C.moe_align_block_size(topk_ids, e, block, sorted_ids, expert_ids, n_post, self.expert_map)
        return sorted_ids, expert_ids, n_post

    def forward(self, x, topk_ids, topk_weights):
        m, k = topk_ids.shape
        xin = x if self.h == self.h_pad else F.pad(x, (0, self.h_pad - self.h))
        xin = xin.contiguous()
        ids = topk_ids.to(torch.int32).contiguous()
        wts = topk_weights.to(torch.float32).contiguous()
        m_est = m if self.expert_map is None else -(-m * self.e_local // self.e_total)
        block = block_size_m(m_est, k, self.e_local)
        sorted_ids, expert_ids, n_post = self.align(ids, block)
        h1 = torch.empty(m * k, 2 * self.i_pad, dtype=torch.bfloat16, device=x.device)
        h1 = self._gemm(xin, h1, self.w13, self.b13, self.w13_scale, sorted_ids, expert_ids, n_post, wts,
                        block, k, False, m, 2 * self.i_pad, self.h_pad)
        if self.torch_activation:
            a = swiglu_packed_torch(h1, self.alpha, self.beta, self.limit)
        else:
            a = swiglu_packed(h1, self.alpha, self.beta, self.limit)
        # rows of (token, k) pairs outside an EP shard are never written: start from zeros there
        alloc = torch.zeros if self.expert_map is not None else torch.empty
        y = alloc(m * k, self.h_pad, dtype=torch.bfloat16, device=x.device)
        y = self._gemm(a, y, self.w2, self.b2, self.w2_scale, sorted_ids, expert_ids, n_post, wts,
                       block, 1, True, m * k, self.h_pad, self.i_pad)
        out = y.view(m, k, self.h_pad).sum(dim=1)
        return out[:, :self.h]
