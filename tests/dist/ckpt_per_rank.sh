#!/usr/bin/env bash
# train.ckpt_per_rank: every rank writes its own pieces of each checkpoint, with an index.
#   (a) The layout chain of layout_chain.sh (2×2×2 --zero 1 → 1×1×1 → 4×1×2 --zero 2 → 1×2×1)
#       with every checkpoint written by every rank gives the losses and final parameters of
#       one uninterrupted single-process run (1e-5 relative).
#   (b) A checkpoint of 8 ranks is 8 model pieces and 8 optimizer pieces (the replicas share out
#       the parameters, each ZeRO rank writes its shard), pieces.json and trainer.json, nothing
#       whole; loaded into one process it continues bit for bit as the same run's checkpoint
#       written whole does; converted to Hugging Face and GGUF it gives the very same files.
#   (c) A missing or altered piece is refused in one line naming it.
#   (d) Killed (SIGKILL, every process) at random moments while it checkpoints every step, the
#       run leaves `latest` naming a complete checkpoint that loads, every time.
source "$(dirname "$0")/lib.sh"
prepare_tiny
# The run of layout_chain.sh, whose test stays as it is.
base=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
      --model.n_layers 4 --model.tie_embeddings true --train.steps 20 --train.val_every 5
      --train.ckpt_every 0 --optim.warmup_steps 3 --train.grad_clip 0.5 --optim.eps 1e-6
      --optim.lr 3e-3 --parallel.bucket_mb 0.05)
per=(--train.ckpt_per_rank true)
"$bin" "${base[@]}" --train.batch_size 2 --train.micro_batches 4 --train.out_dir ref > /dev/null
mpi 8 "${base[@]}" "${per[@]}" --dp 2 --tp 2 --pp 2 --zero 1 --train.batch_size 2 \
  --train.micro_batches 2 --train.out_dir a/run --stop-at 5 > a.log || fail "a: $(tail -3 a.log)"
"$bin" "${base[@]}" "${per[@]}" --train.batch_size 2 --train.micro_batches 4 --train.out_dir b \
  --resume a/run/step-5 --stop-at 10 > b.log || fail "b: $(tail -3 b.log)"
mpi 8 "${base[@]}" "${per[@]}" --dp 4 --pp 2 --zero 2 --train.batch_size 1 \
  --train.micro_batches 2 --train.out_dir c --resume b/step-10 --stop-at 15 > c.log ||
  fail "c: $(tail -3 c.log)"
mpi 2 "${base[@]}" "${per[@]}" --tp 2 --train.batch_size 2 --train.micro_batches 4 \
  --train.out_dir d --resume c/step-15 > d.log || fail "d: $(tail -3 d.log)"
cat a/run/metrics.jsonl b/metrics.jsonl c/metrics.jsonl d/metrics.jsonl > chain.jsonl
[ "$(wc -l < chain.jsonl)" -eq 20 ] || fail "the chain ran $(wc -l < chain.jsonl) steps, not 20"
compare metrics chain.jsonl ref/metrics.jsonl || fail "chain losses"
"$bin" convert --from d/step-20 --to hf:d_hf > /dev/null
"$bin" convert --from ref/step-20 --to hf:ref_hf > /dev/null
compare params d_hf/model.safetensors ref_hf/model.safetensors || fail "chain params"
grep -q "from step 5" b.log && grep -q "from step 10" c.log && grep -q "from step 15" d.log ||
  fail "a run did not resume where the last one stopped"
echo "(a) the layout chain with checkpoints written by every rank is one trajectory"

# (b) What a checkpoint of 8 ranks holds, and the same checkpoint written whole.
/usr/bin/python3 - a/run/step-5 << 'PY' || fail "a/run/step-5's files"
import json, os, sys
d = sys.argv[1]
files = sorted(os.listdir(d))
model = [f for f in files if f.startswith("model.rank-")]
optim = [f for f in files if f.startswith("optimizer.rank-")]
assert len(model) == 8 and len(optim) == 8, files
assert "model.safetensors" not in files and "optimizer.safetensors" not in files, files
assert not [f for f in files if f.startswith("part.")], files
sums = json.load(open(f"{d}/trainer.json"))["checksums"]
assert set(sums) == set(model + optim + ["pieces.json"]), sums
index = json.load(open(f"{d}/pieces.json"))
assert index["ranks"] == 8 and index["optimizer"]["metadata"]["step"] == "5", index["ranks"]
q = index["model"]["tensors"]["model.layers.0.self_attn.q_proj.weight"]["pieces"]
assert len(q) == 2 and {p["file"] for p in q} < set(model), q  # its two tensor-parallel halves
print(f"{d}: {len(model)} model and {len(optim)} optimizer pieces, pieces.json")
PY
mpi 8 "${base[@]}" --dp 2 --tp 2 --pp 2 --zero 1 --train.batch_size 2 --train.micro_batches 2 \
  --train.out_dir w/run --stop-at 5 > /dev/null
