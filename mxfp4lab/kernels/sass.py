"""Compile mxfp4lab's Triton MoE kernels for sm_90a WITHOUT a GPU and report what the compiler made.

    python -m mxfp4lab.kernels.sass [--shape gpt-oss-120b] [--bucket 16] [--tile 16,64,128,64,128,4,4,3] [--sass DIR]

For each tile config (default: every tile of :data:`mxfp4lab.kernels.tiles.TILE_TABLE`) the fc1 and fc2 kernels
are compiled with ``triton.compile`` for ``GPUTarget("cuda", 90, 32)`` -- the H100 -- with the
16-byte divisibility hints Triton's JIT would infer for contiguous tensors and strides (without them
the loads are not vectorized and the numbers mislead), then ``cuobjdump`` (shipped with Triton)
reports registers, stack (spill) bytes, and a histogram of SASS opcodes (static counts). This is how
the table's candidates were screened on the CPU machine: a config that spills, or whose decode
costs many more instructions per weight, is not worth device time.

Static counts are a proxy: they include prologue / epilogue and the software-pipelined copies of the
loop, and say nothing about latency hiding. Timings come only from ``mxfp4lab.bench.moe`` on a GPU.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

from .tiles import TileConfig, table_tiles

#: SM90 (H100 / H200), 32 threads per warp
TARGET = ("cuda", 90, 32)


@dataclass
class KernelReport:
    kernel: str
    tile: tuple
    registers: int
    stack_bytes: int  # local memory per thread: > 0 means register spills (or local arrays)
    shared_bytes: int
    ops: Dict[str, int] = field(default_factory=dict)
    #: opcode histogram of the main (K) loop: the body of the longest backward branch
    loop_ops: dict[str, int] = field(default_factory=dict)
    #: HGMMA (wgmma) instructions whose A operand is a register (``HGMMA... Rd, Ra, gdesc[..]``), and in all
    hgmma_reg_a: int = 0
    hgmma: int = 0
    sass: str = field(default="", repr=False)

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    @property
    def mma(self) -> Dict[str, int]:
        return {k: v for k, v in self.ops.items() if "MMA" in k}


def _tool(name: str) -> str:
    import triton

    p = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if p.is_file():
        return str(p)
    raise FileNotFoundError(f"{name} not found next to Triton ({p}); install triton >= 3.6 (it ships {name})")


def _cuobjdump(cubin: bytes, flag: str) -> str:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        Path(path).write_bytes(cubin)
        return subprocess.run([_tool("cuobjdump"), flag, path], capture_output=True, text=True, check=True).stdout


def compile_sm90(fn, types: Dict[str, str], constexprs: Dict[str, object], *, num_warps: int, num_stages: int):
    """``triton.compile`` of ``fn`` for sm_90a; ``types``: Triton signature strings of the run-time args."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = fn.arg_names
    sig = {n: ("constexpr" if n in constexprs else types[n]) for n in names}
    hints = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
             if n not in constexprs and (types[n].startswith("*") or n.startswith("stride"))}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in constexprs.items()},
                    attrs=hints)
    return triton.compile(src, target=GPUTarget(*TARGET), options={"num_warps": num_warps, "num_stages": num_stages})


def report(compiled, kernel: str, tile: tuple) -> KernelReport:
    cubin = compiled.asm["cubin"]
    res = _cuobjdump(cubin, "-res-usage")
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+)", res)
    if not m:
        raise RuntimeError(f"cuobjdump -res-usage gave no resource line:\n{res[-500:]}")
    sass = _cuobjdump(cubin, "-sass")
    insts = []  # (address, opcode, text)
    for line in sass.splitlines():
        mm = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*)", line)
        if mm:
            insts.append((int(mm.group(1), 16), mm.group(2).split(".")[0], mm.group(2) + mm.group(3)))
    ops = collections.Counter(op for _, op, _ in insts)
    # main loop = the longest span [target, branch] of a backward BRA
    loop = (0, -1)
    for addr, op, text in insts:
        t = re.match(r"BRA\s+(?:`\(\S+\)\s*)?0x([0-9a-f]+)", text)
        if op == "BRA" and t and int(t.group(1), 16) < addr and addr - int(t.group(1), 16) > loop[1] - loop[0]:
            loop = (int(t.group(1), 16), addr)
    loop_ops = collections.Counter(op for a, op, _ in insts if loop[0] <= a <= loop[1])
    hg = [text for _, op, text in insts if op == "HGMMA"]
    reg_a = sum(1 for text in hg if re.match(r"HGMMA\.\S+\s+R\d+,\s*R\d+,", text))
    return KernelReport(kernel, tile, int(m.group(1)), int(m.group(2)),
                        max(int(m.group(3)), int(compiled.metadata.shared)), dict(ops), dict(loop_ops),
                        reg_a, len(hg), sass)


