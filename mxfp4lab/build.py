"""A build of FlashInfer's SM90 ``fused_moe_90`` module that fits: only the W4A16 MXFP4 path.

FlashInfer's ``cutlass_fused_moe(..., use_w4_group_scaling=True)`` on SM90 needs the JIT module
``fused_moe_90``: ~248 compile units, about an hour on 16 cores.  The bf16-activation x
MXFP4-weight path (``CutlassMoeFCRunner<__nv_bfloat16, SafeFP4>``, group size 32, E8M0 scales)
needs only a handful of those units plus a few instantiations of
``sm90_generic_mixed_moe_gemm_kernelLauncher<__nv_bfloat16, SafeFP4, ...>``.

Everything here is derived from the *installed* FlashInfer package at build time:

* the stock JitSpec (``flashinfer.jit.fused_moe.gen_cutlass_fused_moe_sm90_module``) gives the
  flags, include dirs and source list; we keep the 15 non-generated units the W4A16 path links
  against (see :data:`KEEP_UNITS`) and drop every stock ``*.generated.cu``;
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
2. every other bf16 x FP4 launcher the dispatch switch references (184 exist) gets a generated
   explicit specialization that throws ``TllmException`` (a Python ``RuntimeError`` through
   tvm-ffi) instead of being an undefined symbol (tvm-ffi loads with RTLD_LAZY: an undefined
   launcher would abort the process at first call).

``calcMaxWorkspaceSizeTmaWarpSpecializedMixedInput`` always instantiates 128x64x256 COOPERATIVE
1x1x1 for FP4 weights (workspace query), so that config (:data:`WORKSPACE_CONFIG`) is always
compiled, even when it is not a candidate.

Public API: :func:`w4a16_jit_spec`, :func:`build`, :func:`load`, :func:`install`,
:func:`build_info`, :func:`cache_key`, :func:`build_interleave_ext`,
:func:`interleave_weights_flashinfer_cuda`, and the CLI hooks :func:`add_build_parser`,
:func:`run_build`, :func:`main_build`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = [
    "MixedConfig",
    "CONFIG_SETS",
    "WORKSPACE_CONFIG",
    "KEEP_UNITS",
    "resolve_configs",
    "cache_key",
    "cache_root",
    "w4a16_jit_spec",
    "build",
    "load",
    "install",
    "uninstall",
    "build_info",
    "export_archive",
    "import_archive",
    "heuristic_candidates",
    "check_launcher_symbols",
    "build_interleave_ext",
    "interleave_weights_flashinfer_cuda",
    "add_build_parser",
    "run_build",
    "main_build",
]

MODULE_NAME = "fused_moe_90_w4a16"
ARCH = "sm_90a"
#: Bump when the way we derive the build changes (part of the cache key).
BUILD_FORMAT = 1

_CUTLASS_KERNELS = "nv_internal/tensorrt_llm/kernels/cutlass_kernels"
_MIXED_LAUNCHER_INL = (
    "tensorrt_llm/kernels/cutlass_kernels/moe_gemm/launchers/moe_gemm_tma_ws_mixed_input_launcher.inl"
)
_MIXED_LAUNCHER_H = (
    "tensorrt_llm/kernels/cutlass_kernels/moe_gemm/launchers/moe_gemm_tma_ws_mixed_input_launcher.h"
)

#: Non-generated stock units the W4A16 path needs (basenames in the stock fused_moe_90 JitSpec).
#: fp8_blockscale_gemm.cu: its vtable is referenced by the runner (dropping it fails at load).
KEEP_UNITS: Tuple[str, ...] = (
    "moe_gemm_tma_warp_specialized_input.cu",
    "moe_gemm_kernels_bf16_fp4.cu",
    "fp8_blockscale_gemm.cu",
    "moe_gemm_mixed_utils.cu",
    "flashinfer_cutlass_fused_moe_binding.cu",
    "deepgemm_jit_setup.cu",
    "cutlass_fused_moe_instantiation.cu",
    "envUtils.cpp",
    "logger.cpp",
    "stringUtils.cpp",
    "tllmException.cpp",
    "memoryUtils.cu",
    "preQuantScaleKernel.cu",
    "cutlass_heuristic.cpp",
    "lora.cpp",
)

#: Units of other dtype pairs that a W4A16 build must NOT contain (tests check this).
OTHER_DTYPE_UNITS: Tuple[str, ...] = (
    "moe_gemm_kernels_fp8_uint4.cu",
    "moe_gemm_kernels_fp8_fp8.cu",
    "moe_gemm_kernels_fp8_fp4.cu",
    "moe_gemm_kernels_fp4_fp4.cu",
    "moe_gemm_kernels_fp32_fp32.cu",
    "moe_gemm_kernels_fp16_uint8.cu",
    "moe_gemm_kernels_fp16_uint4.cu",
    "moe_gemm_kernels_fp16_fp16.cu",
    "moe_gemm_kernels_bf16_uint8.cu",
    "moe_gemm_kernels_bf16_uint4.cu",
    "moe_gemm_kernels_bf16_fp8.cu",
    "moe_gemm_kernels_bf16_bf16.cu",
    "moe_gemm_kernels_fp16_fp4.cu",
)


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------

_SCHEDULES = {
    "pingpong": ("PINGPONG", "KernelTmaWarpSpecializedPingpong"),
    "cooperative": ("COOPERATIVE", "KernelTmaWarpSpecializedCooperative"),
}


@dataclasses.dataclass(frozen=True, order=True)
class MixedConfig:
    """One SM90 mixed-input grouped-GEMM config: CTA tile (M, N, K), cluster (M, N, 1), schedule.

    ``tile`` is in the kernel's (swap_ab) frame: M runs over weight rows (GEMM n), N over tokens,
    K over the reduction dim in elements.  ``schedule`` is ``"pingpong"`` or ``"cooperative"``.
    Label form: ``"128x64x128_coop_1x1x1"`` / ``"128x128x128_pingpong_2x1x1"``.
    """

    tile: Tuple[int, int, int]
    cluster: Tuple[int, int, int]
    schedule: str

    def __post_init__(self) -> None:
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(_SCHEDULES)}; got {self.schedule!r}")
        if self.schedule == "cooperative" and self.tile[0] < 128:
            # moe_gemm_template_dispatch_tma_ws_mixed_dtype.h: COOPERATIVE needs tile M >= 128.
            raise ValueError(f"cooperative schedule needs tile M >= 128 (got {self.tile})")

    @property
    def label(self) -> str:
        s = "coop" if self.schedule == "cooperative" else "pingpong"
        return f"{'x'.join(map(str, self.tile))}_{s}_{'x'.join(map(str, self.cluster))}"

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.label

    @classmethod
    def parse(cls, label: str) -> "MixedConfig":
        """Parse ``"MxNxK_{coop|pingpong}_AxBx1"`` (raises ``ValueError`` naming the form)."""
        m = re.fullmatch(r"(\d+)x(\d+)x(\d+)_(coop|cooperative|pingpong)_(\d)x(\d)x(\d)", label.strip())
        if not m:
            raise ValueError(
                f"config label {label!r} does not match 'MxNxK_{{coop|pingpong}}_AxBx1' "
                "(e.g. '128x64x128_coop_1x1x1')"
            )
        g = m.groups()
        sched = "pingpong" if g[3] == "pingpong" else "cooperative"
        return cls((int(g[0]), int(g[1]), int(g[2])), (int(g[4]), int(g[5]), int(g[6])), sched)

    def cpp(self) -> str:
        """C++ ``CutlassGemmConfig`` constructor expression (inside cutlass_heuristic.cpp)."""
        m, n, k = self.tile
        cm, cn, ck = self.cluster
        return (
            f"CutlassGemmConfig(CutlassTileConfigSM90::CtaShape{m}x{n}x{k}B, "
            f"MainloopScheduleType::{_SCHEDULES[self.schedule][0]}, EpilogueScheduleType::AUTO, "
            f"ClusterShape::ClusterShape_{cm}x{cn}x{ck})"
        )


def _cfg(label: str) -> MixedConfig:
    return MixedConfig.parse(label)


#: Always compiled: calcMaxWorkspaceSizeTmaWarpSpecializedMixedInput (FP4 weights: Ktile 256).
WORKSPACE_CONFIG = _cfg("128x64x256_coop_1x1x1")

_CLUSTERS = ((1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1))

#: What cutlass_heuristic.cpp returns under -DFAST_BUILD for WEIGHT_ONLY|GROUPED_GEMM on SM90:
#: tiles {128x128x128}, sm90_supports_coop() false -> PINGPONG, then the 4 clusters in order.
FAST_BUILD_CANDIDATES: Tuple[MixedConfig, ...] = tuple(
    MixedConfig((128, 128, 128), c, "pingpong") for c in _CLUSTERS
)


def _stock_candidates() -> Tuple[MixedConfig, ...]:
    """The stock (non-FAST_BUILD) SM90 WEIGHT_ONLY|GROUPED_GEMM candidate list, in order.

    Data read off cutlass_heuristic.cpp (FlashInfer 0.7.2): get_candidate_tiles_sm90's 29 tiles;
    schedule COOPERATIVE where sm90_supports_coop(tile) else PINGPONG; the 4 clusters per tile.
    Verified against the compiled heuristic by ``scripts``-free CPU check (docs/build-notes.md).
    """
    tiles = [(64, n, k) for n in (16, 32, 64, 128) for k in (128, 256, 512)]
    tiles += [(128, n, k) for n in (16, 32, 64, 128) for k in (128, 256, 512)]
    tiles += [(128, 256, 128), (128, 256, 256), (256, 128, 128), (256, 128, 256), (256, 256, 128)]

    def coop(t: Tuple[int, int, int]) -> bool:
        m, n, k = t
        if m == 128 and n in (16, 32, 64):
            return k in (128, 256, 512)
        if m == 128 and n in (128, 256):
            return k in (128, 256)
        if m == 256 and n == 128:
            return k in (128, 256)
        if m == 256 and n == 256:
            return k == 128
        return False

    return tuple(
        MixedConfig(t, c, "cooperative" if coop(t) else "pingpong") for t in tiles for c in _CLUSTERS
    )


#: The default set. Measured on an H200 (data/results/build_w4a16_h200.json, latency_h200.json):
#: "minimal" (FAST_BUILD's 128x128x128 pingpong only) runs the GEMMs 10-30x slower than "compact"
#: after autotuning (GPT-OSS-120b M=1: 1110 us vs 78 us; M=1024: 25.8 ms vs 1.2 ms), for 33 s less
#: cold build (206 s vs 239 s). "minimal" remains useful for a quick correctness check.
DEFAULT_CONFIGS = "compact"

#: Named config sets.  "minimal" uses FlashInfer's own FAST_BUILD; the others a patched heuristic.
#: "compact": K-tile 128 only (valid for every H, I that is a multiple of 128, e.g. GPT-OSS 2944),
#: small token tiles for decode and 128/256 for prefill; stock candidates plus FAST_BUILD's default.
CONFIG_SETS: Dict[str, Tuple[MixedConfig, ...]] = {
    "minimal": FAST_BUILD_CANDIDATES,
    "compact": tuple(
        _cfg(x)
        for x in (
            "128x128x128_pingpong_1x1x1",  # front = default tactic (-1), same as FAST_BUILD's
            "128x16x128_coop_1x1x1",
            "128x32x128_coop_1x1x1",
            "128x64x128_coop_1x1x1",
            "128x128x128_coop_1x1x1",
            "128x256x128_coop_1x1x1",
            "64x16x128_pingpong_1x1x1",
            "64x32x128_pingpong_1x1x1",
            "64x64x128_pingpong_1x1x1",
            "128x128x128_coop_2x1x1",
        )
    ),
    "full": _stock_candidates(),
    # The stock candidates with K-tile 128 (11 tiles x 4 clusters = 44), in stock order. For a layer whose
    # GEMM K is not a multiple of 256 (GPT-OSS: K = 2944 = 23 x 128 in both GEMMs) this is exactly the part
    # of "full" the autotuner can use: FlashInfer's isProfileShapeSupported drops every tactic with
    # gemm_k % tile_k != 0 (csrc/fused_moe/cutlass_backend/flashinfer_cutlass_fused_moe_binding.cu,
    # FlashInfer 0.7.2). Built in ~40% of the time of "full" to answer "does compact cost speed?" there.
    "stock_k128": tuple(c for c in _stock_candidates() if c.tile[2] == 128),
}


def resolve_configs(
    configs: Union[str, Sequence[Union[str, MixedConfig]]] = DEFAULT_CONFIGS,
) -> Tuple[Tuple[MixedConfig, ...], bool]:
    """Return ``(candidates, use_fast_build)`` for a config-set name or an explicit list.

    ``candidates`` is the ordered list the heuristic will offer (front = default tactic);
    ``use_fast_build`` is True only for ``"minimal"`` (FlashInfer's -DFAST_BUILD, no patch).
    """
    if isinstance(configs, str):
        if configs not in CONFIG_SETS:
            raise ValueError(f"configs must be one of {sorted(CONFIG_SETS)} or a list of labels; got {configs!r}")
        return CONFIG_SETS[configs], configs == "minimal"
    out: List[MixedConfig] = []
    for c in configs:
        c = c if isinstance(c, MixedConfig) else MixedConfig.parse(c)
        if c not in out:
            out.append(c)
    if not out:
        raise ValueError("configs: an explicit config list must not be empty")
    return tuple(out), False


def compiled_configs(candidates: Sequence[MixedConfig]) -> Tuple[MixedConfig, ...]:
    """The compiled set: the candidates plus :data:`WORKSPACE_CONFIG` (sorted, unique)."""
    return tuple(sorted(set(candidates) | {WORKSPACE_CONFIG}))


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


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Generated sources
# --------------------------------------------------------------------------------------------

_HEURISTIC_ANCHOR = re.compile(
    r"(std::vector<CutlassGemmConfig>\s+get_candidate_configs_sm90\(\s*"
    r"CutlassGemmConfig::CandidateConfigTypeParam\s+const\s+config\)\s*\{)"
)


def _patched_heuristic_text(original: str, candidates: Sequence[MixedConfig]) -> str:
    """cutlass_heuristic.cpp with get_candidate_configs_sm90 returning ``candidates`` first for
    the mixed grouped path (``WEIGHT_ONLY | GROUPED_GEMM``).  Raises if the anchor moved."""
    hits = _HEURISTIC_ANCHOR.findall(original)
    if len(hits) != 1:
        raise RuntimeError(
            "R-AGREE: cannot patch cutlass_heuristic.cpp: expected exactly one definition of "
            f"get_candidate_configs_sm90(config), found {len(hits)} (FlashInfer layout changed?)"
        )
    body = ",\n        ".join(c.cpp() for c in candidates)
    hook = (
        "\n  // mxfp4lab (generated): the SM90 mixed-input grouped path offers exactly the\n"
        "  // configs compiled into this build (R-AGREE).\n"
        "  if ((config & CutlassGemmConfig::WEIGHT_ONLY) && (config & CutlassGemmConfig::GROUPED_GEMM)) {\n"
        f"    return {{\n        {body}}};\n"
        "  }\n"
    )
    return _HEURISTIC_ANCHOR.sub(lambda m: m.group(1) + hook, original, count=1)


def _stub_text(ops, set_name: str) -> str:
    """Explicit specializations that throw, for every bf16 x FP4 launcher NOT compiled."""
    from flashinfer.jit.gemm.cutlass import generate_kernels as g

    parts = [
        "// Generated by mxfp4lab.build: launchers left out of this restricted build.",
        "// The dispatch switch in moe_gemm_template_dispatch_tma_ws_mixed_dtype.h references all",
        "// of them; these definitions turn a would-be undefined symbol (process abort under",
        "// RTLD_LAZY) into a C++ exception that tvm-ffi surfaces as a Python error.",
        "#ifndef ENABLE_FP4",
        '#error "mxfp4lab W4A16 build needs -DENABLE_FP4"',
        "#endif",
        '#include "cutlass/gemm/dispatch_policy.hpp"',
        '#include "cutlass/epilogue/dispatch_policy.hpp"',
        '#include "cutlass_extensions/epilogue_helpers.h"',
        f'#include "{_MIXED_LAUNCHER_H}"',
        '#include "tensorrt_llm/common/assert.h"',
        "namespace tensorrt_llm {\nnamespace kernels {\nnamespace cutlass_kernels_oss {",
        "// Same alias as the generated units get from the launcher .inl (a type alias: the",
        "// mangled names are those of Fp4Type).",
        "using SafeFP4 = ::tensorrt_llm::kernels::cutlass_kernels::Fp4Type;",
    ]
    for op in ops:
        text = g.instantiate_operation(op).strip()
        if not text.startswith("template void") or not text.endswith(");"):
            raise RuntimeError(f"unexpected generator output for {_op_config(op).label}: {text[:80]!r}")
        label = _op_config(op).label
        text = "template <> void" + text[len("template void") : -1]
        text += (
            " {\n  TLLM_THROW(\"mxfp4lab: SM90 mixed-input config "
            f"{label} was not compiled into this restricted build (configs={set_name}); "
            "rebuild with mxfp4lab.build.build(configs=...) including it\");\n}\n"
        )
        parts.append(text)
    parts.append("}  // namespace cutlass_kernels_oss\n}  // namespace kernels\n}  // namespace tensorrt_llm\n")
    return "\n".join(parts)


def _write_if_different(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == content:
        return
    path.write_text(content)


# --------------------------------------------------------------------------------------------
# The JitSpec
# --------------------------------------------------------------------------------------------


def _make_spec_class():
    from flashinfer.jit.core import JitSpecNvcc

    @dataclasses.dataclass
    class W4A16JitSpec(JitSpecNvcc):
        """JitSpecNvcc whose build dir, ninja file, library and lock live in our cache dir."""

        root: Path = Path(".")
        info: Dict[str, Any] = dataclasses.field(default_factory=dict)

        @property
        def ninja_path(self) -> Path:
            return self.root / "build.ninja"

        @property
        def build_dir(self) -> Path:
            return self.root

        @property
        def jit_library_path(self) -> Path:
            return self.root / f"{self.name}.so"

        @property
        def aot_artifacts(self):
            return ()

        @property
        def lock_path(self) -> Path:
            return self.root / f"{self.name}.lock"

        def write_ninja(self) -> None:
            """Stock ninja text, with FlashInfer's output dir (JIT_DIR/name) moved to ``root``."""
            from flashinfer.jit import env as jit_env
            from flashinfer.jit.cpp_ext import generate_ninja_build_for_op

            with _sm90_target_if_undetected():
                content = generate_ninja_build_for_op(
                    name=self.name,
                    sources=self.sources,
                    extra_cflags=self.extra_cflags,
                    extra_cuda_cflags=self.extra_cuda_cflags,
                    extra_ldflags=self.extra_ldflags,
                    extra_include_dirs=self.extra_include_dirs,
                    needs_device_linking=self.needs_device_linking,
                )
            stock_out = str(Path(jit_env.FLASHINFER_JIT_DIR) / self.name)
            if stock_out not in content:
                raise RuntimeError(f"ninja text does not use {stock_out} as output dir (FlashInfer changed?)")
            content = content.replace(stock_out + "/", str(self.root) + "/")
            if stock_out in content:
                raise RuntimeError(f"ninja text still references {stock_out} after relocation")
            self.root.mkdir(parents=True, exist_ok=True)
            _write_if_different(self.ninja_path, content)

        def get_object_paths_in_root(self) -> List[Path]:
            """Object files as named in our relocated ninja file (``<root>/<dir>_<stem>.o``)."""
            text = self.ninja_path.read_text()
            return [Path(p) for p in re.findall(r"^build (\S+\.o):", text, flags=re.M)]

        @property
        def is_built(self) -> bool:
            """A finished build: ``BUILD_OK`` written after the link, and the library present."""
            return (self.root / "BUILD_OK").exists() and self.jit_library_path.exists()

        def try_load(self):
            # The stock try_load only trusts AOT artifacts; ours trusts a finished build.
            return self.load() if self.is_built else None

        def build(self, verbose: Optional[bool] = None, need_lock: bool = False) -> None:
            _run_build(self, jobs=None, verbose=bool(verbose))

    return W4A16JitSpec


def w4a16_jit_spec(
    *,
    configs: Union[str, Sequence[Union[str, MixedConfig]]] = DEFAULT_CONFIGS,
    split_units: bool = True,
    extra_cuda_cflags: Sequence[str] = (),
    root: Optional[Path] = None,
):
    """The restricted ``fused_moe_90`` JitSpec for bf16 x MXFP4 (W4A16) on sm_90a.

    Parameters
    ----------
    configs : "minimal" | "compact" | "full" | "stock_k128" | list of labels
        Heuristic candidates = compiled mixed configs (+ :data:`WORKSPACE_CONFIG`).
        "minimal": FlashInfer's -DFAST_BUILD (4 candidates, 5 instantiations);
        "compact": 10 K=128 configs (11 instantiations); "full": all 116 stock candidates (116);
        "stock_k128": the 44 stock candidates with K-tile 128 (45).
    split_units : bool
        One generated unit per instantiation (default) or the generator's groups of up to 8.
    extra_cuda_cflags : extra nvcc flags (part of the cache key).
    root : build directory; default ``cache_root()/fused_moe_90_w4a16/<key>``.

    Returns a ``JitSpecNvcc`` subclass (``.build_and_load()`` works); ``spec.info`` holds the
    config lists, unit lists and key.  Writes generated sources under ``<root>/src``.
    """
    from flashinfer.jit.gemm.cutlass import generate_kernels as g

    candidates, fast_build = resolve_configs(configs)
    set_name = configs if isinstance(configs, str) else "custom"
    compiled = compiled_configs(candidates)

    stock = _stock_sm90_spec()
    by_name: Dict[str, Path] = {}
    for s in stock.sources:
        s = Path(s)
        if s.name.endswith(".generated.cu"):
            continue
        by_name[s.name] = s
    missing = [u for u in KEEP_UNITS if u not in by_name]
    if missing:
        raise RuntimeError(f"stock fused_moe_90 JitSpec lacks expected units {missing} (FlashInfer changed?)")

    ops = _bf16_fp4_operations()
    op_by_cfg = {}
    for op in ops:
        op_by_cfg.setdefault(_op_config(op), op)
    not_generated = [c.label for c in compiled if c not in op_by_cfg]
    if not_generated:
        raise ValueError(
            "R-AGREE: configs not produced by FlashInfer's SM90 bf16 x FP4 generator "
            f"(cannot be compiled): {not_generated}"
        )
    stub_ops = [op for c, op in op_by_cfg.items() if c not in set(compiled)]

    cflags = [f for f in (stock.extra_cflags or []) if f]
    cuda_cflags = [f for f in (stock.extra_cuda_cflags or []) if f]
    if fast_build:
        cflags.append("-DFAST_BUILD")
        cuda_cflags.append("-DFAST_BUILD")
    cuda_cflags += list(extra_cuda_cflags)
    ldflags = list(stock.extra_ldflags or [])

    source_names = list(KEEP_UNITS)
    key = cache_key(
        flashinfer_version=_flashinfer_version(),
        arch=ARCH,
        cflags=cflags,
        cuda_cflags=cuda_cflags,
        ldflags=ldflags,
        configs=list(candidates),
        sources=source_names + [f"split={split_units}"],
        nvcc_version=_nvcc_version(),
    )
    root = Path(root) if root is not None else cache_root() / MODULE_NAME / key
    src = root / "src"

    # 1. generated launcher instantiations (FlashInfer's generator, our grouping)
    gen_units: List[Path] = []
    compiled_ops = [op_by_cfg[c] for c in compiled]
    groups = [[op] for op in compiled_ops] if split_units else [
        compiled_ops[i : i + 8] for i in range(0, len(compiled_ops), 8)
    ]
    for i, group in enumerate(groups):
        tag = _op_config(group[0]).label if len(group) == 1 else f"group{i}"
        path = src / f"w4a16_sm90_mixed_{tag}.generated.cu"
        g.write_file([_MIXED_LAUNCHER_INL], group, str(path))
        gen_units.append(path)

    # 2. throwing stubs for the rest of the 184
    stub_path = src / "w4a16_sm90_mixed_stubs.cu"
    _write_if_different(stub_path, _stub_text(stub_ops, set_name))

    # 3. heuristic: stock + FAST_BUILD, or a patched copy returning our list
    sources: List[Path] = []
    for name in KEEP_UNITS:
        if name == "cutlass_heuristic.cpp" and not fast_build:
            patched = src / "cutlass_heuristic.cpp"
            _write_if_different(patched, _patched_heuristic_text(by_name[name].read_text(), candidates))
            sources.append(patched)
        else:
            sources.append(by_name[name])
    sources += gen_units + [stub_path]

    include_dirs = [Path(p) for p in (stock.extra_include_dirs or [])]
    # the stock generated-source dir is not needed (and may hold stale stock files)
    include_dirs = [p for p in include_dirs if "cutlass_instantiations" not in str(p)] + [src]

    cls = _make_spec_class()
    info = {
        "module": MODULE_NAME,
        "key": key,
        "root": str(root),
        "flashinfer_version": _flashinfer_version(),
        "nvcc_version": _nvcc_version(),
        "arch": ARCH,
        "config_set": set_name,
        "mechanism": "FAST_BUILD" if fast_build else "patched cutlass_heuristic.cpp copy",
        "candidates": [c.label for c in candidates],
        "compiled_configs": [c.label for c in compiled],
        "stubbed_configs": len(stub_ops),
        "generator_configs": len(ops),
        "n_instantiations": len(compiled),
        "n_units": len(sources),
        "units": [str(s) for s in sources],
        "generated_units": [p.name for p in gen_units],
        "cflags": cflags,
        "cuda_cflags": cuda_cflags,
        "ldflags": ldflags,
    }
    spec = cls(
        name=MODULE_NAME,
        sources=sources,
        extra_cflags=cflags,
        extra_cuda_cflags=cuda_cflags,
        extra_ldflags=ldflags,
        extra_include_dirs=include_dirs,
        needs_device_linking=stock.needs_device_linking,
        post_load_adapter=stock.post_load_adapter,
        embedded_cubin_factory=stock.embedded_cubin_factory,
        extra_cuda_cflags_by_source=None,
        root=root,
        info=info,
    )
    root.mkdir(parents=True, exist_ok=True)
    _write_if_different(root / "spec.json", json.dumps(info, indent=1))
    return spec


def heuristic_candidates(spec, *, workdir: Optional[Path] = None, stock: bool = False) -> List[str]:
    """Compile (host C++ only, CPU OK, ~1 min) the spec's own ``cutlass_heuristic.cpp`` with the
    spec's exact C++ flags plus ``_csrc/heuristic_probe.cpp``, run it, and return the SM90
    W4A16 candidate labels the module will offer, in order.  R-AGREE holds iff this equals
    ``spec.info["candidates"]`` (and every label is in ``spec.info["compiled_configs"]``).
    ``stock=True``: the unpatched site-packages heuristic without -DFAST_BUILD (what a stock
    build offers; checks :func:`_stock_candidates`).
    """
    import shlex

    with _sm90_target_if_undetected():
        cmds = {Path(e["file"]).name: e for e in spec.get_compile_commands()}
    need = ["cutlass_heuristic.cpp", "tllmException.cpp", "stringUtils.cpp", "logger.cpp", "envUtils.cpp"]
    missing = [n for n in need if n not in cmds]
    if missing:
        raise RuntimeError(f"spec lacks {missing}")
    argv = shlex.split(cmds["cutlass_heuristic.cpp"]["command"])
    flags = [a for i, a in enumerate(argv[1:], 1) if a not in ("-c",) and argv[i - 1] != "-o" and a != "-o"]
    flags = [f for f in flags if not f.endswith("cutlass_heuristic.cpp")]
    if stock:
        flags = [f for f in flags if f != "-DFAST_BUILD"]
        cmds["cutlass_heuristic.cpp"] = {"file": str(_csrc_dir() / _CUTLASS_KERNELS / "cutlass_heuristic.cpp")}
    work = Path(workdir) if workdir else spec.root / ("heuristic_probe_stock" if stock else "heuristic_probe")
    work.mkdir(parents=True, exist_ok=True)
    exe = work / "heuristic_probe"
    srcs = [cmds[n]["file"] for n in need] + [str(Path(__file__).resolve().parent / "_csrc" / "heuristic_probe.cpp")]
    cuda_home = Path(_nvcc_path()).parent.parent
    cmd = [argv[0], *flags, *srcs, "-o", str(exe), f"-L{cuda_home}/lib64", "-lcudart", "-ldl", "-lpthread"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("heuristic probe failed to compile:\n" + r.stderr[-4000:])
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
    return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]


# --------------------------------------------------------------------------------------------
# Build / load / install
# --------------------------------------------------------------------------------------------


def _ninja_log_times(root: Path) -> Dict[str, float]:
    """Per-output wall seconds from ninja's .ninja_log (last entry per output)."""
    times: Dict[str, float] = {}
    log = root / ".ninja_log"
    if not log.exists():
        return times
    for line in log.read_text().splitlines():
        if line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) >= 4:
            times[parts[3]] = (int(parts[1]) - int(parts[0])) / 1000.0
    return times


