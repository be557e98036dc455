"""Host side of mxfp4lab's decode kernel (``csrc/decode_w4a16.cu`` and its headers): build, load, tensors, launch.

The kernel is plain CUDA C++ compiled by nvcc into a small shared library (only libcudart, static), loaded
with ctypes and launched on torch's current stream, so a forward is captured by CUDA graphs like any
torch op. Building needs nvcc >= 12.4 (sm_90a, PDL) but no GPU: the library can be built on a CPU machine
and carried (``$MXFP4LAB_DECODE_LIB`` points at a prebuilt one).

    lib = build_library()                       # cached by source hash + nvcc version + flags
    layout = DecodeLayout.from_logical(logical) # mxfp4lab.layout.decode_w4a16, once per layer
    out = forward(x, topk_ids, topk_weights, layout)

Launch parameters (:class:`LaunchConfig`): a ``variant`` of :data:`VARIANTS` (token groups G, so up to
8 G tokens per item, or 2 with compact token rows; CTAs per SM; cp.async ring depth; partial-sum buffers;
fc2's own ring; fc1 and fc2 as one fused launch; dynamic items; wide items for many tokens per expert;
:mod:`.decode_variants`),
``grid`` (persistent CTAs per GEMM; default = SMs x CTAs per SM), ``pdl`` (chain the launches with
programmatic dependent launch) and ``fused_combine`` (fc2 also sums the top-k slots: two launches, not three).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..layout.decode_w4a16 import FC1_TILES, FC2_TILES, fc1_to_decode, fc2_to_decode, padded_sizes
from ..moe_tensors import MoEInfo
from .decode_scratch import (combine_counters, combine_counters_zero, grid_barrier,  # noqa: F401 - re-exported
                             grid_barriers_idle, item_counters, ready_counters)
from .decode_variants import VARIANTS, Variant, twin_of, unstaged_twin  # noqa: F401 - re-exported

SOURCE = Path(__file__).with_name("csrc") / "decode_w4a16.cu"
#: every file the library is compiled from: the source (host side, variant table) and the headers it includes: what
#: both schedules share (arguments, helpers, routing, the combine), the split-K items, the wide items
SOURCES = (SOURCE, *(SOURCE.with_name(f"decode_w4a16_{part}.cuh") for part in ("common", "split_k", "wide", "ws", "wsr")))
NVCC_FLAGS = ("-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "-gencode=arch=compute_90a,code=sm_90a",
              "-lineinfo")
#: the traced twin's extra flag: every CTA writes the global timer at its phase boundaries (:data:`TRACE_SLOTS`)
TRACE_FLAG = "-DMXFP4LAB_DECODE_TRACE"
#: one CTA's trace record (``TraceSlot`` in the CUDA source), in order; ns of the GPU's global timer, 0 = not reached
TRACE_SLOTS = ("entry", "routed", "ready", "first_step", "streamed", "exit", "sm", "items", "counted", "gathered")
#: (token, slot) pairs one call can route (the kernel's kMaxPairs; wide items: kMaxWidePairs, their ring leaves more
#: shared memory to the routing lists) and local experts (kMaxExperts)
MAX_PAIRS = 8192
MAX_WIDE_PAIRS = 32768
MAX_EXPERTS = 1024


#: fraction of the GPU's L2 that fc1 fills with fc2's weights (L2 staging bit 1); the rest holds fc1's own
#: stream in flight and the activations
L2_PREFETCH_SHARE = 0.5


class DecodeKernelError(RuntimeError):
    """The decode kernel cannot run these arguments, or its library cannot be built/loaded."""


class DecodeLaunchError(DecodeKernelError):
    """The library refused or failed a launch that the Python side had accepted (a CUDA error code): a bug or a
    broken device, never a clear refusal of the arguments."""


# --------------------------------------------------------------------------------------------
# Build and load
# --------------------------------------------------------------------------------------------
def _cache_root() -> Path:
    env = os.environ.get("MXFP4LAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mxfp4lab"


def nvcc_path() -> str:
    for cand in (os.environ.get("MXFP4LAB_NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).exists():
            return cand
    raise DecodeKernelError("nvcc not found (set $MXFP4LAB_NVCC, or $MXFP4LAB_DECODE_LIB to a prebuilt library)")


def _flags(traced: bool) -> tuple:
    return NVCC_FLAGS + ((TRACE_FLAG,) if traced else ())


def source_digest() -> str:
    """sha256 (16 hex digits) of the kernel source; compiled into the library, checked when it is loaded."""
    return hashlib.sha256(b"".join(p.read_bytes() for p in SOURCES)).hexdigest()[:16]


def library_key(nvcc: str, traced: bool = False) -> str:
    ver = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1:]
    return hashlib.sha256(json.dumps([source_digest(), _flags(traced), ver]).encode()).hexdigest()[:16]


def build_library(*, force: bool = False, verbose: bool = False, out: Optional[Path] = None,
                  traced: bool = False) -> Path:
    """Compile the kernel into ``<cache>/decode_w4a16/<key>/libmxfp4lab_decode_w4a16.so`` (or ``out``); return it.

    The key covers the source, the flags and the nvcc version; a build writes to a temporary file and
    renames it, so an interrupted build never leaves a library behind. ``build.json`` beside it records the
    command, the time and ptxas's report (registers, spills per kernel). ``traced``: the twin built with
    :data:`TRACE_FLAG` (the same kernels plus phase stamps; for :mod:`mxfp4lab.bench.phases`, never timed).
    """
    nvcc = nvcc_path()
    if out is None:
        out = _cache_root() / "decode_w4a16" / library_key(nvcc, traced) / "libmxfp4lab_decode_w4a16.so"
    out = Path(out)
    if out.exists() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    cmd = [nvcc, *_flags(traced), f'-DMXFP4LAB_DECODE_SOURCE_DIGEST="{source_digest()}"', "-Xptxas", "-v",
           str(SOURCE), "-o", str(tmp)]
    if verbose:
        print("[decode_w4a16] " + " ".join(cmd), flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise DecodeKernelError(f"nvcc failed building {SOURCE.name}:\n{r.stdout}\n{r.stderr}")
    os.replace(tmp, out)
    # nvcc's messages: ptxas's resource report (registers, shared memory, spills per kernel), kept beside the library
    (out.parent / "build.json").write_text(json.dumps({"cmd": cmd, "wall_s": round(time.time() - t0, 2),
                                                       "ptxas": r.stderr}))
    return out


class DecodeArgs(ctypes.Structure):
    """Mirror of ``struct DecodeArgs`` in the CUDA source (every field 8 bytes, same order)."""

    _fields_ = [(n, ctypes.c_int64) for n in (
        "x", "topk_ids", "topk_w", "w13", "w2", "b13", "b2", "alpha", "beta", "limit")] + [
        (n, ctypes.c_double) for n in ("alpha_s", "beta_s", "limit_s")] + [(n, ctypes.c_int64) for n in (
            "use_limit", "h", "y", "out", "m", "top_k", "hidden", "inter", "ld_x", "ld_h", "ld_y", "ld_out",
            "ld_b13", "ld_b2", "groups1", "groups2", "chunks1", "chunks2", "expert_offset", "num_experts",
            "variant", "grid", "pdl", "l2_prefetch_bytes", "counters", "barrier", "sched", "ready", "trace")] + [
        ("out_scale", ctypes.c_double)]


@functools.lru_cache(maxsize=2)
def load_library(traced: bool = False):
    """ctypes handle of the library (``$MXFP4LAB_DECODE_LIB`` if set, else :func:`build_library`); ``traced``:
    the traced twin (``$MXFP4LAB_DECODE_TRACED_LIB`` if set)."""
    env = os.environ.get("MXFP4LAB_DECODE_TRACED_LIB" if traced else "MXFP4LAB_DECODE_LIB")
    path = env or str(build_library(traced=traced))
    lib = ctypes.CDLL(path)
    lib.mxfp4lab_decode_w4a16_forward.restype = ctypes.c_int
    lib.mxfp4lab_decode_w4a16_forward.argtypes = [ctypes.POINTER(DecodeArgs), ctypes.c_int64]
    lib.mxfp4lab_decode_w4a16_smem_bytes.restype = ctypes.c_int64
    lib.mxfp4lab_decode_w4a16_smem_bytes.argtypes = [ctypes.c_int64] * 4
    lib.mxfp4lab_decode_w4a16_tiles_per_group.restype = ctypes.c_int64
    lib.mxfp4lab_decode_w4a16_variant.restype = ctypes.c_int64
    lib.mxfp4lab_decode_w4a16_variant.argtypes = [ctypes.c_int64]
    lib.mxfp4lab_decode_w4a16_traced.restype = ctypes.c_int64
    lib.mxfp4lab_decode_w4a16_source_digest.restype = ctypes.c_char_p
    built_from = lib.mxfp4lab_decode_w4a16_source_digest().decode()
    if built_from != source_digest():
        raise DecodeKernelError(f"{path} was built from decode_w4a16.cu with digest {built_from or '(none)'}, this "
                                f"checkout's is {source_digest()}: rebuild it with build_library()")
    if lib.mxfp4lab_decode_w4a16_traced() != int(traced):
        raise DecodeKernelError(f"{path} is {'' if lib.mxfp4lab_decode_w4a16_traced() else 'not '}the traced build; "
                                f"{'the traced' if traced else 'an untraced'} one was asked for")
    if lib.mxfp4lab_decode_w4a16_tiles_per_group() != FC1_TILES * 100 + FC2_TILES:
        raise DecodeKernelError(f"{path} groups tiles as {lib.mxfp4lab_decode_w4a16_tiles_per_group()}, the layout as "
                                f"{FC1_TILES * 100 + FC2_TILES}: rebuild the library")
    compiled = [lib.mxfp4lab_decode_w4a16_variant(i) for i in range(len(VARIANTS) + 1)]
    want = [v.code + i * 10000 for i, v in VARIANTS.items()] + [-1]
    if compiled != want:
        raise DecodeKernelError(f"{path} has variants {compiled}, this module expects {want}: rebuild the library")
    return lib


# --------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------
@dataclass
class DecodeLayout(MoEInfo):
    """One layer (or shard) in the decode layout (:mod:`mxfp4lab.layout.decode_w4a16`), on one device: the four
    tensors (positional) and the layer's :class:`~mxfp4lab.moe_tensors.MoEInfo` (keywords; SwiGLU parameters
    fp32 ``[E]`` on the same device, or None: then ``alpha=1, beta=0``, no limit).

    ``w13`` uint8 ``[E, I32/32, H64/64, 2176]``, ``w2`` uint8 ``[E, H32/32, I64/64, 1088]``,
    ``b13`` bf16 ``[E, 2, I32]`` (up, gate) or None, ``b2`` bf16 ``[E, H32]`` or None.
    """

    w13: torch.Tensor
    w2: torch.Tensor
    b13: Optional[torch.Tensor]
    b2: Optional[torch.Tensor]

    @property
    def num_local_experts(self) -> int:
        return self.w13.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.w13, self.w2, self.b13, self.b2) if t is not None)

    @classmethod
    def from_logical(cls, logical, device=None) -> "DecodeLayout":
        """From a kernel-ordered, padded :class:`LogicalMoE` (``w13`` halves ``[up ; gate]``); trims its
        128-padding down to what this layout needs."""
        h, i = logical.hidden_size, logical.intermediate_size
        sz = padded_sizes(h, i)
        i32, h64, h32, i64 = sz["I32"], sz["H64"], sz["H32"], sz["I64"]
        i_pad = logical.w13.shape[1] // 2
        if i32 > i_pad or h64 > 2 * logical.w13.shape[2] or i64 > 2 * logical.w2.shape[2]:
            raise DecodeKernelError(f"logical tensors are padded less than the decode layout needs ({sz})")
        dev = torch.device(device) if device is not None else logical.w13.device
        w13, s13 = logical.w13.to(dev), logical.w13_scale.to(dev)
        up, gate = w13[:, :i32, : h64 // 2], w13[:, i_pad : i_pad + i32, : h64 // 2]
        up_s, gate_s = s13[:, :i32, : h64 // 32], s13[:, i_pad : i_pad + i32, : h64 // 32]
        w13d = fc1_to_decode(up.contiguous(), up_s.contiguous(), gate.contiguous(), gate_s.contiguous())
        w2d = fc2_to_decode(logical.w2.to(dev)[:, :h32, : i64 // 2].contiguous(),
                            logical.w2_scale.to(dev)[:, :h32, : i64 // 32].contiguous())
        b13 = b2 = None
        if logical.w13_bias is not None:
            b = logical.w13_bias.to(dev, torch.bfloat16)
            b13 = torch.stack((b[:, :i32], b[:, i_pad : i_pad + i32]), dim=1).contiguous()
        if logical.w2_bias is not None:
            b2 = logical.w2_bias.to(dev, torch.bfloat16)[:, :h32].contiguous()

        info = logical.info()
        for f in ("swiglu_alpha", "swiglu_beta", "swiglu_limit"):
            info[f] = None if info[f] is None else info[f].to(dev, torch.float32).contiguous()
        return cls(w13d, w2d, b13, b2, **info)


@dataclass(frozen=True)
class LaunchConfig:
    variant: int = 1
    grid: Optional[int] = None  # default: SMs x the variant's CTAs per SM
    pdl: bool = True
    #: fc2 also does the top-k combine (two launches instead of three; the same output bits). Off by default:
    #: on the H200 it was slower at every M bucket (the per-item fence and arrival count cost more than the
    #: combine launch, which PDL already overlaps with fc2)
    fused_combine: bool = False

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {self.variant}")
        if self.grid is not None and self.grid < 1:
            raise ValueError(f"grid must be >= 1, got {self.grid}")


@dataclasses.dataclass(frozen=True)
class Workspaces:
    """The scratch a variant's launch takes beside h and y (``DecodeArgs``; the library refuses a launch with any
    other set, ``cudaErrorInvalidValue``): the fused combine's arrival counters, the split-K fused launch's grid
    barrier, the split-K dynamic items' counters (int32 [4]), and ``ready`` int32 ready counters of the one-grid wide
    items (one per local expert, then the CTAs done, then fc2's and fc1's item claims where they are dynamic: one
    counter for ``dynamic`` 2, two for 3; 0: none)."""
    counters: bool
    barrier: bool
    sched: bool
    ready: int


def workspaces(variant: int, fused_combine: bool, num_experts: int) -> Workspaces:
    """What :func:`forward` allocates for ``variant`` (the rules ``launch_forward`` / ``launch_wide`` check in
    ``csrc/decode_w4a16.cu``); raises :class:`DecodeKernelError` where the fused combine cannot run."""
    var = VARIANTS[variant]
    if fused_combine and (var.fused or var.dynamic or var.wide):
        what = "fuses fc1 and fc2" if var.fused else "claims items dynamically" if var.dynamic else "runs wide items"
        raise DecodeKernelError(f"variant {variant} {what}; the fused combine runs only with two split-K GEMM "
                                "launches of static items")
    return Workspaces(counters=fused_combine, barrier=bool(var.fused) and not var.wide,
                      sched=bool(var.dynamic) and not var.wide,
                      ready=num_experts + 1 + max(0, var.dynamic - 1) if var.fused and var.wide else 0)


def default_config(m: int, top_k: int, num_experts: int) -> LaunchConfig:
    """Without tuning, from the mean pairs per expert: split-K items of up to 8 tokens in the decode regime, wide
    items above (on the H200 faster than 16 or 32 tokens per split-K item at every M measured)."""
    mean = m * top_k / max(1, num_experts)
    return LaunchConfig(variant=1 if mean <= 6 and m * top_k <= MAX_PAIRS else 42)


def forward(x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, layout: DecodeLayout,
            config: Optional[LaunchConfig] = None, *, out: Optional[torch.Tensor] = None,
            workspace_fill: Optional[float] = None, trace: Optional[torch.Tensor] = None,
            routed_scaling_factor: float = 1.0) -> torch.Tensor:
    """``[M, H]`` bf16 MoE output through the decode kernel: the experts' output times ``routed_scaling_factor``,
    applied by the combine to each token's bf16 sum in fp32 and rounded again (the bits of
    ``(out.float() * s).to(torch.bfloat16)`` after the kernel, without that launch; 1.0: the experts' output).

    ``x`` bf16 ``[M, H]`` (rows 16-byte aligned), ``topk_ids`` int32 ``[M, k]`` global ids (ids outside this
    shard's experts are skipped), ``topk_weights`` fp32 ``[M, k]``; all on the layout's CUDA device.
    ``workspace_fill`` (tests): fill the intermediate buffers with this value first (e.g. NaN).
    ``trace``: run the traced build, which writes each CTA's phase stamps here: int64
    ``[trace_rows(...), len(TRACE_SLOTS)]`` on the device (:func:`trace_rows`; fc1's CTAs, fc2's, the combine's).
    """
    m, k = topk_ids.shape
    h, i = layout.hidden_size, layout.intermediate_size
    s = float(routed_scaling_factor)
    if not (math.isfinite(s) and s > 0):
        raise DecodeKernelError(f"routed_scaling_factor must be a finite number > 0, got {routed_scaling_factor!r}")
    if layout.num_local_experts > MAX_EXPERTS:
        raise DecodeKernelError(f"{layout.num_local_experts} local experts > {MAX_EXPERTS}")
    cfg = config or default_config(m, k, layout.num_local_experts)
    max_pairs = MAX_WIDE_PAIRS if VARIANTS[cfg.variant].wide else MAX_PAIRS
    if m * k > max_pairs:
        raise DecodeKernelError(f"M * top_k = {m * k} (token, expert) pairs > {max_pairs}, the most one call of variant "
                                f"{cfg.variant} routes")
    if VARIANTS[cfg.variant].wgmma >= 3 and max(m * x.shape[1], m * k * layout.w13.shape[1] * 32) >= 1 << 31:
        raise DecodeKernelError(f"variant {cfg.variant} addresses activation rows by 32-bit offsets: M * hidden = "
                                f"{m * x.shape[1]} and M * top_k * intermediate = {m * k * layout.w13.shape[1] * 32} "
                                "must stay below 2^31")
    dev = x.device
    lib = load_library(traced=trace is not None)
    var = VARIANTS[cfg.variant]
    props = torch.cuda.get_device_properties(dev)
    grid = cfg.grid or var.ctas_per_sm * props.multi_processor_count
    check_shared_memory(lib, cfg.variant, layout.num_local_experts, m * k, props.shared_memory_per_block_optin,
                        props.shared_memory_per_multiprocessor)
    x = x.contiguous()
    ids = topk_ids.to(torch.int32).contiguous()
    tw = topk_weights.to(torch.float32).contiguous()
    i32 = layout.w13.shape[1] * 32
    h32 = layout.w2.shape[1] * 32
    hbuf = torch.empty(m * k, i32, dtype=torch.bfloat16, device=dev)
    ybuf = torch.empty(m * k, h32, dtype=torch.bfloat16, device=dev)
    if workspace_fill is not None:
        hbuf.fill_(workspace_fill)
        ybuf.fill_(workspace_fill)
    if out is None:
        out = torch.empty(m, h, dtype=torch.bfloat16, device=dev)
    for name, t in (("x", x), ("out", out), ("h", hbuf), ("y", ybuf)):
        if t.data_ptr() % 16 or (t.stride(0) * 2) % 16:
            raise DecodeKernelError(f"{name} must be 16-byte aligned with 16-byte row strides for the kernel's copies")

    def ptr(t):
        return 0 if t is None else t.data_ptr()

    if trace is not None and (trace.dtype != torch.int64 or not trace.is_contiguous() or trace.device != dev
                              or tuple(trace.shape) != (trace_rows(grid, m, h), len(TRACE_SLOTS))):
        raise DecodeKernelError(
            f"trace must be a contiguous int64 [{trace_rows(grid, m, h)}, {len(TRACE_SLOTS)}] tensor on {dev} (grid "
            f"{grid}, M {m}), got {trace.dtype} {tuple(trace.shape)} on {trace.device}")
    stream = torch.cuda.current_stream(dev).cuda_stream
    ws = workspaces(cfg.variant, cfg.fused_combine, layout.num_local_experts)
    counters = combine_counters(dev, stream, m * layout.w2.shape[1]) if ws.counters else None
    barrier = grid_barrier(dev, stream) if ws.barrier else None
    ready = ready_counters(dev, stream, ws.ready) if ws.ready else None
    sched = item_counters(dev, stream) if ws.sched else None

    a = DecodeArgs(
        x=ptr(x), topk_ids=ptr(ids), topk_w=ptr(tw), w13=ptr(layout.w13), w2=ptr(layout.w2),
        b13=ptr(layout.b13), b2=ptr(layout.b2), alpha=ptr(layout.swiglu_alpha), beta=ptr(layout.swiglu_beta),
        limit=ptr(layout.swiglu_limit), alpha_s=1.0, beta_s=0.0, limit_s=0.0,
        use_limit=int(layout.swiglu_limit is not None), h=ptr(hbuf), y=ptr(ybuf), out=ptr(out), m=m, top_k=k,
        hidden=h, inter=i, ld_x=x.stride(0), ld_h=i32, ld_y=h32, ld_out=out.stride(0),
        ld_b13=i32, ld_b2=h32, groups1=layout.w13.shape[1], groups2=layout.w2.shape[1],
        chunks1=layout.w13.shape[2], chunks2=layout.w2.shape[2], expert_offset=layout.expert_offset,
        num_experts=layout.num_local_experts, variant=cfg.variant, grid=grid, pdl=int(cfg.pdl),
        l2_prefetch_bytes=l2_prefetch_bytes(props.L2_cache_size, grid) if var.l2 & 5 else 0, counters=ptr(counters),
        barrier=ptr(barrier), sched=ptr(sched), ready=ptr(ready), trace=ptr(trace), out_scale=s)
    err = lib.mxfp4lab_decode_w4a16_forward(ctypes.byref(a), stream)
    if err != 0:
        raise DecodeLaunchError(f"decode_w4a16 launch of variant {cfg.variant} failed: cudaError {err} "
                                f"({_cuda_error_name(err)})")
    return out


def check_shared_memory(lib, variant: int, num_experts: int, num_pairs: int, per_block: int, per_sm: int) -> None:
    """Raise :class:`DecodeKernelError` unless ``variant``'s CTAs fit an SM as it means them to (``ctas_per_sm`` of
    them; a split grid's fc1 and fc2 CTAs side by side) with ``per_block`` / ``per_sm`` bytes of shared memory per
    CTA / SM (1 KB per CTA is reserved)."""
    var = VARIANTS[variant]
    s1, s2 = (lib.mxfp4lab_decode_w4a16_smem_bytes(variant, num_experts, num_pairs, g) for g in (1, 2))
    head = f"variant {variant} ({var}) with {num_experts} experts and {num_pairs} pairs needs"
    if var.split:
        need = var.split * (s1 + 1024) + (var.ctas_per_sm - var.split) * (s2 + 1024)
        if need > per_sm or max(s1, s2) > per_block:
            raise DecodeKernelError(f"{head} {var.split} fc1 CTA(s) of {s1} B and {var.ctas_per_sm - var.split} fc2 "
                                    f"CTA(s) of {s2} B side by side per SM: {need} B > {per_sm}")
    elif max(s1, s2) > min(per_block, per_sm // var.ctas_per_sm - 1024):
        raise DecodeKernelError(f"{head} {max(s1, s2)} B of shared memory per CTA > "
                                f"{min(per_block, per_sm // var.ctas_per_sm - 1024)}")


def combine_blocks(m: int, hidden: int) -> int:
    """Thread blocks of the combine launch (256 threads, one per 8 output columns of a token)."""
    return (m * (hidden // 8) + 255) // 256


def trace_rows(grid: int, m: int, hidden: int) -> int:
    """Rows of a ``forward(trace=...)`` buffer: fc1's ``grid`` CTAs, fc2's, then the combine's blocks."""
    return 2 * grid + combine_blocks(m, hidden)


def l2_prefetch_bytes(l2_cache_bytes: int, grid: int) -> int:
    """fc2 weight bytes each of ``grid`` fc1 CTAs prefetches into L2 (staging bit 1): an equal share of
    :data:`L2_PREFETCH_SHARE` of the L2, in whole 128-byte lines."""
    return int(l2_cache_bytes * L2_PREFETCH_SHARE) // max(1, grid) // 128 * 128


#: the CUDA runtime's codes this library returns or passes on most often (cuda_runtime_api's cudaError enum)
_CUDA_ERRORS = {
    1: "cudaErrorInvalidValue: an argument or workspace outside the library's rules for this variant",
    2: "cudaErrorMemoryAllocation", 35: "cudaErrorInsufficientDriver", 98: "cudaErrorInvalidDeviceFunction",
    100: "cudaErrorNoDevice", 209: "cudaErrorNoKernelImageForDevice",
    720: "cudaErrorCooperativeLaunchTooLarge: the grid does not fit the GPU at once",
}


def _cuda_error_name(code: int) -> str:
    return _CUDA_ERRORS.get(code, "see cuda_runtime_api.h")


def describe(config: LaunchConfig) -> dict:
    var = VARIANTS[config.variant]
    return dataclasses.asdict(config) | dataclasses.asdict(var) | {"tiles_per_item": [var.fc1_tiles, var.fc2_tiles]}
