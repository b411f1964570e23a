#!/usr/bin/env bash
# Graceful preemption: a signal to one rank, or SIGUSR1 to mpirun (which hands it to every rank),
# stops every rank after the same step with a checkpoint and exit code 75; `--resume auto`
# continues on the same trajectory as a run that never stopped. A second signal stops at once, and
# the next start sweeps what that left. A single process stops on SIGINT the same way.
source "$(dirname "$0")/lib.sh"
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
     --train.steps 6000 --train.batch_size 8 --train.val_every 0 --train.ckpt_every 0
     --train.log_every 100)
mpi 2 "${run[@]}" --dp 2 --train.out_dir full > /dev/null

wait_steps() {  # wait_steps METRICS N: until the run has logged N steps
  for _ in $(seq 600); do
    [ -f "$1" ] && [ "$(wc -l < "$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  fail "$1: no $2 steps logged"
}
stopped_at() {  # stopped_at LOG: the step the run stopped after
  grep -o 'stopped by SIG[A-Z0-9]* after step [0-9]*' "$1" | grep -o '[0-9]*$'
}
check_stop() {  # check_stop DIR LOG RC SIGNAL
  [ "$3" -eq 75 ] || fail "$1: exit $3 after a signal (expected 75): $(tail -3 "$2")"
  grep -q "stopped by $4 after step" "$2" || fail "$1: no stop message: $(tail -3 "$2")"
  local n; n=$(stopped_at "$2")
  [ "$(cat "$1/latest")" = "step-$n" ] || fail "$1: latest is $(cat "$1/latest"), not step-$n"
  grep -q "\"step\": $n," "$1/step-$n/trainer.json" || fail "$1: checkpoint of another step"
  [ ! -e "$1/step-6000" ] && [ ! -e "$1/step-1500" ] || fail "$1: the run was over before the signal"
  [ "$(grep -c "stopped by" "$2")" -eq 1 ] || fail "$1: not one stop message"
  echo "$1: stopped after step $n"
}

# SIGTERM to rank 1 alone (as a scheduler that signals one task): both ranks stop together.
mpi 2 "${run[@]}" --dp 2 --train.out_dir one --resume auto > one.log 2>&1 &
job=$!
wait_steps one/metrics.jsonl 50
kill -TERM "$(rank_pid 1)"
set +e; wait $job; rc=$?; set -e
check_stop one one.log $rc SIGTERM
mpi 2 "${run[@]}" --dp 2 --train.out_dir one --resume auto > one2.log
grep -q "resuming .* from step $(stopped_at one.log)" one2.log || fail "did not resume from latest"
compare metrics one/metrics.jsonl full/metrics.jsonl --from 1 || fail "trajectory after SIGTERM"
compare params one/step-6000/model.safetensors full/step-6000/model.safetensors || fail "parameters"

# SIGUSR1 to mpirun, which hands it to every rank.
mpi 2 "${run[@]}" --dp 2 --train.out_dir usr --resume auto > usr.log 2>&1 &
job=$!
wait_steps usr/metrics.jsonl 50
pid=$(pgrep -x mpirun -P $job | head -1 || true)
[ -n "$pid" ] || pid=$job  # the shell may have become mpirun itself
kill -USR1 "$pid"
set +e; wait $job; rc=$?; set -e
check_stop usr usr.log $rc SIGUSR1
mpi 2 "${run[@]}" --dp 2 --train.out_dir usr --resume auto > /dev/null
compare metrics usr/metrics.jsonl full/metrics.jsonl --from 1 || fail "trajectory after SIGUSR1"

# A second signal stops at once; an unfinished checkpoint directory is swept at the next start.
mpi 2 "${run[@]}" --dp 2 --train.out_dir twice > twice.log 2>&1 &
job=$!
wait_steps twice/metrics.jsonl 50
p0=$(rank_pid 0)
# Two signals of one kind sent at once may merge into one pending signal before the process runs;
# two kinds never do.
kill -TERM "$p0"; kill -INT "$p0" 2> /dev/null || true
set +e; wait $job; rc=$?; set -e
[ $rc -ne 0 ] && [ $rc -ne 75 ] || fail "a second signal did not stop at once (exit $rc)"
mkdir -p twice/.step-77.tmp-999999 && echo x > twice/.step-77.tmp-999999/model.safetensors
mpi 2 "${run[@]}" --dp 2 --train.out_dir twice --resume auto --stop-at 10 > twice2.log
grep -q "removed 1 unfinished checkpoint" twice2.log || fail "stale directory not reported"
[ ! -e twice/.step-77.tmp-999999 ] || fail "stale directory left"

# --sync ps: SIGTERM to the parameter server alone; it passes it on, and the workers stop.
ps=("${run[@]}" --train.steps 1500 --dp 2 --sync ps --ps.servers 1)
mpi 3 "${ps[@]}" --train.out_dir ps_full > /dev/null
mpi 3 "${ps[@]}" --train.out_dir ps --resume auto > ps.log 2>&1 &
job=$!
wait_steps ps/metrics.jsonl 50
kill -TERM "$(rank_pid 2)"
set +e; wait $job; rc=$?; set -e
check_stop ps ps.log $rc SIGTERM
mpi 3 "${ps[@]}" --train.out_dir ps --resume auto > /dev/null
compare metrics ps/metrics.jsonl ps_full/metrics.jsonl --from 1 || fail "ps trajectory"

# One process, Ctrl-C.
"$bin" "${run[@]}" --train.out_dir solo > solo.log 2>&1 &
job=$!
wait_steps solo/metrics.jsonl 50
kill -INT $job
set +e; wait $job; rc=$?; set -e
check_stop solo solo.log $rc SIGINT
echo "preemption: every rank stops after the same step with a checkpoint; resume continues"
