#!/usr/bin/env bash
# From one seed checkpoint and the same global batch of 8 sequences, DP = 1, 2 and 4 (with and
# without gradient accumulation) give the same loss at each of 20 steps and the same final
# parameters within fp32 rounding (relative error <= 1e-5).
source "$(dirname "$0")/lib.sh"
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400 --train.steps 21
     --train.val_every 0 --train.ckpt_every 0 --optim.warmup_steps 3)
"$bin" "${run[@]}" --train.batch_size 8 --train.out_dir seed --stop-at 1 > /dev/null
# layout: ranks batch_size micro_batches (always 8 sequences per step)
for layout in "1 8 1" "2 4 1" "4 2 1" "1 4 2" "2 2 2" "4 1 2"; do
  read -r np b k <<< "$layout"
  out="dp${np}_b${b}_k${k}"
  mpi "$np" "${run[@]}" --dp "$np" --train.batch_size "$b" --train.micro_batches "$k" \
    --train.out_dir "$out" --resume seed/step-1 > "$out.log"
  [ "$(wc -l < "$out/metrics.jsonl")" -eq 20 ] || fail "$out: not 20 metric lines"
  grep -q "$np rank(s)" "$out.log" || fail "$out: did not run on $np ranks"
done
for out in dp2_b4_k1 dp4_b2_k1 dp1_b4_k2 dp2_b2_k2 dp4_b1_k2; do
  compare metrics "$out/metrics.jsonl" dp1_b8_k1/metrics.jsonl --from 2 || fail "$out losses"
  compare params "$out/step-21/model.safetensors" dp1_b8_k1/step-21/model.safetensors || fail "$out parameters"
done
# Only rank 0 writes: one checkpoint tree, no stray files from other ranks.
[ "$(find dp4_b2_k1 -name trainer.json | wc -l)" -eq 1 ] || fail "checkpoints written more than once"
echo "dp equivalence: all layouts agree"
