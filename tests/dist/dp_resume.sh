#!/usr/bin/env bash
# A checkpoint written at DP = 4 resumes at DP = 2 and DP = 1 and continues the same loss
# trajectory as the DP = 4 run that never stopped: the data position is a global sample index.
source "$(dirname "$0")/lib.sh"
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400 --train.steps 16
     --train.val_every 4 --train.ckpt_every 0 --optim.warmup_steps 3)
mpi 4 "${run[@]}" --dp 4 --train.batch_size 2 --train.out_dir full > /dev/null
mpi 4 "${run[@]}" --dp 4 --train.batch_size 2 --train.out_dir stopped --stop-at 7 > /dev/null
grep -q '"dp": 4' stopped/step-7/trainer.json || fail "layout not recorded"
mpi 2 "${run[@]}" --dp 2 --train.batch_size 4 --train.out_dir on2 --resume stopped/step-7 > /dev/null
"$bin" "${run[@]}" --train.batch_size 8 --train.out_dir on1 --resume stopped/step-7 > /dev/null
for out in on2 on1; do
  compare metrics "$out/metrics.jsonl" full/metrics.jsonl --from 8 || fail "$out losses"
  compare params "$out/step-16/model.safetensors" full/step-16/model.safetensors || fail "$out parameters"
done
expect_error "need 2 processes but 1 started" "${run[@]}" --dp 2 --train.out_dir x
echo "dp resume across layouts: trajectories agree"
