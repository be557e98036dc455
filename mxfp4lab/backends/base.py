"""One call signature for every MoE backend, so studies never special-case one.

    backend = get_backend("flashinfer_sm90")(moe, config=cfg)          # or make_backend(...)
    y = backend(x, topk_ids, topk_weights)        # [M, H] bf16, routed scaling applied

* ``moe``: :class:`mxfp4lab.moe_tensors.LogicalMoE` (what :mod:`mxfp4lab.prepare` returns). A backend that
  wants another layout derives it from these logical tensors in ``__init__`` (its layout module has the
  transform and its exact inverse); it never receives another backend's physical layout.
* ``config``: the model's :class:`~mxfp4lab.models.MoEConfig` (routed scaling factor), or None.
* ``**options``: the backend's own keyword options (e.g. ``EmulatedSM90(moe, cfg, mode="fp32")``),
  declared explicitly by each subclass; an unknown option is a ``TypeError`` naming it.
* ``x``: bf16 ``[M, H]`` (unpadded); ``topk_ids``: integer ``[M, k]`` global expert ids in
  ``[0, num_experts_total)``; ``topk_weights``: floating ``[M, k]`` (without DeepSeek-V4's routed scaling
  factor); all on one device. The base ``__call__`` checks them once
  (:func:`mxfp4lab.validate.check_routed_inputs`: shapes and dtypes always; finite values and id range
  unless ``check_values`` is False or a CUDA graph is being captured); :meth:`MoEBackend.forward` may assume
  them valid. The output is checked finite under the same condition (finite inputs can still overflow). M = 0 returns an empty ``[0, H]`` without calling ``forward``.
* ``config`` must describe ``moe`` (H, experts, I across TP ranks, SwiGLU constants): checked in
  ``__init__`` (:meth:`mxfp4lab.moe_tensors.LogicalMoE.check_config`).

Backends are listed in one table, :data:`mxfp4lab.backends.registry.BACKENDS`.
"""

from __future__ import annotations

import abc
import os
from typing import Optional, Tuple

import torch

from ..models import MoEConfig
from ..moe_tensors import LogicalMoE
from ..validate import InputError, check_output, check_routed_inputs


class BackendUnavailable(RuntimeError):
    """The backend cannot run here; the message says what it needs."""


