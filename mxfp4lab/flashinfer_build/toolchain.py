"""What a restricted build is derived from: the installed FlashInfer (version, CUDA sources, its stock
``fused_moe_90`` JitSpec, its kernel generator), nvcc and ninja. Imports FlashInfer only when called."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from .configs import MixedConfig

MODULE_NAME = "fused_moe_90_w4a16"
ARCH = "sm_90a"
#: Bump when the way we derive the build changes (part of the cache key).
_CUTLASS_KERNELS = "nv_internal/tensorrt_llm/kernels/cutlass_kernels"
_MIXED_LAUNCHER_INL = (
    "tensorrt_llm/kernels/cutlass_kernels/moe_gemm/launchers/moe_gemm_tma_ws_mixed_input_launcher.inl"
)
_MIXED_LAUNCHER_H = (
    "tensorrt_llm/kernels/cutlass_kernels/moe_gemm/launchers/moe_gemm_tma_ws_mixed_input_launcher.h"
)

# --------------------------------------------------------------------------------------------
# FlashInfer introspection
# --------------------------------------------------------------------------------------------


def _flashinfer_version() -> str:
    import flashinfer

    return getattr(flashinfer, "__version__", "unknown")


def _csrc_dir() -> Path:
    from flashinfer.jit import env as jit_env

    return Path(jit_env.FLASHINFER_CSRC_DIR)


def _nvcc_path() -> str:
    from flashinfer.jit.cpp_ext import get_cuda_path

    return os.environ.get("FLASHINFER_NVCC", f"{get_cuda_path()}/bin/nvcc")


@functools.lru_cache(maxsize=None)
def _nvcc_version() -> str:
    try:
        out = subprocess.run([_nvcc_path(), "--version"], capture_output=True, text=True, timeout=60)
        m = re.search(r"release ([\d.]+), V([\d.]+)", out.stdout)
        return m.group(2) if m else out.stdout.strip().splitlines()[-1]
    except Exception:  # noqa: BLE001 - nvcc missing: key still defined, build will fail clearly
        return "nvcc-unavailable"


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


@contextlib.contextmanager
def _sm90_target_if_undetected():
    """FlashInfer's gen_jit_spec refuses to run with no detected GPU arch (CPU machines).

    If there is no CUDA device and ``FLASHINFER_CUDA_ARCH_LIST`` is unset, set it to ``9.0a``
    for the duration (we only ever target sm_90a here; our flags carry their own -gencode).
    """
    set_env = False
    if not os.environ.get("FLASHINFER_CUDA_ARCH_LIST") and not _cuda_available():
        os.environ["FLASHINFER_CUDA_ARCH_LIST"] = "9.0a"
        set_env = True
    try:
        yield
    finally:
        if set_env:
            os.environ.pop("FLASHINFER_CUDA_ARCH_LIST", None)


def _stock_sm90_spec():
    """FlashInfer's own fused_moe_90 JitSpec (generic, non-H20 variant)."""
    from flashinfer.jit import fused_moe as fm

    with _sm90_target_if_undetected():
        # The H20 prebuilt-D variant is chosen by SM count; we build the generic one.
        orig = fm._should_enable_sm90_moe_prebuilt_d_descriptor
        fm._should_enable_sm90_moe_prebuilt_d_descriptor = lambda: False
        try:
            return fm.gen_cutlass_fused_moe_sm90_module(use_fast_build=False)
        finally:
            fm._should_enable_sm90_moe_prebuilt_d_descriptor = orig


def _bf16_fp4_operations():
    """FlashInfer's generator ops for the bf16 x FP4 SM90 mixed grouped GEMM (184 in 0.7.2)."""
    from flashinfer.jit.gemm.cutlass import generate_kernels as g

    ops = g.generate_sm90_mixed_type_grouped_gemm_operations(True)
    return [
        o
        for o in ops
        if o.act_type == g.DataType.bf16
        and o.weight_type == g.e2m1
        and o.sm90_mixed_input_kernel_type == "warp_specialized"
        and o.mixed_input_scale_mode == "post_mma"
    ]


def _op_config(op) -> MixedConfig:
    name = getattr(op.mainloop_schedule, "name", str(op.mainloop_schedule))
    sched = "cooperative" if "Cooperative" in name else "pingpong"
    return MixedConfig(tuple(op.cta_shape), tuple(op.cga_shape), sched)



def _ninja_bin() -> str:
    """``ninja`` from PATH, else from the ``ninja`` pip package (e.g. a PYTHONPATH-staged one)."""
    found = shutil.which("ninja")
    if found:
        return found
    try:
        import ninja  # type: ignore

        cand = Path(ninja.BIN_DIR) / "ninja"
        if cand.exists():
            return str(cand)
    except Exception:  # noqa: BLE001
        pass
    raise RuntimeError("ninja not found on PATH or as the 'ninja' Python package (pip install ninja)")

