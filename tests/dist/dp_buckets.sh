#!/usr/bin/env bash
# The overlapped bucket path: with buckets of 10 KiB the tiny model's gradients are reduced in
# many buckets, each started during backward. Under --parallel.check_collectives, DP = 2, 3 and
# 4 (with and without gradient accumulation) give the losses and final parameters of DP = 1
# (relative error <= 1e-5), and every step reports at least 5 buckets.
source "$(dirname "$0")/lib.sh"
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400 --train.steps 11
     --train.val_every 0 --train.ckpt_every 0 --optim.warmup_steps 3)
"$bin" "${run[@]}" --train.batch_size 12 --train.out_dir seed --stop-at 1 > /dev/null
# layout: ranks batch_size micro_batches (always 12 sequences per step)
for layout in "1 12 1" "2 3 2" "3 4 1" "4 3 1"; do
  read -r np b k <<< "$layout"
  out="dp${np}_b${b}_k${k}"
  mpi "$np" "${run[@]}" --dp "$np" --train.batch_size "$b" --train.micro_batches "$k" \
    --parallel.bucket_mb 0.01 --parallel.check_collectives true \
    --train.out_dir "$out" --resume seed/step-1 > "$out.log"
  [ "$(wc -l < "$out/metrics.jsonl")" -eq 10 ] || fail "$out: not 10 metric lines"
  grep -q "$np rank(s)" "$out.log" || fail "$out: did not run on $np ranks"
done
for out in dp2_b3_k2 dp3_b4_k1 dp4_b3_k1; do
  /usr/bin/python3 - "$out/metrics.jsonl" <<'PY' || fail "$out: buckets"
import json, sys
counts = [json.loads(line).get("buckets", 0) for line in open(sys.argv[1])]
assert len(counts) == 10 and all(c >= 5 for c in counts), counts
print(f"{sys.argv[1]}: {counts[0]} buckets per step")
PY
  compare metrics "$out/metrics.jsonl" dp1_b12_k1/metrics.jsonl --from 2 || fail "$out losses"
  compare params "$out/step-11/model.safetensors" dp1_b12_k1/step-11/model.safetensors || fail "$out parameters"
done
echo "dp buckets: many buckets, checked collectives, the single-process result"