_LAUNCHER_SYM = "sm90_generic_mixed_moe"


def check_launcher_symbols(objects: Iterable[Path]) -> Dict[str, int]:
    """Link-level R-AGREE check on built objects: every SM90 mixed launcher some object
    references (the dispatch switch references all 184 bf16 x FP4 ones) must be defined by
    some object (a compiled instantiation or a throwing stub).  Raises ``RuntimeError`` listing
    the missing ones; returns counts.  Needs binutils ``nm``.
    """
    undefined, defined = set(), set()
    for obj in objects:
        out = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout
        for ln in out.splitlines():
            parts = ln.split()
            if not parts or _LAUNCHER_SYM not in parts[-1]:
                continue
            if len(parts) == 2 and parts[0] == "U":
                undefined.add(parts[1])
            elif len(parts) == 3 and parts[1] in ("T", "W"):
                defined.add(parts[2])
    missing = sorted(undefined - defined)
    if missing:
        raise RuntimeError(
            f"R-AGREE: {len(missing)} SM90 mixed launchers are referenced but neither compiled nor "
            "stubbed (would abort the process at first call under RTLD_LAZY): " + ", ".join(missing[:5])
        )
    return {"launchers_referenced": len(undefined), "launchers_defined": len(defined)}


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


def _run_build(spec, *, jobs: Optional[int], verbose: bool) -> None:
    root = spec.root
    root.mkdir(parents=True, exist_ok=True)
    spec.write_ninja()
    jobs = jobs or int(os.environ.get("MAX_JOBS", "0") or 0) or (os.cpu_count() or 1)
    cmd = [_ninja_bin(), "-C", str(root), "-f", str(spec.ninja_path), "-j", str(jobs)]
    t0 = time.time()
    if verbose:
        print(f"[mxfp4lab.build] {len(spec.sources)} units, -j{jobs}, in {root}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: List[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line])[-200:]
        if verbose:
            m = re.match(r"\[(\d+)/(\d+)\]", line)
            if m:
                print(f"[mxfp4lab.build] {time.time() - t0:7.1f}s {line.rstrip()[:160]}", flush=True)
            elif "error" in line.lower():
                print(line.rstrip(), flush=True)
    rc = proc.wait()
    wall = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"ninja failed (rc={rc}) building {spec.name} in {root}:\n" + "".join(tail[-60:]))
    record: Dict[str, Any] = {"wall_s": wall, "jobs": jobs, "time": time.time()}
    if shutil.which("nm"):
        record.update(check_launcher_symbols(spec.get_object_paths_in_root()))
    (root / "BUILD_OK").write_text(json.dumps(record))
    if verbose:
        print(f"[mxfp4lab.build] done in {wall:.1f}s -> {spec.jit_library_path}", flush=True)


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
            print(f"[mxfp4lab.build] cached: {spec.jit_library_path}", flush=True)
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
            raise FileNotFoundError(f"{MODULE_NAME} not built at {spec.root}; run mxfp4lab.build.build() first")
        (spec.root / "BUILD_OK").unlink(missing_ok=True)
        _run_build(spec, jobs=None, verbose=True)  # (the spec is at hand: no second w4a16_jit_spec)
        mod = spec.load()
    return mod


