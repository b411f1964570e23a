#!/usr/bin/env bash
# The automatic layout on one machine:
#   (a) calibrate under mpirun measures every rank (GEMM curves in fp32 and bf16, memory
#       bandwidth, the link within the host) into a versioned profile; it refuses to replace a
#       file without --force, and plan refuses a profile that is missing, malformed or of another
#       version, each in one line with exit 2.
#   (b) plan --auto with the profile lists the best layouts; --json gives every valid one, each
#       keeping the ranks and the global batch, ranked by predicted step time.
#   (c) train --layout auto on 4 processes runs the planner's first choice (its mesh and
#       micro-batches), says it and the runner-up, and gives the losses of one process at the
#       same global batch; summary.json and bench --json record the predicted and measured step
#       time and memory; --layout auto beside --tp is refused.
source "$(dirname "$0")/lib.sh"
prepare_tiny
mpi 2 calibrate --config "$src/configs/tiny.toml" --model.vocab_size 400 --out p.json > cal.log ||
  fail "calibrate: $(tail -3 cal.log)"
/usr/bin/python3 - p.json << 'PY' || fail "the profile"
import json, sys
p = json.load(open(sys.argv[1]))
assert p["format"] == "parallama-profile" and p["version"] == 1 and p["ranks"] == 2, p
assert p["ranks_per_host"] == 2 and len(p["hosts"]) == 1 and p["links"]["between"] is None, p
for prec in ("fp32", "bf16"):
    sizes = [s for s, _ in p["gemm"][prec]]
    assert len(sizes) >= 3 and sizes == sorted(sizes), p["gemm"]
    assert all(r > 0 for _, r in p["gemm"][prec]), p["gemm"]
assert p["memory_gbps"] > 0 and p["links"]["within"]["gbps"] > 0, p
assert p["seconds"] < 60, p["seconds"]
print(f"profile: {p['seconds']:.1f} s, fp32 up to {max(r for _, r in p['gemm']['fp32']):.1f} "
      f"GFLOP/s a rank, within the host {p['links']['within']['gbps']:.1f} Gbit/s")
PY
refused() {  # refused WANT ARGS...: one line saying WANT, exit 2
  local want=$1; shift
  set +e; "$bin" "$@" > /dev/null 2> err.txt; local rc=$?; set -e
  [ $rc -eq 2 ] && [ "$(wc -l < err.txt)" -eq 1 ] && grep -q -- "$want" err.txt ||
    fail "$*: exit $rc: $(cat err.txt)"
}
refused "exists; give another --out" calibrate --out p.json
plan=(plan --config "$src/configs/tiny.toml" --model.vocab_size 400)
refused "no such profile" "${plan[@]}" --profile none.json
echo '{"format": "parallama-profile", "version": 99}' > old.json
refused "profile version 99" "${plan[@]}" --profile old.json
echo '{"format": ' > cut.json
refused "malformed" "${plan[@]}" --profile cut.json
echo "(a) calibrate wrote a profile; bad ones and overwriting are refused"

"$bin" "${plan[@]}" --profile p.json --auto --ranks-per-host 4 --global-batch 8 --json > auto.log
grep -q "^   1  dp " auto.log || fail "plan --auto: no ranked layouts: $(head -5 auto.log)"
tail -1 auto.log > auto.json
/usr/bin/python3 - auto.json << 'PY' || fail "plan --auto --json"
import json, sys
j = json.load(open(sys.argv[1]))
ls = j["layouts"]
assert len(ls) > 20 and j["considered"] >= len(ls), (len(ls), j["considered"])
for l in ls:
    assert l["dp"] * l["tp"] * l["pp"] == 4 and l["dp"] * l["batch_size"] * l["micro_batches"] == 8, l
fit = [l["step_s"] for l in ls if l["fits"]]
assert fit == sorted(fit) and fit, fit[:5]
print(f"plan --auto: {len(ls)} valid of {j['considered']}; best {ls[0]['step_s']:.5f} s")
PY
echo "(b) plan --auto ranks every valid layout"

run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400
     --train.steps 8 --train.val_every 0 --train.ckpt_every 0 --optim.warmup_steps 3)
"$bin" "${run[@]}" --train.batch_size 2 --train.micro_batches 4 --train.out_dir one > /dev/null
mpi 4 "${run[@]}" --train.batch_size 2 --train.micro_batches 1 --layout auto \
  --calibration p.json --train.out_dir auto > auto_train.log || fail "$(tail -3 auto_train.log)"
grep -q "^layout auto: " auto_train.log && grep -q "^runner-up: " auto_train.log ||
  fail "no choice or runner-up: $(head -3 auto_train.log)"
/usr/bin/python3 - auto_train.log auto/summary.json << 'PY' || fail "--layout auto's run"
import json, re, sys
log = open(sys.argv[1]).read()
m = re.search(r"layout auto: dp (\d+) x tp (\d+) x pp (\d+).*?(\d+) micro-batch\(es\) of (\d+)", log)
dp, tp, pp, micro, b = map(int, m.groups())
assert f"mesh dp {dp} x tp {tp} x pp {pp}" in log, "the run's mesh is not the choice"
assert f"x {micro} micro-batch(es) x {b} x" in log, "the run's micro-batches are not the choice"
p = json.load(open(sys.argv[2]))["prediction"]
assert p["predicted"]["step_s"] > 0 and p["measured"]["step_s"] > 0 and p["ratio"]["step_s"] > 0, p
assert 0.9 < p["ratio"]["memory_bytes"] < 1.1, p
print(f"ran dp {dp} x tp {tp} x pp {pp}, {micro} x {b}; step x{p['ratio']['step_s']:.2f}, "
      f"memory x{p['ratio']['memory_bytes']:.3f}")
PY
compare metrics auto/metrics.jsonl one/metrics.jsonl || fail "--layout auto's losses"
mpi 2 bench --config "$src/configs/tiny.toml" --model.vocab_size 400 --bench.steps 3 \
  --bench.warmup 1 --calibration p.json --json > bench.log
tail -1 bench.log | /usr/bin/python3 -c '
import json, sys
p = json.load(sys.stdin)["prediction"]
assert p["predicted"]["step_s"] > 0 and p["ratio"]["step_s"] > 0, p
assert 0.9 < p["ratio"]["memory_bytes"] < 1.1, p' || fail "bench --json: no prediction"
check_once "--layout auto chooses" "${run[@]}" --layout auto --tp 2 --train.out_dir refused
echo "(c) train --layout auto runs the planner's choice on one trajectory; runs record predictions"
