#!/usr/bin/env bash
# How right the planner is: every valid layout of a model on R ranks of this machine benched, its
# predicted step time and memory (from a profile calibrate measured first) against the measured
# ones. Writes OUT/results.json and OUT/auto_layout.svg (predicted against measured step time),
# and prints the median and worst relative error of the step time, the rank correlation of
# predicted and measured speed, the automatic pick's measured tokens/s as a share of the best
# measured one, and the worst memory error.
#
#   bench/auto_layout.sh [--config FILE] [--ranks R] [--global-batch G] [--seq-len T] [--steps N]
#                        [--out DIR]
#
# Needs ./build/parallama (scripts/build.sh). Bench runs on random tokens: no data needed.
set -euo pipefail
cd "$(dirname "$0")/.."
config=configs/bench15m.toml ranks=4 global=8 seq=256 steps=3 out=runs/auto_layout
while [ $# -gt 0 ]; do
  case $1 in
    --config) config=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --global-batch) global=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --seq-len) seq=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "bench/auto_layout.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for v in "$ranks" "$global" "$steps" "$seq"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bench/auto_layout.sh: --ranks, --global-batch, --seq-len and --steps must be positive integers" >&2; exit 2; }
done
[ -x build/parallama ] && [ -f "$config" ] || { echo "bench/auto_layout.sh: needs build/parallama and $config" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi() { mpirun --oversubscribe -np "$ranks" ./build/parallama "$@"; }
mkdir -p "$out/runs"
mpi calibrate --config "$config" --out "$out/profile.json" --force | tee "$out/calibrate.log"
./build/parallama plan --config "$config" --train.seq_len "$seq" --profile "$out/profile.json" --auto \
  --ranks-per-host "$ranks" --global-batch "$global" --json > "$out/plan.log"
tail -1 "$out/plan.log" > "$out/plan.json"
# Every layout that fits, one bench each, in the planner's order.
/usr/bin/python3 - "$out/plan.json" > "$out/layouts.txt" << 'PY'
import json, sys
for i, l in enumerate(x for x in json.load(open(sys.argv[1]))["layouts"] if x["fits"]):
    print(i, l["dp"], l["tp"], l["pp"], l["pp_virtual"], l["pp_schedule"], l["zero"],
          l["batch_size"], l["micro_batches"], l["recompute"], l["precision"])
PY
echo "$(wc -l < "$out/layouts.txt") layouts to bench"
while read -r i dp tp pp v sched zero b m rec prec; do
  key=$dp-$tp-$pp-$v-$sched-$zero-$b-$m-$rec-$prec
  f=$out/runs/$key.json
  [ -s "$f" ] && continue  # a layout benched before (the script can be run again to go on)
  if mpi bench --config "$config" --train.seq_len "$seq" --dp "$dp" --tp "$tp" --pp "$pp" --zero "$zero" \
      --parallel.pp_virtual "$v" --parallel.pp_schedule "$sched" --train.batch_size "$b" \
      --train.micro_batches "$m" --train.recompute "$rec" --precision "$prec" \
      --bench.steps "$steps" --bench.warmup 1 --calibration "$out/profile.json" --json \
      > "$out/runs/$key.log" 2>&1 < /dev/null; then
    tail -1 "$out/runs/$key.log" > "$f"
  else
    echo "bench/auto_layout.sh: layout $key failed: $(tail -2 "$out/runs/$key.log")" >&2
  fi
done < "$out/layouts.txt"
/usr/bin/python3 bench/auto_layout_report.py "$out"
