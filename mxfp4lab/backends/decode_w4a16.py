"""mxfp4lab's decode kernel as a backend: weight-streaming W4A16 MXFP4 MoE for Hopper
(:mod:`mxfp4lab.kernels.decode_w4a16`, layout :mod:`mxfp4lab.layout.decode_w4a16`).

Made for decode (M up to a few hundred tokens, a few tokens per expert): every active expert's weights
are read once, split across all SMs, through a cp.async ring, and decoded in registers straight into
``mma.sync`` fragments. Launch parameters per M bucket: :data:`CANDIDATES` (token groups per item);
:meth:`DecodeW4A16.tune` times them with the sweep's CUDA-graph harness and keeps the fastest that agrees with
the bucket's first candidate. fc2's fused combine (two launches, the same bits) is not tuned: on the H200 it
was slower at every bucket (docs/findings/2026-12-02-decode-diet.md), and again at M <= 8 with the item-tile
variants, where fc2 has about one item per CTA (1-8 % slower at every point, GPT-OSS-120b M = 1: 32.5 against
31.3 us; data/results/archive/latency/h200-2026-12-03-fused-combine-small-m.json); pin it with
``$MXFP4LAB_DECODE_COMBINE=fused`` and a pinned variant.
"""

from __future__ import annotations

import os

import torch

from .base import MoEBackend, fastest_agreeing

#: M upper bound of a bucket -> launch variants to time (:data:`mxfp4lab.kernels.decode_w4a16.VARIANTS`;
#: first = default). The L2-staged variants 7-11 are left out: on the H200 none was faster than its unstaged
#: twin (GPT-OSS-120b M = 1: 39.8 vs 39.2 us; fc2 still ends 11.3 us after fc1, as without staging,
#: docs/findings/2026-12-02-decode-l2-staging.md); pin one with ``variant=`` / $MXFP4LAB_DECODE_VARIANT.
#: 15-17: fc2 with its own deeper ring, whose first steps' weights are copied before fc2 waits for fc1;
#: 18-20: the same as one fused launch (fc1, grid barrier, fc2); 21-24: dynamic items (CTAs claim items from
#: a shared counter, so the slowest SMs no longer set the end: at M = 16-64 the last CTA ended 20-35 % after
#: the median one); 25-29: split grids (fc1 and fc2 CTAs side by side on every SM, so fc2's weights stream while
#: fc1 streams; at M = 1 fc2 ended ~11 us after fc1 for ~4 us of bytes), none faster at M <= 8 on the H200
#: (GPT-OSS-120b M = 1: 38.4-43.1 vs 33.4 us): fc1 ends later and fc2's one CTA per SM then works alone, so they
#: are not tuned; 30-31: dynamic items in fc2 only (the fc2 CTAs that start first take its items; where a grid
#: has at least as many CTAs as items, M = 1, each claims one item and the last to start none). Not tuned,
#: slower than 15 at M = 1 on the H200: 32 (fc2's whole item copied before the wait: 33.2 vs 32.4 us), 33 (late
#: L2 staging: 34.6 vs 32.7), 22 (dynamic items in both GEMMs: 33.9 vs 32.4).
#: Not tuned either: 34-36 (15, 30 and 22 with fc1's first item's epilogue inputs prefetched at its start: fc1's
#: epilogue 1.9 instead of 2.7 us at GPT-OSS-120b M = 1, its first step as much longer; the tuner's times within
#: 1.5 % of their twins' either way at M <= 8, picked by noise).
#: 37, 38, 41: fc2 items of two layout groups (half the items; a warp's per-step work -- copies, addresses, the
#: loop, ~70 of fc2's ~200 SASS instructions per step -- spread over twice the weights: 80 instead of 98
#: instructions per 16-row tile). On the H200 the tuner picked them at every M from 2 to 128 on every shape and at
#: M = 1 on DeepSeek-V4-Flash and seed (7-19 % faster at M = 16-128, 9-12 % on DeepSeek-V4 at M = 1-4). Not tuned:
#: 39, 40 (fc1 items of half a group, 16 tokens per item at three CTAs per SM, so that an expert with 9-16 tokens
#: decodes its weights once): 1.5x slower than 37 at GPT-OSS-20b M = 64 (325.5 vs 209.4 us): the per-step work over
#: 2 tiles, and activation copies of 16 token rows per 1 KB of weights.
_SMALL = (1, 2, 3, 5, 6, 12, 13, 14, 15, 16, 17, 18, 19, 20, 30, 31, 38, 41)
#: M = 2..8: a CTA has 2-7 items (GPT-OSS-120b M = 4: 1440 fc1 items on 396 CTAs, up to 4 each statically),
#: so dynamic items in fc1 (21-23) may balance them
_FEW = _SMALL + (21, 22, 23)
_MID = (1, 2, 3, 4, 5, 6, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 30, 31, 37, 38, 41, 42, 43, 44,
        46, 47, 48, 49, 50, 51, 52, 53, 70, 73, 74, 76, 82, 83)
