"""Timing modes beside the sweep's default, so our numbers compare with what others publish.

* ``graph`` -- the whole MoE call replayed from a CUDA graph (:func:`mxfp4lab.bench.harness.time_cuda`),
  CUDA events, median, the host's submission hidden behind a GPU spin; what serving engines run at decode
  (the MoE is one node of a step's graph, never waited for by an idle GPU). The latency study's numbers.
* ``graph_submit`` -- the same replay with the host's submission of the graph timed too (the GPU idles
  until the replay reaches it): the method of the results recorded before the launch latency was hidden.
* ``eager`` -- the same call launched from Python each time (no graph), CUDA events, median: host launch
  overhead included. SGLang's ``bench_mxfp4_sm90_kernels.py`` (the FlashInfer-vs-Marlin claim this study
  re-examines) measures this way.
* ``gemm`` -- only the GEMM kernels of one call: their device durations from the torch profiler (CUPTI),
  summed per call, median over calls. triton_kernels' own figures (triton PRs #9248 / #9279) count the
  matmul kernels alone. Kernels are named GEMMs by the regular expression of :data:`GEMM_KERNELS` (or the
  backend's ``gemm_kernel_pattern``); routing, alignment, activation, reduction and copies are not.
  Each row also gives ``device_total_us``: every kernel of the call, without the launch gaps.

:func:`time_modes` measures one backend at one input set in the requested modes; each result is a row
fragment with ``mode`` and ``median_us`` (the sweep adds the shape, M, routing and roofline).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Iterable, Sequence

MODES = ("graph", "graph_submit", "eager", "gemm")

#: Backend -> regular expression (``re.search``) naming its GEMM kernels, for backends that do not carry a
#: ``gemm_kernel_pattern`` attribute. Read from each library's kernel names:
#: * flashinfer_sm90: CUTLASS's grouped GEMMs (``cutlass::device_kernel<...GemmUniversal...>``, SM80-style
#:   ``cutlass::Kernel<...MoeFCGemm...>``); not TensorRT-LLM's routing kernels, whose namespace
#:   ``tensorrt_llm::kernels::cutlass_kernels::`` (``expandInputRowsKernel``, ``doActivationKernel``,
#:   ``finalizeMoeRoutingKernel``, ``computeStrides...``) does not match ``cutlass::``.
#: * marlin_mxfp4: ``marlin_moe_wna16::Marlin<...>``; not ``moe_align_block_size``.
#: * triton_w4a16: mxfp4lab's ``_fc1_swiglu_kernel`` (GEMM1 with the activation fused) and ``_fc2_kernel``.
#: triton_kernels (``_matmul_ogs`` / ``_p_matmul_ogs``) and humming (``humming<...>``) carry their own.
GEMM_KERNELS = {
    "flashinfer_sm90": r"\bcutlass::(device_kernel|Kernel2?)\b|GemmUniversal|MoeFCGemm",
    "marlin_mxfp4": r"Marlin",
    "triton_w4a16": r"_fc1_swiglu_kernel|_fc2_kernel",
}


def gemm_pattern(backend) -> str:
    """The GEMM-kernel regular expression of a backend instance (attribute first, then the table)."""
    pat = getattr(backend, "gemm_kernel_pattern", None) or GEMM_KERNELS.get(getattr(backend, "name", ""))
    if not pat:
        raise KeyError(f"no GEMM kernel pattern for backend {getattr(backend, 'name', backend)!r}: add it to "
                       "mxfp4lab.bench.modes.GEMM_KERNELS or set the backend's gemm_kernel_pattern")
    return pat


def per_call_gemm_us(kernels: Sequence[tuple[str, float]], pattern: str, calls: int) -> dict:
    """Kernel records of ``calls`` identical calls, in launch order (``(name, device_us)``) -> the GEMM time.

    The GEMM kernels are split into ``calls`` consecutive groups of equal size (every call launches the
    same kernels); ``median_us`` is the median of the groups' sums. If the GEMM count is not a multiple
    of ``calls``, ``median_us`` is the mean and ``note`` says so. ``device_total_us`` is the mean over
    calls of all kernels' time; ``gemm_kernels`` / ``kernels`` map each GEMM / every kernel name
    (shortened) to [launches, microseconds] per call, so the pattern can be audited from the record.
    Raises ``ValueError`` if no kernel matches (a wrong pattern must not report 0 us).
    """
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    rx = re.compile(pattern)
    gemm = [(n, us) for n, us in kernels if rx.search(n)]
    if not gemm:
        names = sorted({n[:80] for n, _ in kernels})[:12]
        raise ValueError(f"no kernel matches the GEMM pattern {pattern!r}; kernels seen: {names}")
    out = {"device_total_us": sum(us for _, us in kernels) / calls, "note": ""}
    per = len(gemm) // calls
    if per * calls == len(gemm):
        sums = [sum(us for _, us in gemm[i * per:(i + 1) * per]) for i in range(calls)]
        out["median_us"] = statistics.median(sums)
        out["p10_us"], out["p90_us"] = _q(sums, 0.1), _q(sums, 0.9)
    else:
        out["median_us"] = sum(us for _, us in gemm) / calls
        out["note"] = f"{len(gemm)} GEMM kernels over {calls} calls: mean, not median"
    out["gemm_kernels"] = _by_name(gemm, calls)
    out["kernels"] = _by_name(kernels, calls)
    return out


def _by_name(kernels, calls: int) -> dict:
    """name (first 120 characters) -> [launches per call, microseconds per call], slowest first."""
    agg: dict[str, list[float]] = {}
    for n, us in kernels:
        a = agg.setdefault(n[:120], [0.0, 0.0])
        a[0] += 1 / calls
        a[1] += us / calls
    return dict(sorted(agg.items(), key=lambda kv: -kv[1][1]))


def _q(xs, f):
    s = sorted(xs)
    return s[min(len(s) - 1, int(f * len(s)))]


def profile_kernels(fn: Callable, inputs: Sequence[tuple], calls: int) -> list[tuple[str, float]]:
    """Run ``fn(*inputs[i % len(inputs)])`` ``calls`` times under the torch profiler (CUDA activity) ->
    ``(kernel name, device microseconds)`` of every GPU activity, in start order."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(calls):
            fn(*inputs[i % len(inputs)])
        torch.cuda.synchronize()
    evs = [e for e in prof.profiler.kineto_results.events() if e.device_type() == DeviceType.CUDA]
    evs.sort(key=lambda e: e.start_ns())
    return [(e.name(), e.duration_ns() / 1e3) for e in evs]


