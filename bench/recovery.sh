#!/usr/bin/env bash
# Recovery time of `parallama launch` when a host dies: kjv-small on the KJV data over 4 hosts of
# a cluster on this machine (scripts/cluster.sh, 1 Gbit/s; dp 4, one sequence of 256 tokens and
# 3 micro-batches a rank: a global batch of 12), a checkpoint every INTERVAL steps; when the run
# reaches step 1.5 × INTERVAL every process of host 3 is killed. launch relaunches on hosts 0-2
# (dp 3, 4 micro-batches). From launches.jsonl and metrics.jsonl (both carry Unix times):
#   detection   the kill to the end of the failed attempt (mpirun has ended)
#   relaunch    that to the start of the next attempt (asking the hosts, choosing the layout)
#   loading     that to the end of the first new step, less one step's compute (mpirun's start,
#               the processes' start-up, the checkpoint loaded)
#   recompute   from there until the run is back at the step it was killed at
# and their sum. Prints a Markdown table, one row per interval.
#
#   bench/recovery.sh [--intervals "10 50"] [--out DIR]
#
# Needs root (network namespaces), ./build/parallama and data/kjv (scripts/demo.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
intervals="10 50" out=runs/recovery
while [ $# -gt 0 ]; do
  case $1 in
    --intervals) intervals=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "bench/recovery.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for i in $intervals; do
  [[ $i =~ ^[1-9][0-9]*$ ]] && [ "$i" -ge 2 ] || { echo "bench/recovery.sh: intervals must be whole numbers of at least 2" >&2; exit 2; }
done
[ -x build/parallama ] && [ -d data/kjv ] || { echo "bench/recovery.sh: needs build/parallama and data/kjv (run scripts/demo.sh)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mkdir -p "$out"
out=$(cd "$out" && pwd)
cl() { bash scripts/cluster.sh "$1" --dir "$out/cluster" "${@:2}"; }
cl up 4 --gbps 1 > "$out/cluster.txt"
trap 'cl down > /dev/null 2>&1 || true' EXIT
subnet=$(awk 'prev == "btl_tcp_if_include" {print} {prev = $0}' "$out/cluster/mpirun.args")
export OMPI_MCA_plm_rsh_agent=$out/cluster/agent OMPI_MCA_btl=self,vader,tcp
export OMPI_MCA_btl_tcp_if_include=$subnet OMPI_MCA_oob_tcp_if_include=$subnet
export OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_oob_tcp_keepalive_time=10
export OMPI_MCA_oob_tcp_keepalive_intvl=2 OMPI_MCA_oob_tcp_keepalive_probes=3
bin=$(pwd)/build/parallama
for i in $intervals; do
  run=$out/every$i
  rm -rf "$run" "$run.log"
  kill_at=$((i + i / 2))
  cl run -- "$bin" launch --hostfile "$out/cluster/hostfile" -- train \
    --config "$(pwd)/configs/kjv-small.toml" --data.dir "$(pwd)/data/kjv" --train.batch_size 1 \
    --train.micro_batches 3 --train.steps $((kill_at + i)) --train.ckpt_every "$i" \
    --train.val_every 0 --train.log_every 10 --parallel.timeout_s 10 --train.out_dir "$run" \
    > "$run.log" 2>&1 &
  job=$!
  for _ in $(seq 6000); do
    [ -s "$run/metrics.jsonl" ] && [ "$(wc -l < "$run/metrics.jsonl")" -ge "$kill_at" ] && break
    sleep 0.1
  done
  date +%s.%N > "$run.killed_at"
  tail -1 "$run/metrics.jsonl" > "$run.killed_step"
  cl kill 3
  wait $job || { echo "bench/recovery.sh: launch failed: $(tail -3 "$run.log")" >&2; exit 1; }
done
/usr/bin/python3 - "$out" $intervals <<'PY'
import json, os, statistics, sys
out, intervals = sys.argv[1], [int(x) for x in sys.argv[2:]]
print("| checkpoint every | killed after step | detection (s) | relaunch (s) | loading (s) | "
      "recompute (s), steps | kill to back at that step (s) | step time before, after (s) |")
print("|---|---|---|---|---|---|---|---|")
for i in intervals:
    run = os.path.join(out, f"every{i}")
    killed_at = float(open(run + ".killed_at").read())
    a = [json.loads(l) for l in open(os.path.join(run, "launches.jsonl"))]
    m = {j["step"]: j for j in map(json.loads, open(os.path.join(run, "metrics.jsonl")))}
    first, second = a[0], a[1]
    ckpt = second["checkpoint_from"]
    killed_step = json.loads(open(run + ".killed_step").read())["step"]
    before = statistics.median(m[s]["time"] - m[s - 1]["time"] for s in range(2, ckpt + 1))
    after = statistics.median(m[s]["time"] - m[s - 1]["time"] for s in range(ckpt + 2, max(m) + 1))
    detection = first["ended_at"] - killed_at
    relaunch = second["started_at"] - first["ended_at"]
    loading = m[ckpt + 1]["time"] - second["started_at"] - after
    back = m[killed_step]["time"]
    recompute = back - m[ckpt + 1]["time"] + after
    total = back - killed_at
    print(f"| {i} | {killed_step} | {detection:.1f} | {relaunch:.1f} | {loading:.1f} | "
          f"{recompute:.1f}, {killed_step - ckpt} | {total:.1f} | {before:.2f}, {after:.2f} |")
PY
