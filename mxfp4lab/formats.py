"""MXFP4 numerics: FP4 E2M1 elements with one E8M0 scale per 32 elements (OCP Microscaling v1.0).

Spec references are to the OCP "Microscaling Formats (MX) v1.0" specification (Sept. 2023):

* Section 5.1 / Table 1: the MXFP4 format = block size k = 32, scale E8M0, element FP4 E2M1.
* Section 5.3.3: FP4 E2M1 -- 1 sign, 2 exponent (bias 1), 1 mantissa bit, no Inf/NaN, max normal 6.0.
* Section 5.4.1: E8M0 -- unsigned 8-bit exponent, bias 127, value 2**(byte-127); 0xFF is NaN.
* Section 6.3: conversion of a vector of scalars to an MX block:
  ``shared_exp = floor(log2(max_i |V_i|)) - emax_elem`` with emax_elem = 2 for E2M1, elements
  ``P_i = quantize_to_element_format(V_i / 2**shared_exp)`` with round-to-nearest-even and
  saturation to the largest normal.

Storage conventions used by every checkpoint this package reads (GPT-OSS, DeepSeek-V4) and by
FlashInfer: two codes per byte along the last (K) axis, element ``2i`` in the LOW nibble, element
``2i+1`` in the HIGH nibble; one scale byte per 32 consecutive K elements::

    byte i of a packed row:   bit 7 ....... 4 | 3 ....... 0
                              code[2i+1]      | code[2i]
    code:                     s | e1 e0 | m0      value = (-1)^s * E2M1_MAGNITUDES[code & 7]

Scale rules (:class:`ScaleRule`) are the real accuracy-drift axis between libraries; callers always
name one explicitly.
"""

from __future__ import annotations

import enum
from typing import Tuple

import torch

from .validate import InputError, first_index

# --------------------------------------------------------------------------------------------
# Spec constants (OCP MX v1.0)
# --------------------------------------------------------------------------------------------
MX_BLOCK_SIZE = 32  # Section 5.1, Table 1: k = 32 elements share one scale
E2M1_EBITS, E2M1_MBITS = 2, 1  # Section 5.3.3
E2M1_EXP_BIAS = 1  # Section 5.3.3
E2M1_EMAX = 2  # Section 5.3.3: largest normal 1.5 * 2**2 = 6.0; emax_elem in Section 6.3
E2M1_MAX = 6.0
E2M1_SIGN_BIT = 0x8  # bit 3 of a code
E2M1_MAG_MASK = 0x7  # bits 0..2 of a code
E8M0_EXP_BIAS = 127  # Section 5.4.1
E8M0_NAN = 0xFF  # Section 5.4.1: the only special value of E8M0
E8M0_MIN_EXP = -127  # byte 0x00 -> 2**-127
E8M0_MAX_EXP = 127  # byte 0xFE -> 2**127
#: Largest shared exponent a quantizer here chooses: 6 * 2**125 is the largest block value fp32 and bf16
#: hold (6 * 2**126 overflows both), so a block past it saturates to +-6 * 2**125 instead of decoding to inf.
MAX_QUANT_EXP = 125

#: Magnitudes of the 8 non-negative codes 0..7 (Section 5.3.3).
E2M1_MAGNITUDES: Tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
#: Values of all 16 codes, in code order (codes 8..15 are the negatives, 8 is -0.0).
E2M1_VALUES: Tuple[float, ...] = E2M1_MAGNITUDES + tuple(-v for v in E2M1_MAGNITUDES)
#: Midpoints between neighbouring magnitudes: a magnitude exactly here is a rounding tie.
E2M1_MIDPOINTS: Tuple[float, ...] = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