def time_modes(backend, inputs: Sequence[tuple], modes: Iterable[str], *, warmup: int = 5, reps: int = 50,
               profile_calls: int = 20) -> list[dict]:
    """One row fragment per mode (``mode``, ``median_us``, ...); a mode that fails gives ``error``."""
    from .harness import time_cuda

    rows = []
    for mode in modes:
        row = {"mode": mode}
        try:
            if mode == "graph":
                row.update(time_cuda(backend, inputs, warmup=warmup, reps=reps, graph=backend.graph_capturable).as_dict())
            elif mode == "graph_submit":
                row.update(time_cuda(backend, inputs, warmup=warmup, reps=reps, graph=backend.graph_capturable,
                                     hide_launch=False).as_dict())
            elif mode == "eager":
                row.update(time_cuda(backend, inputs, warmup=warmup, reps=reps, graph=False).as_dict())
            elif mode == "gemm":
                pat = gemm_pattern(backend)
                for i in range(warmup):
                    backend(*inputs[i % len(inputs)])
                row.update(per_call_gemm_us(profile_kernels(backend, inputs, profile_calls), pat, profile_calls))
                row.update(gemm_pattern=pat, reps=profile_calls, graph=False)
            else:
                raise ValueError(f"unknown timing mode {mode!r}; known: {MODES}")
        except Exception as exc:  # noqa: BLE001 - recorded in the row; the other modes still run
            row["error"] = f"{mode}: {type(exc).__name__}: {str(exc)[:300]}"
        rows.append(row)
    return rows
