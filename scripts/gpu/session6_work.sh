#!/usr/bin/env bash
# One H100 (session 6), run detached by `WORK=scripts/gpu/session6_work.sh bash scripts/gpu/session5.sh`.
# Session 5 asked for 2 x H100 and got 2 x H200; this repeats its single-GPU timings on an H100:
#   1. Triton latency sweep (tune -> check -> time; decode paths 0/2/3 candidates), 4 shapes x 8 M (issue 6);
#   2. FlashInfer compact vs stock_k128 on GPT-OSS-120b (both libraries carried as archives: stock_k128 was
#      built on the session-5 host, same flashinfer/nvcc/flags -> same cache key) (issue 4);
#   3. same-machine baseline: FlashInfer + Marlin on seed-bench and GPT-OSS-120b at the sweep's M.
source scripts/gpu/job_env.sh
for c in compact stock_k128; do
  python3 -m mxfp4lab.build --configs $c --import .devcarry/w4a16_$c.tar.xz > /dev/null || { say "import $c failed"; touch $O/FAILED; exit 1; }
done
say "libraries imported"
MS=1,4,16,64,256,1024,4096,8192
timeout 420 python3 -m mxfp4lab.bench.moe --backends triton_w4a16 \
  --shapes gpt-oss-20b,gpt-oss-120b,dsv4-flash,seed-bench --m $MS --routing uniform \
  --reps 20 --rotate 4 --check-m 1,64,1024,8192 --out $O/latency_triton_h100.json > /tmp/triton_sweep.log 2>&1
say "triton sweep rc=$?"
for cfgs in compact stock_k128; do
  MXFP4LAB_BUILD_CONFIGS=$cfgs timeout 240 python3 -m mxfp4lab.bench.moe \
    --backends flashinfer_sm90 --shapes gpt-oss-120b --m 1,16,64,256,1024,4096 --routing uniform --reps 20 \
    --rotate 4 --check-m 1,1024 --out $O/config_set_${cfgs}_h100.json 2>&1 | grep -E "M=|wrote|Error" | cut -c1-220
  say "config set $cfgs timed"
done
timeout 400 python3 -m mxfp4lab.bench.moe --backends flashinfer_sm90,marlin_mxfp4 \
  --shapes gpt-oss-120b,seed-bench --m $MS --routing uniform --reps 20 --rotate 4 --check-m 1,1024 \
  --out $O/latency_baseline_h100.json > /tmp/baseline.log 2>&1
say "baseline rc=$?"
say "ALL DONE"
touch $O/DONE