class ScaleRule(str, enum.Enum):
    """How the shared E8M0 exponent and the element codes of one 32-block are chosen.

    ``OCP``
        OCP MX v1.0 Section 6.3 (torchao's default): ``e = floor(log2(amax)) - 2``; elements
        round to nearest, ties to even, and saturate to +-6 (the top binade [4, 8) of the scaled
        block overflows 6 and is clipped: up to 25% error on the block maximum).
    ``ROUND_UP``
        OpenAI triton_kernels ``downcast_to_mxfp`` with ``DequantScaleRoundingMode.ROUND_UP``:
        ``d = fp32(amax / 6)`` and the exponent of ``d`` is rounded up whenever ``d`` has a
        non-zero mantissa (``(bits(d) + 0x7FFFFF) & 0x7F800000``), so nothing saturates.
        Elements round to nearest with ties AWAY from zero (triton adds one half-ulp and
        truncates).
    ``FLASHINFER``
        FlashInfer's torch quantizer for the SM90 W4A16 path
        (``flashinfer.fused_moe.prepare._quantize_mxfp4_linear``): ``e = ceil(log2(amax / 6))``
        computed with fp32 ``log2``, clamped to [-127, 127]; elements round to nearest with ties
        DOWN (toward the smaller magnitude).

    For every rule an all-zero block gets scale byte 0 (2**-127) and codes 0. For every rule the shared
    exponent is at most :data:`MAX_QUANT_EXP` (125): ``ROUND_UP`` and ``FLASHINFER`` would pick 126 or 127
    for a block maximum past 6 * 2**125 (~2.6e38), whose top codes then decode to inf in fp32 and bf16;
    capped, such a block saturates to +-6 * 2**125 as ``OCP`` does (the libraries themselves overflow there).
    """

    OCP = "ocp"
    ROUND_UP = "round_up"
    FLASHINFER = "flashinfer"


class Rounding(str, enum.Enum):
    """Tie policy when rounding a scaled magnitude to the E2M1 grid."""

    NEAREST_EVEN = "nearest_even"
    NEAREST_AWAY = "nearest_away"
    NEAREST_DOWN = "nearest_down"


ELEMENT_ROUNDING = {
    ScaleRule.OCP: Rounding.NEAREST_EVEN,
    ScaleRule.ROUND_UP: Rounding.NEAREST_AWAY,
    ScaleRule.FLASHINFER: Rounding.NEAREST_DOWN,
}


class MXFormatError(InputError):
    """Raised for inputs that violate an MXFP4 format rule; the message names tensor and rule (an
    :class:`~mxfp4lab.validate.InputError`, hence a ``ValueError``)."""


# --------------------------------------------------------------------------------------------
# Checks shared by the layout code
# --------------------------------------------------------------------------------------------
def check_dtype(t: torch.Tensor, dtype: torch.dtype, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise MXFormatError(f"{name} must be {dtype} (got {t.dtype})")


def check_multiple(value: int, multiple: int, name: str, rule: str = "") -> None:
    if value % multiple != 0:
        extra = f" ({rule})" if rule else ""
        raise MXFormatError(f"{name} = {value} must be a multiple of {multiple}{extra}")


def e8m0_bytes(scales: torch.Tensor) -> torch.Tensor:
    """E8M0 scales as their uint8 bytes: a ``torch.float8_e8m0fnu`` tensor is viewed (no copy), any other
    tensor is returned as is (checks stay with the caller)."""
    return scales.view(torch.uint8) if scales.dtype == torch.float8_e8m0fnu else scales


def check_scales_finite(scales: torch.Tensor, name: str = "scales") -> None:
    """E8M0 byte 0xFF is NaN (OCP MX v1.0 Section 5.4.1): refuse it rather than spread NaNs."""
    bad = scales == E8M0_NAN
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0].tolist())
        raise MXFormatError(
            f"{name} holds E8M0 byte 255 (NaN, OCP MX v1.0 Section 5.4.1) at index {idx} "
            f"({int(bad.sum())} such bytes); a valid MXFP4 scale is 0..254"
        )


