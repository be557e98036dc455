"""The restricted ``fused_moe_90`` JitSpec (:func:`w4a16_jit_spec`: its sources, flags, key and relocated
build directory) and the host-only heuristic probe (:func:`heuristic_candidates`). The ninja run is
:mod:`.make`."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .cache import cache_key, cache_root
from .configs import DEFAULT_CONFIGS, MixedConfig, compiled_configs, resolve_configs
from .sources import (
    KEEP_UNITS,
    RUNNER_UNIT,
    STOCK_RUNNER_UNIT,
    UNDEFINED_STUBS_UNIT,
    UNIT_CPU_LOG,
    _patched_heuristic_text,
    _write_if_different,
    runner_unit_text,
)
from .toolchain import (
    _CUTLASS_KERNELS,
    _MIXED_LAUNCHER_INL,
    ARCH,
    MODULE_NAME,
    _bf16_fp4_operations,
    _csrc_dir,
    _flashinfer_version,
    _nvcc_path,
    _nvcc_version,
    _op_config,
    _sm90_target_if_undetected,
    _stock_sm90_spec,
)

#: mxfp4lab's own C++/CUDA sources (the heuristic probe, the interleave extension)
CSRC = Path(__file__).resolve().parent.parent / "_csrc"

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
            # every compile through _timed.py: its CPU and wall seconds land in UNIT_CPU_LOG (make.unit_times)
            timed = (sys.executable, Path(__file__).with_name("_timed.py"), self.root / UNIT_CPU_LOG)
            launcher = " ".join(shlex.quote(str(a)) for a in timed)
            content, n = re.subn(r"^(nvcc_launcher|cxx_launcher) =[^\n]*$",
                                 lambda m: f"{m.group(1)} = {launcher}", content, flags=re.M)
            if n != 2:
                raise RuntimeError(
                    f"ninja text has {n} compiler-launcher variables, expected 2 (FlashInfer changed?)")
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


#: FlashInfer's flag for CuTe's extended SM90 GMMA shapes (N not in 8..256 step 8 of the base set:
#: 24, 40, ..., 248). Every bf16 x FP4 config FlashInfer generates has a tile N of 16, 32, 64, 128 or
#: 256, so CuTe's GMMA selectors pick the same atom without it, and the flag only makes every unit parse
#: the four *_ext.hpp headers (~130k of ~525k preprocessed lines). Checked: identical SASS without it
#: (docs/build-notes.md), ~27 % less compile CPU per mixed-input unit.
EXTENDED_MMA_FLAG = "-DCUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED"


def w4a16_jit_spec(
    *,
    configs: Union[str, Sequence[Union[str, MixedConfig]]] = DEFAULT_CONFIGS,
    split_units: bool = True,
    extra_cuda_cflags: Sequence[str] = (),
    extended_mma_shapes: bool = False,
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
    extended_mma_shapes : keep FlashInfer's :data:`EXTENDED_MMA_FLAG` (default: dropped, same SASS).
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
    missing = [u for u in (*KEEP_UNITS, STOCK_RUNNER_UNIT) if u not in by_name]
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
    cuda_cflags = [f for f in (stock.extra_cuda_cflags or [])
                   if f and (extended_mma_shapes or f != EXTENDED_MMA_FLAG)]
    if fast_build:
        cflags.append("-DFAST_BUILD")
        cuda_cflags.append("-DFAST_BUILD")
    cuda_cflags += list(extra_cuda_cflags)
    ldflags = list(stock.extra_ldflags or [])

    source_names = [*KEEP_UNITS, RUNNER_UNIT, UNDEFINED_STUBS_UNIT]
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

    # 2. the W4A16 part of the stock runner-instantiation unit
    runner = src / RUNNER_UNIT
    stock_runner = by_name[STOCK_RUNNER_UNIT]
    _write_if_different(runner, runner_unit_text(stock_runner.read_text(), stock_runner.parent))

    # 3. heuristic: stock + FAST_BUILD, or a patched copy returning our list
    kept: List[Path] = []
    for name in KEEP_UNITS:
        if name == "cutlass_heuristic.cpp" and not fast_build:
            patched = src / "cutlass_heuristic.cpp"
            _write_if_different(patched, _patched_heuristic_text(by_name[name].read_text(), candidates))
            kept.append(patched)
        else:
            kept.append(by_name[name])

    # 4. throwing definitions of what the others reference and none defines: written after they are
    #    compiled (symbols.py); a placeholder until then. Longest compile first (ninja starts ready units
    #    in file order, also >= 1.12 when critical paths tie): the launchers (~50 CPU-s each), the runner
    #    copy (~42), the kept units (KEEP_UNITS is ordered), the stubs last.
    stubs = src / UNDEFINED_STUBS_UNIT
    if not stubs.exists():
        _write_if_different(stubs, "// filled in by mxfp4lab.flashinfer_build after the other objects\n")
    sources: List[Path] = [*gen_units, runner, *kept, stubs]

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
        "stubbed_configs": len(stub_ops),  # launchers left out: throwing stubs (symbols.py)
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
    srcs = [cmds[n]["file"] for n in need] + [str(CSRC / "heuristic_probe.cpp")]
    cuda_home = Path(_nvcc_path()).parent.parent
    cmd = [argv[0], *flags, *srcs, "-o", str(exe), f"-L{cuda_home}/lib64", "-lcudart", "-ldl", "-lpthread"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("heuristic probe failed to compile:\n" + r.stderr[-4000:])
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
    return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]



def _run_build(spec, *, jobs: Optional[int], verbose: bool) -> None:
    """The ninja run (:func:`.make.run_build`); the JitSpec's ``build`` and :func:`.install.build` call it."""
    from .make import run_build

    run_build(spec, jobs=jobs, verbose=verbose)
