#!/usr/bin/env bash
# Stragglers are named: rank 2 of three data-parallel ranks is slowed from outside the program
# (stopped for 30 ms of every 40, as a busy neighbour would slow it). metrics.jsonl gives every
# rank's compute and wait seconds per step; the log names rank 2, once, and no other rank;
# summary.json records it; the healthy ranks' time shows as waiting, and the slowdown leaves the
# trajectory as it was.
source "$(dirname "$0")/lib.sh"
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
     --train.steps 60 --train.batch_size 96 --train.val_every 0 --train.ckpt_every 0 --dp 3)
mpi 3 "${run[@]}" --train.out_dir even > even.log
mpi 3 "${run[@]}" --train.out_dir slow > slow.log &
job=$!
slow_rank 2 0.03 0.01
wait $job
[ "$(grep -c "is a straggler" slow.log)" -eq 1 ] || fail "not one straggler line: $(grep straggler slow.log)"
grep -q "warning: rank 2 is a straggler" slow.log || fail "rank 2 not named: $(grep straggler slow.log)"
/usr/bin/python3 - even/metrics.jsonl slow/metrics.jsonl slow/summary.json <<'PY' || fail "times"
import json, sys
even = [json.loads(l) for l in open(sys.argv[1])]
slow = [json.loads(l) for l in open(sys.argv[2])]
summary = json.load(open(sys.argv[3]))
for rows in (even, slow):
    assert len(rows) == 60
    for r in rows:
        assert r["compute_s"] > 0 and r["wait_s"] >= 0, r
        ranks = r["bytes_per_rank"]
        assert [p["rank"] for p in ranks] == [0, 1, 2]
        assert all(p["compute_s"] > 0 and p["wait_s"] >= 0 and p["stage"] == 0 for p in ranks)
def mean(rows, rank, key):
    return sum(r["bytes_per_rank"][rank][key] for r in rows[10:]) / len(rows[10:])
c = [mean(slow, k, "compute_s") for k in range(3)]
w = [mean(slow, k, "wait_s") for k in range(3)]
print("slowed run, mean compute s per step by rank: %s; wait: %s" %
      (", ".join("%.4f" % x for x in c), ", ".join("%.4f" % x for x in w)))
assert c[2] > 1.3 * max(c[0], c[1]), c
assert min(w[0], w[1]) > w[2], w
names = summary["stragglers"]
assert [s["rank"] for s in names] == [2], names
assert names[0]["compute_ratio"] > 1.2 and names[0]["named_at_step"] > 10, names
for a, b in zip(even, slow):
    assert a["loss"] == b["loss"], (a["step"], a["loss"], b["loss"])
PY
echo "stragglers: rank 2 named once, from outside slowing"
