#!/usr/bin/env bash
# What the network costs: parallama over 2 hosts of a cluster on this machine (scripts/cluster.sh),
# one rank with one thread per host, with both hosts' links shaped to each rate.
#
#   bench/cluster.sh costs [RATES...]   bench15m, every strategy, at unshaped, 10, 1 and 0.1 Gbit/s
#   bench/cluster.sh curve [RATES...]   kjv-small: wall-clock to one host's validation loss after
#                                       300 steps, at 1 and 0.1 Gbit/s, allreduce, local, diloco
#   bench/cluster.sh overlap [RATES...] `bench --dp 2` on bench15m at 10, 1 and 0.1 Gbit/s, as it
#                                       was (no progress thread, the embedding's gradient whole)
#                                       and as it is: scaling efficiency, exposed communication
#   bench/cluster.sh compress [RATES...] 4 hosts; `bench` on bench15m at dp 2 and 4 (one rank a
#                                       host) at 1 and 0.1 Gbit/s with parallel.compress none
#                                       (and, for bench15m, none with the embedding's gradient
#                                       whole: "dense"), int8 and powersgd (rank 4): scaling
#                                       efficiency, bytes and
#                                       exposed communication per step; and `bench` of kjv-small
#                                       at dp 4 × 2 sequences (bench/compression.sh's runs) for
#                                       each one's step time, which with the steps each of those
#                                       runs took to reach `none`'s final validation loss gives
#                                       the wall-clock to that loss on the shaped links
#
# costs: `train` on bench15m (the King James Bible tokenized with 4,096 tokens, in the model's
# 32,000-row embedding) for 6 steps; the figures are means over steps 3-6 (local SGD and DiLoCo
# average every 4 steps: one of their syncs falls in them). Strategies: allreduce with fp32 and bf16 reduction, --zero 1,
# --zero 2, ps (1 worker, 1 server), ps-async (the same), local, diloco. Per strategy: global
# tokens/s; scaling efficiency against the same workers computing alone (a process with one
# worker's batch, without communication, times the workers); bytes each rank sends per step;
# exposed communication: seconds per step a worker waits in communication.
# curve: validation every 25 steps; a line per strategy of validation loss against seconds; a
# run stops at one host's loss, at 600 steps or after CURVE_MAX_S seconds (240).
# Writes bench/cluster/*.json, a Markdown table on stdout, and bench/cluster_curve.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-costs}; shift || true
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
bin=$PWD/build/parallama
out=$PWD/bench/cluster
mkdir -p "$out" data
work=$(mktemp -d)
cl() { bash scripts/cluster.sh "$1" --dir "$work/cluster" "${@:2}"; }
trap 'cl down; rm -rf "$work"' EXIT
[ -s data/kjv.txt ] || bible -f gen1:1-rev22:21 | sed -E 's/^[^ ]+ //' > data/kjv.txt
[ -s data/kjv/train.bin ] || "$bin" prepare --text data/kjv.txt --vocab 4096 --out data/kjv > /dev/null
hosts=2
[ "$what" = compress ] && hosts=4
cl up $hosts > /dev/null
shape_all() { for ((h = 0; h < hosts; h++)); do cl shape $h "$1"; done; }
rate_name() { [ "$1" = off ] && echo unshaped || echo "$1"; }