_LARGE = (3, 4, 6, 1, 2, 21, 24, 37, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 56, 57, 70, 73, 74, 76, 82, 83)
#: 42-44: wide items (each warp 4 tiles x 32 tokens over the whole K; docs/decode-kernel.md), the first candidates
#: from M = 1024 on and the only ones above 8192 pairs. On the H200 the tuner picks them from M = 128 on GPT-OSS-20b and
#: M = 256 on the other shapes (faster than the split-K items there), and they are 2.1-2.7x faster than those at M = 1024
#: (docs/findings/2026-12-03-decode-wide-items.md). 46-48: the same with wgmma; 49, 50: wgmma with split tiles (a
#: weight decoded once per 64 tokens); 51-53: wgmma at two CTAs per SM (16-bit pair ids, so that 51 and 53 fit at
#: M = 4096 on GPT-OSS, 53 on DeepSeek-V4). 56, 57: split tiles of 128 tokens (a weight decoded once per 128 tokens),
#: candidates from M = 128 on (below, no expert has more than 64 tokens on these shapes). On the H200 the tuner picks
#: 51-53 at M = 256-1024 (1.2-1.3x the mma.sync wide items at M = 1024) and GPT-OSS-120b M = 4096 (51), 56 at M = 4096
#: on the other shapes (docs/findings/2026-12-03-decode-wgmma.md, docs/findings/2026-12-03-decode-wgmma-128.md).
#: 70 (in _MID, _LARGE and _WIDE): wide items of 16 tokens per warp at two CTAs per SM (an expert with 9-16 tokens
#: decodes its weights once, with no cross-warp reduction). On the H200 the tuner picks it where an expert holds 8-16
#: tokens: GPT-OSS-20b M = 64, GPT-OSS-120b M = 256, DeepSeek-V4-Flash M = 32-256 and seed M = 64-256 (M = 256:
#: 12-17 % faster than 52; docs/findings/2026-12-04-decode-wide-16.md).
#: 73, 74, 76 (in _MID and _LARGE): 70's items (74: fc2 items of one layout group per warp; 76: fc1 items of half a
#: group at three CTAs per SM) as one grid, each fc2 item after its expert's fc1 items. On the H200 the tuner picks 74
#: at GPT-OSS-20b M = 64 (171.8 us, 70: 199.3) and 73 at GPT-OSS-120b M = 128-256
#: (docs/findings/2026-12-05-decode-one-grid.md). 82, 83 (in _MID and _LARGE): 74 with fc2's items (83: and fc1's)
#: claimed at run time; on the H200 the tuner picks 82 at GPT-OSS M = 128-256 and 83 at GPT-OSS-20b M = 64-128
#: (docs/findings/2026-12-05-decode-one-grid-claims.md). 84 (83 with fc1 half groups) is not timed yet, 79-81
#: (warp-specialized items) are slower than 56: neither is tuned.
_WIDE = (42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 56, 57, 70, 4, 3, 6, 24)
#: one bucket per power of two up to 8192: a bucket is tuned once, at the first M it sees, and the variants
#: with two token rows per item (12-14) win at M = 16 and lose at M = 64 (GPT-OSS-120b on the H200: 257 vs
#: 700 us when M = 64 ran M = 16's choice), so wide buckets cost more than the extra tuning; above 1024 a variant
#: picked at one M may not fit the shared memory of the next one's pairs (the routing lists grow with M)
CANDIDATES: dict[int, tuple[int, ...]] = {1: _SMALL, 2: _FEW, 4: _FEW, 8: _FEW, 16: _MID, 32: _MID, 64: _MID,
                                          128: _LARGE, 256: _LARGE, 512: _LARGE, 1024: _WIDE, 2048: _WIDE,
                                          4096: _WIDE, 8192: _WIDE, 1 << 62: _WIDE}
#: tune(): candidates that differ from the default by more than this are dropped (variants change only the
#: fp32 summation order across warps, ~1e-6; a broken launch gives O(1))
TUNE_AGREEMENT_TOL = 1e-2


def pinned_variant(variant=None):
    """The launch variant to run at every M: ``variant``, else ``$MXFP4LAB_DECODE_VARIANT``, else None (tune).
    An unknown variant raises ``ValueError`` naming the known ones."""
    from ..kernels.decode_w4a16 import LaunchConfig

    v = variant if variant is not None else os.environ.get("MXFP4LAB_DECODE_VARIANT") or None
    return None if v is None else LaunchConfig(variant=int(v)).variant


