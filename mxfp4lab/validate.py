"""The validation layer: the rules a public boundary checks, written once, and the error they raise.

Boundaries (each checks its inputs once, on entry, with these helpers; the code behind trusts them):

* checkpoint I/O -- :mod:`mxfp4lab.checkpoints` (files, headers, names, shapes, scale bytes)
* preparation    -- :mod:`mxfp4lab.prepare` and the data model :class:`~mxfp4lab.moe_tensors.LogicalMoE`
* a backend's ``__call__`` -- :meth:`mxfp4lab.backends.base.MoEBackend.check_inputs`
  (:func:`check_routed_inputs`)
* the references -- :mod:`mxfp4lab.reference` (:func:`check_routed_inputs`, :func:`check_param`)
* the command line -- :mod:`mxfp4lab.cli` (every user error is one line and a non-zero exit)

Every failure is an :class:`InputError` (a ``ValueError``; :class:`~mxfp4lab.formats.MXFormatError` and
:class:`~mxfp4lab.checkpoints.CheckpointError` are InputErrors too) whose message names the tensor or
argument, the rule, and what was found (value, shape, first offending index); a wrong Python type is a
``TypeError`` naming the argument.

Two kinds of check:

* metadata (type, dtype, shape, device): free, always on;
* values (NaN / inf, expert ids in range): read the data once. On a CUDA tensor that is one host
  synchronisation, so :func:`values_checkable` turns value checks off while a CUDA graph is being captured
  (a sync is illegal there; a replayed graph runs no Python at all).

This module imports only torch, so every layer of the package can use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "InputError",
    "check_finite",
    "check_output",
    "check_param",
    "check_routed_inputs",
    "first_index",
    "require_tensor",
    "values_checkable",
]


class InputError(ValueError):
    """A public function got an input that breaks its contract; the message names the input and the rule."""


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------
def require_tensor(t, name: str) -> torch.Tensor:
    """``t`` must be a ``torch.Tensor`` (``TypeError`` naming ``name`` and what it got)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def _check_matrix(t, name: str, axes: str, kind: str) -> torch.Tensor:
    """``t`` a 2-D tensor of ``kind`` ("floating" / "integer"); ``axes`` names the axes for messages."""
    require_tensor(t, name)
    if t.dim() != 2:
        raise InputError(f"{name} must be {axes} (2-D), got shape {tuple(t.shape)}")
    if kind == "floating" and not t.dtype.is_floating_point:
        raise InputError(f"{name} must be floating point {axes}, got {t.dtype}")
    if kind == "integer" and (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool):
        raise InputError(f"{name} must hold integer expert ids {axes}, got {t.dtype}")
    return t


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------
def values_checkable() -> bool:
    """False while a CUDA graph is being captured (a value check needs a host sync, illegal there)."""
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def first_index(mask: torch.Tensor) -> tuple:
    """Index of the first True of a boolean tensor (row-major), as a tuple of ints; () when none."""
    nz = mask.reshape(-1).nonzero()
    if nz.numel() == 0:
        return ()
    flat = int(nz[0, 0])
    out = []
    for size in reversed(mask.shape):
        flat, r = divmod(flat, size)
        out.append(r)
    return tuple(reversed(out))


def _not_finite_message(t: torch.Tensor, name: str) -> str:
    bad = ~torch.isfinite(t)
    idx = first_index(bad)
    return (f"{name} holds NaN or inf ({int(bad.sum())} of {t.numel()} values; first at index {idx} = "
            f"{t[idx].item() if idx else '?'}); every value must be finite")


def _min_max(*tensors: torch.Tensor) -> list:
    """[min, max] of each non-empty tensor, as Python numbers, with ONE host read: ``aminmax`` is one
    reduction, NaN propagates through it and inf shows in min or max, so ``min`` and ``max`` finite <=> every
    value finite (~10x faster on a CPU than ``isfinite(t).all()``, which writes a mask first). On a CPU the
    0-d results are read directly; on another device they are stacked as fp64 and read in one transfer."""
    ends = [v for t in tensors for v in torch.aminmax(t)]
    if all(t.is_cpu for t in tensors):
        return [v.item() for v in ends]
    return torch.stack([v.to(torch.float64) for v in ends]).tolist()


def check_finite(t: torch.Tensor, name: str) -> None:
    """Every value of a floating tensor is finite (one reduction); :class:`InputError` naming the first
    offending index. Integer tensors pass; nothing is read during CUDA graph capture."""
    if not t.dtype.is_floating_point or t.numel() == 0 or not values_checkable():
        return
    if not all(math.isfinite(v) for v in _min_max(t)):
        raise InputError(_not_finite_message(t, name))


