#!/usr/bin/env bash
# Hybrid parallelism and ZeRO equal one process. The same global batch of 8 sequences, in 2 or
# more micro-batches (gradient accumulation), with global-norm clipping that bites (the reference
# run's gradient norms exceed the limit), tied and untied heads: every dp × tp × pp layout below,
# several with --zero 1 or 2, gives the single-process loss at each of 20 steps and the same
# final parameters within 1e-5 relative. ZeRO's optimizer state on each rank is 1/dp of what the
# same rank holds without it (its data-parallel peers' pieces add up to that exactly), and ZeRO-2
# keeps about 1/dp of the gradients between steps. Activation recompute changes no bit.
source "$(dirname "$0")/lib.sh"
prepare_tiny
# AdamW eps 1e-6 and lr 3e-3: see pp_equivalence.sh. Small buckets: several per rank, so that
# ZeRO divides many buckets (and the tied embedding's bucket of its own) over the replicas.
base=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
      --model.n_layers 4 --train.steps 20 --train.val_every 10 --train.ckpt_every 0
      --optim.warmup_steps 3 --train.grad_clip 0.5 --optim.eps 1e-6 --optim.lr 3e-3
      --parallel.bucket_mb 0.05)
field() {  # field FILE KEY: KEY of every line of a metrics file, one per line
  /usr/bin/python3 -c "import json,sys; [print(json.loads(l)[sys.argv[2]]) for l in open(sys.argv[1])]" "$1" "$2"
}
for head in untied tied; do
  tie=false; [ $head = tied ] && tie=true
  run=("${base[@]}" --model.tie_embeddings $tie)
  "$bin" "${run[@]}" --train.batch_size 4 --train.micro_batches 2 --train.out_dir $head/one \
    > /dev/null
  clipped=$(field $head/one/metrics.jsonl grad_norm | awk '$1 > 0.5' | wc -l)
  [ "$clipped" -ge 5 ] || fail "$head: clipping bit on only $clipped steps"
  # dp tp pp zero batch_size micro_batches (dp · batch_size · micro_batches = 8)
  while read -r dp tp pp zero b k; do
    np=$((dp * tp * pp))
    out=$head/${dp}x${tp}x${pp}_zero$zero
    mpi $np "${run[@]}" --dp $dp --tp $tp --pp $pp --zero $zero --train.batch_size $b \
      --train.micro_batches $k --train.out_dir $out > $out.log < /dev/null || fail "$out failed"
    [ "$(wc -l < $out/metrics.jsonl)" -eq 20 ] || fail "$out: not 20 metric lines"
    compare metrics $out/metrics.jsonl $head/one/metrics.jsonl --norm || fail "$out losses"
    compare params $out/step-20/model.safetensors $head/one/step-20/model.safetensors ||
      fail "$out params"
    if [ $tie = true ] && [ $pp -gt 1 ]; then
      grep -q '"tied_embedding_copies": "identical"' $out/step-20/trainer.json ||
        fail "$out: tied copies not verified"
    fi
  done << 'LAYOUTS'
2 2 1 0 2 2
2 1 2 0 2 2
1 2 2 0 4 2
2 2 2 0 2 2
4 1 2 0 1 2
2 2 1 2 2 2
2 1 2 1 2 2
2 2 2 1 2 2
4 1 2 2 1 2
LAYOUTS
done

# Optimizer state and gradients per rank, from summary.json: ZeRO against the same layout without.
/usr/bin/python3 - tied << 'PY' || fail "ZeRO memory"
import json, sys
head = sys.argv[1]
def memory(name):
    return json.load(open(f"{head}/{name}/summary.json"))["memory"]
for layout, dp, zero in (("2x2x2", 2, 1), ("4x1x2", 4, 2), ("2x2x1", 2, 2)):
    full, sharded = memory(f"{layout}_zero0"), memory(f"{layout}_zero{zero}")
    tp = int(layout.split("x")[1])
    for r, (f, s) in enumerate(zip(full, sharded)):
        ratio = s["optimizer_state"] / f["optimizer_state"]
        assert abs(ratio * dp - 1) < 0.05, (layout, r, ratio)
        if zero == 2:  # the gradient buffer handed back: about the shard is left (plus edge pages)
            assert s["gradients"] < 1.5 * f["gradients"] / dp, (layout, r, s, f)
    # The pieces of one rank's optimizer state over its dp peers add up to it exactly: ranks
    # (pp, dp, tp) = ((p · dp + d) · tp + t).
    for r, f in enumerate(full):
        t, p = r % tp, r // (tp * dp)
        peers = [(p * dp + d) * tp + t for d in range(dp)]
        assert sum(sharded[q]["optimizer_state"] for q in peers) == f["optimizer_state"], (layout, r)
    print(f"{layout} --zero {zero}: optimizer state per rank 1/{dp} of the unsharded rank's")
PY
# Activation recompute under tensor and pipeline parallelism (its forward all-reduces redone):
# the same losses, gradient norms and parameters to the last bit, in less activation memory.
for rc in none attention full; do
  mpi 4 "${base[@]}" --tp 2 --pp 2 --train.recompute $rc --train.batch_size 4 \
    --train.micro_batches 2 --train.steps 5 --train.out_dir rc_$rc > rc_$rc.log
done
for rc in attention full; do
  compare metrics rc_$rc/metrics.jsonl rc_none/metrics.jsonl --norm --tol 0 || fail "recompute $rc"
  compare params rc_$rc/step-5/model.safetensors rc_none/step-5/model.safetensors --tol 0 ||
    fail "recompute $rc params"
done
act() { field "$1/metrics.jsonl" pp_peak_activation_bytes | tail -1; }
[ "$(act rc_full)" -lt "$(act rc_attention)" ] && [ "$(act rc_attention)" -lt "$(act rc_none)" ] ||
  fail "recompute held $(act rc_none), $(act rc_attention), $(act rc_full) bytes"
grep -q "ZeRO-1: optimizer state" tied/2x2x2_zero1.log || fail "ZeRO memory not reported"
expect_error "--zero must be 0, 1 or 2" "${base[@]}" --zero 3 --train.out_dir x
expect_error "not --sync local" "${base[@]}" --zero 1 --sync local --train.out_dir x
echo "hybrid parallelism and ZeRO: every layout equals one process"
