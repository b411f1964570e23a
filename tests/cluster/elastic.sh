#!/usr/bin/env bash
# parallama launch keeps a run going when a host fails (launch/supervisor.h). The tiny model
# trains over 4 hosts of a cluster of this test's own (dp 4, global batch 12: one sequence, 3
# micro-batches a rank, a checkpoint every 10 steps); at a random step after the second checkpoint
#   kill       every process of host 3 gets SIGKILL,
#   link_cut   host 3 loses its link;
# the supervisor finds host 3 lost, relaunches on hosts 0-2 (dp 3, 4 micro-batches: the same
# global batch) with --resume auto, and the run completes. Its loss at every step equals one
# process's with the global batch whole, within 1e-5 relative (the steps after the checkpoint are
# recomputed with the same samples), and launches.jsonl records both attempts. And
#   stop       SIGUSR1 to the supervisor: every rank stops after one step with a checkpoint, exit
#              75, nothing relaunched.
source "$(dirname "$0")/lib.sh"
case_name=${4:?which case}
prepare_tiny
steps=100  # of 256 tokens: about 5 s on 4 hosts, so that the fault lands mid-run
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
     --model.max_seq_len 256 --train.seq_len 256 --train.val_every 0 --optim.warmup_steps 3 --train.steps $steps
     --train.ckpt_every 10)
"$bin" "${run[@]}" --train.batch_size 12 --train.out_dir alone > alone.log
cluster_up 4
# What the cluster's mpirun prefix sets (scripts/cluster.sh), as the environment launch's mpirun
# inherits; the agent and the subnet also tell launch how to reach the hosts.
subnet=$(awk 'prev == "btl_tcp_if_include" {print} {prev = $0}' "$cluster_dir/mpirun.args")
[ -n "$subnet" ] || fail "no subnet in $cluster_dir/mpirun.args"
export OMPI_MCA_plm_rsh_agent=$cluster_dir/agent OMPI_MCA_btl=self,vader,tcp
export OMPI_MCA_btl_tcp_if_include=$subnet OMPI_MCA_oob_tcp_if_include=$subnet
export OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_oob_tcp_keepalive_time=10
export OMPI_MCA_oob_tcp_keepalive_intvl=2 OMPI_MCA_oob_tcp_keepalive_probes=3
cl run -- "$bin" launch --hostfile "$cluster_dir/hostfile" --max-restarts 2 -- "${run[@]}" \
  --train.batch_size 1 --train.micro_batches 3 --parallel.timeout_s 10 --train.out_dir run \
  > launch.log 2>&1 &
job=$!
for _ in $(seq 1200); do [ -e run/step-20 ] && break; sleep 0.1; done
[ -e run/step-20 ] || fail "no second checkpoint: $(tail -5 launch.log)"
sleep "$(/usr/bin/python3 -c 'import random; print(round(random.uniform(0, 0.5), 2))')"
if [ "$case_name" = stop ]; then  # SIGUSR1 to the supervisor: a graceful stop, no relaunch
  sup=$(for p in $(pgrep -x parallama); do
          [ "$(readlink /proc/$p/cwd)" = "$PWD" ] && grep -qa launch /proc/$p/cmdline && echo $p
        done; true)
  [ -n "$sup" ] || fail "no supervisor process"
  kill -USR1 $sup
  set +e; wait $job; rc=$?; set -e
  [ $rc -eq 75 ] || fail "launch exited $rc after SIGUSR1 (expected 75): $(tail -5 launch.log)"
  grep -q "launch: SIGUSR1: asking the job to stop" launch.log || fail "$(grep launch: launch.log)"
  n=$(grep -o 'stopped by SIGUSR1 after step [0-9]*' launch.log | grep -o '[0-9]*$')
  [ -n "$n" ] && [ "$(cat run/latest)" = "step-$n" ] || fail "no checkpoint of the stop: $(tail -3 launch.log)"
  [ "$(wc -l < run/launches.jsonl)" -eq 1 ] || fail "relaunched after a stop: $(cat run/launches.jsonl)"
  echo "stop: SIGUSR1 to launch stopped every rank after step $n with a checkpoint, exit 75"
  exit 0
fi
host3=$(cl host 3)
if [ "$case_name" = kill ]; then cl kill 3; else cl link 3 down; fi
for _ in $(seq 3000); do kill -0 $job 2> /dev/null || break; sleep 0.1; done
kill -0 $job 2> /dev/null && fail "launch still running 300 s after the fault: $(tail -5 launch.log)"
set +e; wait $job; rc=$?; set -e
[ $rc -eq 0 ] || fail "launch exited $rc: $(grep -v '^\[' launch.log | tail -8)"
grep -q "launch: host $host3 is lost" launch.log || fail "host 3 not named lost: $(grep launch: launch.log)"
[ "$(cat run/latest)" = "step-$steps" ] || fail "the run did not complete: $(cat run/latest)"
/usr/bin/python3 - run/launches.jsonl "$host3" $steps <<'PY' || fail "launches.jsonl: $(cat run/launches.jsonl)"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
assert len(a) == 2, a
first, second = a
assert len(first["hosts"]) == 4 and first["exit_code"] != 0, first
assert first["layout"] == {"dp": 4, "tp": 1, "pp": 1, "micro_batches": 3, "batch_size": 1}, first
assert first["checkpoint_to"] >= 20 and first["seconds_lost"] >= 0, first
assert first["steps_done"] >= first["checkpoint_to"], first
assert sys.argv[2] not in second["hosts"] and len(second["hosts"]) == 3, second
assert second["layout"]["dp"] == 3 and second["layout"]["micro_batches"] == 4, second
assert second["exit_code"] == 0 and second["checkpoint_to"] == int(sys.argv[3]), second
assert second["steps_done"] == int(sys.argv[3]) - second["checkpoint_from"], second
print(f"attempt 1 reached checkpoint {first['checkpoint_to']}, lost {first['seconds_lost']:.1f} s; "
      f"attempt 2 on {second['hosts']} completed")
PY
compare metrics run/metrics.jsonl alone/metrics.jsonl --from 1 ||
  fail "the elastic run's losses differ from one process's"
echo "$case_name of $host3: the run continued on 3 hosts with one process's losses"
