"""One call signature for every MoE backend, so studies never special-case one.

    backend = get_backend("flashinfer_sm90")(moe, config=cfg)          # or make_backend(...)
    y = backend(x, topk_ids, topk_weights)        # [M, H] bf16, routed scaling applied

* ``moe``: :class:`mxfp4lab.moe_tensors.LogicalMoE` (what :mod:`mxfp4lab.prepare` returns). A backend that
  wants another layout derives it from these logical tensors in ``__init__`` (its layout module has the
  transform and its exact inverse); it never receives another backend's physical layout.
* ``config``: the model's :class:`~mxfp4lab.models.MoEConfig` (routed scaling factor), or None.
* ``**options``: the backend's own keyword options (e.g. ``EmulatedSM90(moe, cfg, mode="fp32")``),
  declared explicitly by each subclass; an unknown option is a ``TypeError`` naming it.
* ``x``: bf16 ``[M, H]`` (unpadded); ``topk_ids``: integer ``[M, k]`` global expert ids;
  ``topk_weights``: floating ``[M, k]`` (without DeepSeek-V4's routed scaling factor). The base
  ``__call__`` checks them once; :meth:`MoEBackend.forward` may assume them valid.

Backends are listed in one table, :data:`mxfp4lab.backends.registry.BACKENDS`.
"""

from __future__ import annotations

import abc
from typing import Optional, Tuple

import torch

from ..models import MoEConfig
from ..moe_tensors import LogicalMoE


class BackendUnavailable(RuntimeError):
    """The backend cannot run here; the message says what it needs."""


class MoEBackend(abc.ABC):
    #: registry name (set by each subclass, equal to its key in ``registry.BACKENDS``)
    name: str = "base"
    #: False for backends that sync with the host (a failed capture also poisons the CUDA RNG state)
    graph_capturable: bool = True
    #: True for backends whose kernels run only on a CUDA GPU (inputs and weights must be on it)
    gpu_only: bool = False

    def __init__(self, moe: LogicalMoE, config: Optional[MoEConfig] = None):
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(f"backend {self.name!r} is unavailable: {why}")
        if not isinstance(moe, LogicalMoE):
            raise TypeError(f"backend {self.name!r} takes a mxfp4lab.moe_tensors.LogicalMoE (what "
                            f"mxfp4lab.prepare returns), got {type(moe).__name__}")
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

    def describe(self, m: int) -> dict:
        """What this backend runs for ``m`` tokens (e.g. its tile config), recorded beside each timing."""
        return {}

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        """Experts only: ``[M, H]`` bf16 before the routed scaling factor."""

    def check_inputs(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> None:
        """The contract of the module docstring; ``ValueError`` naming the tensor and the rule."""
        if x.dim() != 2 or x.shape[1] != self.hidden_size:
            raise ValueError(f"x must be [M, {self.hidden_size}], got {tuple(x.shape)}")
        if x.dtype != torch.bfloat16:
            raise ValueError(f"x must be torch.bfloat16 (the kernels' activation type), got {x.dtype}")
        if topk_ids.dim() != 2 or topk_ids.shape != topk_weights.shape or topk_ids.shape[0] != x.shape[0]:
            raise ValueError(
                f"topk_ids {tuple(topk_ids.shape)} and topk_weights {tuple(topk_weights.shape)} must both be "
                f"[M={x.shape[0]}, k]"
            )
        if topk_ids.dtype.is_floating_point or topk_ids.dtype == torch.bool:
            raise ValueError(f"topk_ids must hold integer expert ids, got {topk_ids.dtype}")
        if not topk_weights.dtype.is_floating_point:
            raise ValueError(f"topk_weights must be floating point, got {topk_weights.dtype}")

    def __call__(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        self.check_inputs(x, topk_ids, topk_weights)
        y = self.forward(x, topk_ids, topk_weights)
        if self.routed_scaling_factor != 1.0:
            y = (y.float() * self.routed_scaling_factor).to(torch.bfloat16)
        return y
