"""Run OpenAI triton_kernels' ``matmul_ogs`` under Triton's CPU interpreter (test support only).

``matmul_ogs`` targets GPUs; five things stand between it and ``TRITON_INTERPRET=1`` on a CPU. Each is
bridged here, in the test process only, and none changes what the kernels compute:

1. No GPU driver: a stand-in driver reports an Ampere CUDA target (sm_80), so the library picks its
   plain (non-TMA, non-persistent) path; the caller pins the launch flags with the library's own
   ``set_opt_flags`` (its heuristics query ``torch.cuda`` for the SM count).
2. ``specialize()`` rebuilds the kernels from source as compiled ``JITFunction`` s, which the
   interpreter cannot run: :class:`_Launcher` calls the interpreted originals instead, passing the
   fused-activation function and its argument tuple by keyword as the specialised source would bind them.
3. The interpreter hands Python ints to the kernel where the compiler has constexprs: module-level
   ``tl.constexpr`` ints are unwrapped, and two ``0`` literals that the kernel later calls ``.to()`` on
   become ``pid_m * 0`` (the same value, as a tensor); the K loop's lower bound ``BLOCK_K * pid_k`` is 0
   with ``SPLIT_K == 1`` (asserted), which the interpreter could not index with numpy >= 2.4.
4. ``tl.dot_scaled`` has no interpreter implementation: on the non-swizzled (strided) layout it is
   replaced by an explicit E2M1 x E8M0 decode (mxfp4lab's own ``_dequant_tile``, exact) and an fp32
   ``tl.dot`` of the bf16 activations -- the same products, accumulated in fp32.
5. The interpreter rounds fp32 -> bf16 by truncation; the GPU rounds to nearest even, and so does the
   patched cast here.

So the library's indexing, gather/scatter, routing metadata, bias, fused activation, gammas and top-k
reduction run as written; the Hopper value/scale swizzle (inline PTX) does not (its layout classes are
tested separately, in torch).
"""

from __future__ import annotations

import importlib.util
import inspect
import pathlib
import tempfile
import types

import numpy as np
import torch

_DOT_MX = """

from mxfp4lab.kernels.triton_moe import _dequant_tile


@triton.jit
def _interp_dot_mx(x, w, w_scales, acc):
    # x [BM, BK] bf16; w [BK/2, BN] uint8 packed along K; w_scales [BN, BK/32] uint8
    BK: tl.constexpr = x.shape[1]
    BN: tl.constexpr = w.shape[1]
    s = tl.reshape(tl.broadcast_to(tl.expand_dims(tl.trans(w_scales), 1), (BK // 32, 32, BN)), (BK, BN))
    return acc + tl.dot(x.to(tl.float32), _dequant_tile(w, s).to(tl.float32), input_precision="ieee")
"""

_SUBS = [
    ("from ._common import", "from triton_kernels.matmul_ogs_details._common import"),
    ("        start_z = 0\n", "        start_z = pid_m * 0\n"),
    ("pid_e, pid_e, 0, pid_m", "pid_e, pid_e, pid_m * 0, pid_m"),
    ("for k in range(K, BLOCK_K * pid_k, -(BLOCK_K * SPLIT_K)):",
     "tl.static_assert(SPLIT_K == 1)\n    for k in range(K, 0, -BLOCK_K):"),
    ("acc = tl.dot_scaled(x, x_scales, x_format, w, w_scales, w_format, acc=acc, fast_math=True, rhs_k_pack=rhs_k_pack)",
     "acc = _interp_dot_mx(x, w, w_scales, acc)"),
]


class _FakeDriver:
    def __init__(self, arch: int):
        self.arch = arch

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", self.arch, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")


