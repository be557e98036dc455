#!/usr/bin/env bash
# Multi-GPU H100 host (nvidia-h100-x4, or x2), one call of ~10 min, the two runs issue 4 still lacks:
#  1. TP=2 and EP=2 of one GPT-OSS-120b layer over NCCL on two GPUs (NVLink multicast off), vs TP=1;
#  2. the restricted ("compact", 11 instantiations) vs the FULL stock W4A16 config set (116), timed on a
#     GPT-OSS-120b layer at M in {1, 16, 64, 256, 1024, 4096} (FlashInfer autotuned in both).
# The full set builds detached on all but 4 cores while step 1 runs. Needs the compact library as
# .devcarry/w4a16_compact.tar.xz (`mxfp4lab build --configs compact --export ...`) to skip its build.
set -u
source .devcarry/on-gpu.sh
export PYTHONPATH=/tmp/site:$PWD MXFP4LAB_CACHE=/tmp/mxcache PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader
t0=$(date +%s)
python3 -m mxfp4lab.build --configs compact --import .devcarry/w4a16_compact.tar.xz || exit 1
setsid nohup python3 scripts/gpu/build_probe.py --configs full -j $(( $(nproc) - 4 )) --cache /tmp/mxcache \
  --keep-cache --out /tmp/build_probe_full.json > /tmp/build_full.log 2>&1 < /dev/null &
for kind in tp ep; do
  MXFP4LAB_BUILD_CONFIGS=compact timeout 180 torchrun --nproc-per-node 2 -m mxfp4lab.distributed --kind $kind \
    --model gpt-oss-120b --m 16,256,1024 --out $OUT/${kind}2_nccl_h100.json 2>&1 | grep -vi autotun | tail -6
done
echo "TP/EP done at $(( $(date +%s) - t0 )) s"
for i in $(seq 1 90); do [ -f /tmp/build_probe_full.json ] && break; sleep 5; done
cp /tmp/build_probe_full.json $OUT/ 2>/dev/null || { tail -c 1500 /tmp/build_full.log; exit 1; }
echo "full build done at $(( $(date +%s) - t0 )) s"
for cfgs in compact full; do
  MXFP4LAB_BUILD_CONFIGS=$cfgs timeout 150 python3 -m mxfp4lab.bench.moe --backends flashinfer_sm90 \
    --shapes gpt-oss-120b --m 1,16,64,256,1024,4096 --routing uniform --reps 20 --check-m 1,1024 \
    --out $OUT/config_set_${cfgs}_h100.json 2>&1 | grep -E "M=|wrote"
done
echo "all done at $(( $(date +%s) - t0 )) s"
