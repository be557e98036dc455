#!/usr/bin/env bash
# Stage FlashInfer for the GPU host, which has no package index, at the versions the lock holds for it
# (requirements/gpu.txt: flashinfer-python, apache-tvm-ffi; the same as requirements/lock.txt, which the
# CPU suite runs). Run on a CPU machine with a package index, from anywhere in the repository.
#
# Writes (.devcarry/ is git-ignored):
#   .devcarry/fisite.tar.xz   the two wheels installed for CPython 3.12 / manylinux x86_64 (about 16 MB),
#                             kernel sources the fused-MoE JIT never compiles left out
#   .devcarry/on-gpu.sh       scripts/gpu/on-gpu.sh: `source .devcarry/on-gpu.sh` at the start of a GPU
#                             command unpacks the site once, sets the JIT's environment and checks that
#                             the host runs what requirements/gpu.txt pins
#   --print-versions          prints the two pins and stages nothing
# The GPU image brings Python 3.12, torch, triton, nvcc 13.0 and ninja; FlashInfer's other Python
# dependencies are not needed for the fused-MoE path (installed --no-deps).
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
pins=()
for name in flashinfer-python apache-tvm-ffi; do
  v=$(sed -n "s/^$name==\([^[:space:]#]*\).*/\1/p" requirements/gpu.txt)
  [ -n "$v" ] || { echo "requirements/gpu.txt pins no $name" >&2; exit 1; }
  locked=$(sed -n "s/^$name==\([^[:space:]#]*\).*/\1/p" requirements/lock.txt)
  [ "$v" = "$locked" ] || { echo "$name: requirements/gpu.txt pins $v, requirements/lock.txt $locked" >&2; exit 1; }
  pins+=("$name==$v")
done
if [ "${1:-}" = --print-versions ]; then
  printf '%s\n' "${pins[@]}"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64)
python3 -m pip download -q --disable-pip-version-check --no-deps "${plat[@]}" -d "$work/whl" "${pins[@]}"
python3 -m pip install -q --disable-pip-version-check --no-deps "${plat[@]}" --target "$work/site" "$work"/whl/*.whl
# Leave out kernel source trees the fused-MoE JIT never compiles (keeps the carry small).
csrc="$work/site/flashinfer/data/csrc"
for d in "$csrc"/*/; do
  case "$(basename "$d")" in
    fused_moe|nv_internal) ;;
    *) [ "$(du -s "$d" | cut -f1)" -gt 300 ] && rm -rf "$d" ;;
  esac
done
find "$csrc" -maxdepth 1 -type f -size +300k -delete
find "$work/site" -name __pycache__ -type d -prune -exec rm -rf {} +
mkdir -p .devcarry
tar -C "$work/site" -cJf .devcarry/fisite.tar.xz .
cp scripts/gpu/on-gpu.sh .devcarry/on-gpu.sh
echo "staged ${pins[*]}: $(du -h .devcarry/fisite.tar.xz | cut -f1) .devcarry/fisite.tar.xz, .devcarry/on-gpu.sh"
