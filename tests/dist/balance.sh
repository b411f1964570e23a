#!/usr/bin/env bash
# Dynamic balancing (parallel.balance = dynamic): rank 2 of three is slowed from outside the
# program (stopped for 30 ms of every 40). Its share of each global batch of 12 micro-batches
# falls while the others' grow; every step still holds the same samples, so the losses and the
# final parameters equal those of equal shares within 1e-5 (only the order of sums differs), and a run
# stopped at step 20 and resumed (on equal shares, then re-planned) ends the same. Pipeline
# stages split by measured time train as one process does.
source "$(dirname "$0")/lib.sh"
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
     --train.steps 40 --train.batch_size 8 --train.micro_batches 4 --train.val_every 20
     --train.ckpt_every 0 --optim.lr 3e-3 --dp 3)
dynamic=(--parallel.balance dynamic --parallel.balance_every 5)
mpi 3 "${run[@]}" --train.out_dir static > static.log
mpi 3 "${run[@]}" "${dynamic[@]}" --train.out_dir dynamic > dynamic.log &
job=$!
slow_rank 2 0.03 0.01
wait $job
compare metrics dynamic/metrics.jsonl static/metrics.jsonl || fail "dynamic shares changed the losses"
compare params dynamic/step-40/model.safetensors static/step-40/model.safetensors || fail "parameters"
/usr/bin/python3 - dynamic/metrics.jsonl <<'PY' || fail "shares"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 40
for r in rows:
    s = r["shares"]
    assert len(s) == 3 and sum(s) == 12 and all(1 <= x <= 8 for x in s), (r["step"], s)
assert all(r["shares"] == [4, 4, 4] for r in rows[:5]), "shares moved before the first plan"
late = rows[15:]
mean = [sum(r["shares"][k] for r in late) / len(late) for k in range(3)]
print("mean shares over steps 16-40 (micro-batches of 12):", ", ".join("%.2f" % m for m in mean))
assert mean[2] < 3.5 and mean[2] < min(mean[0], mean[1]), mean
PY
grep -q "shares of the next steps" dynamic.log || fail "no re-planning reported"
# Stopped at step 30 and resumed: the checkpoint holds no shares, and nothing else changes.
mpi 3 "${run[@]}" "${dynamic[@]}" --train.out_dir resumed --stop-at 20 > /dev/null
mpi 3 "${run[@]}" "${dynamic[@]}" --train.out_dir resumed --resume auto > /dev/null
compare metrics resumed/metrics.jsonl static/metrics.jsonl || fail "resumed dynamic run"
compare params resumed/step-40/model.safetensors static/step-40/model.safetensors || fail "resumed parameters"
# Pipeline stages split by measured time (a timed pass of the embedding, one layer and the head on
# rank 0): the plan says so, every rank splits alike, and the run equals one process.
pipe=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
      --model.n_layers 4 --train.steps 10 --train.val_every 0 --train.ckpt_every 0)
"$bin" "${pipe[@]}" --train.out_dir one > /dev/null
mpi 2 "${pipe[@]}" --pp 2 --parallel.pp_balance measure --train.out_dir measured > measured.log
grep -q "pipeline plan (balanced by measured time" measured.log || fail "no measured split"
compare metrics measured/metrics.jsonl one/metrics.jsonl || fail "measured split changed the losses"
echo "dynamic balancing: shares follow speed, the trajectory does not change; measured stages"
