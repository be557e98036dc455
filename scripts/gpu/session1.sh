#!/usr/bin/env bash
# H100 session 1: golden interleave capture (tiny ext) in parallel with the cold W4A16 build probe.
# Usage on the device: bash scripts/gpu/session1.sh   (writes under $OUT)
set -u
source .devcarry/on-gpu.sh
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $OUT/nvidia-smi.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
( python3 scripts/gpu/h100_check.py golden --out $OUT/golden_run > $OUT/golden.log 2>&1 ) &
gp=$!
timeout 520 python3 scripts/gpu/build_probe.py --configs minimal -j 16 --moe-call --cache /tmp/mxcache \
  --out $OUT/build_probe_minimal.json 2>&1 | tee $OUT/build_probe.log | tail -40
wait $gp
tail -20 $OUT/golden.log
# bring the built library back if it is small (reuse across machines)
so=$(find /tmp/mxcache -name '*.so' | head -1)
[ -n "$so" ] && ls -la "$so" && (cd /tmp && find mxcache \( -name '*.so' -o -name '*.json' \) -print0 | tar --null -T - -cJf $OUT/w4a16_cache.tar.xz) && ls -la $OUT/w4a16_cache.tar.xz
du -sh /tmp/mxcache; find /tmp/mxcache -maxdepth 3 | head -30
