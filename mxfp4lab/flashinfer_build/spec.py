"""The restricted ``fused_moe_90`` JitSpec (:func:`w4a16_jit_spec`), its ninja build with the link-level
R-AGREE check, and the host-only heuristic probe (:func:`heuristic_candidates`).

Longer than most modules (about 370 lines) because the JitSpec subclass, its source assembly and its
ninja run are one unit: each relies on the relocated build directory the other two set up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from .cache import cache_key, cache_root
from .configs import DEFAULT_CONFIGS, MixedConfig, compiled_configs, resolve_configs
from .sources import KEEP_UNITS, _patched_heuristic_text, _stub_text, _write_if_different
from .toolchain import (
    _CUTLASS_KERNELS,
    _MIXED_LAUNCHER_INL,
    ARCH,
    MODULE_NAME,
    _bf16_fp4_operations,
    _csrc_dir,
    _flashinfer_version,
    _ninja_bin,
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
    srcs = [cmds[n]["file"] for n in need] + [str(CSRC / "heuristic_probe.cpp")]
    cuda_home = Path(_nvcc_path()).parent.parent
    cmd = [argv[0], *flags, *srcs, "-o", str(exe), f"-L{cuda_home}/lib64", "-lcudart", "-ldl", "-lpthread"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("heuristic probe failed to compile:\n" + r.stderr[-4000:])
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
    return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]



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



def _run_build(spec, *, jobs: Optional[int], verbose: bool) -> None:
    root = spec.root
    root.mkdir(parents=True, exist_ok=True)
    spec.write_ninja()
    jobs = jobs or int(os.environ.get("MAX_JOBS", "0") or 0) or (os.cpu_count() or 1)
    cmd = [_ninja_bin(), "-C", str(root), "-f", str(spec.ninja_path), "-j", str(jobs)]
    t0 = time.time()
    if verbose:
        print(f"[mxfp4lab build] {len(spec.sources)} units, -j{jobs}, in {root}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: List[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line])[-200:]
        if verbose:
            m = re.match(r"\[(\d+)/(\d+)\]", line)
            if m:
                print(f"[mxfp4lab build] {time.time() - t0:7.1f}s {line.rstrip()[:160]}", flush=True)
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
        print(f"[mxfp4lab build] done in {wall:.1f}s -> {spec.jit_library_path}", flush=True)