# --------------------------------------------------------------------------------------------
# Codes <-> values, nibbles <-> bytes
# --------------------------------------------------------------------------------------------
def e2m1_table(dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``[16]`` tensor: value of each E2M1 code (index = code)."""
    return torch.tensor(E2M1_VALUES, dtype=dtype, device=device)


def decode_e2m1(codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 codes (0..15, any shape) -> values. Every value is exact in bf16/fp16/fp32."""
    check_dtype(codes, torch.uint8, "codes")
    bad = codes > 15
    if bool(bad.any()):
        idx = first_index(bad)
        raise MXFormatError(f"codes must be 4-bit values 0..15, got {int(codes[idx])} at index {idx}")
    return e2m1_table(dtype, codes.device)[codes.long()]


def decode_e8m0(scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 E8M0 bytes -> 2**(byte - 127). Exact for 0..254 in fp32 (2**-127 is an fp32 subnormal)
    and fp64; bf16 also holds every value (same exponent range as fp32 with subnormals).
    Byte 255 (NaN) raises :class:`MXFormatError`."""
    check_dtype(scales, torch.uint8, "scales")
    check_scales_finite(scales)
    return _e8m0_values(scales, dtype)


def _e8m0_values(scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """2**(byte - 127) for uint8 bytes already checked to be finite (no 0xFF)."""
    exp = scales.to(torch.int32) - E8M0_EXP_BIAS
    wide = torch.float64 if dtype == torch.float64 else torch.float32  # 2**-127..2**127 exact in both
    one = torch.ones(exp.shape, dtype=wide, device=scales.device)
    return torch.ldexp(one, exp).to(dtype)


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes ``[..., K]`` (values 0..15) -> packed bytes ``[..., K/2]``, element 2i low nibble.

    A code above 15 would spill into its neighbour's nibble: :class:`MXFormatError` naming its index."""
    check_dtype(codes, torch.uint8, "codes")
    if codes.dim() == 0:
        raise MXFormatError("codes must have at least one dimension (K along the last axis)")
    check_multiple(codes.shape[-1], 2, "codes.shape[-1]", "two FP4 codes per byte")
    bad = codes > 15
    if bool(bad.any()):
        idx = first_index(bad)
        raise MXFormatError(f"codes must be 4-bit values 0..15, got {int(codes[idx])} at index {idx} "
                            f"({int(bad.sum())} such codes; a larger value would spill into the next nibble)")
    return _pack(codes)


def _pack(codes: torch.Tensor) -> torch.Tensor:
    """:func:`pack_fp4` for codes known to be 0..15 (axis -1 pairs: low nibble = element 2i)."""
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """packed bytes ``[..., K/2]`` -> uint8 codes ``[..., K]`` (low nibble first)."""
    check_dtype(packed, torch.uint8, "packed")
    if packed.dim() == 0:
        raise MXFormatError("packed must have at least one dimension (bytes along the last axis)")
    # axis -1 of the stack: (low nibble = element 2i, high nibble = element 2i+1)
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).flatten(-2)


# --------------------------------------------------------------------------------------------
# Quantize / dequantize
# --------------------------------------------------------------------------------------------
def _round_to_e2m1(mag: torch.Tensor, rounding: Rounding) -> torch.Tensor:
    """Non-negative fp32 magnitudes (already divided by the block scale) -> codes 0..7.

    Saturates: anything above the last midpoint (5.0) becomes 7 (= 6.0).
    """
    mids = torch.tensor(E2M1_MIDPOINTS, dtype=torch.float32, device=mag.device)
    # right=False: boundaries[i-1] < x <= boundaries[i]  -> a tie lands on the LOWER code.
    code = torch.bucketize(mag, mids, right=False)
    if rounding is Rounding.NEAREST_DOWN:
        return code
    at_tie = mag == mids[code.clamp(max=len(E2M1_MIDPOINTS) - 1)]
    at_tie &= code < len(E2M1_MIDPOINTS)
    if rounding is Rounding.NEAREST_AWAY:
        return code + at_tie.long()
    # NEAREST_EVEN: codes with mantissa bit 0 are "even" (0, 1.0, 2.0, 4.0 -> codes 0, 2, 4, 6).
    return code + (at_tie & (code % 2 == 1)).long()


def _scale_exponent(amax: torch.Tensor, rule: ScaleRule) -> torch.Tensor:
    """fp32 block maxima ``[...]`` -> int64 unbiased shared exponents in [-127, 127]."""
    zero = amax == 0
    if rule is ScaleRule.OCP:
        # Section 6.3: floor(log2(amax)) - emax_elem. frexp gives amax = m * 2**e, m in [0.5, 1),
        # so floor(log2(amax)) = e - 1 exactly (no log2 rounding).
        _, e = torch.frexp(amax)
        exp = e.long() - 1 - E2M1_EMAX
    elif rule is ScaleRule.ROUND_UP:
        d = (amax / E2M1_MAX).contiguous()  # fp32 division, as triton_kernels does
        bits = d.view(torch.int32).long()
        biased = ((bits + 0x007FFFFF) & 0x7F800000) >> 23  # exponent rounded up if mantissa != 0
        exp = biased - E8M0_EXP_BIAS
        # fp32 subnormal d (amax < 6 * 2**-126): biased stays 0 or becomes 1 -> clamp covers it.
    elif rule is ScaleRule.FLASHINFER:
        safe = torch.where(zero, torch.ones_like(amax), amax / E2M1_MAX)
        exp = torch.ceil(torch.log2(safe)).long()
    else:  # pragma: no cover - enum is closed
        raise ValueError(f"unknown scale rule {rule!r}")
    # OCP never passes MAX_QUANT_EXP (amax < 2**128); the round-up rules do for amax > 6 * 2**125.
    exp = exp.clamp(E8M0_MIN_EXP, MAX_QUANT_EXP)
    return torch.where(zero, torch.full_like(exp, E8M0_MIN_EXP), exp)


def quantize_mxfp4(
    x: torch.Tensor, *, scale_rule: ScaleRule | str, name: str = "x"
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Quantize along the last axis to MXFP4.

    Args:
        x: float tensor ``[..., K]`` (fp32, bf16 or fp16), K a multiple of 32, all finite.
        scale_rule: a :class:`ScaleRule` (or its value string); there is no default on purpose.
        name: used in error messages.

    Returns:
        ``(packed, scales)``: uint8 ``[..., K/2]`` (element 2i in the low nibble) and uint8 E8M0
        ``[..., K/32]``.
    """
    rule = ScaleRule(scale_rule)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise MXFormatError(f"{name} must be a floating-point tensor")
    if x.dim() == 0:
        raise MXFormatError(f"{name} must have at least one dimension (K along the last axis)")
    k = x.shape[-1]
    check_multiple(k, MX_BLOCK_SIZE, f"{name}.shape[-1] (K)", "one E8M0 scale per 32 elements")
    if not bool(torch.isfinite(x).all()):
        idx = first_index(~torch.isfinite(x))
        raise MXFormatError(f"{name} holds Inf or NaN (first at index {idx}); MXFP4 (E2M1) has no encoding "
                            "for them")
    xf = x.to(torch.float32)
    if not bool(torch.isfinite(xf).all()):
        idx = first_index(~torch.isfinite(xf))
        raise MXFormatError(f"{name} holds {x[idx].item()} at index {idx}, beyond the fp32 range that "
                            "MXFP4 scales cover (|x| <= 3.4e38)")
    # axes of `blocks`: [..., K/32 (block), 32 (element within block)]
    blocks = xf.reshape(*xf.shape[:-1], k // MX_BLOCK_SIZE, MX_BLOCK_SIZE)
    amax = blocks.abs().amax(dim=-1)
    exp = _scale_exponent(amax, rule)
    # Exact division by a power of two (ldexp), then round the magnitude to the E2M1 grid.
    scaled = torch.ldexp(blocks, (-exp).unsqueeze(-1).to(torch.int32))
    mag_code = _round_to_e2m1(scaled.abs(), ELEMENT_ROUNDING[rule])
    # Sign bit: from the float's sign bit (so -0.0 and tiny negatives that round to zero give code
    # 8, "-0"), except FlashInfer's quantizer, which tests ``scaled < 0`` (-0.0 -> code 0).
    sign = (scaled < 0) if rule is ScaleRule.FLASHINFER else torch.signbit(scaled)
    codes = (mag_code | (sign.long() << 3)).to(torch.uint8).reshape(*xf.shape[:-1], k)
    scales = (exp + E8M0_EXP_BIAS).to(torch.uint8)
    return _pack(codes), scales


def dequantize_mxfp4(
    packed: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``packed`` uint8 ``[..., K/2]`` and ``scales`` uint8 ``[..., K/32]`` -> values ``[..., K]``.

    The product code * 2**(byte-127) is exact in fp32 (codes carry at most 2 significant bits and
    2**-128 .. 6 * 2**126 are fp32 numbers) and in fp64, and rounds exactly to bf16 (same exponent
    range); magnitudes beyond ``dtype``'s range become inf (e.g. 6 * 2**127 in fp32).
    """
    check_dtype(packed, torch.uint8, "packed")
    check_dtype(scales, torch.uint8, "scales")
    if packed.dim() == 0:
        raise MXFormatError("packed must have at least one dimension (K/2 bytes along the last axis)")
    k = packed.shape[-1] * 2
    check_multiple(k, MX_BLOCK_SIZE, "K = 2 * packed.shape[-1]", "one E8M0 scale per 32 elements")
    if tuple(scales.shape) != tuple(packed.shape[:-1]) + (k // MX_BLOCK_SIZE,):
        raise MXFormatError(
            f"scales shape {tuple(scales.shape)} does not match packed {tuple(packed.shape)}: "
            f"expected {tuple(packed.shape[:-1]) + (k // MX_BLOCK_SIZE,)} (one scale per 32 elements)"
        )
    check_scales_finite(scales)
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    table = e2m1_table(wide, packed.device)
    codes = unpack_fp4(packed)
    vals = torch.index_select(table, 0, codes.reshape(-1).to(torch.int32)).reshape(codes.shape)
    del codes
    scl = _e8m0_values(scales, wide)  # scales were checked for byte 255 above
    # axes: [..., K/32 (block), 32 (element)] * [..., K/32, 1]
    out = vals.reshape(*vals.shape[:-1], k // MX_BLOCK_SIZE, MX_BLOCK_SIZE).mul_(scl.unsqueeze(-1))
    return out.reshape(*vals.shape[:-1], k).to(dtype)


def mx_block_error_bound(amax: torch.Tensor, rule: ScaleRule | str) -> torch.Tensor:
    """Largest possible |x - dequant(quant(x))| for a block with maximum |x| = amax.

    Half the widest E2M1 gap (2.0, between 4 and 6) times the scale, except that the OCP rule can
    also clip the block maximum from just under 8*s down to 6*s (error < 2*s); so can the other rules
    for a block whose maximum passes 6 * 2**125, where the exponent is capped (:data:`MAX_QUANT_EXP`).
    """
    rule = ScaleRule(rule)
    a32 = amax.to(torch.float32)
    exp = _scale_exponent(a32, rule).to(torch.float64)
    s = torch.exp2(exp)
    if rule is ScaleRule.OCP:
        return 2.0 * s
    capped = a32.to(torch.float64) > E2M1_MAX * 2.0**MAX_QUANT_EXP
    return torch.where(capped, 2.0 * s, s)
