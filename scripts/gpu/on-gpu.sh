# Source at the start of a command on the GPU host, from the repository root, after
# scripts/gpu/stage-flashinfer.sh copied this file to .devcarry/on-gpu.sh:  source .devcarry/on-gpu.sh
# Unpacks the staged FlashInfer once per machine, sets the environment FlashInfer's JIT needs, and checks
# that the host runs what requirements/gpu.txt pins (the image's torch and triton, the staged FlashInfer):
# on a mismatch it says what differs and returns 1. MXFP4LAB_LOCK_CHECK=warn only prints the mismatch.
if [ ! -d /tmp/site/flashinfer ]; then
  mkdir -p /tmp/site && tar -C /tmp/site -xJf .devcarry/fisite.tar.xz
fi
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export FLASHINFER_CUDA_ARCH_LIST=9.0a MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
export FLASHINFER_WORKSPACE_BASE=${FLASHINFER_WORKSPACE_BASE:-/tmp/fiws}
if ! python3 scripts/lock.py check-gpu-host; then
  if [ "${MXFP4LAB_LOCK_CHECK:-fail}" = warn ]; then
    echo "on-gpu.sh: continuing on versions other than requirements/gpu.txt's (MXFP4LAB_LOCK_CHECK=warn)" >&2
  else
    return 1 2>/dev/null || exit 1
  fi
fi
