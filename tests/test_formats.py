"""MXFP4 numerics: every code, every scale byte, each scale rule, bad inputs."""

import math

import pytest
import torch

from mxfp4lab.formats import (
    E2M1_MAGNITUDES,
    E2M1_VALUES,
    MXFormatError,
    ScaleRule,
    decode_e2m1,
    decode_e8m0,
    dequantize_mxfp4,
    mx_block_error_bound,
    pack_fp4,
    quantize_mxfp4,
    unpack_fp4,
)

RULES = list(ScaleRule)


def test_e2m1_values_spec_table():
    assert E2M1_VALUES == (0, .5, 1, 1.5, 2, 3, 4, 6, -0.0, -.5, -1, -1.5, -2, -3, -4, -6)
    assert math.copysign(1.0, E2M1_VALUES[8]) == -1.0  # code 8 is -0


def test_every_code_decodes_from_its_bits():
    codes = torch.arange(16, dtype=torch.uint8)
    got = decode_e2m1(codes, torch.float64)
    for c in range(16):
        s, e, m = c >> 3, (c >> 1) & 3, c & 1
        # OCP 5.3.3: subnormal when e == 0: (-1)^s * 2^(1-bias) * (0 + m/2); else 2^(e-1) * (1 + m/2)
        val = (0.5 * m) if e == 0 else 2.0 ** (e - 1) * (1 + 0.5 * m)
        assert got[c].item() == (-val if s else val)
        assert math.copysign(1, got[c].item()) == (-1 if s else 1)


def test_all_scale_bytes_decode_exactly():
    b = torch.arange(255, dtype=torch.uint8)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        got = decode_e8m0(b, dtype).to(torch.float64)
        want = torch.tensor([math.ldexp(1.0, i - 127) for i in range(255)], dtype=torch.float64)
        assert torch.equal(got, want), dtype


def test_scale_byte_255_rejected():
    with pytest.raises(MXFormatError, match="255"):
        decode_e8m0(torch.tensor([3, 255], dtype=torch.uint8))
    packed = torch.zeros(2, 16, dtype=torch.uint8)
    scales = torch.tensor([[127], [255]], dtype=torch.uint8)
    with pytest.raises(MXFormatError, match=r"byte 255.*index \(1, 0\)"):
        dequantize_mxfp4(packed, scales)


def test_pack_unpack_every_byte():
    b = torch.arange(256, dtype=torch.uint8)
    codes = unpack_fp4(b)
    assert codes.shape == (512,)
    assert torch.equal(codes[0::2], b & 15) and torch.equal(codes[1::2], b >> 4)  # low nibble first
    assert torch.equal(pack_fp4(codes), b)


def test_dequantize_every_code_every_scale():
    # one row per scale byte, 32 codes cycling through all 16 values
    codes = (torch.arange(32) % 16).to(torch.uint8).expand(255, 32)
    packed = pack_fp4(codes.contiguous())
    scales = torch.arange(255, dtype=torch.uint8).unsqueeze(1)
    got = dequantize_mxfp4(packed, scales, torch.float64)
    want = torch.tensor(E2M1_VALUES, dtype=torch.float64)[codes.long()] * torch.tensor(
        [math.ldexp(1.0, i - 127) for i in range(255)], dtype=torch.float64
    ).unsqueeze(1)
    assert torch.equal(got, want)


@pytest.mark.parametrize("rule", RULES)
def test_k_not_multiple_of_32_rejected(rule):
    with pytest.raises(MXFormatError, match="multiple of 32"):
        quantize_mxfp4(torch.randn(4, 48), scale_rule=rule)


def test_scale_rule_is_required_and_validated():
    with pytest.raises(TypeError):
        quantize_mxfp4(torch.randn(32))  # no hidden default
    with pytest.raises(ValueError):
        quantize_mxfp4(torch.randn(32), scale_rule="nearest")


def test_nonfinite_rejected():
    x = torch.randn(2, 32)
    x[1, 3] = float("nan")
    with pytest.raises(MXFormatError, match="Inf or NaN"):
        quantize_mxfp4(x, scale_rule="ocp")


def _nearest_grid_ok(x, q, s, rounding_tie):
    """Each |x/s| rounds to a nearest E2M1 magnitude (or saturates); returns violations."""
    grid = torch.tensor(E2M1_MAGNITUDES, dtype=torch.float64)
    a = (x.double() / s).abs()
    d = (a.unsqueeze(-1) - grid).abs()
    best = d.min(-1).values
    got = (q.double() / s).abs()
    return ((got - a).abs() > best + 1e-12) & (a <= 6)


