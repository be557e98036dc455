"""Import only the parts of FlashInfer the W4A16 MoE call needs, and the rest when it is first used.

``import flashinfer.fused_moe.core`` first executes ``flashinfer/__init__.py``, which imports every
FlashInfer feature (attention, GEMMs, the CuTe-DSL kernels through ``nvidia-cutlass-dsl``, ...): about as
long as ``import torch`` again, for a call that needs ``fused_moe.core``, ``autotuner`` and ``jit``.

:func:`import_lean` installs, before FlashInfer is imported, a finder that loads every ``flashinfer``
*package* as a lazy package: its ``__path__`` is set (so submodules import normally) but its
``__init__.py`` runs only when a name the package itself defines is asked for (``flashinfer.__version__``,
``flashinfer.fused_moe.cutlass_fused_moe``, ``from flashinfer.quantization import fp4_quantize``).
Plain modules load as usual. After a package completes it is exactly the package Python would have
built: the same ``__init__`` ran in the same namespace, later than it would have.

A process that imported FlashInfer before is left alone (nothing lean to do). Standard library only.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import time
import types
import warnings
from pathlib import Path
from typing import Dict, Sequence

ROOT = "flashinfer"
#: What ``cutlass_fused_moe`` with a restricted build needs (its own imports follow from these).
W4A16_MODULES = ("flashinfer.fused_moe.core", "flashinfer.fused_moe.utils", "flashinfer.autotuner.autotuner")

_LOCK = threading.RLock()


class _LazyPackage(types.ModuleType):
    """A package whose ``__init__.py`` runs on the first lookup of a name it does not have yet."""

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__") and name not in ("__version__", "__all__"):
            raise AttributeError(name)
        if _is_submodule(self, name):  # ``from . import env``: the submodule, not the whole package
            return importlib.import_module(f"{self.__name__}.{name}")
        complete(self)
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None


def _is_submodule(package: types.ModuleType, name: str) -> bool:
    for d in package.__dict__.get("__path__", ()):
        base = Path(d) / name
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def complete(module: types.ModuleType) -> types.ModuleType:
    """Run a lazy package's own ``__init__.py`` in its namespace (once); other modules are returned as is."""
    with _LOCK:
        spec = module.__dict__.get("__spec__")
        if not isinstance(module, _LazyPackage) or module.__dict__.get("_mxfp4lab_completed"):
            return module
        module.__dict__["_mxfp4lab_completed"] = True
        loader = importlib.machinery.SourceFileLoader(module.__name__, spec.origin)
        code = loader.get_code(module.__name__)
        # the package's own __init__, in its own namespace, as the import system would have run it
        exec(code, module.__dict__)  # noqa: S102
        return module


class _LazyPackageLoader(importlib.abc.Loader):
    def __init__(self, real_spec: importlib.machinery.ModuleSpec):
        self.real_spec = real_spec

    def create_module(self, spec):
        return _LazyPackage(spec.name)

    def exec_module(self, module) -> None:
        # what the import system sets on a package, without running its __init__.py
        module.__file__ = self.real_spec.origin
        module.__path__ = list(self.real_spec.submodule_search_locations or [])
        module.__dict__["_mxfp4lab_lazy_since"] = time.time()


class _LazyPackageFinder(importlib.abc.MetaPathFinder):
    """Finds ``flashinfer`` packages through the normal path finder and hands them a lazy loader."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != ROOT and not fullname.startswith(ROOT + "."):
            return None
        real = importlib.machinery.PathFinder.find_spec(fullname, path)
        if real is None or real.submodule_search_locations is None or not (real.origin or "").endswith(".py"):
            return None  # a plain module (or a namespace package): the normal import
        spec = importlib.util.spec_from_loader(
            fullname, _LazyPackageLoader(real), origin=real.origin, is_package=True
        )
        spec.submodule_search_locations = real.submodule_search_locations
        return spec


_FINDER = _LazyPackageFinder()


def enabled() -> bool:
    """True while the lazy finder is installed."""
    return _FINDER in sys.meta_path


def import_lean(modules: Sequence[str] = W4A16_MODULES) -> Dict[str, types.ModuleType]:
    """Import ``modules`` with lazy FlashInfer packages (module docstring) and return them by name.

    If ``flashinfer`` is already imported (fully), the modules are imported normally. The finder stays
    installed for the process: later FlashInfer packages load lazily too (and complete on first use).
    If the lean import fails (a FlashInfer whose modules need their packages' ``__init__`` first), the
    partly imported FlashInfer modules are dropped, FlashInfer is imported whole, and a warning says so.
    """
    with _LOCK:
        fresh = ROOT not in sys.modules
        if fresh and _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)
        try:
            return {m: importlib.import_module(m) for m in modules}
        except Exception as exc:  # noqa: BLE001 - fall back to the plain import, loudly
            if not fresh:
                raise
            disable()
            for name in [n for n in sys.modules if n == ROOT or n.startswith(ROOT + ".")]:
                del sys.modules[name]
            warnings.warn(
                f"lean FlashInfer import failed ({type(exc).__name__}: {exc}); importing FlashInfer whole",
                RuntimeWarning,
                stacklevel=2,
            )
            importlib.import_module(ROOT)
            return {m: importlib.import_module(m) for m in modules}


def disable() -> None:
    """Remove the finder (packages loaded lazily so far stay lazy and still complete on first use)."""
    with _LOCK:
        if _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
