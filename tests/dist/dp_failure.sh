#!/usr/bin/env bash
# A rank is killed (kill -9) in the middle of training: a data-parallel worker, the server
# of a parameter-server job, and a tensor-parallel rank of a dp 2 × tp 2 job; and a
# tensor-parallel rank is stopped (SIGSTOP): its peer's collective times out naming itself; and
# a pipeline stage is killed: no process waits forever in a send or a receive.
# No rank may hang: the job must end with a non-zero code within 30 s, with a message naming the
# failure, and the last completed checkpoint must still load.
source "$(dirname "$0")/lib.sh"
prepare_tiny
kill_rank() {  # [SIGNAL=KILL|STOP] kill_rank NP RANK ARGS...
local np=$1 victim_rank=$2 signal=${SIGNAL:-KILL}; shift 2
rm -rf run
set +e
mpirun --oversubscribe -np "$np" "$bin" train --config "$src/configs/tiny.toml" --data.dir data \
  --model.vocab_size 400 --train.batch_size 2 --train.steps 100000 --train.ckpt_every 20 \
  --train.val_every 0 --parallel.timeout_s 10 --train.out_dir run "$@" > out.txt 2> err.txt &
job=$!
set -e
for _ in $(seq 600); do [ -d run/step-40 ] && break; sleep 0.1; done
[ -d run/step-40 ] || fail "training did not reach step 40"
# This job's ranks: parallama processes running in this test's directory.
ranks=""
for p in $(pgrep -f "parallama train"); do
  [ "$(readlink /proc/$p/cwd)" = "$PWD" ] && ranks="$ranks $p"
done
victim=""
for p in $ranks; do
  tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$victim_rank" && victim=$p
done
[ -n "$victim" ] || fail "rank $victim_rank not found"
killed_at=$(date +%s.%N)
kill -s "$signal" "$victim"
set +e
wait $job
rc=$?
set -e
took=$(/usr/bin/python3 -c "import time; print(f'{time.time() - $killed_at:.1f}')")
[ $rc -ne 0 ] || fail "job exited 0 after a rank was killed"
/usr/bin/python3 -c "import sys; sys.exit(0 if $took < 30 else 1)" || fail "job took ${took}s to end"
if [ "$signal" = STOP ]; then  # a stuck rank: its peers name the collective that timed out
  # Its tensor-parallel peer waits in a tensor-parallel collective or in one of its replica (the
  # same ranks here, pp 1), whichever it reached first, or in a world collective (a checkpoint's).
  grep -Eq "(tensor-parallel|replica|world) [a-z_]+ #[0-9]+ did not complete within 10 s" err.txt out.txt ||
    fail "no message naming the operation: $(cat err.txt)"
else
  grep -Eq "signal 9|Killed|did not complete|never arrived" err.txt out.txt ||
    fail "no message naming the failure: $(cat err.txt)"
fi
sleep 1
for p in $ranks; do  # gone, or a zombie waiting to be reaped (not running)
  state=$(awk '{print $3}' /proc/$p/stat 2> /dev/null || true)
  [ -z "$state" ] || [ "$state" = Z ] || fail "rank process $p left running (state $state)"
done
last=run/$(cat run/latest)
"$bin" eval --ckpt "$last" --data data/val.bin --batches 2 | grep -q perplexity || fail "$last does not load"
echo "rank $victim_rank of $np sent SIG$signal ($*): job ended with code $rc after ${took}s; $last loads"
}
kill_rank 2 1 --dp 2
kill_rank 3 2 --dp 2 --parallel.sync ps
kill_rank 4 3 --dp 2 --tp 2
SIGNAL=STOP kill_rank 2 1 --tp 2  # stuck, not dead: the timeout names the operation
kill_rank 2 1 --pp 2 --train.micro_batches 2  # a pipeline stage
