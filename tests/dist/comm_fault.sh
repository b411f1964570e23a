#!/usr/bin/env bash
# A rank that stops answering: the others report it within the collective timeout (2 s here)
# and the job ends with a non-zero code instead of hanging. With the collective check on, the
# message names the rank that never arrived; without it, the rank whose ping is answered while it
# waits for no communication.
source "$(dirname "$0")/lib.sh"
for mode in checked unchecked; do
  start=$(date +%s)
  set +e
  timeout 60 mpirun --oversubscribe -np 3 "$fault" "$mode" > out.txt 2> err.txt
  rc=$?
  set -e
  took=$(( $(date +%s) - start ))
  [ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "$mode: exit code $rc"
  [ $took -lt 30 ] || fail "$mode: took ${took}s"
  if [ $mode = checked ]; then
    grep -q "all_reduce #1: ranks 1 never arrived" err.txt || fail "$mode message: $(cat err.txt)"
  else
    # Its ping is answered while it waits for nothing: it is named as the rank that did not arrive.
    grep -q "all_reduce #1 did not complete within 2 s: rank 1 (host [^)]*) did not arrive" err.txt ||
      fail "$mode message: $(cat err.txt)"
  fi
  echo "$mode: exit $rc after ${took}s: $(grep -m1 '^error' err.txt)"
done
