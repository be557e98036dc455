"""GPU timing harness: CUDA events, warm-up, median of many repetitions, input rotation, CUDA graphs.

``time_cuda(fn, inputs)`` calls ``fn(*inputs[i % len(inputs)])`` so that successive repetitions read
different input buffers (rotating through more bytes than L2 holds keeps caches from flattering small
shapes). With ``graph=True`` the calls are captured into one CUDA graph per input set and the graph
replays are timed, removing launch gaps; backends that cannot be captured fall back to eager timing
and say so in the result. Graph replays are timed with the host's launch latency hidden (``hide_launch``):
before each sample the GPU spins (``torch.cuda._sleep``) for :data:`SPIN_US` while the host enqueues the
start event, the replay and the end event behind the spin, so the events measure the GPU's time for the
call and not how long the host took to submit it (the ``graph_submit`` mode of :mod:`mxfp4lab.bench.modes`
times the replay with the submission included, as every result recorded before 2026-12-02's evening).
:func:`time_host` is the CPU stand-in (host wall clock) for running a benchmark's whole path on a machine
without a GPU.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, List, Sequence

import torch

#: GPU spin before each sample when the launch latency is hidden (:func:`time_cuda`): longer than the host
#: needs to enqueue the start event, one graph replay and the end event. 60 us (the first H200 sweeps with the
#: spin) was too short for 7 % of the samples at M <= 64 and for most at M >= 1024 (a graph launch sometimes
#: takes longer); each such sample is counted in the timing's note
SPIN_US = 200.0
_SPIN_CYCLES_PER_US: dict = {}

#: ``Timing.note`` of :func:`time_host`
HOST_TIMER_NOTE = "host wall clock (time.perf_counter): a CPU stand-in, not a GPU time"


@dataclass
class Timing:
    median_us: float
    p10_us: float
    p90_us: float
    reps: int
    graph: bool
    samples_us: List[float] = field(default_factory=list, repr=False)
    note: str = ""
    #: the host's launch latency was hidden behind a GPU spin (the events time the GPU's work only)
    launch_hidden: bool = False

    def as_dict(self):
        return {"median_us": self.median_us, "p10_us": self.p10_us, "p90_us": self.p90_us, "reps": self.reps,
                "graph": self.graph, "note": self.note, "launch_hidden": self.launch_hidden}


def _quantiles(xs: Sequence[float]):
    s = sorted(xs)
    q = lambda f: s[min(len(s) - 1, int(f * len(s)))]  # noqa: E731
    return statistics.median(s), q(0.1), q(0.9)


def capture_graphs(fn: Callable, inputs: Sequence[tuple]) -> List["torch.cuda.CUDAGraph"]:
    """One CUDA graph of ``fn(*args)`` per input set, captured on a side stream after one warm call per input
    set on that same stream (per-stream state a backend keeps, e.g. the decode kernel's counters, then exists
    before capture). Returns the graphs (not yet replayed); raises whatever capture raises."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for args in inputs:
            fn(*args)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    graphs = []
    for args in inputs:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=s):
            fn(*args)
        graphs.append(g)
    return graphs


def spin_cycles(us: float) -> int:
    """``torch.cuda._sleep`` cycles that keep the current GPU busy for about ``us`` microseconds (the rate is
    measured once per device with CUDA events)."""
    dev = torch.cuda.current_device()
    if dev not in _SPIN_CYCLES_PER_US:
        n = 200_000
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        rates = []
        for _ in range(5):
            torch.cuda._sleep(n)  # the timed spin below starts behind this one, not behind the host
            start.record()
            torch.cuda._sleep(n)
            end.record()
            end.synchronize()
            rates.append(n / (start.elapsed_time(end) * 1000.0))
        _SPIN_CYCLES_PER_US[dev] = statistics.median(rates)
    return int(us * _SPIN_CYCLES_PER_US[dev])


