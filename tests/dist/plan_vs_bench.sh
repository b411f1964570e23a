#!/usr/bin/env bash
# `parallama plan` against what `parallama bench` measures: on one process and under mpirun
# (dp 2, tp 2, pp 2 under gpipe, 1f1b and interleaved, dp 2 × pp 2, tp 2 × pp 2 with a tied head,
# ZeRO-1 and ZeRO-2 over dp 2, attention and full recompute), every rank's parameters, gradients, optimizer state and
# activations agree within 10%, and the bytes on each mesh axis within 1% (plus a few bytes of
# scalar sums the planner leaves out). Then plan's own checks: the largest rank named, the
# bubble, and one clear error for a layout or precision that does not work.
source "$(dirname "$0")/lib.sh"

check() {  # check NAME NP ARGS...: bench on NP ranks and plan, both with ARGS
  local name=$1 np=$2; shift 2
  mpi "$np" bench "$@" --bench.steps 1 --bench.warmup 0 --json > "$name.bench" ||
    fail "$name: bench failed"
  "$bin" plan "$@" --json > "$name.plan" || fail "$name: plan failed"
  /usr/bin/python3 - "$name" "$np" << 'EOF' || fail "$name: plan and bench disagree"
import json, sys
name, np = sys.argv[1], int(sys.argv[2])
bench = json.loads(open(name + ".bench").read().strip().splitlines()[-1])
plan = json.loads(open(name + ".plan").read().strip().splitlines()[-1])
bad = []
for what in ("parameters", "gradients", "optimizer_state", "activations"):
    measured, planned = bench["bytes_per_rank"][what], plan["bytes_per_rank"][what]
    assert len(measured) == len(planned) == np, (what, measured, planned)
    for rank, (m, p) in enumerate(zip(measured, planned)):
        if abs(p - m) > 0.10 * m:
            bad.append(f"{what} rank {rank}: bench {m:.0f} B, plan {p:.0f} B")
if "bytes_per_step" in bench:  # the traffic per mesh axis
    for axis in ("dp", "tp", "pp"):
        for rank, (m, p) in enumerate(zip(bench["bytes_per_step"][axis],
                                          plan["comm_bytes_per_rank"][axis])):
            if abs(p - m) > 0.01 * m + 64:
                bad.append(f"{axis} bytes rank {rank}: bench {m:.0f}, plan {p:.0f}")
else:
    print(f"{name}: bench reports no bytes per axis; traffic not compared")
for line in bad:
    print(f"{name}: {line}", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
  echo "$name: plan agrees with bench"
}

b15=(--model.preset bench15m --train.batch_size 2 --train.seq_len 32 --train.micro_batches 4)
kjv=(--model.preset kjv-small --train.batch_size 2 --train.seq_len 32 --train.micro_batches 4)
check single 1 "${b15[@]}"
check dp2 2 "${b15[@]}" --dp 2
# tiny's 101-row vocabulary splits unevenly: the two tp ranks differ.
check tp2 2 --model.preset tiny --train.batch_size 2 --train.seq_len 16 --tp 2
check pp2_gpipe 2 "${b15[@]}" --pp 2 --parallel.pp_schedule gpipe
check pp2_1f1b 2 "${b15[@]}" --pp 2 --parallel.pp_schedule 1f1b
check pp2_interleaved 2 "${b15[@]}" --pp 2 --parallel.pp_schedule interleaved \
  --parallel.pp_virtual 2
check dp2_pp2 4 "${b15[@]}" --dp 2 --pp 2
check tp2_pp2_tied 4 "${kjv[@]}" --tp 2 --pp 2
check zero1 2 "${b15[@]}" --dp 2 --zero 1
check zero2 2 "${b15[@]}" --dp 2 --zero 2
check zero2_pp2_tied 4 "${kjv[@]}" --dp 2 --pp 2 --zero 2 --parallel.pp_schedule gpipe
# Activation recompute (its extra tensor-parallel sums counted too).
check recompute_attention 2 "${b15[@]}" --pp 2 --train.recompute attention
check recompute_full_tp2_pp2 4 "${kjv[@]}" --tp 2 --pp 2 --train.recompute full

# The text names the largest rank and gives the bubble; 1F1B holds fewer micro-batches than
# GPipe on stage 0, so less memory.
"$bin" plan "${b15[@]}" --pp 2 --parallel.pp_schedule gpipe > gpipe.txt
grep -q "largest: stage 0 (ranks 0)" gpipe.txt || fail "plan names the largest rank"
grep -q "pipeline bubble: 20.0% = (p-1)/(v\*m+p-1), p 2, v 1, m 4" gpipe.txt || fail "bubble"
/usr/bin/python3 - << 'EOF' || fail "1f1b holds less than gpipe"
import json
g = json.loads(open("pp2_gpipe.plan").read().strip().splitlines()[-1])
f = json.loads(open("pp2_1f1b.plan").read().strip().splitlines()[-1])
assert f["bytes_per_rank"]["activations"][0] < g["bytes_per_rank"]["activations"][0]
assert g["groups"][0]["slots"] == [4] and f["groups"][0]["slots"] == [2], (g, f)
EOF
expect_error "does not divide" plan --model.preset llama3-8b --tp 3
expect_error "unknown precision 'fp8'" plan --model.preset llama3-8b --precision fp8
expect_error "must be positive" plan --model.preset llama3-8b --link-gbps 0
echo "plan vs bench: all checks passed"