def check_param(v, name: str, *, positive: bool = False, allow_none: bool = False) -> None:
    """A real parameter (Python number, or a tensor of them, e.g. per-expert SwiGLU constants): finite,
    and ``> 0`` when ``positive``. ``None`` passes only with ``allow_none``."""
    if v is None:
        if allow_none:
            return
        raise InputError(f"{name} is required")
    if isinstance(v, torch.Tensor):
        if v.dtype.is_complex or v.dtype == torch.bool:
            raise InputError(f"{name} must be real, got {v.dtype}")
        if v.numel() == 0 or not values_checkable():
            return
        vf = v.double()
        check_finite(vf, name)
        if positive and not bool((vf > 0).all()):
            idx = first_index(vf <= 0)
            raise InputError(f"{name} must be > 0, got {vf[idx].item()} at index {idx}")
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {v}")
    if positive and not v > 0:
        raise InputError(f"{name} must be > 0, got {v}")


# --------------------------------------------------------------------------------------------
# The routed-MoE input contract (backends' __call__, the references)
# --------------------------------------------------------------------------------------------
def check_routed_inputs(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    *,
    hidden_size: int,
    num_experts: int,
    x_dtypes: Sequence[torch.dtype] | None = None,
    values: bool = True,
) -> None:
    """The inputs of one MoE forward.

    Metadata (always): ``x`` floating ``[M, H]`` with H = ``hidden_size`` (and a dtype in ``x_dtypes``
    when given); ``topk_ids`` integer ``[M, k]``; ``topk_weights`` floating ``[M, k]``; k >= 1; all three
    on one device.

    Values (``values=True``, outside CUDA graph capture; one host read for all three): ``x`` and
    ``topk_weights`` finite; every id in ``[0, num_experts)`` (the layer's global ids: an id of another
    EP rank is valid, an id of no rank is an error, never a silent zero row or an id wrapped modulo 2**32).
    """
    _check_matrix(x, "x", f"[M, {hidden_size}]", "floating")
    _check_matrix(topk_ids, "topk_ids", "[M, k]", "integer")
    _check_matrix(topk_weights, "topk_weights", "[M, k]", "floating")
    if x.shape[1] != hidden_size:
        raise InputError(f"x must be [M, {hidden_size}] (H = the layer's hidden size), got shape {tuple(x.shape)}")
    if x_dtypes is not None and x.dtype not in x_dtypes:
        want = " or ".join(str(d) for d in x_dtypes)
        raise InputError(f"x must be {want} (the kernels' activation type), got {x.dtype}")
    m = x.shape[0]
    if topk_ids.shape != topk_weights.shape or topk_ids.shape[0] != m:
        raise InputError(f"topk_ids {tuple(topk_ids.shape)} and topk_weights {tuple(topk_weights.shape)} must "
                         f"both be [M={m}, k]")
    if topk_ids.shape[1] < 1:
        raise InputError(f"topk_ids must route each token to k >= 1 experts, got shape {tuple(topk_ids.shape)}")
    devices = {x.device, topk_ids.device, topk_weights.device}
    if len(devices) > 1:
        raise InputError(f"x ({x.device}), topk_ids ({topk_ids.device}) and topk_weights "
                         f"({topk_weights.device}) must be on one device")
    if not values or m == 0 or not values_checkable():
        return
    # one host read for every value rule: x finite, weights finite, ids in [0, E)
    x_lo, x_hi, w_lo, w_hi, id_lo, id_hi = _min_max(x, topk_weights, topk_ids)
    if not (math.isfinite(x_lo) and math.isfinite(x_hi)):
        raise InputError(_not_finite_message(x, "x"))
    if not (math.isfinite(w_lo) and math.isfinite(w_hi)):
        raise InputError(_not_finite_message(topk_weights, "topk_weights"))
    if not (id_lo >= 0 and id_hi < num_experts):
        bad = (topk_ids < 0) | (topk_ids >= num_experts)
        idx = first_index(bad)
        raise InputError(
            f"topk_ids must be expert ids in [0, {num_experts}) (the layer's experts), got "
            f"{int(topk_ids[idx])} at index {idx} ({int(bad.sum())} such ids)"
        )


def check_output(y: torch.Tensor, who: str, x: torch.Tensor) -> None:
    """A forward's output from checked (finite) inputs must be finite: NaN or inf here means the values
    overflowed on the way (e.g. activations near the bf16 maximum times large weights), and is reported
    instead of returned. Outside CUDA graph capture only."""
    if y.numel() == 0 or not values_checkable() or all(math.isfinite(v) for v in _min_max(y)):
        return
    idx = first_index(~torch.isfinite(y))
    raise InputError(f"{who}: the output holds NaN or inf (first at index {idx} = {y[idx].item()}) although "
                     f"the inputs are finite: the arithmetic overflowed (max |x| = {x.abs().max().item():.3g}); "
                     "scale the activations down")
