#!/usr/bin/env bash
# H100 session 3, calls B/C (same warm machine as call A): the latency sweep, all backends.
# env: SHAPES, ROUTING (uniform), MS (all 15), BACKENDS, TAG (output name), SWEEP_TIMEOUT (s)
set -u
source .devcarry/on-gpu.sh
export PYTHONPATH=/tmp/site:$PWD MXFP4LAB_CACHE=/tmp/mxcache MXFP4LAB_BUILD_CONFIGS=compact PYTHONUNBUFFERED=1
export MXFP4LAB_MARLIN_LIBS=.devcarry/marlin CUDA_CACHE_MAXSIZE=4294967296
[ -f /tmp/mxcache/fused_moe_90_w4a16/*/BUILD_OK ] || python3 -m mxfp4lab.build --configs compact --import .devcarry/w4a16_compact.tar.xz
timeout ${SWEEP_TIMEOUT:-560} python3 -m mxfp4lab.bench.moe \
  --backends ${BACKENDS:-flashinfer_sm90,marlin_mxfp4,triton_w4a16,torch_naive} --shapes ${SHAPES} \
  --m ${MS:-1,2,4,8,16,32,64,128,256,512,1024,2048,4096,8192,16384} --routing ${ROUTING:-uniform} \
  --reps 20 --rotate 4 --check-m 1,64,1024,16384 --out $OUT/latency_${TAG:-part}.json 2>&1 \
  | grep -E "M=|ceilings|wrote|unavailable|Traceback|Error" | cut -c1-200
