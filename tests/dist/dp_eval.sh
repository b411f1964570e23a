#!/usr/bin/env bash
# Validation and `eval` split their batches across the data-parallel ranks: rank r evaluates
# batches r, r + N, r + 2N, ... alone. DP = 2 and 3 give the single-process loss (relative
# difference <= 1e-5), and the ranks' shares are the round-robin ones: disjoint, together every
# batch and every token exactly once.
source "$(dirname "$0")/lib.sh"
prepare_tiny
# Training from one seed checkpoint with the same global batch of 12 sequences, validating every
# 2 steps on 3 × 12 sequences: DP = 2 and 3 report the single-process val_loss.
run=(train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400 --train.steps 7
     --train.val_every 2 --train.val_batches 3 --train.ckpt_every 0 --optim.warmup_steps 2)
"$bin" "${run[@]}" --train.batch_size 12 --train.out_dir seed --stop-at 1 > /dev/null
for layout in "1 12" "2 6" "3 4"; do
  read -r np b <<< "$layout"
  mpi "$np" "${run[@]}" --dp "$np" --train.batch_size "$b" --train.out_dir "dp$np" \
    --resume seed/step-1 > "dp$np.log"
  [ "$(grep -c val_loss "dp$np/metrics.jsonl")" -eq 4 ] || fail "dp$np: not 4 validation losses"
done
for np in 2 3; do
  compare metrics "dp$np/metrics.jsonl" dp1/metrics.jsonl --from 2 || fail "dp$np val_loss"
done

# `eval` of one checkpoint (batches of 12 sequences, the last one partial) on 1, 2 and 3
# processes, all batches and a limit of 7 batches.
check_eval() {  # check_eval ONE_PROCESS_OUTPUT N_PROCESSES_OUTPUT N MAX_BATCHES
  /usr/bin/python3 - "$@" <<'PY'
import re, sys
one, many, n, max_batches = open(sys.argv[1]).read(), open(sys.argv[2]).read(), int(sys.argv[3]), int(sys.argv[4])
head = re.compile(r"^loss ([0-9.]+) perplexity [0-9.]+ over ([0-9]+) tokens$", re.M)
(loss1, tokens1), = head.findall(one)
(lossn, tokensn), = head.findall(many)
loss1, lossn, tokens1, tokensn = float(loss1), float(lossn), int(tokens1), int(tokensn)
assert abs(lossn - loss1) <= 1e-5 * loss1, (loss1, lossn)
assert tokensn == tokens1, (tokens1, tokensn)
B, T = 12, 16
samples = tokens1 // T                 # every evaluated sequence has T targets
batches = -(-samples // B)
assert batches == max_batches if max_batches else samples % B, (samples, max_batches)
want = [[0, 0] for _ in range(n)]
for b in range(batches):
    want[b % n][0] += 1
    want[b % n][1] += min(B, samples - b * B) * T
got = [[int(x), int(y)] for x, y in re.findall(r"^rank \d+: (\d+) batches, (\d+) tokens$", many, re.M)]
assert got == want, (got, want)
assert all(g[0] > 0 for g in got), got
print(f"{n} ranks: loss {lossn} = {loss1}; shares {got}")
PY
}
for limit in 0 7; do
  "$bin" eval --ckpt dp1/step-7 --data data/val.bin --batches "$limit" > "eval1_$limit.out"
  grep -q "^rank" "eval1_$limit.out" && fail "one process printed ranks"
  for np in 2 3; do
    mpi "$np" eval --ckpt dp1/step-7 --data data/val.bin --batches "$limit" > "eval${np}_$limit.out"
    check_eval "eval1_$limit.out" "eval${np}_$limit.out" "$np" "$limit" || fail "eval on $np ranks, --batches $limit"
  done
done
echo "dp eval: every layout evaluates the same sequences, each rank its own share"
