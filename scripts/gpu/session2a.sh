#!/usr/bin/env bash
# H100 session 2, call A: cold "compact" W4A16 build (detached, timed) + golden interleave capture
# + ceilings, then wait for the build and bring the library back (reuse across machines).
set -u
source .devcarry/on-gpu.sh
export PYTHONPATH=/tmp/site:$PWD MXFP4LAB_CACHE=/tmp/mxcache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
setsid nohup python3 scripts/gpu/build_probe.py --configs compact -j 16 --cache /tmp/mxcache \
  --out /tmp/build_probe_compact.json > /tmp/build.log 2>&1 < /dev/null &
python3 scripts/gpu/h100_check.py golden --out $OUT 2>&1 | tail -12
for i in $(seq 1 100); do [ -f /tmp/build_probe_compact.json ] && break; sleep 5; done
cp /tmp/build_probe_compact.json /tmp/build.log $OUT/ 2>/dev/null
grep -E '"cold_build_s"|"library_bytes"' /tmp/build_probe_compact.json | head -3
(cd /tmp && find mxcache/fused_moe_90_w4a16 \( -name '*.so' -o -name 'spec.json' -o -name 'BUILD_OK' \) -print0 \
  | tar --null -T - -cJf $OUT/w4a16_compact_lib.tar.xz) && ls -la $OUT/w4a16_compact_lib.tar.xz
