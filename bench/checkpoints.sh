#!/usr/bin/env bash
# How long training waits for a checkpoint, synchronous against train.ckpt_async: bench15m on the
# KJV data (batch 2 of 256 tokens, one process), a checkpoint every 4 steps, 20 steps; the runs
# alternate (sync, async, sync, ...) ROUNDS times. Prints, per mode, the mean wait per checkpoint
# of each run (summary.json's checkpoints.wait_s_mean), the median over runs, and the ratio.
# With --per-rank: on 2 ranks (--tp 2), checkpoints gathered to one writing rank against
# train.ckpt_per_rank (every rank writes its own pieces).
#
#   bench/checkpoints.sh [--rounds N] [--out DIR] [--per-rank]
#
# Needs ./build/parallama and data/kjv (scripts/demo.sh makes both).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3 out=runs/checkpoints per_rank=0
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --per-rank) per_rank=1; shift ;;
    *) echo "bench/checkpoints.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "bench/checkpoints.sh: --rounds must be a positive integer" >&2; exit 2; }
[ -x build/parallama ] && [ -d data/kjv ] || { echo "bench/checkpoints.sh: needs build/parallama and data/kjv (run scripts/demo.sh)" >&2; exit 2; }
mkdir -p "$out"
launch=(./build/parallama) setting=train.ckpt_async names="synchronous,train.ckpt_async"
if [ $per_rank = 1 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
  launch=(mpirun --oversubscribe -np 2 ./build/parallama) setting=train.ckpt_per_rank
  names="gathered to one rank (tp 2),train.ckpt_per_rank (tp 2)"
  out=$out/per-rank
  mkdir -p "$out"
fi
for r in $(seq "$rounds"); do
  for mode in false true; do
    dir=$out/async-$mode-$r
    rm -rf "$dir"
    # shellcheck disable=SC2046
    "${launch[@]}" train --config configs/bench15m.toml --data.dir data/kjv \
      --train.batch_size 2 --train.steps 20 --train.ckpt_every 4 --train.val_every 0 \
      $([ $per_rank = 1 ] && echo --tp 2) --$setting $mode --train.out_dir "$dir" > "$dir.log" 2>&1 ||
      { echo "bench/checkpoints.sh: $dir failed: $(tail -3 "$dir.log")" >&2; exit 1; }
  done
done
/usr/bin/python3 - "$out" "$rounds" "$names" "$setting" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
names, setting = sys.argv[3].split(","), sys.argv[4]
waits = {m: [json.load(open(os.path.join(out, f"async-{m}-{r}", "summary.json")))["checkpoints"]
             for r in range(1, rounds + 1)] for m in ("false", "true")}
last = os.path.join(out, "async-true-1", "step-20")
size = sum(os.path.getsize(os.path.join(last, f)) for f in os.listdir(last)
           if f.startswith(("model", "optimizer"))) / 1e6
print(f"bench15m checkpoint: {size:.1f} MB (model and optimizer), 5 a run, {rounds} runs a mode")
print("| mode | mean wait per checkpoint, each run (s) | median (s) | longest wait (s) |")
print("|---|---|---|---|")
med = {}
for m, name in zip(("false", "true"), names):
    w = [c["wait_s_mean"] for c in waits[m]]
    med[m] = statistics.median(w)
    print(f"| {name} | {', '.join(f'{x:.3f}' for x in w)} | {med[m]:.3f} | "
          f"{max(c['wait_s_max'] for c in waits[m]):.3f} |")
print(f"training waits {med['false'] / med['true']:.1f}x less per checkpoint with {setting}")
PY