class _Launcher:
    """``kernel[grid](*specialised_args)`` -> the interpreted original with keyword arguments."""

    def __init__(self, fn, consts: dict, tuples: dict):
        self.fn, self.consts, self.tuples = fn, consts, tuples
        self.names = []
        for n in inspect.signature(fn.fn).parameters:
            if n not in consts:
                self.names += list(tuples.get(n, [n]))

    def __getitem__(self, grid):
        from triton_kernels.tensor import Tensor as TkTensor

        def run(*args, **kwargs):
            vals = dict(zip(self.names, args))
            vals.update(kwargs)
            for n, members in self.tuples.items():
                vals[n] = tuple(vals.pop(m) for m in members)
            vals = {k: (v.storage.data if isinstance(v, TkTensor) else v) for k, v in vals.items()}
            vals.update(self.consts)
            return self.fn[grid](**vals)

        return run


def _patched_matmul_kernel():
    import triton_kernels.matmul_ogs_details._matmul_ogs as m

    src = pathlib.Path(m.__file__).read_text()
    for a, b in _SUBS:
        assert a in src, f"triton_kernels source changed: {a!r} not found"
        src = src.replace(a, b)
    p = pathlib.Path(tempfile.mkdtemp(prefix="tk_interp_")) / "_tk_interp_matmul_ogs.py"
    p.write_text(src + _DOT_MX)
    spec = importlib.util.spec_from_file_location(p.stem, p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod._matmul_ogs


def patch_interpreter():
    """Items 3 (numpy index) and 5 (bf16 rounding) of the module docstring; idempotent."""
    import triton.language as tl
    from triton.runtime import interpreter as itp

    if getattr(itp, "_mxfp4lab_tk_patched", False):
        return
    orig_lang = itp._patch_lang_tensor

    def patch_lang_tensor(tensor, scope):
        orig_lang(tensor, scope)  # 1-element index tensors: numpy >= 2.4 refuses int() of a 1-d array
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    itp._patch_lang_tensor = patch_lang_tensor
    builder = itp.InterpreterBuilder
    orig_cast = builder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:  # round to nearest even
            bits = np.ascontiguousarray(src.data).view(np.uint32).astype(np.uint64)
            return itp.TensorHandle(((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16), dst_type.scalar)
        return orig_cast(self, src, dst_type)

    builder.cast_impl = cast_impl
    builder.create_fp_trunc = lambda self, src, dst_type: self.cast_impl(src, dst_type)
    itp._mxfp4lab_tk_patched = True


def install(block_m: int = 16, block_n: int = 64, block_k: int = 128) -> None:
    """Make ``triton_kernels.matmul_ogs`` runnable here (``TRITON_INTERPRET=1`` must be set before
    ``import triton``; ``triton_kernels`` must be importable). Pins the launch tile."""
    import triton
    import triton.language as tl
    import triton_kernels.matmul_ogs as mo
    from triton_kernels.matmul_ogs_details._reduce_grouped import _reduce_grouped
    from triton_kernels.matmul_ogs_details.opt_flags import OptFlags, set_opt_flags

    patch_interpreter()
    triton.runtime.driver.set_active(_FakeDriver(80))
    matmul = _patched_matmul_kernel()
    for f in (matmul, _reduce_grouped):
        g = f.fn.__globals__
        for k, v in list(g.items()):
            if isinstance(v, tl.constexpr) and isinstance(v.value, int):
                g[k] = v.value

    default = mo.FnSpecs.default()

    def get_kernels(epilogue=default, fused_activation=default):
        consts = {"ACTIVATION_FN": fused_activation.fn, "EPILOGUE_FN": epilogue.fn}
        tuples = {"activation_fn_args": fused_activation.fn_arg_names, "epilogue_fn_args": epilogue.fn_arg_names}
        return types.SimpleNamespace(_matmul_ogs=_Launcher(matmul, consts, tuples),
                                     _reduce_grouped=_Launcher(_reduce_grouped, consts, tuples))

    mo.get_kernels = get_kernels
    set_opt_flags(OptFlags(block_m=block_m, block_n=block_n, block_k=block_k, num_warps=4, num_stages=1, group_m=1,
                           xcd_swizzle=1, w_cache_modifier=None, split_k=1, is_persistent=False, fused_scatter=False,
                           epilogue_subtile=1, arch=None, target_kernel_kwargs={}, idle_sms=0))