def pinned_fused_combine() -> bool:
    """With a pinned variant: fc2's fused combine if ``$MXFP4LAB_DECODE_COMBINE`` is ``fused`` (default ``unfused``)."""
    v = os.environ.get("MXFP4LAB_DECODE_COMBINE", "unfused")
    if v not in ("fused", "unfused"):
        raise ValueError(f"$MXFP4LAB_DECODE_COMBINE must be 'fused' or 'unfused', got {v!r}")
    return v == "fused"


def bucket_of(m: int) -> int:
    return next(b for b in sorted(CANDIDATES) if m <= b)


class DecodeW4A16(MoEBackend):
    name = "decode_w4a16"
    graph_capturable = True
    gpu_only = True
    #: the two GEMM kernels (fc1 with its SwiGLU epilogue, fc2); the combine is not a GEMM. With programmatic
    #: dependent launch a kernel can start before its predecessor ends and wait inside, so profiler durations
    #: of fc2 include that wait: the per-launch DRAM bytes and durations come from ncu (bench/launches.py).
    #: Every kernel of the library but the combine: the split-K items' gemm_kernel, the fused launch's fused_kernel, the
    #: wide items' wide_kernel, the warp-specialized ws_kernel (a CPU test reads the kernel names from the source).
    gemm_kernel_pattern = r"mxfp4lab_decode::(?!combine_)\w+_kernel\b"
    #: the combine multiplies each token's bf16 output by the routed scaling factor (DeepSeek-V4: 1.5) in fp32 and
    #: rounds again: the bits of the multiply after the forward, without its launch
    applies_routed_scaling = True

    def __init__(self, moe, config=None, *, device=None, variant=None):
        """``variant``: run this launch variant at every M and skip tuning (default: ``$MXFP4LAB_DECODE_VARIANT``
        if set, else tune per M bucket)."""
        super().__init__(moe, config)
        from ..kernels import decode_w4a16 as k

        self._k = k
        self.layout = k.DecodeLayout.from_logical(moe, device=device or moe.w13.device)
        self.variant = pinned_variant(variant)
        self.chosen: dict = {}  # bucket -> LaunchConfig
        self.tune_log: list[str] = []
        self.workspace_fill = None

    @classmethod
    def available(cls):
        if not torch.cuda.is_available():
            return False, "needs an SM90 GPU (H100/H200) and nvcc or a prebuilt library ($MXFP4LAB_DECODE_LIB)"
        if torch.cuda.get_device_capability() != (9, 0):
            return False, f"needs compute capability 9.0 (sm_90a), found {torch.cuda.get_device_capability()}"
        try:
            from ..kernels.decode_w4a16 import load_library

            load_library()
        except Exception as exc:  # noqa: BLE001 - say why
            return False, f"decode kernel library unavailable: {type(exc).__name__}: {str(exc)[:200]}"
        return True, ""

    def launch_config(self, m: int):
        if self.variant is not None:
            return self._k.LaunchConfig(variant=self.variant, fused_combine=pinned_fused_combine())
        b = bucket_of(m)
        return self.chosen.get(b) or self._k.LaunchConfig(variant=CANDIDATES[b][0])

    def describe(self, m: int) -> dict:
        b = bucket_of(m)
        return {"launch": self._k.describe(self.launch_config(m)),
                "tune": [ln for ln in self.tune_log if ln.startswith(f"bucket {b} ")]}

    def forward(self, x, topk_ids, topk_weights):
        return self._k.forward(x, topk_ids, topk_weights, self.layout, self.launch_config(x.shape[0]),
                               workspace_fill=self.workspace_fill, routed_scaling_factor=self.routed_scaling_factor)

    def tune(self, x, topk_ids, topk_weights) -> None:
        """Time each candidate of x's M bucket (CUDA graphs, median, over :data:`~.base.TUNE_SETS` input sets:
        the given one and its ids under permutations of the shard's experts, so that the weights come from DRAM
        as in the sweep) and keep the fastest agreeing one."""
        if not x.is_cuda or self.variant is not None:
            return
        b = bucket_of(x.shape[0])
        if b in self.chosen:
            return

        def run_of(cfg):
            return lambda x_, i_, w_: self._k.forward(x_, i_, w_, self.layout, cfg,
                                                      routed_scaling_factor=self.routed_scaling_factor)

        inputs = (x, topk_ids, topk_weights)
        sets = self.tune_input_sets(*inputs)
        best = fastest_agreeing([self._k.LaunchConfig(variant=g) for g in CANDIDATES[b]], run_of, inputs,
                                tol=TUNE_AGREEMENT_TOL, log=self.tune_log, prefix=f"bucket {b}",
                                label=lambda cfg: f"variant {cfg.variant}", sets=sets)
        if best is not None:
            self.chosen[b] = best
