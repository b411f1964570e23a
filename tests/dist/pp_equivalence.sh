#!/usr/bin/env bash
# Pipeline parallelism equals one process: from one seed checkpoint and the same global batch of
# 8 sequences in 4 or more micro-batches, pp = 2 under each schedule (GPipe, 1F1B, interleaved
# with 2 chunks per rank), pp = 3 on 5 layers (uneven stages), pp = 2 × dp = 2 and pp = 2 × tp = 2
# (tied and untied heads) give the single-process loss at each of 20 steps and the same final
# parameters within 1e-5 relative. Then: 1F1B holds at most pp micro-batches' activations on
# stage 0 where GPipe holds all of them; a pp = 2 checkpoint resumes at pp = 1 and dp = 2 on the
# same trajectory; the timeline is written and drawn; impossible splits are one clear line.
source "$(dirname "$0")/lib.sh"
prepare_tiny
# AdamW eps 1e-6: see tp_equivalence.sh. lr 3e-3: the pipeline sums a tied embedding's two
# gradients (lookup and head) in another order than one process does; at tiny's lr of 1e-2 the
# trajectory is chaotic enough to grow that last-bit difference past 1e-5 in 20 steps (the
# gradient norms agree to 2e-10 at step 1), at 3e-3 it stays below 1e-6.
base=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
      --model.n_layers 4 --train.steps 21 --train.val_every 10 --train.ckpt_every 0
      --optim.warmup_steps 3 --train.grad_clip 0.5 --optim.eps 1e-6 --optim.lr 3e-3)
check() {  # check OUT REFERENCE
  [ "$(wc -l < "$1/metrics.jsonl")" -eq 20 ] || fail "$1: not 20 metric lines"
  compare metrics "$1/metrics.jsonl" "$2/metrics.jsonl" --from 2 --norm || fail "$1 losses"
  compare params "$1/step-21/model.safetensors" "$2/step-21/model.safetensors" || fail "$1 params"
}
for head in untied tied; do
 for layers in 4 5; do
  tie=false; [ $head = tied ] && tie=true
  run=("${base[@]}" --model.tie_embeddings $tie --model.n_layers $layers)
  ref=$head/L$layers
  "$bin" "${run[@]}" --train.batch_size 8 --train.out_dir $ref/seed --stop-at 1 > /dev/null
  "$bin" "${run[@]}" --train.batch_size 2 --train.micro_batches 4 --train.out_dir $ref/one \
    --resume $ref/seed/step-1 > /dev/null
  # layout: layers processes flags... batch_size micro_batches (8 sequences per step)
  grep "^$layers " > layouts.txt << 'LAYOUTS'
4 2 --pp 2 --parallel.pp_schedule gpipe 2 4
4 2 --pp 2 --parallel.pp_schedule 1f1b 2 4
4 2 --pp 2 --parallel.pp_schedule interleaved --parallel.pp_virtual 2 2 4
4 4 --pp 2 --dp 2 1 4
4 4 --pp 2 --tp 2 2 4
5 3 --pp 3 2 4
LAYOUTS
  while read -r _ np rest; do
    read -r -a words <<< "$rest"
    k=${words[-1]} b=${words[-2]}
    flags=("${words[@]:0:${#words[@]}-2}")
    out="$ref/np${np}_$(echo "${flags[*]}" | tr -d ' -' | tr '.' '_')"
    mpi "$np" "${run[@]}" "${flags[@]}" --train.batch_size "$b" --train.micro_batches "$k" \
      --train.out_dir "$out" --resume $ref/seed/step-1 > "$out.log" < /dev/null
    check "$out" $ref/one
    if [ $head = tied ]; then
      grep -q '"tied_embedding_copies": "identical"' "$out/step-21/trainer.json" ||
        fail "$out: tied copies not verified"
    fi
  done < layouts.txt
 done
done
grep -q "pipeline plan (balanced by estimated cost" tied/L5/np3_pp3.log || fail "pp 3 plan not printed"

# Memory: stage 0 holds m micro-batches under GPipe, at most pp under 1F1B (m = 8, pp = 2).
run=("${base[@]}" --train.steps 2 --train.batch_size 1 --train.micro_batches 8)
for sch in gpipe 1f1b; do
  mpi 2 "${run[@]}" --pp 2 --parallel.pp_schedule $sch --train.out_dir mem_$sch \
    --parallel.pp_trace mem_$sch/trace.json > mem_$sch.log
done
peak() { /usr/bin/python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])['pp_peak_micro_batches'])" "$1"; }
[ "$(peak mem_gpipe/metrics.jsonl)" -eq 8 ] || fail "GPipe stage 0 held $(peak mem_gpipe/metrics.jsonl)"
[ "$(peak mem_1f1b/metrics.jsonl)" -le 2 ] || fail "1F1B stage 0 held $(peak mem_1f1b/metrics.jsonl)"
grep -q "stage 1: at most 1 micro-batch" mem_1f1b.log || fail "stage 1 peak not reported"
# The timeline: every stage's 16 forwards and backwards per step, drawn one row per stage.
/usr/bin/python3 - mem_1f1b/trace.json <<'PY' || fail "trace"
import json, sys
ev = [e for e in json.load(open(sys.argv[1]))["traceEvents"] if e.get("ph") == "X"]
for stage in (0, 1):
    n = sum(1 for e in ev if e["tid"] == stage and e["cat"] in ("forward", "backward"))
    assert n == 2 * 16, (stage, n)
print("trace: 2 stages x 2 steps x 16 compute events")
PY
"$bin" plot --trace mem_1f1b/trace.json --out mem_1f1b/trace.svg > /dev/null
grep -q "stage 1" mem_1f1b/trace.svg || fail "timeline not drawn"

# A pp = 2 checkpoint resumes at pp = 1 and dp = 2 on the same trajectory.
run=("${base[@]}" --train.steps 12 --train.val_every 4 --train.batch_size 2 --train.micro_batches 4)
mpi 2 "${run[@]}" --pp 2 --train.out_dir full > /dev/null
mpi 2 "${run[@]}" --pp 2 --train.out_dir stopped --stop-at 5 > /dev/null
"$bin" "${run[@]}" --train.out_dir on_pp1 --resume stopped/step-5 > /dev/null
mpi 2 "${run[@]}" --dp 2 --train.batch_size 1 --train.out_dir on_dp2 --resume stopped/step-5 \
  > /dev/null
for out in on_pp1 on_dp2; do
  compare metrics "$out/metrics.jsonl" full/metrics.jsonl --from 6 || fail "$out losses"
  compare params "$out/step-12/model.safetensors" full/step-12/model.safetensors || fail "$out params"
done

# Impossible splits are one line.
expect_error "pipeline stages but the model has 4 layers" "${base[@]}" --pp 5 --train.out_dir x
expect_error "adds up to 5 layers but the model has 4" "${base[@]}" --pp 2 \
  --parallel.pp_layers "[2, 3]" --train.out_dir x
expect_error "has 3 entries but the pipeline has 2 stages" "${base[@]}" --pp 2 \
  --parallel.pp_layers "[1, 1, 2]" --train.out_dir x
echo "pipeline parallelism: every schedule and layout equals one process"