[ -f w/run/step-5/model.safetensors ] || fail "w/run/step-5 is not written whole"
for x in a w; do
  "$bin" "${base[@]}" --train.batch_size 2 --train.micro_batches 4 --train.out_dir "$x.one" \
    --resume $x/run/step-5 --stop-at 6 > /dev/null
  "$bin" convert --from $x/run/step-5 --to hf:$x.hf > /dev/null
  "$bin" convert --from $x/run/step-5 --to gguf:$x.gguf --dtype f16 > /dev/null
done
for f in model.safetensors optimizer.safetensors; do
  cmp a.one/step-6/$f w.one/step-6/$f || fail "one step from the pieces: $f differs"
done
cmp a.hf/model.safetensors w.hf/model.safetensors || fail "Hugging Face files differ"
cmp a.gguf w.gguf || fail "GGUF files differ"
echo "(b) pieces load and convert as the whole checkpoint does, bit for bit"

# (c) Damage is named.
cp -r a/run/step-5 broken
rm broken/optimizer.rank-00003.safetensors
set +e
"$bin" "${base[@]}" --train.out_dir e --resume broken --stop-at 6 > /dev/null 2> err.txt; rc=$?
set -e
[ $rc -ne 0 ] && grep -q "optimizer.rank-00003.safetensors: missing" err.txt ||
  fail "a missing piece: exit $rc: $(cat err.txt)"
cp a/run/step-5/optimizer.rank-00003.safetensors broken/
printf 'x' >> broken/model.rank-00001.safetensors
set +e
"$bin" convert --from broken --to hf:e_hf > /dev/null 2> err.txt; rc=$?
set -e
[ $rc -eq 2 ] && grep -q "model.rank-00001.safetensors: checksum" err.txt ||
  fail "an altered piece: exit $rc: $(cat err.txt)"
echo "(c) a missing or altered piece is refused, named"

# (d) Kills in the middle of writing: 1.6 M parameters on 2 ranks, a checkpoint every step.
big=("${base[@]}" --model.dim 256 --model.ffn_dim 512 --train.val_every 0 --train.steps 100000
     --train.ckpt_every 1 --train.out_dir killed --train.batch_size 2 "${per[@]}" --dp 2 --zero 1)
before=
shm_before=$(ls /dev/shm)
for k in 1 2 3; do
  mpirun --oversubscribe -np 2 "$bin" "${big[@]}" --resume auto > "kill$k.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do [ -e killed/latest ] && [ "$(cat killed/latest)" != "$before" ] && break; sleep 0.05; done
  sleep "$(/usr/bin/python3 -c 'import random; print(round(random.uniform(0.05, 0.6), 2))')"
  ranks=$(rank_pid 0; rank_pid 1)
  # shellcheck disable=SC2086
  kill -9 $ranks $pid 2> /dev/null || true
  wait $pid 2> /dev/null || true
  for r in $ranks; do while kill -0 "$r" 2> /dev/null; do sleep 0.05; done; done
  # The killed job's shared-memory segments (MPI's, within this machine): nobody else removes them.
  for f in $(ls /dev/shm); do
    if [[ $f == vader_segment.* ]] && ! grep -qxF "$f" <<< "$shm_before"; then rm -f "/dev/shm/$f"; fi
  done
  before=$(cat killed/latest)
  [ -f "killed/$before/trainer.json" ] || fail "kill $k: latest $before is not complete"
  "$bin" eval --ckpt "killed/$before" --data data/val.bin --batches 1 | grep -q perplexity ||
    fail "kill $k: $before does not load"
done
echo "(d) three kills while every rank wrote: latest was complete and loaded each time ($before)"
