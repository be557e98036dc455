#!/usr/bin/env bash
# Run a list of GPU steps one after another; each step's result file and log land in an output directory
# as it goes, so a job that is cut off keeps everything finished before.
#
#   scripts/gpu/job.sh run    OUT STEPS [ENV]   # run the steps now, in this shell
#   scripts/gpu/job.sh start  OUT STEPS [ENV]   # the same, detached (survives the calling shell)
#   scripts/gpu/job.sh follow OUT [SECONDS]     # print the job's new log lines until it ends or SECONDS pass
#
# STEPS: a text file with one step per line, `NAME COMMAND...` (blank lines and # comments are skipped).
# In COMMAND, {out} is replaced by OUT/NAME.json (give it to the step's --out) and {dir} by OUT/NAME (a folder,
# made before the step; no trailing slash: write {dir}/FILE).
# Example (docs/gpu.md, "Run a job"):
#     check      python3 scripts/gpu/check_sm90.py all --out {dir}
#     latency    python3 -m mxfp4lab bench moe --backends flashinfer_sm90,marlin_mxfp4 --out {out}
#
# What is written to OUT:
#   provenance.json   the machine, versions and commit (`python3 -m mxfp4lab provenance`), first
#   NAME.log          the step's stdout and stderr
#   NAME.json / NAME/ what the step wrote there (result files carry their own provenance)
#   job.log           one line per step: start, exit status, seconds
#   DONE              when every step ran; FAILED (the failing step names) when one exited non-zero
# Each step runs under `timeout ${STEP_TIMEOUT:-3600}`; a failing step does not stop the others.
# ENV: a file sourced before the first step (e.g. the PYTHONPATH of packages staged for a host without an
# index, caches: MXFP4LAB_CACHE, MXFP4LAB_MARLIN_LIBS, MXFP4LAB_BUILD_CONFIGS).
set -u

usage() { sed -n '2,8p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 out=$2
mkdir -p "$out"

run_steps() {
  local steps=$1 env=${2:-}
  export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
  if [ -n "$env" ]; then
    # shellcheck disable=SC1090
    source "$env" || { echo "cannot source $env" > "$out/FAILED"; exit 1; }
  fi
  rm -f "$out/DONE" "$out/FAILED"
  python3 -m mxfp4lab provenance > "$out/provenance.json" 2> "$out/provenance.log"
  local failed="" name rest t0 rc
  while read -r name rest; do
    case "$name" in ''|'#'*) continue ;; esac
    case "$rest" in *'{dir}'*) mkdir -p "$out/$name" ;; esac
    rest=${rest//\{out\}/$out/$name.json}
    rest=${rest//\{dir\}/$out/$name}
    t0=$(date +%s)
    echo "$(date -u +%FT%TZ) start $name: $rest" >> "$out/job.log"
    timeout "${STEP_TIMEOUT:-3600}" bash -c "$rest" > "$out/$name.log" 2>&1 < /dev/null
    rc=$?
    echo "$(date -u +%FT%TZ) end   $name: exit $rc after $(( $(date +%s) - t0 )) s" >> "$out/job.log"
    [ "$rc" -eq 0 ] || failed="$failed $name"
  done < "$steps"
  if [ -n "$failed" ]; then echo "$failed" > "$out/FAILED"; else touch "$out/DONE"; fi
}

case "$cmd" in
  run)
    [ $# -ge 3 ] || usage
    run_steps "$3" "${4:-}"
    ;;
  start)
    [ $# -ge 3 ] || usage
    if [ -f "$out/job.pid" ] && kill -0 "$(cat "$out/job.pid")" 2> /dev/null; then
      echo "a job is already running in $out (pid $(cat "$out/job.pid"))"; exit 0
    fi
    setsid nohup bash "$0" run "$out" "$3" "${4:-}" > "$out/runner.log" 2>&1 < /dev/null &
    echo $! > "$out/job.pid"
    echo "started (pid $!): follow with scripts/gpu/job.sh follow $out"
    ;;
  follow)
    limit=${3:-540} t0=$(date +%s) seen=0
    while :; do
      if [ -f "$out/job.log" ]; then
        n=$(wc -l < "$out/job.log")
        [ "$n" -gt "$seen" ] && { sed -n "$((seen + 1)),${n}p" "$out/job.log"; seen=$n; }
      fi
      { [ -f "$out/DONE" ] || [ -f "$out/FAILED" ]; } && break
      [ $(( $(date +%s) - t0 )) -ge "$limit" ] && { echo "(still running after ${limit} s)"; exit 0; }
      sleep 5
    done
    if [ -f "$out/FAILED" ]; then echo "FAILED:$(cat "$out/FAILED")"; exit 1; fi
    echo "DONE"
    ;;
  *) usage ;;
esac
