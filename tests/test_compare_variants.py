"""CPU-side logic of scripts/gpu/compare_variants.py: where an output is off the reference, and its no-GPU exit."""

from __future__ import annotations

import pytest
import torch

from conftest import load_script


def _module():
    return load_script("scripts/gpu/compare_variants.py")


def test_locate_names_the_tokens_and_column_blocks_that_are_off():
    """A token whose outputs are wrong shows at its index and at its index mod 32, a wrong 64-column block at that
    block, a NaN as off and as NaN; a difference of a bf16 ulp is not off."""
    cv = _module()
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(64, 256, generator=g)
    out = ref.to(torch.bfloat16).float()  # a bf16 round: within a few ulps everywhere
    assert cv.locate(out, ref)["off_frac"] == 0.0
    out[:, 128:192] *= -1               # column block 2 wrong
    out[5] = ref[5] + 1.0               # token 5 wrong (everywhere)
    out[40, 0] = float("nan")
    got = cv.locate(out, ref)
    assert got["off_by_token"][5] == 1.0 and got["off_by_token"][6] < 0.3
    assert got["off_by_token_mod32"][5] > got["off_by_token_mod32"][6]
    assert got["off_by_block64"][2] > 0.9 and got["off_by_block64"][0] < 0.1 and got["nan_frac"] > 0
    assert len(got["off_by_token_mod32"]) == 32 and len(got["off_by_block64"]) == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_refuses_without_a_gpu(tmp_path):
    assert _module().main(["--out", str(tmp_path / "x.json")]) == 2
