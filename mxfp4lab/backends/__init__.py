"""MoE backends behind one interface (:mod:`.base`).

* ``emulated_sm90``  -- CPU: inverse SM90 layouts + reference (proves the preparation)
* ``torch_naive``    -- dequantize-to-bf16 per-expert matmuls (the naive floor)
* ``flashinfer_sm90``-- FlashInfer ``cutlass_fused_moe(use_w4_group_scaling=True)`` on H100/H200
* ``triton_w4a16``   -- mxfp4lab's own Triton W4A16 MXFP4 fused MoE (H100/H200; CPU via TRITON_INTERPRET=1)
"""

from .base import BackendUnavailable, MoEBackend, get_backend, list_backends

__all__ = ["BackendUnavailable", "MoEBackend", "get_backend", "list_backends"]
