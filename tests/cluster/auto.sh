#!/usr/bin/env bash
# The automatic layout across hosts: 2 hosts of 2 ranks joined by a link shaped to 0.1 Gbit/s.
# calibrate tells the two links apart (between the hosts: at most the shaped rate a rank, far
# below the link within a host; latencies are not compared: with more ranks than cores a round
# trip waits on the scheduler as much as on the network); plan --auto on that profile keeps tensor parallelism within a
# host; train --layout auto over the cluster runs its choice on the trajectory of one process.
source "$(dirname "$0")/lib.sh"
prepare_tiny
cluster_up 2 --slots 2 --gbps 0.1
cmpi 4 calibrate --config "$src/configs/tiny.toml" --model.vocab_size 400 --out p.json > cal.log ||
  fail "calibrate: $(tail -3 cal.log)"
/usr/bin/python3 - p.json << 'PY' || fail "the profile of 2 hosts"
import json, sys
p = json.load(open(sys.argv[1]))
assert p["ranks"] == 4 and len(p["hosts"]) == 2 and p["ranks_per_host"] == 2, p
w, b = p["links"]["within"], p["links"]["between"]
assert b is not None and 0.01 < b["gbps"] <= 0.12, b  # two flows share the 0.1 Gbit/s link
assert w["gbps"] > 10 * b["gbps"] and b["latency_us"] > 0 and w["latency_us"] > 0, (w, b)
print(f"between hosts {b['gbps']:.3f} Gbit/s a rank, {b['latency_us']:.0f} us; within "
      f"{w['gbps']:.1f} Gbit/s, {w['latency_us']:.1f} us")
PY
"$bin" plan --config "$src/configs/tiny.toml" --model.vocab_size 400 --profile p.json --auto \
  --hosts 2 --ranks-per-host 2 --global-batch 8 --json | tail -1 > auto.json
/usr/bin/python3 -c '
import json, sys
ls = json.load(open(sys.argv[1]))["layouts"]
assert ls and all(l["tp"] <= 2 for l in ls), "tensor parallelism across hosts"' auto.json ||
  fail "plan --auto over 2 hosts"
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
     --train.steps 8 --train.val_every 0 --train.ckpt_every 0 --optim.warmup_steps 3)
"$bin" "${run[@]}" --train.batch_size 2 --train.micro_batches 4 --train.out_dir one > /dev/null
cmpi 4 "${run[@]}" --train.batch_size 2 --layout auto --calibration p.json --train.out_dir c \
  > c.log || fail "train --layout auto: $(tail -3 c.log)"
grep "^layout auto: " c.log || fail "no choice printed"
ranks_on_hosts c 0 0 1 1
compare metrics c/metrics.jsonl one/metrics.jsonl || fail "--layout auto over 2 hosts: losses"
echo "cluster auto: calibrated two links, planned, and ran the choice on one trajectory"