def _types(fn, pointers: Dict[str, str], floats: Sequence[str] = ()) -> Dict[str, str]:
    t = {n: "i32" for n in fn.arg_names}
    t.update(pointers)
    t.update({n: "fp32" for n in floats})
    return t


def moe_kernel_reports(cfg, tile: TileConfig | Sequence[int]) -> Sequence[KernelReport]:
    """fc1 (gather + GEMM1 + SwiGLU) and fc2 reports for model ``cfg`` and one tile (a :class:`TileConfig`
    or its recorded list form)."""
    from . import triton_moe as K

    t = tile if isinstance(tile, TileConfig) else TileConfig.from_list(tile)
    tile = tuple(t.as_list())
    h_pad, i_pad = cfg.padded_hidden, cfg.padded_intermediate
    t.check(h_pad, i_pad)
    fc1 = compile_sm90(
        K._fc1_swiglu_kernel,
        _types(K._fc1_swiglu_kernel, dict(x_ptr="*bf16", w_ptr="*u8", s_ptr="*u8", b_ptr="*bf16", alpha_ptr="*fp32",
                                          beta_ptr="*fp32", limit_ptr="*fp32", sorted_ids_ptr="*i32",
                                          block_expert_ptr="*i32", h_ptr="*bf16"),
               ("alpha_default", "beta_default", "limit_default")),
        dict(H=cfg.hidden_size, I_pad=i_pad, top_k=cfg.top_k, HAS_BIAS=cfg.checkpoint_format == "gpt_oss",
             PER_EXPERT_ACT=False, HAS_LIMIT=cfg.swiglu_limit is not None, BLOCK_M=t.block_m, BLOCK_N=t.block_n1,
             BLOCK_K=t.block_k1, INTERPRET=False, DEQUANT=int(t.dequant)),
        num_warps=t.num_warps, num_stages=t.num_stages)
    fc2 = compile_sm90(
        K._fc2_kernel,
        _types(K._fc2_kernel, dict(h_ptr="*bf16", w_ptr="*u8", s_ptr="*u8", sorted_ids_ptr="*i32",
                                   block_expert_ptr="*i32", y_ptr="*bf16")),
        dict(H=cfg.hidden_size, I_pad=i_pad, BLOCK_M=t.block_m, BLOCK_N=t.block_n2, BLOCK_K=t.block_k2,
             INTERPRET=False, DEQUANT=int(t.dequant)),
        num_warps=t.num_warps, num_stages=t.num_stages)
    return [report(fc1, "fc1", tuple(tile)), report(fc2, "fc2", tuple(tile))]


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..models import get_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="gpt-oss-120b")
    ap.add_argument("--bucket", type=int, default=None, help="only this M bucket of TILE_TABLE")
    ap.add_argument("--tile", action="append", default=[],
                    help="a tile tuple 'bm,bn1,bk1,bn2,bk2,warps,stages,dq' instead of the table (repeatable)")
    ap.add_argument("--sass", metavar="DIR", default=None,
                    help="also write each kernel's SASS to DIR/<kernel>_<tile>.sass")
    a = ap.parse_args(argv)
    cfg = get_model(a.shape)
    if a.tile:
        tiles = [tuple(int(v) for v in t.strip("()").split(",")) for t in a.tile]
    else:
        tiles = [tuple(t.as_list()) for t in table_tiles(a.bucket)]
    print(f"{cfg.name}: H={cfg.hidden_size} I_pad={cfg.padded_intermediate} k={cfg.top_k}; sm_90a, static SASS counts"
          " (loop: the K loop's body; hgmma: with A in registers / all)")
    print(f"{'tile (bm,bn1,bk1,bn2,bk2,warps,stages,dq)':44s} {'kernel':6s} {'regs':>4s} {'stack':>5s} {'smem':>7s} "
          f"{'ops':>5s} {'loop':>5s} {'LDS':>4s} {'STS':>4s}  {'hgmma':>5s}  mma")
    for tile in tiles:
        try:
            reps = moe_kernel_reports(cfg, tile)
        except ValueError as exc:
            print(f"{str(tile):44s} skipped: {exc}")
            continue
        for r in reps:
            lds = sum(v for k, v in r.loop_ops.items() if k.startswith("LDS"))
            sts = sum(v for k, v in r.loop_ops.items() if k.startswith("STS"))
            print(f"{str(tile):44s} {r.kernel:6s} {r.registers:4d} {r.stack_bytes:5d} {r.shared_bytes:7d} "
                  f"{r.total_ops:5d} {sum(r.loop_ops.values()):5d} {lds:4d} {sts:4d}  {r.hgmma_reg_a:2d}/{r.hgmma:<2d}  "
                  f"{r.mma}")
            if a.sass:
                os.makedirs(a.sass, exist_ok=True)
                Path(a.sass, f"{r.kernel}_{'_'.join(map(str, tile))}.sass").write_text(r.sass)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