@pytest.mark.parametrize("rule", RULES)
def test_roundtrip_within_mx_bound_and_nearest(rule):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 256, generator=g) * torch.logspace(-30, 30, 64).unsqueeze(1)
    packed, scales = quantize_mxfp4(x, scale_rule=rule)
    assert packed.shape == (64, 128) and scales.shape == (64, 8)
    y = dequantize_mxfp4(packed, scales, torch.float64)
    blocks = x.double().reshape(64, 8, 32)
    amax = blocks.abs().amax(-1)
    err = (blocks - y.reshape(64, 8, 32)).abs().amax(-1)
    assert (err <= mx_block_error_bound(amax.float(), rule)).all()
    s = torch.ldexp(torch.ones(64, 8, dtype=torch.float64), scales.long() - 127).repeat_interleave(32, 1)
    assert not _nearest_grid_ok(x, y, s, None).any()
    if rule is not ScaleRule.OCP:  # these rules never clip the block maximum
        assert ((blocks.abs() / s.reshape(64, 8, 32)) <= 6).all()


def test_rule_exponents_differ_as_documented():
    # amax = 5: OCP floor(log2 5) - 2 = 0 -> byte 127; ceil(log2(5/6)) = 0 -> 127 for both others
    # amax = 7: OCP -> 127 (7 clips to 6); round_up/flashinfer -> ceil(log2(7/6)) = 1 -> 128
    x = torch.zeros(2, 32)
    x[0, 0], x[1, 0] = 5.0, 7.0
    _, s_ocp = quantize_mxfp4(x, scale_rule="ocp")
    _, s_up = quantize_mxfp4(x, scale_rule="round_up")
    _, s_fi = quantize_mxfp4(x, scale_rule="flashinfer")
    assert s_ocp[:, 0].tolist() == [127, 127]
    assert s_up[:, 0].tolist() == [127, 128]
    assert s_fi[:, 0].tolist() == [127, 128]


@pytest.mark.parametrize(
    "rule,expected",
    [  # ties at 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0 (block max 6 keeps scale 2^0 under all rules)
        ("ocp", [0, 2, 2, 4, 4, 6, 6]),  # nearest-even: codes with m0 = 0
        ("round_up", [1, 2, 3, 4, 5, 6, 7]),  # ties away from zero
        ("flashinfer", [0, 1, 2, 3, 4, 5, 6]),  # ties down
    ],
)
def test_tie_rounding_per_rule(rule, expected):
    x = torch.zeros(32)
    x[0] = 6.0
    ties = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
    x[1:8] = torch.tensor(ties)
    packed, scales = quantize_mxfp4(x, scale_rule=rule)
    assert scales.tolist() == [127]
    assert unpack_fp4(packed)[1:8].tolist() == expected


@pytest.mark.parametrize("rule", RULES)
def test_zero_block_and_signs(rule):
    x = torch.zeros(2, 32)
    x[1] = -3.0
    packed, scales = quantize_mxfp4(x, scale_rule=rule)
    assert scales[0].item() == 0  # all-zero block: minimum scale, codes 0
    assert unpack_fp4(packed)[0].eq(0).all()
    y = dequantize_mxfp4(packed, scales)
    assert torch.equal(y[1], torch.full((32,), -3.0))


@pytest.mark.parametrize("rule", RULES)
def test_subnormal_and_huge_ranges(rule):
    tiny = torch.full((32,), 2.0**-140)  # fp32 subnormal inputs
    p, s = quantize_mxfp4(tiny, scale_rule=rule)
    y = dequantize_mxfp4(p, s, torch.float64)
    # scale clamps at 2^-127 (triton's bit trick on the fp32-subnormal amax/6 gives byte 1,
    # 2^-126): 2^-140 / 2^-127 = 2^-13 rounds to 0 on the E2M1 grid (< 0.25)
    assert s.item() == (1 if rule is ScaleRule.ROUND_UP else 0)
    assert y.abs().max().item() == 0.0
    big = torch.full((32,), 3.0e38)
    p, s = quantize_mxfp4(big, scale_rule=rule)
    assert s.item() <= 254
    y = dequantize_mxfp4(p, s, torch.float64)
    assert ((y - 3.0e38).abs() / 3.0e38 < 0.34).all()  # within one E2M1 step at the top binade


def test_flashinfer_rule_matches_flashinfer_quantizer():
    """Bit-exact against FlashInfer's torch quantizer (the SM90 W4A16 preparation path)."""
    from flashinfer.fused_moe.prepare import _quantize_mxfp4_linear

    g = torch.Generator().manual_seed(1)
    x = (torch.randn(96, 512, generator=g) * torch.rand(96, 1, generator=g) * 10).to(torch.bfloat16)
    x[3, :64] = 0  # zero blocks
    x[4, 5] = 2.5  # exact ties after scaling are common with bf16 inputs
    p, s = quantize_mxfp4(x, scale_rule="flashinfer")
    p_fi, s_fi = _quantize_mxfp4_linear(x)
    assert torch.equal(s, s_fi)
    assert torch.equal(p, p_fi)
