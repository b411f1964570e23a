#!/usr/bin/env bash
# A checkpoint moves between any layouts, ZeRO shards included: 20 steps run as a chain of four
# runs, each resuming the last one's checkpoint on another layout, 2×2×2 --zero 1 → 1×1×1 →
# 4×1×2 --zero 2 → 1×2×1, give the losses, validation losses and final parameters of one
# uninterrupted single-process run (1e-5 relative): parameters, optimizer state, data position
# and the data order's seed all carry over. A ZeRO checkpoint holds whole tensors: it loads into
# one process bit for bit like an unsharded one of the same step. Saving gathers at most about
# one whole tensor on any rank.
source "$(dirname "$0")/lib.sh"
prepare_tiny
base=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
      --model.n_layers 4 --model.tie_embeddings true --train.steps 20 --train.val_every 5
      --train.ckpt_every 0 --optim.warmup_steps 3 --train.grad_clip 0.5 --optim.eps 1e-6
      --optim.lr 3e-3 --parallel.bucket_mb 0.05)
# The global batch is 8 sequences in every layout: dp · batch_size · micro_batches.
"$bin" "${base[@]}" --train.batch_size 2 --train.micro_batches 4 --train.out_dir ref > /dev/null
mpi 8 "${base[@]}" --dp 2 --tp 2 --pp 2 --zero 1 --train.batch_size 2 --train.micro_batches 2 \
  --train.out_dir a --stop-at 5 > a.log
"$bin" "${base[@]}" --train.batch_size 2 --train.micro_batches 4 --train.out_dir b \
  --resume a/step-5 --stop-at 10 > b.log
mpi 8 "${base[@]}" --dp 4 --pp 2 --zero 2 --train.batch_size 1 --train.micro_batches 2 \
  --train.out_dir c --resume b/step-10 --stop-at 15 > c.log
mpi 2 "${base[@]}" --tp 2 --train.batch_size 2 --train.micro_batches 4 --train.out_dir d \
  --resume c/step-15 > d.log
cat a/metrics.jsonl b/metrics.jsonl c/metrics.jsonl d/metrics.jsonl > chain.jsonl
[ "$(wc -l < chain.jsonl)" -eq 20 ] || fail "the chain ran $(wc -l < chain.jsonl) steps, not 20"
compare metrics chain.jsonl ref/metrics.jsonl || fail "chain losses"
compare params d/step-20/model.safetensors ref/step-20/model.safetensors || fail "chain params"
for log in a c; do grep -q "resuming\|training" $log.log || fail "$log: no start line"; done
grep -q "from step 5" b.log && grep -q "from step 10" c.log && grep -q "from step 15" d.log ||
  fail "a run did not resume where the last one stopped"

# One step from the ZeRO-2 checkpoint (4 replicas × 2 stages) on 2 replicas with ZeRO-1 and in
# one process: the same optimizer state, saved whole from its pieces.
mpi 2 "${base[@]}" --dp 2 --zero 1 --train.batch_size 2 --train.micro_batches 2 \
  --train.out_dir f --resume c/step-15 --stop-at 16 > /dev/null
"$bin" "${base[@]}" --train.batch_size 2 --train.micro_batches 4 --train.out_dir g \
  --resume c/step-15 --stop-at 16 > /dev/null
compare params f/step-16/optimizer.safetensors g/step-16/optimizer.safetensors --tol 1e-5 ||
  fail "ZeRO optimizer state differs from one process's"

# Saving gathers at most about one whole tensor per rank (the largest is the embedding).
/usr/bin/python3 - a.log c.log << 'PY' || fail "checkpoint gather"
import re, sys
for log in sys.argv[1:]:
    m = re.search(r"gathered at most ([\d.]+) MB on a rank \(largest tensor ([\d.]+) MB\)",
                  open(log).read())
    assert m, f"{log}: no gather report"
    peak, largest = float(m.group(1)), float(m.group(2))
    assert 0 < peak <= 2 * largest, (log, peak, largest)
    print(f"{log}: saving gathered at most {peak} MB on a rank, largest tensor {largest} MB")
PY
echo "checkpoints move between any layouts, ZeRO included, on one trajectory"
