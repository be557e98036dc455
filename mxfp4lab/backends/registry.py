"""The one table of MoE backends: name -> ``"module:Class"``, imported on first use.

Adding a backend = one module under ``mxfp4lab/backends/`` with a :class:`~.base.MoEBackend` subclass
whose ``name`` is its key here, plus one line in :data:`BACKENDS`. Nothing imports a backend module
except :func:`get_backend` (so an optional dependency of one backend never breaks the others).

Variants are options, never parsed from names: :class:`BackendSpec` names a backend and its keyword
options (``BackendSpec("emulated_sm90", {"mode": "fp32"})``) and gives the row label studies record.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Type, Union

from .base import MoEBackend

#: Backend name -> "module:Class" (module relative to this package).
BACKENDS: Dict[str, str] = {
    "emulated_sm90": "emulated:EmulatedSM90",
    "torch_naive": "torch_naive:TorchNaive",
    "flashinfer_sm90": "flashinfer_sm90:FlashInferSM90",
    "triton_w4a16": "triton_w4a16:TritonW4A16",
    "marlin_mxfp4": "marlin:MarlinMXFP4",
    "decode_w4a16": "decode_w4a16:DecodeW4A16",
    "triton_kernels": "triton_kernels:TritonKernelsMoE",
    "humming": "humming:HummingMoE",
}


def get_backend(name: str) -> Type[MoEBackend]:
    """The backend class registered as ``name`` (its module is imported now)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; known: {sorted(BACKENDS)}") from None
    module, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(f"{__package__}.{module}"), cls_name)
    if cls.name != name:
        raise RuntimeError(f"registry maps {name!r} to {target}, whose name is {cls.name!r}")
    return cls


def list_backends() -> Dict[str, Tuple[bool, str]]:
    """Every registered backend -> (available here, why not)."""
    out = {}
    for n in sorted(BACKENDS):
        try:
            out[n] = get_backend(n).available()
        except ImportError as exc:  # an optional dependency of that module is missing
            out[n] = (False, f"cannot import its module: {exc}")
    return out


@dataclass(frozen=True)
class BackendSpec:
    """A backend and its keyword options; ``label`` (default ``"name key=value ..."``) names its rows."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self):
        if self.name not in BACKENDS:
            raise KeyError(f"unknown backend {self.name!r}; known: {sorted(BACKENDS)}")
        if not self.label:
            opts = "".join(f" {k}={v}" for k, v in sorted(self.options.items()))
            object.__setattr__(self, "label", self.name + opts)

    @classmethod
    def of(cls, spec: Union[str, "BackendSpec"]) -> "BackendSpec":
        """A registry name (no options) or a BackendSpec, as a BackendSpec."""
        return spec if isinstance(spec, BackendSpec) else cls(spec)

    def make(self, moe, config=None, **options) -> MoEBackend:
        """Construct the backend on ``moe`` with this spec's options (``options`` override them)."""
        return get_backend(self.name)(moe, config, **{**self.options, **options})


def make_backend(spec: Union[str, BackendSpec], moe, config: Optional[Any] = None, **options) -> MoEBackend:
    """``get_backend(name)(moe, config, **options)`` for a name or a :class:`BackendSpec`."""
    return BackendSpec.of(spec).make(moe, config, **options)
