#!/usr/bin/env bash
# Stage OpenAI's triton_kernels (the copy bundled in the vLLM 0.26.0 wheel, 40 files, 232 kB) for a GPU
# machine that has no package index. Run on a machine with PyPI access, from anywhere in the repository.
#
# Writes .devcarry/triton_kernels/ (git-ignored: .gitignore):
#   triton_kernels/   vllm/third_party/triton_kernels of the pinned wheel, every file checked against the
#                     sha256 manifest in mxfp4lab/backends/triton_kernels_source.py
#   SOURCE            wheel name and sha256
# Only the folder is read from the wheel: by HTTP range reads from the index (about 1 MB), or from a
# local copy of the wheel if $WHEEL_DIR holds one (scripts/gpu/stage-marlin.sh downloads it there).
# On the GPU machine: export MXFP4LAB_TRITON_KERNELS=$PWD/.devcarry/triton_kernels (the backend also
# looks for an importable triton_kernels, an installed vLLM, and ~/.cache/mxfp4lab/).
set -euo pipefail
WHEEL_DIR=${WHEEL_DIR:-/tmp/vllm_whl}
top=$(git rev-parse --show-toplevel)
cd "$top"
src=mxfp4lab/backends/triton_kernels_source.py  # stdlib only: runs without torch
whl=$(python3 -c "import runpy; print(runpy.run_path('$src')['WHEEL'])")
args=(--dest .devcarry/triton_kernels)
[ -f "$WHEEL_DIR/$whl" ] && args+=(--wheel "$WHEEL_DIR/$whl")
rm -rf .devcarry/triton_kernels
python3 "$src" "${args[@]}"
du -sh .devcarry/triton_kernels
echo "on the GPU: export MXFP4LAB_TRITON_KERNELS=\$PWD/.devcarry/triton_kernels"
