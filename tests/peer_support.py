"""Shared by the peer backends' tests: small layers, and child processes that report JSON.

The Triton-interpreter and compile checks run in a child process (``TRITON_INTERPRET`` must be set before
``import triton``; the compile check swaps Triton's driver): the test file runs itself as a script, prints
one ``RESULTS <json>`` line, and the parent asserts on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def small_moe(base: str, dims: tuple, shard: tuple = (1, 0, 1, 0), seed: int = 0):
    """(config, LogicalMoE) of a random layer of model ``base`` scaled to ``dims`` = (hidden,
    intermediate, experts, top_k), for ``shard`` = (tp_size, tp_rank, ep_size, ep_rank), on the CPU."""
    from mxfp4lab import models
    from mxfp4lab.prepare import ShardSpec, prepare_from_experts
    from mxfp4lab.synthetic import random_layer

    h, i, e, k = dims
    cfg = models.get_model(base).scaled(hidden=h, intermediate=i, experts=e, top_k=k)
    tp, tr, ep, er = shard
    moe = prepare_from_experts(random_layer(cfg, device="cpu", seed=seed), config=cfg,
                               shard=ShardSpec(tp_size=tp, tp_rank=tr, ep_size=ep, ep_rank=er))
    return cfg, moe


def run_cases(cases: dict) -> dict:
    """``{name: thunk}`` -> ``{name: thunk() or {"error": traceback}}`` (one failing case spares the others)."""
    out = {}
    for name, thunk in cases.items():
        try:
            out[name] = thunk()
        except Exception:  # noqa: BLE001 - reported to the parent test
            out[name] = {"error": traceback.format_exc()[-3000:]}
    return out


def print_results(res: dict) -> None:
    print("RESULTS " + json.dumps(res), flush=True)


def run_child(test_file: str, *args: str, env: dict | None = None, timeout: int = 600) -> dict:
    """Run ``test_file`` as a script (``args``; ``env`` added to this environment, a value None removes the
    variable) with the repository and tests/ importable; -> its ``RESULTS`` JSON."""
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]))
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    p = subprocess.run([sys.executable, str(Path(test_file).resolve()), *args], env=e, capture_output=True,
                       check=False, text=True, timeout=timeout, cwd=str(ROOT))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert p.returncode == 0 and lines, f"child {Path(test_file).name} {args} failed (rc {p.returncode}):\n{p.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULTS "):])


def assert_same_logical(fields: dict, logical) -> None:
    """``fields`` (a layout inverse's dict of LogicalMoE fields) equals ``logical`` bit for bit."""
    import torch

    for name, t in fields.items():
        ref = getattr(logical, name)
        assert (t is None) == (ref is None), name
        assert t is None or torch.equal(t, ref), name
