"""A tiny CUDA extension around FlashInfer's real SM90 FP4 weight interleave kernel (one small nvcc compile
of the installed ``moe_gemm_mixed_utils.cu``, loaded with ctypes): golden bytes without the big module."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import List

from .cache import cache_key, cache_root
from .spec import CSRC
from .toolchain import _CUTLASS_KERNELS, ARCH, _csrc_dir, _flashinfer_version, _nvcc_path, _nvcc_version

_INTERLEAVE_SRC = CSRC / "sm90_interleave.cu"


def _interleave_cmd(out: Path) -> List[str]:
    inc = _csrc_dir() / _CUTLASS_KERNELS / "moe_gemm"
    return [
        _nvcc_path(),
        "-O3",
        "-std=c++17",
        "-shared",
        "-Xcompiler",
        "-fPIC",
        "-gencode=arch=compute_90a,code=sm_90a",
        f"-I{inc}",
        str(_INTERLEAVE_SRC),
        "-o",
        str(out),
    ]


def build_interleave_ext(*, verbose: bool = False, force: bool = False) -> Path:
    """Compile ``_csrc/sm90_interleave.cu`` (includes FlashInfer's installed
    ``moe_gemm_mixed_utils.cu``) into a cached ``.so``; return its path.  CPU-only OK (nvcc)."""
    key = cache_key(
        flashinfer_version=_flashinfer_version(),
        arch=ARCH,
        cflags=[],
        cuda_cflags=_interleave_cmd(Path("OUT"))[1:],
        sources=[hashlib.sha256(_INTERLEAVE_SRC.read_bytes()).hexdigest()[:16]],
        nvcc_version=_nvcc_version(),
    )
    out = cache_root() / "sm90_interleave" / key / "libmxfp4lab_sm90_interleave.so"
    if out.exists() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}.so")
    cmd = _interleave_cmd(tmp)
    if verbose:
        print("[mxfp4lab build] " + " ".join(cmd), flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nvcc failed building the interleave extension:\n{r.stdout}\n{r.stderr}")
    os.replace(tmp, out)
    (out.parent / "build.json").write_text(json.dumps({"cmd": cmd, "wall_s": time.time() - t0}))
    return out


@functools.lru_cache(maxsize=1)
def _interleave_lib():
    import ctypes

    lib = ctypes.CDLL(str(build_interleave_ext()))
    fn = lib.mxfp4lab_interleave_fp4_sm90
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]
    return fn


def interleave_weights_flashinfer_cuda(w):
    """FlashInfer's real SM90 FP4 weight interleave (quant_type 1), via the tiny extension.

    ``w``: uint8 CUDA tensor ``[E, rows, K/2]`` (two E2M1 codes per byte, element 2i in the low
    nibble), rows % 16 == 0, K % 64 == 0.  Returns a new ``[E, rows, K/2]`` uint8 tensor in the
    layout ``interleave_moe_weights_for_sm90_mixed_gemm(w, "fp4")`` produces.  Runs on the
    current stream of ``w``'s device, then synchronizes and checks the CUDA error code.
    """
    import torch

    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w must be a torch.Tensor; got {type(w).__name__}")
    if not w.is_cuda or not torch.cuda.is_available():
        raise RuntimeError(
            "interleave_weights_flashinfer_cuda needs a CUDA tensor on an SM90 GPU (it runs "
            "FlashInfer's interleave kernel); for CPU use mxfp4lab.layout's reference interleave"
        )
    if w.dtype != torch.uint8 or w.dim() != 3:
        raise ValueError(f"w must be uint8 [E, rows, K/2]; got {w.dtype} {tuple(w.shape)}")
    e, rows, kb = w.shape
    k = 2 * kb
    if rows % 16 or k % 64:
        raise ValueError(f"SM90 interleave needs rows % 16 == 0 and K % 64 == 0; got rows={rows}, K={k}")
    fn = _interleave_lib()
    src = w.contiguous()
    dst = torch.empty_like(src)
    with torch.cuda.device(src.device):
        # The extension launches on the legacy default stream; order it after pending work.
        torch.cuda.current_stream().synchronize()
        err = fn(src.data_ptr(), dst.data_ptr(), e, rows, k)
        torch.cuda.synchronize()
    if err != 0:
        raise RuntimeError(f"FlashInfer SM90 interleave kernel failed: cudaError {err}")
    return dst

