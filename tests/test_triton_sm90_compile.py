"""The Triton MoE kernels compile for sm_90a on a CPU machine (no GPU), and the tuning table's tiles
do not spill registers there (``mxfp4lab.kernels.sass``: triton.compile for GPUTarget("cuda", 90) +
the cuobjdump Triton ships). This catches Hopper-only compile errors and register spills before any
device time is spent, and checks that the swap-AB tiles (dequant 3) keep wgmma's A operand in registers;
it says nothing about speed.

Register allocation, and so spilling, depends on the Triton release: these tiles are checked with the
Triton the GPU host runs (requirements/gpu.txt, which the lock holds and `make test` installs); with any
other release the module skips and says which one it needs."""
import importlib.metadata
import re
from pathlib import Path

import pytest

GPU_TXT = Path(__file__).resolve().parents[1] / "requirements/gpu.txt"
NEEDED = re.search(r"^triton==(\S+)$", GPU_TXT.read_text(), re.MULTILINE).group(1)


def _installed_triton():
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return None


pytestmark = pytest.mark.skipif(
    _installed_triton() != NEEDED,
    reason=f"needs triton {NEEDED}, the GPU host's (requirements/gpu.txt; `make test` installs it), "
           f"found {_installed_triton() or 'none'}")


def _tiles():
    from mxfp4lab.kernels.tiles import table_tiles

    return table_tiles()


@pytest.mark.parametrize("shape", ["gpt-oss-120b", "seed-bench"])
def test_table_tiles_compile_for_sm90_without_spills(shape):
    from mxfp4lab.kernels.sass import moe_kernel_reports
    from mxfp4lab.models import get_model

    cfg = get_model(shape)
    seen = 0
    for tile in _tiles():
        for r in moe_kernel_reports(cfg, tile):
            seen += 1
            assert r.stack_bytes == 0, f"{shape} {r.kernel} {tile}: {r.stack_bytes} B/thread of local memory (spills)"
            assert r.mma, f"{shape} {r.kernel} {tile}: no tensor-core instruction in the SASS"
            assert r.registers <= 255 and r.shared_bytes <= 227 * 1024  # sm_90 limits
            if tile.dequant == tile.dequant.SWAP_AB_PTX:  # swap AB: the point is wgmma reading the decoded weight (A) from registers
                assert r.hgmma and r.hgmma_reg_a == r.hgmma, f"{shape} {r.kernel} {tile}: {r.mma}, " \
                    f"{r.hgmma_reg_a}/{r.hgmma} HGMMA with A in registers"
    assert seen == 2 * len(_tiles())


def test_report_sees_a_spill():
    """The check above has teeth: a 4-warp BLOCK_M 32 fc1 (two fp32 accumulators) spills."""
    from mxfp4lab.kernels.sass import moe_kernel_reports
    from mxfp4lab.models import get_model

    fc1, _ = moe_kernel_reports(get_model("gpt-oss-120b"), (32, 64, 128, 64, 128, 4, 4, 0))
    assert fc1.stack_bytes > 0
