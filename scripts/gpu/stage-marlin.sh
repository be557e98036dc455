#!/usr/bin/env bash
# Stage vLLM's Marlin MoE ops (one shared library, no vLLM Python code) for a GPU machine that has no
# package index. Run on a CPU machine with PyPI access, from anywhere in the repository.
#
# Writes .devcarry/marlin/ (.devcarry/ is git-ignored):
#   _moe_C_stable_libtorch.abi3.so.xz   vLLM's _moe_C ops library, pruned for SM90 (see below), xz'd
#   SOURCE                              wheel name, sha256 of the wheel and of the unpruned library
# and prints the sizes. mxfp4lab.backends.marlin finds it through $MXFP4LAB_MARLIN_LIBS and unpacks it
# (Python's lzma) into $MXFP4LAB_MARLIN_CACHE (default /tmp/mxfp4lab-marlin) on first use.
#
# Why only this library: torch.ops._moe_C holds everything the timed path calls (moe_align_block_size,
# moe_wna16_marlin_gemm); the weight repack (_C.gptq_marlin_repack) and the scale/bias permutations are
# re-implemented in torch by mxfp4lab.backends.marlin, and the activation is ours. The library needs
# only libtorch{,_cpu,_cuda}.so (stable ABI), libcudart.so.13 and libcuda.so.1: all on the GPU host.
#
# Pruning (default; --full keeps the library as shipped, about 40 MB xz'd): in the library's
# .nv_fatbin section every CUDA image an SM90 GPU cannot or need not use gets its payload zeroed (the
# headers stay, file size and offsets are unchanged, xz then squeezes the zeros away):
#   * ELF (SASS) images for any arch other than sm_90  (sm_90 SASS is kept: align/sum/topk kernels)
#   * compute_80 PTX images of Marlin instantiations other than bf16 activations x float4_e2m1f weights
# The bf16 x FP4 Marlin kernels exist only as compute_80 PTX (+ sm_80 / sm_120 SASS) in vLLM's
# CUDA 13 wheels, so on an H100 the driver JIT-compiles that PTX on first use, with or without pruning
# (stock vLLM does the same); the JIT cache (~/.nv/ComputeCache) keeps it for later processes.
#
# The wheel is the vLLM release pyproject.toml's marlin extra pins (the one tests/data/marlin_vllm_record.*
# records), found or downloaded once by scripts/record_marlin_reference.py --fetch (wheel cache
# ~/.cache/mxfp4lab/wheels, $MXFP4LAB_WHEEL_CACHE; $MXFP4LAB_VLLM_WHEEL names a wheel outright).
set -euo pipefail
full=0
[ "${1:-}" = "--full" ] && full=1
top=$(git rev-parse --show-toplevel)
cd "$top"
out=.devcarry/marlin
mkdir -p "$out"
whl=$(python3 scripts/record_marlin_reference.py --fetch)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unzip -q -o "$whl" 'vllm/_moe_C*.so' 'vllm-*.dist-info/METADATA' -d "$work"
lib=$(ls "$work"/vllm/_moe_C*.so | head -1)
name=$(basename "$lib")
echo "wheel: $(basename "$whl") ($(du -m "$whl" | cut -f1) MB)"
grep -E '^Requires-Dist: torch==' "$work"/vllm-*.dist-info/METADATA || true
echo "NEEDED: $(readelf -d "$lib" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
{
  echo "wheel $(basename "$whl") sha256 $(sha256sum "$whl" | cut -d' ' -f1)"
  echo "library $name sha256 $(sha256sum "$lib" | cut -d' ' -f1) bytes $(stat -c %s "$lib")"
  echo "pruned $([ $full = 1 ] && echo no || echo sm90)"
} > "$out/SOURCE"

if [ $full = 0 ]; then
python3 - "$lib" <<'PY'
import re, struct, subprocess, sys