_INSTALLED: Dict[str, Any] = {}


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
    import flashinfer.fused_moe.core as core

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
    times = _ninja_log_times(spec.root)
    if times:
        info["unit_seconds"] = dict(sorted(times.items(), key=lambda kv: -kv[1]))
    return info


# --------------------------------------------------------------------------------------------
# Tiny interleave extension (golden capture without the big module)
# --------------------------------------------------------------------------------------------

_INTERLEAVE_SRC = Path(__file__).resolve().parent / "_csrc" / "sm90_interleave.cu"


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
        print("[mxfp4lab.build] " + " ".join(cmd), flush=True)
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


# --------------------------------------------------------------------------------------------
# Reuse across machines: the built library is ~12 MB (2.3 MB as .tar.xz) and links only libcudart,
# libnvrtc and libtvm_ffi, so a host with the same FlashInfer version, install path, nvcc and flags
# (same cache key) can load it without compiling.
# --------------------------------------------------------------------------------------------
_ARCHIVE_MEMBERS = (f"{MODULE_NAME}.so", "spec.json", "BUILD_OK")


def export_archive(out: Union[str, Path], *, configs=DEFAULT_CONFIGS, **kw) -> Path:
    """Write the built library of this config set (``.so``, ``spec.json``, ``BUILD_OK``) to a .tar.xz."""
    import tarfile

    spec = w4a16_jit_spec(configs=configs, **kw)
    if not spec.is_built:
        raise FileNotFoundError(f"{MODULE_NAME} is not built at {spec.root}: run `mxfp4lab build` first")
    out = Path(out)
    with tarfile.open(out, "w:xz") as tar:
        for name in _ARCHIVE_MEMBERS:
            f = spec.root / name
            if f.exists():
                tar.add(f, arcname=f"{MODULE_NAME}/{spec.root.name}/{name}")
    return out


