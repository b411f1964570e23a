#!/usr/bin/env bash
# Host faults, on a cluster of this test's own:
#   link_cut   host 2 of 3 loses its link mid-run: every rank ends within parallel.timeout_s +
#              10 s, the message names the rank and host that does not answer, the last
#              checkpoint loads, and --resume auto on the 2 remaining hosts (dp 3 -> 2, the same
#              global batch) continues as one process continues from that checkpoint
#   kill       every process of host 2 of 3 gets SIGKILL: the same
#   straggler  host 2 of 3 is shaped to 10 Mbit/s while the job runs: the next link probe and
#              its confirmation a step later name that host, once, and summary.json records it
#   preempt    SIGUSR1 to mpirun: every rank on both hosts stops after the same step with a
#              checkpoint (exit 75), and --resume auto continues on the uninterrupted trajectory
source "$(dirname "$0")/lib.sh"
case_name=${4:?which case}
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
     --train.val_every 0 --optim.warmup_steps 3)
# job_pids: the parallama processes of this test (every host's), and its mpirun
job_pids() {
  for p in $(pgrep -x parallama; pgrep -x mpirun); do
    [ "$(readlink "/proc/$p/cwd" 2> /dev/null)" = "$PWD" ] && echo "$p"
  done
  true
}
running() {  # running PID...: those still running parallama (not zombies)
  for p in "$@"; do
    [ "$(cat /proc/$p/comm 2> /dev/null)" = parallama ] &&
      [ "$(awk '{print $3}' /proc/$p/stat 2> /dev/null)" != Z ] && echo "$p"
  done
  true
}
since() { /usr/bin/python3 -c "import time; print(f'{time.time() - $1:.1f}')"; }
wait_for() {  # wait_for PATH SECONDS
  for _ in $(seq $(($2 * 10))); do [ -e "$1" ] && return 0; sleep 0.1; done
  fail "no $1 after $2 s"
}
# A host fails while dp 3 trains on 3 hosts; then the checks above.
host_fault() {  # host_fault link|kill
  cluster_up 3
  cmpi 3 "${run[@]}" --dp 3 --train.batch_size 2 --train.steps 100000 --train.ckpt_every 20 \
    --parallel.timeout_s 10 --train.out_dir run > out.txt 2> err.txt &
  job=$!
  wait_for run/step-40 60
  pids=$(job_pids)
  t0=$(date +%s.%N)
  if [ "$1" = link ]; then cl link 2 down; else cl kill 2; fi
  # Every rank, on every host, ends within timeout + 10 s.
  for _ in $(seq 200); do
    left=$(running $pids)
    [ -z "$left" ] && break
    sleep 0.1
  done
  took=$(since "$t0")
  [ -z "$left" ] || fail "ranks still running $took s after the fault: $left"
  /usr/bin/python3 -c "import sys; sys.exit(0 if $took <= 20 else 1)" || fail "ranks took $took s to end"
  # mpirun ends too (a cut host's daemon is given up on).
  for _ in $(seq 600); do kill -0 $job 2> /dev/null || break; sleep 0.1; done
  ! kill -0 $job 2> /dev/null || fail "mpirun still running $(since "$t0") s after the fault"
  set +e; wait $job; rc=$?; set -e
  [ $rc -ne 0 ] || fail "the job exited 0 after a host failed"
  host2=$(cl host 2)
  if [ "$1" = link ]; then
    grep -Eq "rank [01] \(host [^)]*-h[01]\): ([a-z-]+ )?[a-z_]+ #[0-9]+ did not complete within 10 s: no answer from rank 2 \(host $host2\)" err.txt ||
      fail "no message naming rank 2 on $host2: $(grep -v '^\[' err.txt | head -5)"
  else
    # mpirun ends the job first: its daemon on the host reports the killed rank
    grep -Eq "rank 2 .*on node $host2" err.txt || fail "no message naming rank 2 on $host2: $(grep -v '^\[' err.txt | head -5)"
  fi
  echo "$1 fault of $host2: ranks ended after ${took}s, mpirun after $(since "$t0")s (exit $rc)"
  last=$(cat run/latest)
  "$bin" eval --ckpt "run/$last" --data data/val.bin --batches 2 | grep -q perplexity ||
    fail "$last does not load"
  # The remaining hosts continue: dp 2 with 3 sequences each keeps the global batch of 6.
  n=${last#step-}
  cont=(--train.steps $((n + 10)) --train.ckpt_every 0)
  HOSTS="0 1" cmpi 2 "${run[@]}" --dp 2 --train.batch_size 3 "${cont[@]}" --train.out_dir run --resume auto \
    > resume.log 2>&1 || fail "resume on 2 hosts: $(tail -3 resume.log)"
  grep -q "from step $n" resume.log || fail "did not resume from $last: $(head -3 resume.log)"
  ranks_on_hosts run 0 1
  "$bin" "${run[@]}" --train.batch_size 6 "${cont[@]}" --train.out_dir alone --resume "run/$last" \
    > /dev/null
  compare metrics run/metrics.jsonl alone/metrics.jsonl --from $((n + 1)) ||
    fail "the continuation differs from one process continuing $last"
}
case $case_name in
  link_cut) host_fault link ;;
  kill) host_fault kill ;;
  straggler)
    cluster_up 3
    host2=$(cl host 2)
    strag=("${run[@]}" --dp 3 --train.batch_size 2 --train.ckpt_every 0 --parallel.link_probe_every 20
           --train.out_dir run)
    cmpi 3 "${strag[@]}" --train.steps 100000 > run.log 2>&1 &
    job=$!
    for _ in $(seq 300); do [ -s run/metrics.jsonl ] && [ "$(wc -l < run/metrics.jsonl)" -ge 4 ] && break; sleep 0.1; done
    cl shape 2 0.01  # while the job runs: the probe of step 3 saw it unshaped
    for _ in $(seq 600); do grep -q "network straggler" run.log && break; sleep 0.1; done
    mp=$(for p in $(pgrep -x mpirun); do [ "$(readlink /proc/$p/cwd)" = "$PWD" ] && echo $p; done)
    kill -USR1 $mp
    set +e; wait $job; rc=$?; set -e
    [ $rc -eq 75 ] || fail "exit $rc after SIGUSR1: $(tail -3 run.log)"
    [ "$(grep -c "is a network straggler" run.log)" -eq 1 ] || fail "not one network straggler line: $(grep straggler run.log)"
    grep -q "warning: host $host2 is a network straggler" run.log || fail "$host2 not named: $(grep straggler run.log)"
    /usr/bin/python3 - run/metrics.jsonl <<'PY' || fail "probes"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