costs() {
  local common=(train --config configs/bench15m.toml --data.dir data/kjv --train.steps 6
                --train.val_every 0 --train.ckpt_every 0 --train.log_every 100
                --local.period 4 --diloco.inner-steps 4)
  # Alone: each worker's share, computed without communication by one process per worker at the
  # same time, as `bench` measures it (this machine's two cores are shared by its hosts: one
  # process alone runs about twice as fast as each of two). 4 sequences: the two workers of a
  # dp 2 job; 8: the single worker of the parameter-server jobs.
  for b in 4 8; do
    [ -s "$out/alone_b$b.jsonl" ] && continue
    local n=2
    [ $b = 8 ] && n=1
    for ((h = 0; h < n; h++)); do
      cl run --host $h -- "$bin" "${common[@]}" --train.batch_size $b \
        --train.out_dir "$work/alone$b-$h" < /dev/null > /dev/null &
    done
    wait
    cat "$work"/alone$b-*/metrics.jsonl > "$out/alone_b$b.jsonl"
  done
  local rates=("$@")
  [ ${#rates[@]} -gt 0 ] || rates=(off 10 1 0.1)
  for rate in "${rates[@]}"; do
    shape_all "$rate"
    while read -r name np args; do
      local f="$out/costs_$(rate_name "$rate")_$name.jsonl"
      [ -s "$f" ] && continue
      rm -rf "$work/run"
      # shellcheck disable=SC2086
      cl mpirun -- --oversubscribe -np "$np" "$bin" "${common[@]}" $args --train.out_dir "$work/run" \
        < /dev/null > "$work/run.log" 2>&1 || { echo "$name at $rate failed: $(tail -3 "$work/run.log")" >&2; continue; }
      cp "$work/run/metrics.jsonl" "$f"
      echo "costs: $name at $(rate_name "$rate") done" >&2
    done <<'LIST'
allreduce_fp32 2 --dp 2 --train.batch_size 4
allreduce_bf16 2 --dp 2 --train.batch_size 4 --parallel.reduce_dtype bf16
zero1 2 --dp 2 --train.batch_size 4 --zero 1
zero2 2 --dp 2 --train.batch_size 4 --zero 2
ps 2 --dp 1 --train.batch_size 8 --sync ps --ps.servers 1
ps_async 2 --dp 1 --train.batch_size 8 --sync ps-async --ps.servers 1
local 2 --dp 2 --train.batch_size 4 --sync local
diloco 2 --dp 2 --train.batch_size 4 --sync diloco
LIST
  done
  /usr/bin/python3 bench/cluster_report.py costs "$out"
}

reached() {  # reached METRICS LOSS: a validation loss at or under LOSS
  [ -s "$1" ] && /usr/bin/python3 - "$1" "$2" <<'PY'
import json, sys
v = [json.loads(l).get("val_loss") for l in open(sys.argv[1]) if l.endswith("\n")]
sys.exit(0 if any(x is not None and x <= float(sys.argv[2]) for x in v) else 1)
PY
}

curve() {
  local common=(train --config configs/kjv-small.toml --train.val_every 25 --train.ckpt_every 0
                --train.log_every 100)
  local max_s=${CURVE_MAX_S:-240}
  if [ ! -s "$out/curve_one_host.jsonl" ]; then
    "$bin" "${common[@]}" --train.steps 300 --train.out_dir "$work/one" > /dev/null
    cp "$work/one/metrics.jsonl" "$out/curve_one_host.jsonl"
  fi
  local target
  target=$(/usr/bin/python3 -c "import json; print([json.loads(l) for l in open('$out/curve_one_host.jsonl')][-1]['val_loss'])")
  local rates=("$@")
  [ ${#rates[@]} -gt 0 ] || rates=(1 0.1)
  for rate in "${rates[@]}"; do
    shape_all "$rate"
    for s in allreduce local diloco; do
      local f="$out/curve_${rate}_$s.jsonl"
      [ -s "$f" ] && continue
      rm -rf "$work/run"
      # Until the validation loss reaches one host's, at most 600 steps or $max_s seconds (a
      # SIGUSR1 stops it with a checkpoint).
      local t0=$SECONDS
      cl mpirun -- --oversubscribe -np 2 "$bin" "${common[@]}" --dp 2 --train.batch_size 4 \
        --sync $s --train.steps 600 --train.out_dir "$work/run" < /dev/null > "$work/run.log" 2>&1 &
      local job=$!
      while kill -0 $job 2> /dev/null; do
        if [ $((SECONDS - t0)) -ge "$max_s" ] || reached "$work/run/metrics.jsonl" "$target"; then
          pkill -USR1 -f "mpirun.*$work/run" || true
          break
        fi
        sleep 2
      done
      wait $job || true
      cp "$work/run/metrics.jsonl" "$f"
      echo "curve: $s at $rate Gbit/s done" >&2
    done
  done
  /usr/bin/python3 bench/cluster_report.py curve "$out" bench/cluster_curve.svg
}

overlap() {
  local rates=("$@")
  [ ${#rates[@]} -gt 0 ] || rates=(10 1 0.1)
  for rate in "${rates[@]}"; do
    shape_all "$rate"
    for how in before after; do  # alternating, on the same cluster
      local f="$out/overlap_${rate}_$how.json" env=() extra=()
      [ -s "$f" ] && continue
      [ $how = before ] && env=(PARALLAMA_PROGRESS_US=0) extra=(--parallel.sparse_embedding_grad false)
      env "${env[@]}" bash scripts/cluster.sh mpirun --dir "$work/cluster" -- \
        -np 2 "$bin" bench --config configs/bench15m.toml --dp 2 --bench.steps 5 --bench.warmup 1 \
        "${extra[@]}" --json < /dev/null 2> /dev/null | tail -n 1 > "$f"
      echo "overlap: $how at $rate done" >&2
    done
  done
  /usr/bin/python3 bench/cluster_report.py overlap "$out"
}

compress() {
  local rates=("$@")
  [ ${#rates[@]} -gt 0 ] || rates=(1 0.1)
  local bench=(bench --bench.steps 5 --bench.warmup 1 --json)
  for rate in "${rates[@]}"; do
    shape_all "$rate"
    for model in bench15m2 bench15m4 kjv-small4; do
      local n=${model: -1} config=${model%?} extra=()
      [ "$config" = kjv-small ] && extra=(--train.batch_size 2)
      for how in none dense int8 powersgd; do  # alternating, on the same cluster
        local f="$out/compress_${rate}_${model}_$how.json" c=(--parallel.compress $how)
        [ -s "$f" ] && continue
        # dense: fp32 with the embedding's gradient whole (bench15m's untied table travels as its
        # touched rows otherwise; compression sends it whole)
        [ $how = dense ] && c=(--parallel.compress none --parallel.sparse_embedding_grad false)
        [ $how = dense ] && [ "$config" != bench15m ] && continue
        cl mpirun -- -np "$n" "$bin" "${bench[@]}" --config "configs/$config.toml" --dp "$n" \
          "${extra[@]}" "${c[@]}" < /dev/null 2> /dev/null | tail -n 1 > "$f"
        echo "compress: $how, $config on $n hosts at $rate Gbit/s done" >&2
      done
    done
  done
  /usr/bin/python3 bench/cluster_report.py compress "$out" runs/compression
}

case $what in
  compress) compress "$@" ;;
  costs) costs "$@" ;;
  overlap) overlap "$@" ;;
  curve) curve "$@" ;;
  *) echo "usage: bench/cluster.sh costs|curve|overlap|compress [RATES...]" >&2; exit 2 ;;
esac