def import_archive(archive: Union[str, Path], *, configs=DEFAULT_CONFIGS, check_key: bool = True, **kw) -> Path:
    """Unpack an :func:`export_archive` file into this machine's cache; returns the library path.

    With ``check_key`` (default) the archive's key must equal the key this machine computes for
    ``configs`` (same FlashInfer version and path, nvcc, flags, config list): a mismatched library
    is refused rather than loaded. Only the three expected member names are extracted.
    """
    import tarfile

    spec = w4a16_jit_spec(configs=configs, **kw)
    with tarfile.open(archive, "r:*") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        keys = {Path(m.name).parts[-2] for m in members if len(Path(m.name).parts) >= 2}
        if len(keys) != 1:
            raise ValueError(f"{archive}: expected one <key>/ directory, found {sorted(keys)}")
        key = keys.pop()
        if check_key and key != spec.root.name:
            raise ValueError(
                f"{archive} was built for key {key}, this machine's key for configs={configs!r} is "
                f"{spec.root.name} (FlashInfer version/path, nvcc or flags differ): rebuild with `mxfp4lab build`"
            )
        dest = spec.root.parent / key
        dest.mkdir(parents=True, exist_ok=True)
        for m in members:
            name = Path(m.name).name
            if name not in _ARCHIVE_MEMBERS:
                continue
            data = tar.extractfile(m).read()
            tmp = dest / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.chmod(0o755 if name.endswith(".so") else 0o644)
            tmp.replace(dest / name)
    lib = dest / f"{MODULE_NAME}.so"
    if not lib.exists() or not (dest / "BUILD_OK").exists():
        raise ValueError(f"{archive} does not hold a complete build ({', '.join(_ARCHIVE_MEMBERS)})")
    return lib


