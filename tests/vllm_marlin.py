"""vLLM's Marlin layout functions as a test oracle, and the checked-in record of their outputs.

The record (``tests/data/marlin_vllm_record.safetensors`` + ``.json``) holds what vLLM's own pure-Python
functions return on fixed, seeded inputs: ``marlin_utils_test.get_weight_perm`` / ``marlin_weights``
(the reference of ``gptq_marlin_repack``), ``marlin_utils.marlin_permute_scales`` /
``marlin_permute_bias``, ``marlin_utils_fp4.mxfp4_marlin_process_scales`` and the ``scalar_type`` ids.
The CPU suite compares mxfp4lab's re-implementations with it bit-exactly, on any machine.

``scripts/record_marlin_reference.py`` writes it from the vLLM wheel that pyproject.toml's ``marlin``
extra pins, and checks it against that wheel (``--check``, run by the slow test). The functions are pulled out of the
wheel's source with ``ast`` and run with numpy/torch only (importing vLLM needs its CUDA extensions);
no vLLM code is kept in this repository, only the numbers.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests/data/marlin_vllm_record.safetensors"
RECORD_META = RECORD.with_suffix(".json")
UTILS = "vllm/model_executor/layers/quantization/utils"
SOURCES = [f"{UTILS}/marlin_utils.py", f"{UTILS}/marlin_utils_fp4.py", f"{UTILS}/marlin_utils_test.py",
           "vllm/scalar_type.py"]
FUNCTIONS = ("get_weight_perm", "marlin_permute_weights", "marlin_weights", "get_scale_perms",
             "marlin_permute_scales", "mxfp4_marlin_process_scales", "marlin_permute_bias")
REPACK_SHAPES = [(128, 64), (256, 128), (192, 256)]  # (N, K) of one expert's weight W[n, k]
SCALE_SHAPES = REPACK_SHAPES
REPACK_EXPERTS, SCALE_EXPERTS, BIAS_SHAPE = 2, 3, (4, 256)


# ------------------------------------------------------------------------------------------------
# inputs (seeded) and mxfp4lab's side
# ------------------------------------------------------------------------------------------------
def repack_codes(n: int, k: int) -> torch.Tensor:
    """4-bit codes W[e, n, k] (uint8 < 16), seed n + k."""
    g = torch.Generator().manual_seed(n + k)
    return torch.randint(0, 16, (REPACK_EXPERTS, n, k), dtype=torch.uint8, generator=g)


def scale_bytes(n: int, k: int) -> torch.Tensor:
    """E8M0 scale bytes S[e, n, k/32] in 0..254 (255 is NaN), seed n * k."""
    g = torch.Generator().manual_seed(n * k)
    return torch.randint(0, 255, (SCALE_EXPERTS, n, k // 32), dtype=torch.uint8, generator=g)


def bias_values() -> torch.Tensor:
    """bf16 biases B[e, n], seed 3."""
    return torch.randn(*BIAS_SHAPE, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)


def inputs() -> dict[str, torch.Tensor]:
    out = {f"repack_n{n}_k{k}": repack_codes(n, k) for n, k in REPACK_SHAPES}
    out |= {f"scales_n{n}_k{k}": scale_bytes(n, k) for n, k in SCALE_SHAPES}
    out["bias"] = bias_values()
    return out


def digest(t: torch.Tensor) -> str:
    """sha256 of dtype, shape and bytes: equal digests <=> torch.equal for tensors of one dtype."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# vLLM's side: functions read from a wheel (or its unzipped tree)
