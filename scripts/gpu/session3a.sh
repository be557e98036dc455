#!/usr/bin/env bash
# H100 session 3, call A (~8 min): W4A16 library from the carried archive (built on a CPU host: same
# cache key) or a detached cold build; Triton kernel check (every candidate tile, both dequant paths);
# Marlin smoke; FlashInfer kernel check on the H100 (issue 4). Every stage writes JSON to $OUT as it goes.
set -u
source .devcarry/on-gpu.sh
export PYTHONPATH=/tmp/site:$PWD MXFP4LAB_CACHE=/tmp/mxcache MXFP4LAB_BUILD_CONFIGS=compact PYTHONUNBUFFERED=1
export MXFP4LAB_MARLIN_LIBS=.devcarry/marlin CUDA_CACHE_MAXSIZE=4294967296
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
t0=$(date +%s)
ok=0
if [ -f .devcarry/w4a16_compact.tar.xz ]; then
  python3 -m mxfp4lab.build --configs compact --import .devcarry/w4a16_compact.tar.xz \
    && python3 -c "from mxfp4lab import build; build.load(configs='compact', build_if_missing=False); print('carried library loads')" \
    && ok=1
fi
if [ $ok = 0 ]; then
  echo "no usable carried library: cold build, detached"
  setsid nohup python3 scripts/gpu/build_probe.py --configs compact -j 14 --cache /tmp/mxcache \
    --out /tmp/build_probe_compact.json > /tmp/build.log 2>&1 < /dev/null &
fi
echo "library step: $(( $(date +%s) - t0 )) s"
timeout 260 python3 scripts/gpu/triton_check.py check --out $OUT 2>&1 | grep -v "^\s*$" | tail -40
echo "triton check done at $(( $(date +%s) - t0 )) s"
timeout 100 python3 -m mxfp4lab.bench.moe --backends marlin_mxfp4 --shapes gpt-oss-20b,dsv4-flash --m 1,64,1024 \
  --check-m all --routing uniform --reps 5 --out $OUT/marlin_smoke.json 2>&1 | grep -E "M=|unavailable|Error|error" | tail -12
echo "marlin smoke done at $(( $(date +%s) - t0 )) s"
if [ $ok = 0 ]; then
  for i in $(seq 1 60); do [ -f /tmp/build_probe_compact.json ] && break; sleep 5; done
  cp /tmp/build_probe_compact.json $OUT/ 2>/dev/null; tail -c 400 /tmp/build.log
  python3 -m mxfp4lab.build --configs compact --export $OUT/w4a16_compact_h100.tar.xz
fi
echo "library ready at $(( $(date +%s) - t0 )) s"
timeout $(( 570 - ($(date +%s) - t0) )) python3 scripts/gpu/h100_check.py kernel --out $OUT 2>&1 | grep -vE "^\s*$" | cut -c1-300 | tail -40
echo "kernel check done at $(( $(date +%s) - t0 )) s"