# --------------------------------------------------------------------------------------------
# CLI hooks (wired by mxfp4lab/cli.py)
# --------------------------------------------------------------------------------------------


def add_build_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``build`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "build",
        help="build the restricted W4A16 fused_moe_90 module (and/or the interleave extension)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=" | ".join(CONFIG_SETS) + " | comma-separated labels")
    p.add_argument("-j", "--jobs", type=int, default=None, help="ninja jobs (default $MAX_JOBS or all cores)")
    p.add_argument("--no-split", action="store_true", help="group generated instantiations by 8 (stock)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--spec-only", action="store_true", help="generate sources + build.ninja, do not compile")
    p.add_argument("--interleave-ext", action="store_true", help="only build the tiny interleave extension")
    p.add_argument("--info", action="store_true", help="print build_info() as JSON and exit")
    p.add_argument("--export", metavar="TAR_XZ", help="write the built library to an archive (reuse on other hosts)")
    p.add_argument("--import", dest="import_", metavar="TAR_XZ", help="install a library archive into the cache")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run_build)
    return p


def _configs_arg(s: str):
    return s if s in CONFIG_SETS else [x for x in s.split(",") if x]


def run_build(args) -> int:
    """Run the ``build`` subcommand; returns a process exit code."""
    configs = _configs_arg(args.configs)
    kw = {"split_units": not args.no_split}
    try:
        if args.interleave_ext:
            print(build_interleave_ext(verbose=not args.quiet, force=args.force))
            return 0
        if args.info:
            print(json.dumps(build_info(configs=configs, **kw), indent=1))
            return 0
        if args.export:
            print(export_archive(args.export, configs=configs, **kw))
            return 0
        if args.import_:
            print(import_archive(args.import_, configs=configs, **kw))
            return 0
        if args.spec_only:
            spec = w4a16_jit_spec(configs=configs, **kw)
            spec.write_ninja()
            print(spec.ninja_path)
            return 0
        print(build(configs=configs, jobs=args.jobs, verbose=not args.quiet, force=args.force, **kw))
        return 0
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        print(f"mxfp4lab build: error: {e}", file=sys.stderr)
        return 1


def main_build(argv: Optional[Sequence[str]] = None) -> int:
    """Standalone entry: ``python -m mxfp4lab.build [--configs ...]``."""
    parser = argparse.ArgumentParser(prog="mxfp4lab")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_build_parser(sub)
    argv = list(argv if argv is not None else sys.argv[1:])
    if not argv or argv[0] != "build":
        argv = ["build"] + argv
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main_build())
