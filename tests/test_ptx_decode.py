"""The register decode's PTX (decode path 2 of the Triton MoE kernels), run through a CPU emulator of
its instructions (tests/ptx_emu.py) on every (weight byte, scale byte) pair, against
:func:`mxfp4lab.formats.dequantize_mxfp4` rounded to bf16: bit-identical for scale bytes 1..254.
What the CPU cannot check -- Triton's operand packing for ``pack=4`` -- the GPU check does
(``scripts/gpu/triton_check.py check`` runs every tile of the table)."""
import numpy as np
import torch

from mxfp4lab.formats import dequantize_mxfp4
from mxfp4lab.kernels.triton_moe import E2M1X8_BF16_PTX
from ptx_emu import run


def _expected_bf16_bits(byte, scale, high: bool):
    codes = torch.as_tensor((byte >> 4) if high else (byte & 15), dtype=torch.uint8)
    # one MX block per element: the code in the low nibble of a 16-byte row, scales per row
    packed = torch.zeros(codes.numel(), 16, dtype=torch.uint8)
    packed[:, 0] = codes
    deq = dequantize_mxfp4(packed, torch.as_tensor(scale, dtype=torch.uint8).reshape(-1, 1),
                           dtype=torch.float32)[:, 0]
    return deq.to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint32) & 0xFFFF


def test_every_byte_and_scale_decodes_exactly():
    b, s = np.meshgrid(np.arange(256, dtype=np.uint32), np.arange(1, 255, dtype=np.uint32), indexing="ij")
    b, s = b.reshape(-1), s.reshape(-1)
    n = b.size
    # four elements per word: j = 0..3 take the (byte, scale) pairs of four rotations of the list
    bj = [np.roll(b, 97 * j) for j in range(4)]
    sj = [np.roll(s, 31 * j) for j in range(4)]
    w = bj[0] | (bj[1] << 8) | (bj[2] << 16) | (bj[3] << 24)
    sc = sj[0] | (sj[1] << 8) | (sj[2] << 16) | (sj[3] << 24)
    r = run(E2M1X8_BF16_PTX, {"$4": w, "$5": sc}, n)
    for out, pair, high in (("$0", (0, 1), False), ("$1", (2, 3), False), ("$2", (0, 1), True), ("$3", (2, 3), True)):
        for half, j in enumerate(pair):
            got = (r[out] >> (16 * half)) & 0xFFFF
            want = _expected_bf16_bits(bj[j], sj[j], high)
            bad = np.nonzero(got != want)[0]
            assert bad.size == 0, (f"{out} element {j} ({'odd' if high else 'even'} k): byte {bj[j][bad[0]]:#04x} "
                                   f"scale {sj[j][bad[0]]}: got {got[bad[0]]:#06x} want {want[bad[0]]:#06x}")


def test_scale_byte_zero_decodes_to_zero_and_the_check_has_teeth():
    w = np.array([0x7F7F7F7F], dtype=np.uint32)
    r = run(E2M1X8_BF16_PTX, {"$4": w, "$5": np.array([0], dtype=np.uint32)}, 1)
    assert all(int(r[k][0]) & 0x7FFF7FFF == 0 for k in ("$0", "$1", "$2", "$3"))  # documented: 2^-127 -> 0
    broken = E2M1X8_BF16_PTX.replace("0x4342", "0x4340", 1)  # one wrong prmt selector
    r = run(broken, {"$4": np.array([0x12345678], dtype=np.uint32), "$5": np.array([0x7F7F7F7F], dtype=np.uint32)}, 1)
    good = run(E2M1X8_BF16_PTX, {"$4": np.array([0x12345678], dtype=np.uint32),
                                 "$5": np.array([0x7F7F7F7F], dtype=np.uint32)}, 1)
    assert int(r["$1"][0]) != int(good["$1"][0])
