"""A build of FlashInfer's SM90 ``fused_moe_90`` module that fits: only the W4A16 MXFP4 path.

Modules: :mod:`.configs` (what is compiled, named sets, :func:`parse_configs`), :mod:`.toolchain` (the
installed FlashInfer, nvcc, ninja), :mod:`.sources` (kept units, the W4A16 runner copy, patched
heuristic), :mod:`.spec` (the JitSpec), :mod:`.make` (the two-phase ninja run), :mod:`.symbols`
(throwing stubs for everything referenced and not compiled), :mod:`.cache` (key and directory),
:mod:`.install` (build / load / install into FlashInfer), :mod:`.archive` (reuse
across machines), :mod:`.tactics` (persisted autotuner picks), :mod:`.lean_import` and
:mod:`.import_cost` (what importing FlashInfer costs, and importing only what the W4A16 call needs),
:mod:`.interleave_ext` (FlashInfer's interleave kernel alone, for golden bytes). The ``mxfp4lab build``
command is in :mod:`mxfp4lab.cli`. Importing this package imports only the standard library.

FlashInfer's ``cutlass_fused_moe(..., use_w4_group_scaling=True)`` on SM90 needs the JIT module
``fused_moe_90``: ~248 compile units, about an hour on 16 cores.  The bf16-activation x
MXFP4-weight path (``CutlassMoeFCRunner<__nv_bfloat16, SafeFP4>``, group size 32, E8M0 scales)
needs only a handful of those units plus a few instantiations of
``sm90_generic_mixed_moe_gemm_kernelLauncher<__nv_bfloat16, SafeFP4, ...>``.

Everything here is derived from the *installed* FlashInfer package at build time:

* the stock JitSpec (``flashinfer.jit.fused_moe.gen_cutlass_fused_moe_sm90_module``) gives the
  flags (less CuTe's extended-GMMA-shape flag, which changes nothing for these tiles), include dirs and
  source list; we keep the 13 non-generated units the W4A16 path links against (see
  :data:`KEEP_UNITS`), compile the W4A16 runner out of the stock 23-runner instantiation unit (a
  filtered copy, :func:`.sources.runner_unit_text`) and drop every stock ``*.generated.cu``;
* the kernel generator (``flashinfer.jit.gemm.cutlass.generate_kernels``) produces the
  bf16 x FP4 launcher instantiations; we write the ones we compile ONE PER UNIT (parallel);
* FlashInfer's JIT machinery (``JitSpecNvcc.write_ninja`` / ninja / ``tvm_ffi.load_module``)
  builds and loads the library, into our own cache directory.

The rule that makes a restricted build safe (``R-AGREE``): the set of SM90 mixed-input configs
the heuristic can hand to the dispatcher (``get_candidate_configs_sm90`` for
``WEIGHT_ONLY | GROUPED_GEMM``; the autotuner's tactics are exactly that list with
``swap_ab=true``; tactic -1 means the list's front) must equal the compiled set.
We enforce it twice:

1. the candidate list is made equal to the compiled set: for ``configs="minimal"`` by FlashInfer's
   own ``-DFAST_BUILD`` (``cutlass_heuristic.cpp`` then offers only 128x128x128, PINGPONG,
   clusters 1x1x1/2x1x1/1x2x1/2x2x1), otherwise by a patched COPY of ``cutlass_heuristic.cpp``
   (written into the build's own source dir; site-packages is never touched) whose
   ``get_candidate_configs_sm90`` returns our explicit list for the mixed grouped path;
2. every other bf16 x FP4 launcher the dispatch switch references (184 exist), and every other
   ``tensorrt_llm`` function the kept units reference (the other dtype pairs' runners), gets a
   definition that throws ``std::runtime_error`` (a Python error through tvm-ffi) under its mangled
   name, generated after the other objects are compiled (:mod:`.symbols`), instead of being an
   undefined symbol (tvm-ffi loads with RTLD_LAZY: an undefined launcher would abort the process at
   its first call, an undefined vtable entry fails the load).

``calcMaxWorkspaceSizeTmaWarpSpecializedMixedInput`` always instantiates 128x64x256 COOPERATIVE
1x1x1 for FP4 weights (workspace query), so that config (:data:`WORKSPACE_CONFIG`) is always
compiled, even when it is not a candidate.

Public API: :func:`w4a16_jit_spec`, :func:`build`, :func:`load`, :func:`install`, :func:`uninstall`,
:func:`build_info`, :func:`cache_key`, :func:`parse_configs`, :func:`resolve_configs`,
:func:`export_archive`, :func:`import_archive`, :func:`build_interleave_ext`,
:func:`interleave_weights_flashinfer_cuda`, :func:`heuristic_candidates`, :func:`check_launcher_symbols`.
"""

from __future__ import annotations

from .archive import export_archive, import_archive
from .cache import BUILD_FORMAT, cache_key, cache_root
from .configs import (
    CONFIG_SETS,
    DEFAULT_CONFIGS,
    FAST_BUILD_CANDIDATES,
    WORKSPACE_CONFIG,
    MixedConfig,
    compiled_configs,
    parse_configs,
    resolve_configs,
)
from .install import build, build_info, install, load, uninstall
from .interleave_ext import build_interleave_ext, interleave_weights_flashinfer_cuda
from .sources import KEEP_UNITS, OTHER_DTYPE_UNITS
from .spec import heuristic_candidates, w4a16_jit_spec
from .symbols import check_launcher_symbols
from .toolchain import ARCH, MODULE_NAME

__all__ = [
    "ARCH", "BUILD_FORMAT", "CONFIG_SETS", "DEFAULT_CONFIGS", "FAST_BUILD_CANDIDATES", "KEEP_UNITS", "MODULE_NAME",
    "OTHER_DTYPE_UNITS", "WORKSPACE_CONFIG", "MixedConfig", "build", "build_info", "build_interleave_ext",
    "cache_key", "cache_root", "check_launcher_symbols", "compiled_configs", "export_archive",
    "heuristic_candidates", "import_archive", "install", "interleave_weights_flashinfer_cuda", "load",
    "parse_configs", "resolve_configs", "uninstall", "w4a16_jit_spec",
]
