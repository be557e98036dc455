"""A tiny emulator for the straight-line PTX subset used by mxfp4lab's register decode
(``mov.b32 / prmt.b32 / shl.b32 / and.b32 / lop3.b32 / mul.rn.bf16x2``), vectorized over numpy
uint32 lanes. It runs the asm TEXT the kernel ships, so a typo in a mask, shift, selector or LUT
shows up on the CPU. Semantics follow the PTX ISA (prmt default mode; lop3 with a = 0xF0, b = 0xCC,
c = 0xAA; bf16x2 products rounded to nearest even, subnormals kept, overflow to infinity)."""
import re

import numpy as np

U32 = np.uint32


def _bf16_to_f32(h):
    return (h.astype(np.uint32) << 16).view(np.float32)


def _f32_to_bf16_rne(f):
    b = f.astype(np.float32).view(np.uint32).astype(np.uint64)
    nan = np.isnan(f)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint32) & 0xFFFF
    return np.where(nan, 0x7FC0, r).astype(np.uint32)


def _mul_bf16x2(a, b):
    out = np.zeros_like(a)
    for sh in (0, 16):
        x = _bf16_to_f32((a >> sh) & 0xFFFF).astype(np.float64)
        y = _bf16_to_f32((b >> sh) & 0xFFFF).astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            p = (x * y).astype(np.float32)  # exact here: two 8-bit significands
        out |= _f32_to_bf16_rne(p) << sh
    return out.astype(U32)


def _prmt(a, b, sel):
    src = [(a >> (8 * i)) & 0xFF for i in range(4)] + [(b >> (8 * i)) & 0xFF for i in range(4)]
    out = np.zeros_like(a)
    for i in range(4):
        out |= src[(sel >> (4 * i)) & 7] << (8 * i)  # default mode (no sign replication: bit 3 clear here)
    return out.astype(U32)


def _lop3(a, b, c, lut):
    out = np.zeros_like(a)
    for bit in range(8):
        if (lut >> bit) & 1:
            ta = a if bit & 4 else ~a
            tb = b if bit & 2 else ~b
            tc = c if bit & 1 else ~c
            out |= ta & tb & tc
    return out.astype(U32)


def run(asm: str, operands: dict, n: int) -> dict:
    """Execute ``asm`` with ``operands`` ({"$4": uint32 array, ...}); returns every register."""
    regs = {k: np.asarray(v, dtype=U32) for k, v in operands.items()}

    def val(tok):
        tok = tok.strip()
        if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", tok):
            return np.full(n, int(tok, 0) & 0xFFFFFFFF, dtype=U32)
        return regs[tok]

    for line in asm.replace("\\n", "\n").splitlines():
        line = line.split("//")[0].strip().rstrip(";")
        if not line or line in "{}" or line.startswith(".reg"):
            continue
        op, rest = line.split(None, 1)
        args = [t.strip() for t in rest.split(",")]
        d = args[0]
        if op == "mov.b32":
            regs[d] = val(args[1])
        elif op == "shl.b32":
            regs[d] = (val(args[1]).astype(np.uint64) << int(args[2], 0)).astype(np.uint64).astype(U32) & U32(0xFFFFFFFF)
        elif op == "and.b32":
            regs[d] = val(args[1]) & val(args[2])
        elif op == "prmt.b32":
            regs[d] = _prmt(val(args[1]), val(args[2]), int(args[3], 0))
        elif op == "lop3.b32":
            regs[d] = _lop3(val(args[1]), val(args[2]), val(args[3]), int(args[4], 0))
        elif op == "mul.rn.bf16x2":
            regs[d] = _mul_bf16x2(val(args[1]), val(args[2]))
        else:
            raise NotImplementedError(f"ptx_emu: {op}")
    return regs
