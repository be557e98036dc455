"""Rank bodies for tests/test_bench_parallel.py that mp.spawn can import (module-level functions)."""

from mxfp4lab.backends.emulated import EmulatedSM90
from mxfp4lab.bench import parallel


def run_with_a_wrong_rank(rank, world, *, wrong_rank, **kw):
    """:func:`mxfp4lab.bench.parallel.run_rank` with the emulated backend's partial output scaled by 1.5 on
    ``wrong_rank`` only: a shard that computes the wrong thing on one GPU."""
    if rank == wrong_rank:
        forward = EmulatedSM90.forward

        def wrong(self, x, ids, w):
            return (forward(self, x, ids, w).float() * 1.5).bfloat16()

        EmulatedSM90.forward = wrong
    parallel.run_rank(rank, world, **kw)


def run_with_strided_outputs(rank, world, **kw):
    """:func:`mxfp4lab.bench.parallel.run_rank` with the emulated backend returning its output as a strided view
    ``[M, H]`` of an ``[M, H + 64]`` buffer, as backends that trim padding (FlashInfer's ``out[:, :h]``) do."""
    forward = EmulatedSM90.forward

    def strided(self, x, ids, w):
        y = forward(self, x, ids, w)
        return y.new_zeros(y.shape[0], y.shape[1] + 64)[:, : y.shape[1]].copy_(y)

    EmulatedSM90.forward = strided
    parallel.run_rank(rank, world, **kw)
