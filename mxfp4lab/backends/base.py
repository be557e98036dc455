"""One call signature for every MoE backend, so experiments never special-case one.

    backend = get_backend("flashinfer_sm90")(prepared, config=cfg)
    y = backend(x, topk_ids, topk_weights)        # [M, H] bf16, routed scaling applied

* ``prepared``: :class:`mxfp4lab.prepare.PreparedMoE` (the SM90 physical tensors; backends that want
  another layout derive it from these, and never from anything the reference doesn't also see).
* ``x``: bf16 ``[M, H]`` (unpadded); ``topk_ids``: int32 ``[M, k]`` global expert ids;
  ``topk_weights``: fp32 ``[M, k]`` (without DeepSeek-V4's routed scaling factor).
"""

from __future__ import annotations

import abc
from typing import Dict, Optional, Tuple, Type

import torch

from ..models import MoEConfig
from ..prepare import PreparedMoE


class BackendUnavailable(RuntimeError):
    """The backend cannot run here; the message says what it needs."""


class MoEBackend(abc.ABC):
    name: str = "base"
    #: False for backends that sync with the host (a failed capture also poisons the CUDA RNG state)
    graph_capturable: bool = True

    def __init__(self, prepared: PreparedMoE, config: Optional[MoEConfig] = None):
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(f"backend {self.name!r} is unavailable: {why}")
        self.prepared = prepared
        self.config = config
        self.hidden_size = prepared.hidden_size
        self.routed_scaling_factor = 1.0 if config is None else float(config.routed_scaling_factor)
        a = prepared.swiglu_alpha
        self.swiglu = dict(
            swiglu_alpha=1.0 if a is None else prepared.swiglu_alpha,
            swiglu_beta=0.0 if prepared.swiglu_beta is None else prepared.swiglu_beta,
            swiglu_limit=prepared.swiglu_limit,
        )

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

    def __call__(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.hidden_size:
            raise ValueError(f"x must be [M, {self.hidden_size}], got {tuple(x.shape)}")
        if topk_ids.shape != topk_weights.shape or topk_ids.shape[0] != x.shape[0]:
            raise ValueError(
                f"topk_ids {tuple(topk_ids.shape)} and topk_weights {tuple(topk_weights.shape)} must both be [M, k]"
            )
        y = self.forward(x, topk_ids, topk_weights)
        if self.routed_scaling_factor != 1.0:
            y = (y.float() * self.routed_scaling_factor).to(torch.bfloat16)
        return y


_REGISTRY: Dict[str, Type[MoEBackend]] = {}


def register(cls: Type[MoEBackend]) -> Type[MoEBackend]:
    _REGISTRY[cls.name] = cls
    return cls


def get_backend(name: str) -> Type[MoEBackend]:
    from . import decode_w4a16, emulated, flashinfer_sm90, marlin, torch_naive, triton_w4a16  # noqa: F401  (registration)

    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; known: {sorted(_REGISTRY)}") from None


def list_backends() -> Dict[str, Tuple[bool, str]]:
    get_backend("emulated_sm90")
    return {n: c.available() for n, c in sorted(_REGISTRY.items())}