class MoEBackend(abc.ABC):
    #: registry name (set by each subclass, equal to its key in ``registry.BACKENDS``)
    name: str = "base"
    #: False for backends that sync with the host (a failed capture also poisons the CUDA RNG state)
    graph_capturable: bool = True
    #: True for backends whose kernels run only on a CUDA GPU (inputs and weights must be on it)
    gpu_only: bool = False
    #: check input values (finite x / topk_weights, ids in range) on each call: one host read, a sync on
    #: CUDA; set False on an instance to keep only the metadata checks (e.g. an eager GPU serving loop)
    check_values: bool = True
    #: True where :meth:`forward` applies the routed scaling factor itself (its last kernel, the same bits as the
    #: multiply in ``__call__``), so that no launch is added for it
    applies_routed_scaling: bool = False

    def __init__(self, moe: LogicalMoE, config: Optional[MoEConfig] = None):
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(f"backend {self.name!r} is unavailable: {why}")
        if not isinstance(moe, LogicalMoE):
            raise TypeError(f"backend {self.name!r} takes a mxfp4lab.moe_tensors.LogicalMoE (what "
                            f"mxfp4lab.prepare returns), got {type(moe).__name__}")
        moe.check()  # frozen, but a field set behind its back (object.__setattr__) is caught here
        moe.check_config(config, f"backend {self.name!r}")
        self.moe = moe
        self.config = config
        self.hidden_size = moe.hidden_size
        self.routed_scaling_factor = 1.0 if config is None else float(config.routed_scaling_factor)
        self.swiglu = moe.swiglu_kwargs()

    @classmethod
    def available(cls) -> Tuple[bool, str]:
        return True, ""

    def tune(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> None:
        """Let the backend pick its tactics for this problem size (no-op unless it autotunes)."""

    def tune_input_sets(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> list:
        """The input sets a tuner times a candidate over: these inputs and :data:`TUNE_SETS` - 1 copies routed to
        other experts of this shard (:func:`expert_permuted_sets`)."""
        return expert_permuted_sets((x, topk_ids, topk_weights), TUNE_SETS, expert_offset=self.moe.expert_offset,
                                    num_local_experts=self.moe.num_local_experts)

    def describe(self, m: int) -> dict:
        """What this backend runs for ``m`` tokens (e.g. its tile config), recorded beside each timing."""
        return {}

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        """Experts only: ``[M, H]`` bf16 before the routed scaling factor (after it where
        :attr:`applies_routed_scaling`)."""

    def check_inputs(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> None:
        """The contract of the module docstring; :class:`~mxfp4lab.validate.InputError` (a ``ValueError``)
        naming the tensor and the rule."""
        check_routed_inputs(x, topk_ids, topk_weights, hidden_size=self.hidden_size,
                            num_experts=self.moe.num_experts_total, x_dtypes=(torch.bfloat16,),
                            values=self.check_values)
        if self.gpu_only and not x.is_cuda and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
            # (Triton's CPU interpreter runs GPU-only Triton backends on CPU tensors: the test suite does)
            raise InputError(f"backend {self.name!r} runs on a CUDA GPU: x, topk_ids and topk_weights must be "
                             f"CUDA tensors, got {x.device}")

    def __call__(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        self.check_inputs(x, topk_ids, topk_weights)
        if x.shape[0] == 0:
            return x.new_zeros(0, self.hidden_size)
        y = self.forward(x, topk_ids, topk_weights)
        if self.routed_scaling_factor != 1.0 and not self.applies_routed_scaling:
            # one launch, the bits of (y.float() * s).to(bfloat16): a bf16 multiply by a Python scalar computes
            # in fp32 and rounds once (tested over every bf16 value)
            y = y * self.routed_scaling_factor
        if self.check_values:
            check_output(y, f"backend {self.name!r}", x)
        return y


#: input sets a tuner times over (:func:`expert_permuted_sets`), as many as the latency sweep rotates by default
TUNE_SETS = 4


def expert_permuted_sets(inputs, n: int, *, expert_offset: int, num_local_experts: int, seed: int = 0) -> list:
    """``inputs`` ``(x, topk_ids, topk_weights)`` and ``n - 1`` copies whose ids of this shard's experts
    (``[expert_offset, expert_offset + num_local_experts)``) go through a random permutation of them (a fixed
    seed; ids of other shards stay). Each set routes the same tokens with the same weights, the same number of
    pairs to each expert slot, to other experts: replayed in turn, a set reads its experts' weights from DRAM, as
    a decode step of a real model does (its layers' weights do not stay in the L2) and as the latency sweep times
    (it rotates input sets), where one set replayed alone reads part of them from the L2."""
    x, ids, w = inputs
    if n < 1:
        raise ValueError(f"n = {n}: at least the given input set")
    gen = torch.Generator().manual_seed(seed)
    local = (ids >= expert_offset) & (ids < expert_offset + num_local_experts)
    idx = (ids - expert_offset).clamp(0, num_local_experts - 1).long()
    sets = [inputs]
    for _ in range(n - 1):
        perm = (torch.randperm(num_local_experts, generator=gen) + expert_offset).to(ids.device, ids.dtype)
        sets.append((x, torch.where(local, perm[idx], ids), w))
    return sets


def fastest_agreeing(candidates, run_of, inputs, *, tol: float, log: list, prefix: str, label=str,
                     may_be_reference=lambda c: True, time_us=None, sets=None):
    """A backend tuner's loop: run each candidate once on ``inputs`` (``run_of(c)(*inputs)``), drop it if its
    output differs from the reference candidate's (the first one ``may_be_reference`` accepts) by ``tol`` or
    more, time the rest the way the latency sweep does (CUDA-graph replays of ``sets`` in turn, default
    ``[inputs]``; median: the tuner ranks what is reported; ``time_us(run, sets)`` replaces that), and return the
    fastest (None if none ran). One ``log`` line per candidate, ``prefix`` first."""
    from ..bench.harness import time_cuda
    from ..reference import relative_error

    if time_us is None:
        def time_us(fn, sets):
            return time_cuda(fn, sets, warmup=3, reps=25, graph=True).median_us

    best, best_t, ref = None, float("inf"), None
    for c in candidates:
        name = f"{prefix} {label(c)}"
        try:
            run = run_of(c)
            out = run(*inputs)
            if ref is None:
                if not may_be_reference(c):
                    log.append(f"{name}: skipped (no reference candidate ran first)")
                    continue
                ref = out
            else:
                err = relative_error(out, ref)
                if not err < tol:
                    log.append(f"{name}: rejected (rel err {err:.3g} vs the first candidate)")
                    continue
            t = time_us(run, sets or [inputs])
        except Exception as exc:  # noqa: BLE001 - a candidate that does not fit (shared memory, shape)
            log.append(f"{name}: skipped ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        log.append(f"{name}: {t:.1f} us")
        if t < best_t:
            best, best_t = c, t
    return best