path = sys.argv[1]
BF16_ID, FP4_ID = 1125899906909960, 562949953487106  # vllm.scalar_type ids: bfloat16, float4_e2m1f
KEEP_MARLIN = f"MarlinILl{BF16_ID}ELl{FP4_ID}E".encode()
ANY_MARLIN_TEMPLATE = b"_ZN16marlin_moe_wna166MarlinIL"
FATBIN_MAGIC = 0xBA55ED50
sec = [l for l in subprocess.check_output(["readelf", "-SW", path], text=True).splitlines() if ".nv_fatbin" in l]
if len(sec) != 1:
    sys.exit(f"expected one .nv_fatbin section in {path}, found {len(sec)}")
f = sec[0].split("]", 1)[1].split()
off, size = int(f[3], 16), int(f[4], 16)
buf = bytearray(open(path, "rb").read())


def ptx_text(blob: bytes) -> bytes:
    if blob[:4] == b"\x28\xb5\x2f\xfd":  # zstd frame (CUDA 13 fatbins)
        r = subprocess.run(["zstd", "-dcq"], input=blob, capture_output=True)
        if r.returncode or not r.stdout:
            sys.exit(f"cannot zstd-decompress a PTX image: {r.stderr.decode()[:200]}")
        return r.stdout
    return blob


kept, zeroed, pos, end_sec = {}, 0, off, off + size
while pos + 16 <= end_sec:
    magic, _ver, hsize, fat = struct.unpack_from("<IHHQ", buf, pos)
    if magic != FATBIN_MAGIC:
        pos += 8  # containers are 8-byte aligned
        continue
    p, end = pos + hsize, pos + hsize + fat
    while p < end:
        kind, _v, ehs, payload = struct.unpack_from("<HHIQ", buf, p)
        arch = struct.unpack_from("<I", buf, p + 28)[0]
        body = slice(p + ehs, p + ehs + payload)
        if kind == 2:  # ELF / SASS
            keep = arch == 90
        elif kind == 1:  # PTX
            csize = struct.unpack_from("<I", buf, p + 16)[0]  # payload bytes before the padding
            txt = ptx_text(bytes(buf[p + ehs:p + ehs + csize]))
            keep = KEEP_MARLIN in txt or ANY_MARLIN_TEMPLATE not in txt
        else:
            keep = True
        tag = ("sass" if kind == 2 else "ptx" if kind == 1 else f"kind{kind}") + f"_{arch}"
        if keep:
            kept[tag] = kept.get(tag, 0) + payload
        else:
            buf[body] = bytes(payload)
            zeroed += payload
        p += ehs + payload
    pos = end
open(path, "wb").write(buf)
print("fatbin: kept " + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in sorted(kept.items()))
      + f"; zeroed {zeroed / 2**20:.1f} MiB")
PY
fi
strip --strip-unneeded "$lib"
nm -D "$lib" > "$work/dynsym"
strings -n 8 "$lib" > "$work/strings"
for sym in PyInit__moe_C_stable_libtorch torch_library_impl __cudaRegisterFatBinary; do
  grep -q "$sym" "$work/dynsym" || { echo "missing dynamic symbol $sym after strip" >&2; exit 1; }
done
for op in 'moe_align_block_size(' 'moe_wna16_marlin_gemm(' 'moe_sum('; do
  grep -qF "$op" "$work/strings" || { echo "op schema $op not found in $name" >&2; exit 1; }
done
rm -f "$out"/*.so "$out"/*.so.xz
xz -T0 -9 -c "$lib" > "$out/$name.xz"
echo "library $name: $(stat -c %s "$lib") bytes after prune/strip -> $(stat -c %s "$out/$name.xz") bytes xz"
du -sh "$out"
echo "carry: .devcarry (with FlashInfer: du -sh .devcarry -> $(du -sh .devcarry | cut -f1)); on the GPU: MXFP4LAB_MARLIN_LIBS=$out"
