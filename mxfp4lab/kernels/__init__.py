"""mxfp4lab's own kernels.

* :mod:`.tiles`      -- named launch configurations (``TileConfig``, ``DequantPath``) and the tuning table
  (standard library only)
* :mod:`.align`      -- routing alignment: pairs sorted by expert, padded to BLOCK_M, no host sync
* :mod:`.sass`       -- sm_90a compile report of the kernels on a CPU machine (registers, spills, SASS counts)
* :mod:`.triton_moe` -- W4A16 MXFP4 fused MoE in Triton (fc1 + clamped SwiGLU, fc2, top-k combine),
  reading the layout of :mod:`mxfp4lab.layout.triton_w4a16`. Import it only where Triton is installed;
  set ``TRITON_INTERPRET=1`` BEFORE the first import to run it on a CPU (the ``@triton.jit``
  decorators choose the interpreter at import time).
"""
