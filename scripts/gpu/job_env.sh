# Sourced by the detached GPU jobs (session5_work.sh, session6_work.sh): the staged FlashInfer site, the
# W4A16 library cache, Marlin's libraries, results dir $O, and `say` (a line stamped with seconds since start).
set -u
O=/tmp/s5out
mkdir -p $O
source .devcarry/on-gpu.sh
export PYTHONPATH=/tmp/site:$PWD MXFP4LAB_CACHE=/tmp/mxcache PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
export MXFP4LAB_MARLIN_LIBS=.devcarry/marlin CUDA_CACHE_MAXSIZE=4294967296 MXFP4LAB_BUILD_CONFIGS=compact
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=index,name,driver_version,clocks.max.sm --format=csv,noheader