probes = {r["step"]: {l["from"]: l["mb_per_s"] for l in r["link_mb_per_s"]} for r in rows if "link_mb_per_s" in r}
first, last = probes[3], probes[max(probes)]
assert min(first.values()) > 5.0, first  # unshaped at step 3: every link far above 10 Mbit/s
assert last[2] < 2.5 < min(last[0], last[1]), last  # 10 Mbit/s = 1.25 MB/s (and the bucket's burst)
PY
    # Resumed with the host still slow: named again at its first probe's confirmation (the
    # first probe is at the third step), and in summary.json.
    n=$(cat run/latest); n=${n#step-}
    cmpi 3 "${strag[@]}" --train.steps $((n + 5)) --resume auto > resumed.log 2>&1
    /usr/bin/python3 - run/summary.json "$host2" $((n + 4)) <<'PY' || fail "summary"
import json, sys
named = json.load(open(sys.argv[1]))["network_stragglers"]
assert [x["host"] for x in named] == [sys.argv[2]] and named[0]["rank"] == 2, named
assert named[0]["named_at_step"] == int(sys.argv[3]), named
assert named[0]["mb_per_s"] < 2.5 < named[0]["median_mb_per_s"], named
PY
    echo "straggler: $host2, shaped to 10 Mbit/s while the job ran, named" ;;
  preempt)
    cluster_up 2
    pre=("${run[@]}" --dp 2 --train.batch_size 4 --train.steps 3000 --train.ckpt_every 0
         --train.log_every 100)
    cmpi 2 "${pre[@]}" --train.out_dir full > /dev/null
    cmpi 2 "${pre[@]}" --train.out_dir usr --resume auto > usr.log 2>&1 &
    job=$!
    for _ in $(seq 600); do [ -s usr/metrics.jsonl ] && [ "$(wc -l < usr/metrics.jsonl)" -ge 50 ] && break; sleep 0.1; done
    mp=$(for p in $(pgrep -x mpirun); do [ "$(readlink /proc/$p/cwd)" = "$PWD" ] && echo $p; done)
    [ -n "$mp" ] || fail "no mpirun"
    kill -USR1 $mp
    set +e; wait $job; rc=$?; set -e
    [ $rc -eq 75 ] || fail "exit $rc after SIGUSR1 (expected 75): $(tail -3 usr.log)"
    n=$(grep -o 'stopped by SIGUSR1 after step [0-9]*' usr.log | grep -o '[0-9]*$')
    [ -n "$n" ] && [ "$(cat usr/latest)" = "step-$n" ] || fail "no checkpoint of the stop: $(tail -3 usr.log)"
    [ ! -e usr/step-3000 ] || fail "the run was over before the signal"
    cmpi 2 "${pre[@]}" --train.out_dir usr --resume auto > usr2.log
    grep -q "from step $n" usr2.log || fail "did not resume from step $n"
    compare metrics usr/metrics.jsonl full/metrics.jsonl --from 1 || fail "trajectory after SIGUSR1"
    compare params usr/step-3000/model.safetensors full/step-3000/model.safetensors || fail "parameters"
    echo "preempt: both hosts stopped after step $n; resumed on the same trajectory" ;;
  *) fail "unknown case $case_name" ;;
esac
