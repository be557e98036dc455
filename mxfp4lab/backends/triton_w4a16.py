"""mxfp4lab's own Triton W4A16 MXFP4 fused MoE (:mod:`mxfp4lab.kernels.triton_moe`).

Weights: the logical tensors (:class:`~mxfp4lab.moe_tensors.LogicalMoE`) are transposed to the Triton
layout (:mod:`mxfp4lab.layout.triton_w4a16`, pure torch, on the weights' device). Runs on a CUDA GPU
(written for H100/H200), or on a CPU under Triton's interpreter (``TRITON_INTERPRET=1``, tiny shapes
only: the CPU test suite).

Launch configuration: one explicit :class:`~mxfp4lab.kernels.triton_moe.TileConfig` per M bucket
(:data:`CONFIGS`, first entry = default); :meth:`TritonW4A16.tune` times the bucket's few candidates on
the GPU and keeps the fastest for that bucket.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import torch

from .base import MoEBackend

#: M upper bound of each bucket -> candidate tile configs, as tuples
#: (block_m, block_n1, block_k1, block_n2, block_k2, num_warps, num_stages, dequant); first = default.
#: Decode buckets use BLOCK_M = 16 (tl.dot's minimum): a block per active expert, the weights streamed once.
#: Candidates were screened with an sm_90a compile on the CPU (``python -m mxfp4lab.kernels.sass``):
#: none spills registers on the four model shapes (tested). fc1 holds two accumulators (up, gate), so
#: BLOCK_M >= 32 tiles need 8 warps; the H100 sweep of 2026-11-28 (commit 0dfff50) ran the 4-warp
#: versions of those, which spilled 24-144 bytes per thread in fc1.
#: dequant 1 (``tl.dot_scaled``) is NOT in the table: on the H100 (Triton 3.6, 2026-11-28,
#: data/results/triton_check_h100.json) it gave wrong results (rel err 1.4, uncorrelated) for 52 of 70
#: checked (shape, M, tile) points: right exactly when BLOCK_K = 4 x BLOCK_N, wrong otherwise, at any M.
#: dequant 2 (the PTX register decode, ``triton_moe.E2M1X8_BF16_PTX``) halves the SASS instructions of
#: the decode tiles (GPT-OSS-120b fc1 2664 -> 1328, fc2 1320 -> 688 at 16x64x128); its bit logic is
#: checked exhaustively on the CPU (tests/test_ptx_decode.py) and every candidate on an H200
#: (data/results/triton_check_paths23_h200.json). It is never a bucket's
#: default, and :meth:`TritonW4A16.tune` drops any candidate whose output disagrees with the default's.
#: dequant 3 (swap AB: ``acc^T = W^T x^T``, the decoded weight is wgmma's A operand, kept in registers;
#: same PTX decode) cuts the K loop's SASS further (sm_90a compile: 16x64x128 fc2 431 -> 393 instructions,
#: 64x128x64 fc1 606 -> 417 with shared stores 58 -> 6; docs/triton-kernel.md). BLOCK_N is the MMA M there
#: (>= 64 rows per warpgroup), BLOCK_M the MMA N; its BLOCK_M 32 tiles do not spill with 4 warps.
#: On the H100 the tuner picked path 2 at every M <= 64 and path 3 at every M >= 256 (latency_h100.json).
CONFIG_TABLE: dict[int, list[tuple[int, ...]]] = {
    16: [(16, 64, 128, 64, 128, 4, 4, 0), (16, 32, 128, 32, 128, 4, 4, 0), (16, 64, 128, 64, 128, 4, 4, 2),
         (16, 128, 128, 128, 128, 4, 4, 2), (16, 64, 128, 64, 128, 4, 4, 3), (16, 128, 128, 128, 128, 4, 4, 3)],
    64: [(16, 64, 128, 64, 128, 4, 4, 0), (32, 64, 128, 64, 128, 8, 4, 0), (16, 64, 128, 64, 128, 4, 4, 2),
         (32, 64, 128, 64, 128, 8, 4, 2), (16, 64, 128, 64, 128, 4, 4, 3), (32, 64, 128, 64, 128, 4, 4, 3)],
    512: [(32, 64, 128, 128, 64, 8, 4, 0), (64, 64, 128, 128, 64, 8, 3, 0), (32, 64, 128, 128, 64, 8, 4, 2),
          (64, 128, 64, 128, 64, 8, 3, 2), (32, 64, 128, 128, 64, 4, 4, 3), (64, 128, 64, 128, 64, 8, 3, 3)],
    2048: [(64, 128, 64, 128, 64, 8, 3, 0), (64, 64, 128, 128, 64, 8, 3, 0), (64, 128, 64, 128, 64, 8, 3, 2),
           (64, 128, 64, 128, 64, 8, 3, 3)],
    1 << 62: [(128, 128, 64, 128, 64, 8, 3, 0), (64, 128, 64, 128, 64, 8, 3, 0), (128, 128, 64, 128, 64, 8, 3, 2),
              (128, 128, 64, 128, 64, 8, 3, 3)],
}
#: tune(): a candidate whose output differs from the bucket default's by more than this relative error
#: is dropped (different tiles change only the fp32 summation order: ~1e-4 observed on the H100; a wrong
#: decode gives O(1))
TUNE_AGREEMENT_TOL = 1e-2
#: Tiny tiles for the CPU interpreter (tests): a handful of programs, each a few numpy ops.
INTERPRET_CONFIG = (16, 32, 64, 32, 64, 4, 1, 0)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _time_us(fn, inputs) -> float:
    """Median microseconds of ``fn(*inputs[i])`` the way the latency sweep times it: CUDA-graph replays
    timed with CUDA events (:func:`mxfp4lab.bench.harness.time_cuda`), so the tuner ranks candidates by
    what is reported. (Session 6 tuned with Triton's eager ``do_bench``; once it picked a tile 2.2-3.5x
    slower than a rerun's pick: docs/triton-kernel.md, "A tuner miss".)"""
    from ..bench.harness import time_cuda

    return time_cuda(fn, inputs, warmup=3, reps=25, graph=True).median_us


def bucket_of(m: int) -> int:
    return next(b for b in sorted(CONFIG_TABLE) if m <= b)


class TritonW4A16(MoEBackend):
    name = "triton_w4a16"
    graph_capturable = True  # no host synchronisation in forward (fixed worst-case grids)

    def __init__(self, moe, config=None, *, device=None):
        super().__init__(moe, config)
        from ..kernels import triton_moe
        from ..layout.triton_w4a16 import to_triton_layout

        self._k = triton_moe
        self.layout = to_triton_layout(moe.to(device or moe.w13.device))
        self.chosen: dict[int, tuple[int, ...]] = {}
        #: tests: fill the intermediate buffers with NaN before each forward
        self.scratch_fill: float | None = None
        self.tune_log: list[str] = []

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import triton  # noqa: F401
        except Exception as exc:  # noqa: BLE001
            return False, f"triton is not importable ({type(exc).__name__}: {exc})"
        if _interpreting():
            return True, "Triton interpreter (TRITON_INTERPRET=1): CPU, slow, for tests"
        if not torch.cuda.is_available():
            return False, "needs a CUDA GPU (or TRITON_INTERPRET=1 for the CPU interpreter)"
        major, _ = torch.cuda.get_device_capability()
        if major < 8:
            return False, "needs compute capability >= 8.0 (bf16 tensor cores)"
        return True, ""

    def tile_config(self, m: int):
        if _interpreting() and self.layout.w13.device.type == "cpu":
            t = INTERPRET_CONFIG
        else:
            b = bucket_of(m)
            t = self.chosen.get(b, CONFIG_TABLE[b][0])
        return self._k.TileConfig(*t)

    def describe(self, m: int) -> dict:
        """The tile tuple this M runs (after :meth:`tune`: the bucket's fastest agreeing candidate) and
        what :meth:`tune` measured for its bucket (recorded with every sweep row)."""
        b = bucket_of(m)
        return {"tile": list(dataclasses.astuple(self.tile_config(m))),
                "tune": [ln for ln in self.tune_log if ln.startswith(f"bucket {b} ")]}

    def forward(self, x, topk_ids, topk_weights, out: torch.Tensor | None = None):
        return self._k.fused_moe_w4a16(
            x, topk_ids, topk_weights, self.layout, config=self.tile_config(x.shape[0]), out=out,
            scratch_fill=self.scratch_fill, **self.swiglu,
        )

    @staticmethod
    def _can_tune(x) -> bool:
        return not _interpreting() and x.is_cuda

    def tune(self, x, topk_ids, topk_weights) -> None:
        """Time each candidate of x's M bucket (CUDA events, median) and keep the fastest."""
        if not self._can_tune(x):
            return
        from ..reference import relative_error

        b = bucket_of(x.shape[0])
        if b in self.chosen:
            return
        h_pad, i_pad = self.layout.padded_hidden, self.layout.padded_intermediate
        best, best_t = None, float("inf")
        ref_out = None
        for cand in CONFIG_TABLE[b]:
            cfg = self._k.TileConfig(*cand)
            try:
                cfg.check(h_pad, i_pad)
                out = self._k.fused_moe_w4a16(x, topk_ids, topk_weights, self.layout, config=cfg, **self.swiglu)
                if ref_out is None:
                    if cfg.dequant != 0:
                        self.tune_log.append(f"bucket {b} {cand}: skipped (no explicit-decode tile ran first)")
                        continue
                    ref_out = out  # the bucket's first fitting tile of the explicit decode
                else:
                    err = relative_error(out, ref_out)
                    if not err < TUNE_AGREEMENT_TOL:
                        self.tune_log.append(f"bucket {b} {cand}: rejected (rel err {err:.3g} vs the default tile)")
                        continue
                t = _time_us(functools.partial(self._k.fused_moe_w4a16, layout=self.layout, config=cfg,
                                               **self.swiglu), [(x, topk_ids, topk_weights)])
            except Exception as exc:  # noqa: BLE001 - a candidate that does not fit (shared memory, shape)
                self.tune_log.append(f"bucket {b} {cand}: skipped ({type(exc).__name__}: {str(exc)[:120]})")
                continue
            self.tune_log.append(f"bucket {b} {cand}: {t:.1f} us")
            if t < best_t:
                best, best_t = cand, t
        if best is not None:
            self.chosen[b] = best
