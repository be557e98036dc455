"""Where built modules live and the key that names them (a pure function of what changes the library)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence, Union

from .configs import MixedConfig

#: Bump when the way we derive the build changes (part of the cache key).
BUILD_FORMAT = 2

def cache_root() -> Path:
    """``$MXFP4LAB_CACHE`` or ``~/.cache/mxfp4lab`` (the module lives under ``fused_moe_90_w4a16/<key>``)."""
    env = os.environ.get("MXFP4LAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mxfp4lab"


def cache_key(
    *,
    flashinfer_version: str,
    arch: str,
    cflags: Sequence[str],
    cuda_cflags: Sequence[str],
    ldflags: Sequence[str] = (),
    configs: Sequence[Union[str, MixedConfig]] = (),
    sources: Sequence[str] = (),
    nvcc_version: str = "",
    extra: str = "",
) -> str:
    """A 16-hex key over everything that changes the built library.

    Pure function of its arguments (order of ``configs`` matters: the front is the default
    tactic; flags keep their order).
    """
    payload = {
        "format": BUILD_FORMAT,
        "flashinfer": flashinfer_version,
        "arch": arch,
        "nvcc": nvcc_version,
        "cflags": list(cflags),
        "cuda_cflags": list(cuda_cflags),
        "ldflags": list(ldflags),
        "configs": [c.label if isinstance(c, MixedConfig) else str(c) for c in configs],
        "sources": list(sources),
        "extra": extra,
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

