#!/usr/bin/env bash
# train.ckpt_async: the checkpoint is copied to memory and written on a thread while training
# goes on.
#   (a) The files equal a synchronous run's, byte for byte (model and optimizer, every
#       checkpoint), at dp 2 (rank 0 copies its own state) and, gathered and staged in memory, at
#       dp 2 with ZeRO 1 and at tp 2; a run resumed from them continues as the
#       synchronous one does; summary.json counts the checkpoints and the time training waited.
#   (b) A process killed (SIGKILL) at random moments while it checkpoints every step leaves
#       `latest` naming a complete checkpoint that loads, every time, and never a half one.
source "$(dirname "$0")/lib.sh"
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
     --train.val_every 0 --optim.warmup_steps 3 --train.steps 12 --train.ckpt_every 4)
for layout in "--dp 2" "--dp 2 --zero 1" "--tp 2"; do
  name=$(echo "$layout" | tr -d ' -')
  # shellcheck disable=SC2086
  mpi 2 "${run[@]}" $layout --train.out_dir "sync_$name" > "sync_$name.log"
  # shellcheck disable=SC2086
  mpi 2 "${run[@]}" $layout --train.out_dir "async_$name" --train.ckpt_async true \
    > "async_$name.log" || fail "async $layout: $(tail -3 "async_$name.log")"
  grep -q "checkpoint async_$name/step-8.*: in memory, written on a thread" "async_$name.log" ||
    fail "async $layout: $(grep checkpoint "async_$name.log")"
  for s in 4 8 12; do
    for f in model.safetensors optimizer.safetensors; do
      cmp "sync_$name/step-$s/$f" "async_$name/step-$s/$f" || fail "$layout: step-$s/$f differs"
    done
  done
  [ "$(cat "async_$name/latest")" = step-12 ] || fail "$layout: latest $(cat "async_$name/latest")"
  /usr/bin/python3 - "async_$name/summary.json" <<'PY' || fail "$layout: summary.json"
import json, sys
c = json.load(open(sys.argv[1]))["checkpoints"]
assert c["async"] is True and c["count"] == 3 and 0 <= c["wait_s_mean"] <= c["wait_s_max"], c
PY
  # shellcheck disable=SC2086
  mpi 2 "${run[@]}" $layout --train.steps 16 --train.out_dir "async_$name" --resume auto \
    --train.ckpt_async true > /dev/null
  # shellcheck disable=SC2086
  mpi 2 "${run[@]}" $layout --train.steps 16 --train.out_dir "sync_$name" --resume auto > /dev/null
  cmp "sync_$name/step-16/model.safetensors" "async_$name/step-16/model.safetensors" ||
    fail "$layout: resumed from an asynchronous checkpoint, the run differs"
  echo "$layout: asynchronous checkpoints equal synchronous ones, and resume alike"
done
# (b) kills in the middle of writing: a model of 1.6 M parameters, a checkpoint every step.
big=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
     --model.dim 256 --model.ffn_dim 512 --train.val_every 0 --train.steps 100000
     --train.ckpt_every 1 --train.ckpt_async true --train.out_dir killed)
for k in 1 2 3 4 5; do
  "$bin" "${big[@]}" --resume auto > "kill$k.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do [ -e killed/latest ] && [ "$(cat killed/latest)" != "${before:-}" ] && break; sleep 0.05; done
  sleep "$(/usr/bin/python3 -c 'import random; print(round(random.uniform(0.05, 0.6), 2))')"
  kill -9 $pid
  wait $pid 2> /dev/null || true
  before=$(cat killed/latest)
  [ -f "killed/$before/trainer.json" ] || fail "kill $k: latest $before is not complete"
  "$bin" eval --ckpt "killed/$before" --data data/val.bin --batches 1 | grep -q perplexity ||
    fail "kill $k: $before does not load"
  rm -rf /dev/shm/parallama.step-*.tmp-$pid
done
echo "five kills while checkpointing: latest was complete and loaded each time ($before)"
