#!/usr/bin/env bash
# Stage Humming (humming-kernels, pure Python + JIT-compiled CUDA, 0.5 MB wheel) for a GPU machine that has
# no package index. Run on a machine with PyPI access, from anywhere in the repository.
#
# Writes .devcarry/humming/ (git-ignored: .gitignore): the wheel and SOURCE (its sha256 and
# requirements). Its requirements (torch, triton, numpy, safetensors, jinja2, cuda-bindings, tqdm,
# tabulate; filelock at run time) are all in the GPU image, so the wheel alone travels; nvcc 13.0 there
# compiles its kernels on first use (cached in ~/.cache). On the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/mxfp4lab-site .devcarry/humming/*.whl
#   export PYTHONPATH=/tmp/mxfp4lab-site:$PYTHONPATH
# (scripts/gpu/check_peers.py --stage .devcarry does both itself).
set -euo pipefail
HUMMING_VERSION=${HUMMING_VERSION:-0.1.19}
top=$(git rev-parse --show-toplevel)
cd "$top"
out=.devcarry/humming
rm -rf "$out"
mkdir -p "$out"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 "humming-kernels==$HUMMING_VERSION" -d "$out"
whl=$(ls "$out"/humming_kernels-"$HUMMING_VERSION"-*.whl)
{
  echo "wheel $(basename "$whl") sha256 $(sha256sum "$whl" | cut -d' ' -f1)"
  unzip -p "$whl" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true
} > "$out/SOURCE"
cat "$out/SOURCE"
du -sh "$out"
