"""MoE backends behind one interface (:mod:`.base`), listed in one table (:mod:`.registry`).

* ``emulated_sm90``  -- CPU: the kernel-faithful reference on the logical tensors (FlashInfer's roundings)
* ``torch_naive``    -- dequantize-to-bf16 per-expert matmuls (the naive floor)
* ``flashinfer_sm90``-- FlashInfer ``cutlass_fused_moe(use_w4_group_scaling=True)`` on H100/H200
* ``triton_w4a16``   -- mxfp4lab's own Triton W4A16 MXFP4 fused MoE (H100/H200; CPU via TRITON_INTERPRET=1)
* ``marlin_mxfp4``   -- vLLM's Marlin MXFP4 MoE kernels (GPU)
"""

from .base import BackendUnavailable, MoEBackend
from .registry import BACKENDS, BackendSpec, get_backend, list_backends, make_backend

__all__ = ["BACKENDS", "BackendSpec", "BackendUnavailable", "MoEBackend", "get_backend", "list_backends",
           "make_backend"]
