#!/usr/bin/env bash
# Synchronous parameter-server training gives the losses and parameters of all-reduce training
# (within fp32 rounding), with one or two servers and with gradient accumulation; every
# strategy records bytes per step in metrics.jsonl and per rank in summary.json.
source "$(dirname "$0")/lib.sh"
prepare_tiny
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400 --train.steps 12
     --train.val_every 6 --train.ckpt_every 6 --optim.warmup_steps 3 --dp 2)
mpi 2 "${run[@]}" --train.batch_size 2 --train.micro_batches 2 --train.out_dir ar > /dev/null
mpi 3 "${run[@]}" --train.batch_size 2 --train.micro_batches 2 --parallel.sync ps --ps.servers 1 --train.out_dir ps1 > /dev/null
mpi 4 "${run[@]}" --train.batch_size 4 --sync ps --ps.servers 2 --train.out_dir ps2 > /dev/null
for out in ps1 ps2; do
  compare metrics $out/metrics.jsonl ar/metrics.jsonl || fail "$out losses"
  compare params $out/step-12/model.safetensors ar/step-12/model.safetensors || fail "$out parameters"
done
# The optimizer state gathered from the servers makes a checkpoint that resumes exactly.
mpi 3 "${run[@]}" --train.batch_size 2 --train.micro_batches 2 --parallel.sync ps --train.out_dir ps1r \
  --resume ps1/step-6 > /dev/null
compare metrics ps1r/metrics.jsonl ps1/metrics.jsonl --from 7 --tol 0 || fail "ps resume"
/usr/bin/python3 - ps2 <<'PY' || fail "traffic records"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
assert all(r["bytes_sent"] > 0 and r["bytes_received"] > 0 for r in rows)
for r in rows:  # every rank, every step: 2 workers, then 2 servers that each saw both workers
    per = r["bytes_per_rank"]
    assert [p["role"] for p in per] == ["worker", "worker", "server", "server"], per
    assert all(p["sent"] > 0 and p["received"] > 0 for p in per), per
    assert per[2]["received"] >= per[0]["sent"] / 2, per
    # Pushes and pulls are data-parallel traffic: the workers' and all of the servers'.
    assert all(p["dp"] > 0 and p["tp"] == p["pp"] == 0 for p in per), per
    assert per[0]["dp"] >= per[0]["sent"] / 2, per
    assert per[2]["dp"] == per[2]["sent"] + per[2]["received"], per
s = json.load(open(sys.argv[1] + "/summary.json"))
assert [r["role"] for r in s["ranks"]] == ["worker", "worker", "server", "server"], s
assert all(r["bytes_sent_per_step"] > 0 for r in s["ranks"])
PY
expect_error "2 workers and 1 server(s) need 3 processes but 1 started" "${run[@]}" --sync ps
echo "ps: equal to all-reduce"