def time_cuda(
    fn: Callable, inputs: Sequence[tuple], *, warmup: int = 10, reps: int = 100, graph: bool = True,
    calls_per_sample: int = 1, sync: Callable[[], None] | None = None, hide_launch: bool | None = None,
) -> Timing:
    """Median wall time of one ``fn`` call in microseconds, measured with CUDA events.

    Each sample times ``calls_per_sample`` consecutive calls (rotating inputs) and divides; use more
    calls per sample for very short kernels so event resolution (~0.5 us) does not dominate.
    ``sync``: called before each sample's start event, outside the timed interval (several processes
    timing a collective pass a device-side barrier, so that every rank's sample starts when all have
    arrived and host skew is not counted as communication).
    ``hide_launch``: spin the GPU for :data:`SPIN_US` before each sample's start event, so that the host's
    submission of the call is not timed (default: when graph replays are timed and there is no ``sync``).
    A sample whose host enqueue took longer than the spin is counted in ``note``.
    """
    n_in = len(inputs)
    for i in range(warmup):
        fn(*inputs[i % n_in])
    torch.cuda.synchronize()
    note = ""
    runner = None
    if graph:
        try:
            graphs = capture_graphs(fn, inputs)
            runner = lambda i: graphs[i % n_in].replay()  # noqa: E731
        except Exception as exc:  # noqa: BLE001 - not capturable: time eagerly
            torch.cuda.synchronize()
            note = f"graph capture failed ({type(exc).__name__}: {str(exc)[:120]}); eager timing"
            graph = False
    if runner is None:
        runner = lambda i: fn(*inputs[i % n_in])  # noqa: E731
    for i in range(3):
        runner(i)
    torch.cuda.synchronize()
    hide = (graph and sync is None) if hide_launch is None else hide_launch
    cycles = spin_cycles(SPIN_US) if hide else 0
    samples = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    k = late = 0
    for _ in range(reps):
        if sync is not None:
            sync()
        if hide:
            torch.cuda._sleep(cycles)
            t0 = time.perf_counter()
        start.record()
        for _ in range(calls_per_sample):
            runner(k)
            k += 1
        end.record()
        if hide and (time.perf_counter() - t0) * 1e6 > SPIN_US:
            late += 1  # the spin ended before the host had enqueued the sample: a launch gap may be timed
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1000.0 / calls_per_sample)
    med, p10, p90 = _quantiles(samples)
    if late:
        late_note = f"{late} of {reps} samples enqueued slower than the {SPIN_US:.0f} us spin"
        note = f"{note}; {late_note}" if note else late_note
    return Timing(med, p10, p90, reps, graph, samples, note, launch_hidden=hide)


def time_host(
    fn: Callable, inputs: Sequence[tuple], *, warmup: int = 3, reps: int = 20,
    sync: Callable[[], None] | None = None,
) -> Timing:
    """The CPU stand-in of :func:`time_cuda` (same rotation, ``sync`` and result; ``graph`` False): host
    wall clock (``time.perf_counter``) around each call. For running a GPU benchmark's whole path on a CPU;
    its numbers are CPU times, never GPU ones, and ``note`` says so."""
    n_in = len(inputs)
    for i in range(warmup):
        fn(*inputs[i % n_in])
    samples = []
    for k in range(reps):
        if sync is not None:
            sync()
        t0 = time.perf_counter()
        fn(*inputs[k % n_in])
        samples.append((time.perf_counter() - t0) * 1e6)
    med, p10, p90 = _quantiles(samples)
    return Timing(med, p10, p90, reps, False, samples, HOST_TIMER_NOTE)


def measure_ceilings(copy_bytes: int = 2 << 30, n: int = 8192) -> dict:
    """Measured H100 ceilings: device-to-device copy bandwidth (read + write bytes) and bf16 GEMM rate."""
    def copy_time():
        src = torch.empty(copy_bytes // 2, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        return time_cuda(lambda: dst.copy_(src), [()], warmup=5, reps=30, graph=False), src.numel()

    t, nbytes = copy_time()  # buffers freed on return
    bw = 2 * nbytes / (t.median_us * 1e-6)
    x = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    t2 = time_cuda(lambda: x @ y, [()], warmup=5, reps=20, graph=False)
    flops = 2 * n**3 / (t2.median_us * 1e-6)
    return {"copy_bytes_per_s": bw, "bf16_flops_per_s": flops, "copy_median_us": t.median_us,
            "gemm_n": n, "gemm_median_us": t2.median_us}
