#!/usr/bin/env bash
# The whole session-5 GPU job on a 2 x H100 host, run DETACHED by scripts/gpu/session5.sh (which each
# `run` call polls; one call may last at most 10 min, this job ~20). Results go to /tmp/s5out as they
# come; each stage leaves a marker. Stages:
#   0. the compact W4A16 library from the carried archive (built on an H100 in session 2);
#   1. detached: the "stock_k128" config-set build (the 44 stock K-tile-128 candidates = what "full"
#      offers a GPT-OSS layer) on all but 4 cores (issue 4: does the compact set cost kernel speed?);
#   2. TP=2 and EP=2 of one GPT-OSS-120b layer over NCCL on the two GPUs (NVLink multicast off) (issue 4);
#   3. GPU 0: Triton correctness of decode paths 2 and 3 (poisoned outputs, every candidate, 4 shapes);
#      GPU 1 at the same time: the Triton latency sweep (tune -> check -> time) on 4 shapes (issue 6),
#      plus FlashInfer and Marlin at a few points as a same-machine baseline;
#   4. once the build is done and GPU 0 is free: FlashInfer compact vs stock_k128 on GPT-OSS-120b.
source scripts/gpu/job_env.sh
say "cores: $(nproc)"

python3 -m mxfp4lab.build --configs compact --import .devcarry/w4a16_compact.tar.xz || { say "import failed"; touch $O/FAILED; exit 1; }
say "compact library imported"

setsid nohup python3 scripts/gpu/build_probe.py --configs stock_k128 -j $(( $(nproc) - 4 )) --cache /tmp/mxcache \
  --keep-cache --out $O/build_probe_stock_k128_h100.json > /tmp/build_k128.log 2>&1 < /dev/null &
say "stock_k128 build started (detached, -j $(( $(nproc) - 4 )))"

for kind in tp ep; do
  timeout 300 python3 -m torch.distributed.run --nproc-per-node 2 -m mxfp4lab.distributed --kind $kind --model gpt-oss-120b \
    --tokens 1,16,256,1024 --out $O/${kind}2_nccl_h100.json 2>&1 | grep -vi autotun | tail -8
  say "$kind=2 done"
done

( CUDA_VISIBLE_DEVICES=0 timeout 420 python3 scripts/gpu/triton_check.py check --dequant 2,3 --out $O \
    --m 1,4,16,64,256,1024,8192 > /tmp/triton_check.log 2>&1; say "triton check rc=$?" ) &
chk=$!
( CUDA_VISIBLE_DEVICES=1 timeout 780 python3 -m mxfp4lab.bench.moe --backends triton_w4a16 \
    --shapes gpt-oss-20b,gpt-oss-120b,dsv4-flash,seed-bench --m 1,4,16,64,256,1024,4096,8192 --routing uniform \
    --reps 20 --rotate 4 --check-m 1,64,1024,8192 --out $O/latency_triton_h100.json > /tmp/triton_sweep.log 2>&1
  say "triton sweep rc=$?"
  CUDA_VISIBLE_DEVICES=1 timeout 240 python3 -m mxfp4lab.bench.moe --backends flashinfer_sm90,marlin_mxfp4 \
    --shapes gpt-oss-120b --m 1,64,1024 --routing uniform --reps 20 --rotate 4 --check-m 1,1024 \
    --out $O/latency_baseline_h100.json > /tmp/baseline.log 2>&1
  say "baseline rc=$?" ) &
swp=$!

wait $chk
for i in $(seq 1 120); do [ -f $O/build_probe_stock_k128_h100.json ] && break; sleep 5; done
[ -f $O/build_probe_stock_k128_h100.json ] || { say "stock_k128 build not done"; tail -c 2000 /tmp/build_k128.log; }
say "stock_k128 build finished"
for cfgs in compact stock_k128; do
  CUDA_VISIBLE_DEVICES=0 MXFP4LAB_BUILD_CONFIGS=$cfgs timeout 300 python3 -m mxfp4lab.bench.moe \
    --backends flashinfer_sm90 --shapes gpt-oss-120b --m 1,16,64,256,1024,4096 --routing uniform --reps 20 \
    --rotate 4 --check-m 1,1024 --out $O/config_set_${cfgs}_h100.json 2>&1 | grep -E "M=|wrote|Error" | cut -c1-220
  say "config set $cfgs timed"
done
wait $swp
say "ALL DONE"
touch $O/DONE