# ------------------------------------------------------------------------------------------------
class VllmSource:
    """The vLLM source files the record needs, from a ``.whl`` or an unzipped wheel directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"vLLM wheel or unzipped wheel not found: {self.path}")

    def read(self, rel: str) -> str:
        if self.path.is_dir():
            return (self.path / rel).read_text()
        with zipfile.ZipFile(self.path) as z:
            return z.read(rel).decode()

    def version(self) -> str:
        name = self.path.name if self.path.is_file() else next(self.path.glob("vllm-*.dist-info")).name
        m = re.match(r"vllm-([^-]+?)(?:\.dist-info)?(?:-|$)", name)
        if not m:
            raise ValueError(f"cannot read the vLLM version from {name}")
        return m.group(1)

    def functions(self) -> dict:
        """The named top-level functions, exec'd in one namespace with numpy/torch and two constants."""
        ns = {"torch": torch, "np": np, "numpy": np, "GPTQ_MARLIN_TILE": 16, "get_pack_factor": lambda b: 32 // b}
        found = set()
        for rel in SOURCES[:3]:
            for node in ast.parse(self.read(rel)).body:
                if isinstance(node, ast.FunctionDef) and node.name in FUNCTIONS:
                    exec(compile(ast.Module([node], []), rel, "exec"), ns)  # noqa: S102
                    found.add(node.name)
        missing = set(FUNCTIONS) - found
        if missing:
            raise ValueError(f"vLLM source {self.path} lacks {sorted(missing)}")
        return ns

    def scalar_type_ids(self) -> dict[str, int]:
        """``scalar_types.float4_e2m1f.id`` and ``.bfloat16.id`` from vllm/scalar_type.py (stdlib only)."""
        mod = types.ModuleType("_vllm_scalar_type")
        sys.modules[mod.__name__] = mod  # dataclasses look the module up while the class is built
        try:
            exec(compile(self.read("vllm/scalar_type.py"), "vllm/scalar_type.py", "exec"), mod.__dict__)  # noqa: S102
            return {"float4_e2m1f": mod.scalar_types.float4_e2m1f.id, "bfloat16": mod.scalar_types.bfloat16.id}
        finally:
            sys.modules.pop(mod.__name__, None)


def vllm_outputs(src: VllmSource) -> dict[str, torch.Tensor]:
    """vLLM's results on ``inputs()``, keyed as the record is (each stacked over experts)."""
    ns, x = src.functions(), inputs()
    perm = ns["get_weight_perm"](4)
    out = {"weight_perm": perm.long()}
    for n, k in REPACK_SHAPES:
        codes = x[f"repack_n{n}_k{k}"]
        # vLLM's reference for gptq_marlin_repack takes the unpacked codes as q_w[K, N] int32
        out[f"repack_n{n}_k{k}"] = torch.stack(
            [ns["marlin_weights"](c.T.contiguous().to(torch.int32), k, n, 4, perm) for c in codes])
    for n, k in SCALE_SHAPES:
        # vLLM's prepare_moe_mxfp4_layer_for_marlin: E8M0 -> bf16, then per expert permute + process
        sb = x[f"scales_n{n}_k{k}"].view(torch.float8_e8m0fnu).to(torch.bfloat16)
        per = []
        for s in sb:
            ms = ns["marlin_permute_scales"](s=s.T, size_k=k, size_n=n, group_size=32)
            done = ns["mxfp4_marlin_process_scales"](ms)
            if done.dtype != torch.float8_e8m0fnu:
                raise TypeError(f"mxfp4_marlin_process_scales returned {done.dtype}, expected float8_e8m0fnu")
            per.append(done.view(torch.uint8))
        out[f"scales_n{n}_k{k}"] = torch.stack(per)
    out["bias"] = torch.stack([ns["marlin_permute_bias"](b) for b in x["bias"]])
    return {key: t.contiguous() for key, t in out.items()}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_record(src: VllmSource) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of the record, re-derived from ``src``."""
    tensors = vllm_outputs(src)
    meta = {
        "vllm_version": src.version(),
        "wheel": src.path.name if src.path.is_file() else None,
        "wheel_sha256": sha256_file(src.path) if src.path.is_file() else None,
        "source_sha256": {rel: hashlib.sha256(src.read(rel).encode()).hexdigest() for rel in SOURCES},
        "functions": list(FUNCTIONS),
        "scalar_type_ids": src.scalar_type_ids(),
        "input_sha256": {key: digest(t) for key, t in inputs().items()},
        "output_sha256": {key: digest(t) for key, t in tensors.items()},
        "written_by": "python scripts/record_marlin_reference.py",
    }
    return tensors, meta


def write_record(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(RECORD))
    RECORD_META.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def read_record() -> tuple[dict[str, torch.Tensor], dict]:
    return load_file(str(RECORD)), json.loads(RECORD_META.read_text())


def compare_records(got: tuple[dict, dict], want: tuple[dict, dict]) -> list[str]:
    """Differences between two records (tensors bit-exact; metadata except the wheel's own name/hash)."""
    (gt, gm), (wt, wm) = got, want
    problems = [f"keys differ: {sorted(set(gt) ^ set(wt))}"] if set(gt) != set(wt) else []
    problems += [f"{key} differs" for key in sorted(set(gt) & set(wt))
                 if gt[key].dtype != wt[key].dtype or not torch.equal(gt[key], wt[key])]
    for field in ("vllm_version", "source_sha256", "scalar_type_ids", "input_sha256", "output_sha256"):
        if gm.get(field) != wm.get(field):
            problems.append(f"metadata {field}: {gm.get(field)} != {wm.get(field)}")
    return problems
