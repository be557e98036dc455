"""Link-level rule of a restricted build: no ``tensorrt_llm`` symbol is left undefined.

The kept stock units reference far more than a W4A16 build compiles: the dispatch switch references all
184 bf16 x FP4 launchers, the binding constructs a runner for every dtype pair (its vtables point at
their ``runMoe`` / ``getWorkspaceSize``), and those runners call GEMM runners of other dtype pairs.
tvm-ffi loads the library RTLD_LAZY: an undefined function that is only called aborts the whole
process at its first call; one that a vtable points at fails the load.

So after every object is compiled, :func:`missing_functions` lists the ``tensorrt_llm`` functions some
object references and no object defines, and :func:`stub_source` writes one throwing definition per
symbol, under its exact mangled name (``__asm__`` label: no signature, header or template needed), into
``undefined_stubs.cpp``. Calling any of them raises ``std::runtime_error`` naming the function (for a
mixed-input launcher: its config label), which tvm-ffi turns into a Python error and FlashInfer's
autotuner skips. An undefined *data* symbol cannot be stubbed: it raises at build time instead.
:func:`check_launcher_symbols` and :func:`undefined_in_library` check the result. Needs binutils
(``nm``, ``c++filt``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .configs import MixedConfig

#: Mangled-name prefixes of data: vtable, typeinfo (+ name), guard variable, TLS init / wrapper.
_DATA_PREFIXES = ("_ZTV", "_ZTI", "_ZTS", "_ZGV", "_ZTH", "_ZTW")
_LAUNCHER_SYM = "sm90_generic_mixed_moe"


def _nm(obj: Path) -> Tuple[Set[str], Set[str]]:
    """(defined, undefined) symbol names of one object (``nm -P``: name, type, ...)."""
    out = subprocess.run(
        ["nm", "-P", "--no-sort", str(obj)], capture_output=True, text=True, check=True
    ).stdout
    defined, undefined = set(), set()
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) < 2:
            continue
        (undefined if parts[1] in ("U", "w", "v") else defined).add(parts[0])
    return defined, undefined


def scan(objects: Iterable[Path]) -> Tuple[Set[str], Dict[str, Set[str]]]:
    """All defined symbols, and undefined symbol -> the objects referencing it."""
    defined: Set[str] = set()
    undefined: Dict[str, Set[str]] = {}
    for obj in objects:
        d, u = _nm(Path(obj))
        defined |= d
        for s in u:
            undefined.setdefault(s, set()).add(Path(obj).name)
    return defined, undefined


def demangle(symbols: Sequence[str]) -> List[str]:
    """``c++filt`` over many names at once (one per line, order kept)."""
    if not symbols:
        return []
    out = subprocess.run(
        ["c++filt"], input="\n".join(symbols) + "\n", capture_output=True, text=True, check=True
    )
    names = out.stdout.splitlines()
    if len(names) != len(symbols):
        raise RuntimeError(f"c++filt returned {len(names)} names for {len(symbols)} symbols")
    return names


def _is_data(mangled: str, demangled: str) -> bool:
    """A symbol no function can stand in for: the data prefixes, or no parameter list once demangled."""
    return mangled.startswith(_DATA_PREFIXES) or "(" not in demangled


def missing_functions(objects: Iterable[Path]) -> List[Tuple[str, str]]:
    """``(mangled, demangled)`` of every ``tensorrt_llm`` function referenced and not defined, sorted.

    Raises ``RuntimeError`` when a ``tensorrt_llm`` DATA symbol (a variable, a vtable, a typeinfo) is
    referenced and not defined: no throwing definition can stand in for data.
    """
    defined, undefined = scan(objects)
    missing = sorted(s for s in undefined if s not in defined and "tensorrt_llm" in s)
    names = demangle(missing)
    data = [(m, n, sorted(undefined[m])) for m, n in zip(missing, names, strict=True) if _is_data(m, n)]
    if data:
        raise RuntimeError(
            f"{len(data)} tensorrt_llm data symbols are referenced but defined by no object (a stub can only "
            "stand in for a function; keep the unit that defines them): "
            + "; ".join(f"{n} (in {', '.join(objs)})" for _, n, objs in data[:5])
        )
    return list(zip(missing, names, strict=True))


def launcher_label(demangled: str) -> Optional[str]:
    """The :class:`MixedConfig` label of an ``sm90_generic_mixed_moe_gemm_kernelLauncher`` name, else None."""
    if _LAUNCHER_SYM not in demangled:
        return None
    nums = [int(x) for x in re.findall(r"cute::C<(\d+)>", demangled)]
    sched = "cooperative" if "Cooperative" in demangled else "pingpong" if "Pingpong" in demangled else None
    if len(nums) < 6 or sched is None:
        return None
    try:
        return MixedConfig(tuple(nums[:3]), tuple(nums[3:6]), sched).label
    except ValueError:
        return None


def _c_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stub_source(symbols: Sequence[Tuple[str, str]], set_name: str) -> str:
    """C++ defining one throwing function per ``(mangled, demangled)`` under its mangled name."""
    lines = [
        "// Generated by mxfp4lab.flashinfer_build after the other objects of this restricted build were",
        "// compiled: every tensorrt_llm function they reference and none of them defines, as a definition",
        "// that throws (tvm-ffi loads RTLD_LAZY: an undefined one would abort the process at its first",
        "// call).",
        "#include <stdexcept>",
        "#include <string>",
        "namespace {",
        "[[noreturn]] __attribute__((noinline, cold)) void mxfp4lab_not_compiled(const char* what) {",
        '  throw std::runtime_error(std::string("mxfp4lab: ") + what);',
        "}",
        "}  // namespace",
    ]
    for i, (mangled, demangled) in enumerate(symbols):
        label = launcher_label(demangled)
        if label is not None:
            what = (
                f"SM90 mixed-input config {label} was not compiled into this restricted build (configs="
                f"{set_name}); rebuild with mxfp4lab.flashinfer_build.build(configs=...) including it"
            )
        else:
            what = (
                f"{demangled[:400]} is not compiled into this restricted W4A16 build (configs={set_name}): "
                "only bf16 activations x MXFP4 weights are"
            )
        lines.append(f'extern "C++" [[noreturn]] void mxfp4lab_stub_{i}() __asm__({_c_string(mangled)});')
        lines.append(f"void mxfp4lab_stub_{i}() {{ mxfp4lab_not_compiled({_c_string(what)}); }}")
    return "\n".join(lines) + "\n"


def check_launcher_symbols(objects: Iterable[Path]) -> Dict[str, int]:
    """R-AGREE at link level: every SM90 mixed launcher some object references (the dispatch switch
    references all 184 bf16 x FP4 ones) is defined by some object (a compiled instantiation or a
    throwing stub). Raises ``RuntimeError`` listing the missing ones; returns counts."""
    defined, undefined = scan(objects)
    ref = {s for s in undefined if _LAUNCHER_SYM in s}
    have = {s for s in defined if _LAUNCHER_SYM in s}
    missing = sorted(ref - have)
    if missing:
        raise RuntimeError(
            f"R-AGREE: {len(missing)} SM90 mixed launchers are referenced but neither compiled nor "
            "stubbed (would abort the process at first call under RTLD_LAZY): " + ", ".join(missing[:5])
        )
    return {"launchers_referenced": len(ref), "launchers_defined": len(have)}


def undefined_in_library(library: Path) -> List[str]:
    """The ``tensorrt_llm`` symbols the linked library still needs from elsewhere (must be none)."""
    out = subprocess.run(
        ["nm", "-D", "--undefined-only", "-P", str(library)], capture_output=True, text=True, check=True
    ).stdout
    return sorted(ln.split()[0] for ln in out.splitlines() if ln.strip() and "tensorrt_llm" in ln.split()[0])
