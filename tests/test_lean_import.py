"""The lean FlashInfer import (mxfp4lab.flashinfer_build.lean_import), in fresh interpreters: the W4A16
modules load without FlashInfer's other features, the hook into FlashInfer still works, and every lazily
loaded package completes to the package a plain import builds (CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flashinfer")
REPO = Path(__file__).resolve().parents[1]

LEAN = r"""
import json, os, sys
from mxfp4lab.flashinfer_build.install import flashinfer_core
from mxfp4lab import flashinfer_build as B
core = flashinfer_core()
out = {"dsl_loaded": "cutlass" in sys.modules,
       "lazy_root": type(sys.modules["flashinfer"]).__name__,
       "n_flashinfer": sum(m.startswith("flashinfer") for m in sys.modules)}
os.environ["MXFP4LAB_CACHE"] = sys.argv[1]
spec = B.install(configs="minimal")
out["hooked"] = core.gen_cutlass_fused_moe_sm90_module() is spec
from flashinfer.fused_moe.utils import map_to_hybrid_bucket
out["bucket_300"] = map_to_hybrid_bucket(300, 8192)
import flashinfer
out["version"] = flashinfer.__version__          # completes flashinfer/__init__.py
from flashinfer.fused_moe import cutlass_fused_moe  # completes flashinfer/fused_moe/__init__.py
out["same_fn"] = cutlass_fused_moe is core.cutlass_fused_moe
out["autotune_v2"] = callable(flashinfer.autotune_v2)
out["dsl_after"] = "cutlass" in sys.modules
print("@@" + json.dumps(out))
"""
FULL = r"""
import json, sys
import flashinfer
from flashinfer.fused_moe import cutlass_fused_moe
print("@@" + json.dumps({"version": flashinfer.__version__,
                         "modules": sorted(m for m in sys.modules if m.startswith("flashinfer"))}))
"""


def _run(code: str, *args: str, env=None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=900, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")][-1]
    return json.loads(line[2:])


def test_lean_import_loads_less_and_completes(tmp_path):
    lean = _run(LEAN, str(tmp_path))
    full = _run(FULL)
    assert lean["lazy_root"] == "_LazyPackage"
    assert not lean["dsl_loaded"], "nvidia-cutlass-dsl is not needed for the W4A16 call"
    assert lean["n_flashinfer"] < len(full["modules"]) / 2
    assert lean["hooked"] and lean["bucket_300"] == 512
    assert lean["version"] == full["version"] and lean["same_fn"] and lean["autotune_v2"]


@pytest.mark.slow
def test_full_mode_is_the_plain_import(tmp_path):
    import os

    env = {**os.environ, "MXFP4LAB_FLASHINFER_IMPORT": "full"}
    got = _run(LEAN, str(tmp_path), env=env)
    assert got["lazy_root"] == "module" and got["hooked"] and got["same_fn"]
