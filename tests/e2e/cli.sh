#!/usr/bin/env bash
# End-to-end checks of the parallama program: info, bench --json, a short training run, and
# clear one-line errors with a non-zero exit for bad input.
# Usage: cli.sh PARALLAMA_BIN SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }

# info on a shape-only preset prints the published parameter count
"$bin" info --model.preset llama3-8b | grep -q "8030261248" || fail "info llama3-8b"

# bench: the last line is one JSON object with the promised fields
"$bin" bench --config "$src/configs/tiny.toml" --bench.steps 3 --bench.warmup 1 --json > bench.out
tail -n 1 bench.out | /usr/bin/python3 -c '
import json, sys
j = json.loads(sys.stdin.read())
for k in ("median_step_s", "tokens_per_s", "gflops", "mfu", "peak_gflops", "flop_formula"):
    assert k in j, k
assert j["tokens_per_s"] > 0 and 0 < j["mfu"] < 1.5, j
' || fail "bench --json"

# a short training run on generated text lowers the loss and writes weights
/usr/bin/python3 -c 'print(("In the beginning God created the heaven and the earth. " * 400))' > text.txt
"$bin" train --config "$src/configs/tiny.toml" --data.text text.txt --model.vocab_size 256 \
  --train.steps 40 --train.out_dir run > train.out
first=$(grep '^step 1/' train.out | awk '{print $4}')
last=$(grep '^step 40/' train.out | awk '{print $4}')
/usr/bin/python3 -c "import sys; sys.exit(0 if $last < 0.5 * $first else 1)" || fail "loss $first -> $last"
test -s run/model.safetensors || fail "no weights written"

# bad input: one line on stderr, exit code 2
expect_error() {  # expect_error SUBSTRING ARGS...
  local want=$1; shift
  set +e; "$bin" "$@" > /dev/null 2> err.txt; local rc=$?; set -e
  [ $rc -eq 2 ] || fail "exit $rc for: $*"
  [ "$(wc -l < err.txt)" -eq 1 ] || fail "not one line for: $*"
  grep -q -- "$want" err.txt || fail "message for $* was: $(cat err.txt)"
}
expect_error "unknown key 'train.bach_size'" bench --config "$src/configs/tiny.toml" --train.bach_size 4
expect_error "must be an integer" bench --config "$src/configs/tiny.toml" --train.batch_size four
expect_error "not divisible by n_heads" info --model.preset tiny --model.dim 50
expect_error "unknown model preset" info --model.preset nope
expect_error "exceeds model.max_seq_len" bench --config "$src/configs/tiny.toml" --train.seq_len 17
expect_error "cannot read data.text" train --config "$src/configs/tiny.toml" --data.text missing.txt
expect_error "sizing only" bench --model.preset llama2-7b --train.seq_len 8 --train.batch_size 1
echo "e2e: all checks passed"
