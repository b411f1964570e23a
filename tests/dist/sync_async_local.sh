#!/usr/bin/env bash
# ps-async with a deliberately slowed worker keeps every worker within ps.max-staleness steps of
# the slowest and still converges; local SGD and DiLoCo converge, and DiLoCo with outer
# learning rate 1 and no momentum is local SGD with the same period (within fp32 rounding).
source "$(dirname "$0")/lib.sh"
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400 --train.steps 40
     --train.val_every 10 --train.ckpt_every 0 --optim.warmup_steps 3 --train.batch_size 2)
# Worker 2 is slowed from outside the program, as a busy neighbour would slow it.
mpi 4 "${run[@]}" --dp 3 --parallel.sync ps-async --ps.servers 1 --ps.max-staleness 1 \
  --train.out_dir async > async.log &
job=$!
slow_rank 2 0.02 0.01
wait $job
/usr/bin/python3 - async/metrics.jsonl 1 <<'PY' || fail "ps-async bound or convergence"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bound = int(sys.argv[2])
assert len(rows) == 40
assert max(r["lead_max"] for r in rows) <= bound, "a worker ran too far ahead"
assert max(r["staleness_max"] for r in rows) >= 1, "no staleness at all: not asynchronous"
assert all("staleness_mean" in r for r in rows)
assert all([p["role"] for p in r["bytes_per_rank"]] == ["worker", "server"] for r in rows)
vals = [r["val_loss"] for r in rows if "val_loss" in r]
assert vals[-1] < vals[0] and rows[-1]["loss"] < rows[0]["loss"] - 0.5, (vals, rows[-1]["loss"])
PY
[ -f async/step-40/optimizer.safetensors ] || fail "ps-async final checkpoint"
for s in local diloco; do
  mpi 3 "${run[@]}" --dp 3 --parallel.sync $s --local.period 5 --diloco.inner-steps 5 --train.out_dir $s > /dev/null
  /usr/bin/python3 -c "
import json, sys
rows = [json.loads(l) for l in open('$s/metrics.jsonl')]
assert sum(1 for r in rows if r.get('synced')) == 8, 'replicas met every 5 steps'
assert all(len(r['bytes_per_rank']) == 3 for r in rows)
# parameter averaging moves the whole model at a sync step, next to nothing otherwise
big = [r['step'] for r in rows if r['bytes_per_rank'][1]['sent'] > 100000]
assert big == list(range(5, 41, 5)), big
assert rows[-1]['loss'] < rows[0]['loss'] - 0.5 and rows[-1]['val_loss'] < rows[9]['val_loss'], rows[-1]
" || fail "$s"
done
mpi 3 "${run[@]}" --dp 3 --parallel.sync diloco --diloco.inner-steps 5 --diloco.outer-lr 1 \
  --diloco.outer-momentum 0 --train.out_dir diloco_plain > /dev/null
compare metrics diloco_plain/metrics.jsonl local/metrics.jsonl || fail "diloco(lr 1, mu 0) != local"
compare params diloco_plain/step-40/model.safetensors local/step-40/model.safetensors || fail "diloco params"
echo "ps-async, local, diloco: as expected"
