"""Build, load and install the restricted module: after :func:`install`, FlashInfer's own
``cutlass_fused_moe`` (backend "90") runs on it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from .configs import DEFAULT_CONFIGS, MixedConfig
from .make import unit_times
from .spec import _run_build, w4a16_jit_spec
from .toolchain import MODULE_NAME


def build(
    *,
    configs: Union[str, Sequence[Union[str, MixedConfig]]] = DEFAULT_CONFIGS,
    jobs: Optional[int] = None,
    verbose: bool = True,
    force: bool = False,
    **spec_kwargs,
) -> Path:
    """Build (or reuse) the restricted module and return the ``.so`` path.

    ``jobs``: ninja -j (default ``$MAX_JOBS`` or os.cpu_count()).  ``force``: rebuild even if
    ``BUILD_OK`` exists (ninja still skips up-to-date objects).
    """
    spec = w4a16_jit_spec(configs=configs, **spec_kwargs)
    if spec.is_built and not force:
        if verbose:
            print(f"[mxfp4lab build] cached: {spec.jit_library_path}", flush=True)
        return spec.jit_library_path
    (spec.root / "BUILD_OK").unlink(missing_ok=True)
    _run_build(spec, jobs=jobs, verbose=verbose)
    return spec.jit_library_path


def load(*, configs: Union[str, Sequence[Union[str, MixedConfig]]] = DEFAULT_CONFIGS, build_if_missing: bool = True, **kw):
    """Load the built module (tvm-ffi module, like ``gen_cutlass_fused_moe_sm90_module().build_and_load()``)."""
    spec = w4a16_jit_spec(configs=configs, **kw)
    mod = spec.try_load()
    if mod is None:
        if not build_if_missing:
            raise FileNotFoundError(f"{MODULE_NAME} not built at {spec.root}; run `mxfp4lab build` first")
        (spec.root / "BUILD_OK").unlink(missing_ok=True)
        _run_build(spec, jobs=None, verbose=True)  # (the spec is at hand: no second w4a16_jit_spec)
        mod = spec.load()
    return mod


_INSTALLED: Dict[str, Any] = {}

#: ``lean`` (default): import only the FlashInfer modules the W4A16 call needs, the rest on first use
#: (:mod:`.lean_import`); ``full``: ``import flashinfer`` as usual.
IMPORT_ENV = "MXFP4LAB_FLASHINFER_IMPORT"


def flashinfer_core(mode: Optional[str] = None):
    """``flashinfer.fused_moe.core`` (``cutlass_fused_moe``, the module hook), imported ``mode`` =
    ``"lean"`` | ``"full"`` (default: ``$MXFP4LAB_FLASHINFER_IMPORT`` or ``"lean"``)."""
    import importlib

    mode = mode or os.environ.get(IMPORT_ENV, "lean")
    if mode not in ("lean", "full"):
        raise ValueError(f"{IMPORT_ENV} must be 'lean' or 'full', got {mode!r}")
    if mode == "lean":
        from .lean_import import import_lean

        return import_lean()["flashinfer.fused_moe.core"]
    importlib.import_module("flashinfer")
    return importlib.import_module("flashinfer.fused_moe.core")


def install(*, configs: Union[str, Sequence[Union[str, MixedConfig]]] = DEFAULT_CONFIGS, build_if_missing: bool = True, **kw):
    """Make ``flashinfer.fused_moe.cutlass_fused_moe`` (backend "90") and
    ``interleave_moe_weights_for_sm90_mixed_gemm`` use our restricted module.

    Hook: ``flashinfer.fused_moe.core.get_cutlass_fused_moe_module`` (functools.cache'd) calls
    the module-level name ``gen_cutlass_fused_moe_sm90_module(use_fast_build).build_and_load()``;
    we rebind that name in ``flashinfer.fused_moe.core`` to return our JitSpec and clear the
    cache, so the stock MoERunner / autotuner wrap our module.  The autotuner's tactics come
    from the module's own ``getTactics`` = our candidate list (R-AGREE), so it can only choose
    compiled tactics.  Returns the JitSpec.  Idempotent; :func:`uninstall` reverts.
    """
    core = flashinfer_core()
    spec = w4a16_jit_spec(configs=configs, **kw)
    if not build_if_missing and spec.try_load() is None:
        raise FileNotFoundError(f"{MODULE_NAME} not built at {spec.root}")
    prev = _INSTALLED.get("spec")
    if prev is not None and prev.root == spec.root and core.gen_cutlass_fused_moe_sm90_module is _INSTALLED.get("hook"):
        return prev  # already in place: keep FlashInfer's cached module (no cache_clear, no reload)
    if "orig_gen" not in _INSTALLED:
        _INSTALLED["orig_gen"] = core.gen_cutlass_fused_moe_sm90_module

    def gen_cutlass_fused_moe_sm90_module(use_fast_build: bool = False):  # noqa: ARG001
        return spec

    core.gen_cutlass_fused_moe_sm90_module = gen_cutlass_fused_moe_sm90_module
    core.get_cutlass_fused_moe_module.cache_clear()
    _INSTALLED.update(spec=spec, hook=gen_cutlass_fused_moe_sm90_module)
    return spec


def uninstall() -> None:
    """Undo :func:`install`."""
    import flashinfer.fused_moe.core as core

    if "orig_gen" in _INSTALLED:
        core.gen_cutlass_fused_moe_sm90_module = _INSTALLED.pop("orig_gen")
        core.get_cutlass_fused_moe_module.cache_clear()
    _INSTALLED.pop("spec", None)
    _INSTALLED.pop("hook", None)


def build_info(*, configs: Union[str, Sequence[Union[str, MixedConfig]]] = DEFAULT_CONFIGS, **kw) -> Dict[str, Any]:
    """Dict: units, flags, candidate/compiled config lists, key, lib size, build/unit times.

    Works before a build (``built: False``, sizes/times absent).
    """
    spec = w4a16_jit_spec(configs=configs, **kw)
    info = dict(spec.info)
    lib = spec.jit_library_path
    info["library"] = str(lib)
    info["built"] = spec.is_built
    if lib.exists():
        info["library_bytes"] = lib.stat().st_size
    ok = spec.root / "BUILD_OK"
    if ok.exists():
        info["build"] = json.loads(ok.read_text())
    times = unit_times(spec.root)
    if times:
        info["unit_times"] = times
        info["unit_seconds"] = {k: round(v["seconds"], 1)
                                for k, v in sorted(times.items(), key=lambda kv: -kv[1]["seconds"])}
    return info

