#!/usr/bin/env bash
# One `run` call: start $WORK (default scripts/gpu/session5_work.sh; session6_work.sh on one H100) detached
# if it is not running,
# then follow its log until it is done or this call's ~9 min are up; copy what exists to $OUT every time
# (one tarball of /tmp/s5out + the logs), so every call brings back the results so far. Call again on the
# same warm machine until the log says ALL DONE.
set -u
LIMIT=${LIMIT:-540}
t0=$(date +%s)
if [ ! -f /tmp/s5.started ]; then
  touch /tmp/s5.started
  setsid nohup bash ${WORK:-scripts/gpu/session5_work.sh} > /tmp/s5.log 2>&1 < /dev/null &
  echo "started ${WORK:-scripts/gpu/session5_work.sh}"
fi
seen=0
while :; do
  n=$(wc -l < /tmp/s5.log)
  [ "$n" -gt "$seen" ] && { sed -n "$((seen + 1)),${n}p" /tmp/s5.log | cut -c1-240; seen=$n; }
  [ -f /tmp/s5out/DONE ] || [ -f /tmp/s5out/FAILED ] && break
  [ $(( $(date +%s) - t0 )) -ge "$LIMIT" ] && break
  sleep 5
done
echo "--- triton check (tail)"; tail -n 25 /tmp/triton_check.log 2>/dev/null | cut -c1-200
echo "--- triton sweep (tail)"; grep -E "M=|rejected|Error" /tmp/triton_sweep.log 2>/dev/null | tail -n 40 | cut -c1-200
echo "--- baseline (tail)"; grep -E "M=|Error" /tmp/baseline.log 2>/dev/null | tail -n 8 | cut -c1-200
echo "--- build (tail)"; tail -c 600 /tmp/build_k128.log 2>/dev/null
cp /tmp/s5.log /tmp/triton_check.log /tmp/triton_sweep.log /tmp/baseline.log /tmp/build_k128.log /tmp/s5out/ 2>/dev/null
tar czf $OUT/s5out.tgz -C /tmp s5out
ls -la /tmp/s5out
