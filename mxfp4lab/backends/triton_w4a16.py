"""mxfp4lab's own Triton W4A16 MXFP4 fused MoE (:mod:`mxfp4lab.kernels.triton_moe`).

Weights: the logical tensors (:class:`~mxfp4lab.moe_tensors.LogicalMoE`) are transposed to the Triton
layout (:mod:`mxfp4lab.layout.triton_w4a16`, pure torch, on the weights' device). Runs on a CUDA GPU
(written for H100/H200), or on a CPU under Triton's interpreter (``TRITON_INTERPRET=1``, tiny shapes
only: the CPU test suite).

Launch configuration: one named :class:`~mxfp4lab.kernels.tiles.TileConfig` per M bucket
(:data:`mxfp4lab.kernels.tiles.TILE_TABLE`, first entry = default); :meth:`TritonW4A16.tune` times the
bucket's few candidates on the GPU and keeps the fastest that agrees with the default.
"""

from __future__ import annotations

import functools
import os

import torch

from ..kernels.tiles import INTERPRET_TILE, TILE_TABLE, DequantPath, TileConfig, bucket_of
from .base import MoEBackend, fastest_agreeing

#: tune(): a candidate whose output differs from the bucket default's by more than this relative error
#: is dropped (different tiles change only the fp32 summation order: ~1e-4 observed on the H100; a wrong
#: decode gives O(1))
TUNE_AGREEMENT_TOL = 1e-2


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _time_us(fn, inputs) -> float:
    """Median microseconds of ``fn(*inputs[i])`` the way the latency sweep times it: CUDA-graph replays
    timed with CUDA events (:func:`mxfp4lab.bench.harness.time_cuda`), so the tuner ranks candidates by
    what is reported. (Tuning with Triton's eager ``do_bench`` once picked a tile 2.2-3.5x slower than a
    rerun's pick: docs/findings/2026-11-28-triton-kernel.md, "A tuner miss".)"""
    from ..bench.harness import time_cuda

    return time_cuda(fn, inputs, warmup=3, reps=25, graph=True).median_us


class TritonW4A16(MoEBackend):
    name = "triton_w4a16"
    graph_capturable = True  # no host synchronisation in forward (fixed worst-case grids)

    def __init__(self, moe, config=None, *, device=None):
        super().__init__(moe, config)
        from ..kernels import triton_moe
        from ..layout.triton_w4a16 import to_triton_layout

        self._k = triton_moe
        self.layout = to_triton_layout(moe.to(device or moe.w13.device))
        self.chosen: dict[int, TileConfig] = {}
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

    def tile_config(self, m: int) -> TileConfig:
        if _interpreting() and self.layout.w13.device.type == "cpu":
            return INTERPRET_TILE
        b = bucket_of(m)
        return self.chosen.get(b, TILE_TABLE[b][0])

    def describe(self, m: int) -> dict:
        """The tile this M runs (after :meth:`tune`: the bucket's fastest agreeing candidate; recorded as
        :meth:`TileConfig.as_list`) and what :meth:`tune` measured for its bucket (recorded with every
        sweep row)."""
        b = bucket_of(m)
        return {"tile": self.tile_config(m).as_list(),
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
        """Time each candidate of x's M bucket (CUDA graphs, median, over the given inputs and their ids under
        permutations of the shard's experts: :func:`~.base.expert_permuted_sets`) and keep the fastest."""
        if not self._can_tune(x):
            return
        b = bucket_of(x.shape[0])
        if b in self.chosen:
            return
        h_pad, i_pad = self.layout.padded_hidden, self.layout.padded_intermediate

        def run_of(cfg):
            cfg.check(h_pad, i_pad)
            return functools.partial(self._k.fused_moe_w4a16, layout=self.layout, config=cfg, **self.swiglu)

        # the bucket's first fitting tile of the explicit decode is the reference the others must agree with
        inputs = (x, topk_ids, topk_weights)
        sets = self.tune_input_sets(*inputs)
        best = fastest_agreeing(TILE_TABLE[b], run_of, inputs, tol=TUNE_AGREEMENT_TOL, sets=sets,
                                log=self.tune_log, prefix=f"bucket {b}", label=lambda c: str(tuple(c.as_list())),
                                may_be_reference=lambda c: c.dequant == DequantPath.EXPLICIT,
                                time_us=lambda fn, sets: _time_us(fn, sets))
        if best is not None:
            self.chosen[b] = best
