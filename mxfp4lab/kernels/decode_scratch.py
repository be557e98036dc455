"""Scratch buffers of the decode kernel (:mod:`mxfp4lab.kernels.decode_w4a16`) that live across calls: the fused
combine's arrival counters, the fused launch's grid barrier, the dynamic items' counters and the one-grid wide items'
ready counters. Each is zeroed once
and left zero by every call (the kernel's last arrival resets it), kept per (device, stream) so that forwards on two
streams never share one, and never freed, because a captured CUDA graph keeps pointing at its buffer.
"""

from __future__ import annotations

import torch

#: (device index, stream handle) -> int32 arrival counters of the fused combine. Every call leaves them zero
#: (the last arrival resets its counter), so they are zeroed once, not per call. Per stream, so that
#: forwards running concurrently on two streams never share a counter; never freed, because a captured
#: CUDA graph keeps pointing at its buffer. A buffer first needed while a stream is being captured is
#: zeroed inside the graph (one memset per replay): capture after one eager call on the same stream.
_COUNTERS: dict = {}
_RETIRED: list = []


#: (device index, stream handle) -> the fused launch's grid barrier (int32 [2]: arrivals, generation), zeroed
#: once and left reusable by every call; per stream and never freed, like the arrival counters
_BARRIERS: dict = {}


def _stream_buffer(store: dict, device: torch.device, stream_handle: int, n: int, size: int) -> torch.Tensor:
    """The zeroed int32 buffer of ``store`` for this device and stream, reallocated (``size`` elements) when it
    holds fewer than ``n``; a replaced buffer is kept alive for the graphs that captured it."""
    key = (device.index, stream_handle)
    buf = store.get(key)
    if buf is None or buf.numel() < n:
        if buf is not None:
            _RETIRED.append(buf)
        buf = store[key] = torch.zeros(max(n, size), dtype=torch.int32, device=device)
    return buf


def combine_counters(device: torch.device, stream_handle: int, n: int) -> torch.Tensor:
    """At least ``n`` zero int32 arrival counters for forwards on this device and stream."""
    return _stream_buffer(_COUNTERS, device, stream_handle, n, 4096)


def grid_barrier(device: torch.device, stream_handle: int) -> torch.Tensor:
    """The fused launch's grid barrier for forwards on this device and stream (arrival count 0 between calls)."""
    return _stream_buffer(_BARRIERS, device, stream_handle, 2, 2)


#: (device index, stream handle) -> dynamic items' counters (int32 [4]: fc1's next item and CTAs done, fc2's),
#: zeroed once; the last CTA of each GEMM resets its pair, so they are zero between calls
_ITEM_COUNTERS: dict = {}


def item_counters(device: torch.device, stream_handle: int) -> torch.Tensor:
    """The dynamic-items counters for forwards on this device and stream."""
    return _stream_buffer(_ITEM_COUNTERS, device, stream_handle, 4, 4)


#: (device index, stream handle) -> the one-grid wide items' ready counters (int32: fc1 items stored per expert, then
#: the CTAs done, then the item claims' counters; ``workspaces`` in decode_w4a16 says how many), zeroed once; the last
#: CTA of each call resets them
_READY: dict = {}


def ready_counters(device: torch.device, stream_handle: int, n: int) -> torch.Tensor:
    """At least ``n`` zero int32 ready counters for forwards on this device and stream."""
    return _stream_buffer(_READY, device, stream_handle, n, 1025)


def grid_barriers_idle() -> bool:
    """Whether every fused launch's grid barrier has no arrival left and every dynamic-items counter and ready
    counter is back at zero, in this process (synchronises the GPU)."""
    return all(int(b[0]) == 0 for b in _BARRIERS.values()) and all(
        int(b.count_nonzero()) == 0 for b in (*_ITEM_COUNTERS.values(), *_READY.values()))


def combine_counters_zero() -> bool:
    """Whether every fused-combine arrival counter of this process is back at zero (synchronises the GPU)."""
    return all(int(b.count_nonzero()) == 0 for b in _COUNTERS.values())
