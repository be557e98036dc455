"""Bad inputs of the MXFP4 numerics (mxfp4lab.formats): quantize_mxfp4, dequantize_mxfp4, pack_fp4,
unpack_fp4, decode_e2m1; and the scale rules near the fp32 / bf16 maximum (finite in, finite out)."""

import pytest
import torch
from bad_inputs import Bad, check, ids

from mxfp4lab.formats import (
    E2M1_MAX,
    MAX_QUANT_EXP,
    MXFormatError,
    ScaleRule,
    decode_e2m1,
    dequantize_mxfp4,
    mx_block_error_bound,
    pack_fp4,
    quantize_mxfp4,
    unpack_fp4,
)
from mxfp4lab.validate import InputError

X = torch.randn(4, 64)
P, S = quantize_mxfp4(X, scale_rule="ocp")
NAN = X.clone()
NAN[2, 5] = float("nan")

QUANTIZE = [
    Bad("not a tensor", lambda: quantize_mxfp4([1.0] * 32, scale_rule="ocp"), MXFormatError, ["x", "floating"]),
    Bad("integer tensor", lambda: quantize_mxfp4(torch.ones(32, dtype=torch.int32), scale_rule="ocp"),
        MXFormatError, ["floating"]),
    Bad("0-dim", lambda: quantize_mxfp4(torch.tensor(1.0), scale_rule="ocp"), MXFormatError, ["one dimension"]),
    Bad("K % 32", lambda: quantize_mxfp4(torch.ones(2, 48), scale_rule="ocp", name="w"), MXFormatError,
        ["w.shape[-1] (K) = 48", "multiple of 32"]),
    Bad("NaN names index", lambda: quantize_mxfp4(NAN, scale_rule="ocp", name="w_up"), MXFormatError,
        ["w_up", "Inf or NaN", "(2, 5)"]),
    Bad("fp64 beyond fp32", lambda: quantize_mxfp4(torch.full((1, 32), 1e300, dtype=torch.float64),
                                                   scale_rule="ocp"), MXFormatError, ["beyond the fp32 range"]),
    Bad("unknown rule", lambda: quantize_mxfp4(X, scale_rule="nearest"), ValueError, ["nearest"]),
]

DEQUANTIZE = [
    Bad("packed dtype", lambda: dequantize_mxfp4(P.to(torch.int16), S), MXFormatError, ["packed", "uint8"]),
    Bad("scales dtype", lambda: dequantize_mxfp4(P, S.float()), MXFormatError, ["scales", "uint8"]),
    Bad("0-dim packed", lambda: dequantize_mxfp4(torch.tensor(3, dtype=torch.uint8), S), MXFormatError,
        ["packed", "one dimension"]),
    Bad("scales shape", lambda: dequantize_mxfp4(P, S[:, :1]), MXFormatError, ["scales shape", "expected (4, 2)"]),
    Bad("byte 255", lambda: dequantize_mxfp4(P, torch.where(torch.arange(2) == 1, 255, S).to(torch.uint8)),
        MXFormatError, ["byte 255", "index (0, 1)"]),
    Bad("K % 32", lambda: dequantize_mxfp4(P[:, :8], S[:, :1]), MXFormatError, ["multiple of 32"]),
]

CODES = [
    Bad("pack code 17 spills", lambda: pack_fp4(torch.tensor([17, 1], dtype=torch.uint8)), MXFormatError,
        ["0..15", "got 17", "index (0,)", "spill"]),
    Bad("pack code 255", lambda: pack_fp4(torch.tensor([[1, 2], [3, 255]], dtype=torch.uint8)), MXFormatError,
        ["got 255", "index (1, 1)"]),
    Bad("pack odd K", lambda: pack_fp4(torch.zeros(3, dtype=torch.uint8)), MXFormatError, ["multiple of 2"]),
    Bad("pack 0-dim", lambda: pack_fp4(torch.tensor(1, dtype=torch.uint8)), MXFormatError, ["one dimension"]),
    Bad("pack dtype", lambda: pack_fp4(torch.zeros(2, dtype=torch.int64)), MXFormatError, ["codes", "uint8"]),
    Bad("unpack 0-dim", lambda: unpack_fp4(torch.tensor(1, dtype=torch.uint8)), MXFormatError, ["one dimension"]),
    Bad("decode code 16", lambda: decode_e2m1(torch.tensor([3, 16], dtype=torch.uint8)), MXFormatError,
        ["0..15", "got 16", "index (1,)"]),
]


@pytest.mark.parametrize("row", QUANTIZE + DEQUANTIZE + CODES, ids=ids)
def test_bad_input(row):
    err = check(row)
    assert isinstance(err, ValueError)


def test_format_errors_are_input_errors():
    assert issubclass(MXFormatError, InputError) and issubclass(InputError, ValueError)


@pytest.mark.parametrize("rule", list(ScaleRule))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_near_the_maximum_every_rule_saturates_instead_of_inf(rule, dtype):
    """Finite inputs up to the dtype's maximum quantize to finite values (the round-up rules once chose
    exponent 126/127, whose code 6.0 decodes to inf): capped at MAX_QUANT_EXP, the block saturates."""
    top = torch.finfo(dtype).max
    x = torch.tensor([[top, -top, top / 2, 1.0] * 8, [6 * 2.0**125] * 32, [6.5 * 2.0**125] * 32]).to(dtype)
    packed, scales = quantize_mxfp4(x, scale_rule=rule)
    y = dequantize_mxfp4(packed, scales, dtype)
    assert torch.isfinite(y).all()
    assert int(scales.max()) <= 127 + MAX_QUANT_EXP
    assert y[0, 0].item() == E2M1_MAX * 2.0**MAX_QUANT_EXP  # saturated, sign kept
    assert y[0, 1].item() == -E2M1_MAX * 2.0**MAX_QUANT_EXP
    err = (y.double() - x.double()).abs().reshape(3, -1, 32).amax(-1)
    assert (err <= mx_block_error_bound(x.float().abs().reshape(3, -1, 32).amax(-1), rule)).all()


def test_quantize_empty_rows_is_handled():
    packed, scales = quantize_mxfp4(torch.zeros(0, 64), scale_rule="ocp")
    assert packed.shape == (0, 32) and scales.shape == (0, 2)
