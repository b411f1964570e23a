#!/usr/bin/env bash
# A stalled rank in the commands that run under mpirun besides train: generate --prompts, eval,
# finetune and classify take --timeout; when rank 1 is stopped (SIGSTOP) mid-run, rank 0 ends
# the job once it needs rank 1 (after its own share of the work, in generate, eval and classify)
# plus the timeout and a ping, naming rank 1 and its host (not itself), and spends the wait
# mostly asleep (under half a core in the last 2.5 s before the end, all of them waiting).
source "$(dirname "$0")/lib.sh"
prepare_tiny
"$bin" train --config "$src/configs/tiny.toml" --model.vocab_size 400 --train.steps 4 \
  --train.val_every 0 --train.ckpt_every 4 --data.dir data --train.out_dir pre > /dev/null
bible -f gen1:1-rev22:21 | awk 'NR % 25 == 1' > verses.txt
"$bin" prepare-classify --task testament --verses verses.txt --out cls > /dev/null
"$bin" finetune --task classify --init pre --data cls --steps 2 --batch 4 --seq-len 16 \
  --out clf > /dev/null
for i in $(seq 12000); do echo "{\"id\": $i, \"prompt\": \"And God said\"}"; done > prompts.jsonl
for _ in $(seq 15); do cat text.txt; done > long.txt

# stall NAME ARGS...: parallama ARGS on 2 ranks with --timeout 3; rank 1 stopped after 2 s.
stall() {
  local name=$1; shift
  mpirun --oversubscribe -np 2 "$bin" "$@" --timeout 3 > "$name.out" 2> "$name.err" &
  local job=$! p1
  p1=$(rank_pid 1)
  sleep 2
  kill -0 $job 2> /dev/null || fail "$name: over before the stall: $(tail -2 "$name.err")"
  kill -STOP "$p1"
  local t0; t0=$(date +%s.%N)
  local p0; p0=$(rank_pid 0)
  # Rank 0's CPU clock ticks, sampled every 0.1 s while the job runs.
  : > "$name.cpu"
  for _ in $(seq 300); do
    kill -0 $job 2> /dev/null || break
    echo "$(date +%s.%N) $(awk '{print $14 + $15}' "/proc/$p0/stat" 2> /dev/null || echo -)" \
      >> "$name.cpu"
    sleep 0.1
  done
  kill -CONT "$p1" 2> /dev/null || true
  kill -0 $job 2> /dev/null && { kill -KILL $job; fail "$name: still running 30 s after the stall"; }
  set +e; wait $job; local rc=$?; set -e
  local took; took=$(/usr/bin/python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
  [ $rc -ne 0 ] || fail "$name: exit 0 after a stalled rank"
  grep -Eq "rank 0 \(host [^)]*\): .*no answer from rank 1 \(host [^)]*\)" "$name.err" ||
    fail "$name: rank 1 not named: $(grep -v '^\[' "$name.err" | head -3)"
  /usr/bin/python3 -c "import sys; sys.exit(0 if $took <= 20 else 1)" ||
    fail "$name: ended $took s after the stall (timeout 3 s)"
  # Rank 0 first finishes its own share of the work, then waits: in the last 2.5 s before the job
  # ended (within the 3 s timeout, all of it waiting) it used under half a core. A spinning rank
  # uses 100 ticks (1/100 s) per second.
  /usr/bin/python3 - "$name.cpu" <<'PY' || fail "$name: rank 0 spun while it waited"
import sys
rows = [l.split() for l in open(sys.argv[1])]
rows = [(float(t), int(c)) for t, c in rows if c != "-"]
end = rows[-1][0]
window = [r for r in rows if r[0] >= end - 2.5]
span, ticks = window[-1][0] - window[0][0], window[-1][1] - window[0][1]
print(f"rank 0 while waiting: {ticks} ticks of CPU in {span:.1f} s")
assert span >= 1.5 and ticks < 50 * span, (ticks, span)
PY
  echo "$name: rank 1 named, ended ${took}s after the stall (exit $rc)"
}
stall generate generate --ckpt pre --prompts prompts.jsonl --out gen.jsonl --max-tokens 60
stall eval eval --ckpt pre --text long.txt
stall finetune finetune --task classify --init pre --data cls --steps 100000 --batch 4 \
  --seq-len 16 --out ft
stall classify classify --ckpt clf --text long.txt --out cls.jsonl
