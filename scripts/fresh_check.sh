#!/usr/bin/env bash
# `make fresh-check`: what a new user gets. A fresh clone of the committed HEAD in a throwaway folder, a new
# virtual environment (the Makefile's own .venv in that clone), an empty pip cache (every package comes
# from the index again; FRESH_PIP_CACHE=keep uses the usual cache), then the README's two commands in
# order, each timed. Prints the times and the locked versions of torch, triton and FlashInfer; exits
# non-zero when either command fails. Uncommitted changes are not in the clone: commit first.
#   FRESH_DIR=/tmp/x  where to clone (default: a new mktemp folder, kept for its logs)
#   PYTHON=python3    the interpreter that creates the virtual environment
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
head=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "fresh-check: uncommitted changes are not checked (the clone is of HEAD $head)"
fi
work=${FRESH_DIR:-$(mktemp -d /tmp/mxfp4lab-fresh.XXXXXX)}
mkdir -p "$work"
rm -rf "$work/repo" "$work/pip-cache"
git clone -q --no-checkout "$top" "$work/repo"
git -C "$work/repo" checkout -q --detach "$head"
if [ "${FRESH_PIP_CACHE:-empty}" != keep ]; then
  export PIP_CACHE_DIR="$work/pip-cache"
fi
export PYTHON=${PYTHON:-python3}
echo "fresh-check: HEAD $head in $work/repo ($($PYTHON --version), pip cache ${PIP_CACHE_DIR:-as usual})"

declare -A took
for cmd in reports test; do
  log="$work/make-$cmd.log"
  t0=$(date +%s)
  if make -C "$work/repo" "$cmd" > "$log" 2>&1; then rc=0; else rc=$?; fi
  took[$cmd]=$(( $(date +%s) - t0 ))
  tail -n 3 "$log" | sed "s/^/  make $cmd | /"
  if [ "$rc" != 0 ]; then
    echo "fresh-check FAILED: make $cmd exited $rc after ${took[$cmd]} s (log: $log)"
    exit "$rc"
  fi
done
summary=$(grep -E '[0-9]+ passed' "$work/make-test.log" | tail -n 1)
pins=$(cd "$work/repo" && for p in triton flashinfer-python apache-tvm-ffi; do
  printf '%s==%s ' "$p" "$(python3 scripts/lock.py pin "$p")"; done)
torch=$(grep -E '^torch==' "$work/repo/requirements/cpu.txt")
echo "fresh-check ok: make reports ${took[reports]} s, make test ${took[test]} s (fresh clone, new venv)"
echo "  pytest: $summary"
echo "  locked: $torch $pins"
