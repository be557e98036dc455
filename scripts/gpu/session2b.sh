#!/usr/bin/env bash
# H100 session 2, call B (same warm machine): the latency sweep with the compact build.
set -u
source .devcarry/on-gpu.sh
export PYTHONPATH=/tmp/site:$PWD MXFP4LAB_CACHE=/tmp/mxcache MXFP4LAB_BUILD_CONFIGS=compact
timeout ${SWEEP_TIMEOUT:-540} python3 -m mxfp4lab.bench.moe --backends ${BACKENDS:-flashinfer_sm90} \
  --routing ${ROUTING:-uniform} --reps 20 --rotate 4 --check-m 1,64,1024,16384 \
  --out $OUT/latency_h100.json 2>&1 | grep -E "M=|ceilings|wrote"
