import importlib.util
from pathlib import Path

import pytest
import torch

from mxfp4lab import checkpoints as ck
from mxfp4lab import models
from mxfp4lab.synthetic import write_synthetic

# Scaled-down layers: H not a multiple of 128 (exercises padding), I/tp a multiple of 32 for tp in {2, 3}.
GPT_OSS_SMALL = models.GPT_OSS_20B.scaled(hidden=224, intermediate=192, experts=6, top_k=2)
DSV4_SMALL = models.DSV4_FLASH.scaled(hidden=160, intermediate=192, experts=6, top_k=3)


@pytest.fixture(scope="session", params=["gpt_oss", "dsv4"])
def small_layer(request, tmp_path_factory):
    """(config, experts read back from a synthetic checkpoint in the real layout)."""
    cfg = GPT_OSS_SMALL if request.param == "gpt_oss" else DSV4_SMALL
    d = tmp_path_factory.mktemp(request.param)
    write_synthetic(d, cfg, scale_rule="ocp", layers=(4,), seed=7)
    c = ck.open_checkpoint(d)
    reader = ck.read_gpt_oss_layer if request.param == "gpt_oss" else ck.read_dsv4_layer
    return cfg, reader(c, 4, cfg)


def rand_u8(*shape, seed=0, lo=0, hi=256):
    """Seeded uniform uint8 in [lo, hi) (packed FP4 bytes, E8M0 scale bytes, 4-bit codes with hi=16)."""
    return torch.randint(lo, hi, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def tokens(cfg, m=24, seed=0):
    from mxfp4lab.reference import route

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, cfg.hidden_size, generator=g).to(torch.bfloat16)
    logits = torch.randn(m, cfg.num_experts, generator=g)
    ids, w = route(logits, cfg)
    return x, ids, w


def load_script(relpath: str):
    """A script of the repository (e.g. ``scripts/gpu/check_peers.py``) imported as a module, for its CPU-side logic."""
    path = Path(__file__).resolve().parents[1] / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
