#!/usr/bin/env bash
# End-to-end checks of the parallama program: info, bench --json, and one clear line with exit
# code 2 for bad input, before any work is done.
# Usage: cli.sh PARALLAMA_BIN SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
source "$src/tests/e2e/lib.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work"

"$bin" info --model.preset llama3-8b | grep -q "8030261248" || fail "info llama3-8b"
# info checks the model only: the tiny model's context is shorter than the default train.seq_len.
"$bin" info --model.preset tiny | grep -q "max seq 16" || fail "info tiny"

"$bin" bench --config "$src/configs/tiny.toml" --bench.steps 3 --bench.warmup 1 --json > bench.out
tail -n 1 bench.out | /usr/bin/python3 -c '
import json, sys
j = json.loads(sys.stdin.read())
for k in ("median_step_s", "tokens_per_s", "gflops", "mfu", "peak_gflops", "flop_formula"):
    assert k in j, k
assert j["tokens_per_s"] > 0 and 0 < j["mfu"] < 1, j
assert abs(j["mfu"] - j["gflops"] / j["peak_gflops"]) <= 1e-6 * j["mfu"], j
' || fail "bench --json"
grep -q "MFU" bench.out || fail "bench prints MFU"

make_corpus text.txt 600
"$bin" prepare --text text.txt --vocab 400 --out data > /dev/null
tiny=(--config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 400)
expect_error "unknown key 'train.bach_size'" train "${tiny[@]}" --train.bach_size 4
expect_error "must be an integer" train "${tiny[@]}" --train.batch_size four
expect_error "not divisible by n_heads" train "${tiny[@]}" --model.dim 50
expect_error "unknown model preset" info --model.preset nope
expect_error "unknown key 'train.bach_size'" info --model.preset tiny --train.bach_size 4
expect_error "must be an integer" info --model.preset tiny --train.batch_size four
expect_error "exceeds model.max_seq_len" train "${tiny[@]}" --train.seq_len 17
expect_error "larger than the" train "${tiny[@]}" --train.batch_size 100000
expect_error "choose fp32, bf16 or fp16" train "${tiny[@]}" --precision fp8
expect_error "use bf16, which needs no loss scaling" train "${tiny[@]}" --precision fp16 --sync local
expect_error "must be a power of two" train "${tiny[@]}" --precision fp16 --train.loss_scale 1000
expect_error "made with a vocabulary of 400" train "${tiny[@]}" --model.vocab_size 200
expect_error "cannot read token shard" train "${tiny[@]}" --data.dir missing
expect_error "sizing only" bench --model.preset llama2-7b --train.seq_len 8 --train.batch_size 1
expect_error "unexpected argument" train "${tiny[@]}" stray
printf '[train]\nbatch_size = "eight"\n' > bad.toml
expect_error "bad.toml: key 'train.batch_size' must be an integer" train --config bad.toml
printf '[train\n' > broken.toml
expect_error "broken.toml:1" train --config broken.toml
# A directory or an empty file as --config; inf and nan; absurd and malformed flags.
expect_error "is a directory, not a TOML configuration file" train --config data
: > empty.toml
expect_error "empty.toml: the configuration file holds no settings" train --config empty.toml
printf '# only a comment\n' > comment.toml
expect_error "holds no settings" train --config comment.toml
for key in model.norm_eps model.rope_theta optim.eps train.grad_clip optim.weight_decay; do
  expect_error "key '$key' must be a finite number" train "${tiny[@]}" --$key inf
  expect_error "key '$key' must be a finite number" train "${tiny[@]}" --$key nan
done
expect_error "timeout_s must be positive and at most 1e6" train "${tiny[@]}" --parallel.timeout_s 1e10
expect_error "key 'parallel.timeout_s' must be a finite number" train "${tiny[@]}" --parallel.timeout_s inf
for v in 0 -1 abc 1.5; do
  expect_error "--dp: '$v' is not a whole number of at least 1" train "${tiny[@]}" --dp $v
done
expect_error "--stop-at: '0' is not a whole number" train "${tiny[@]}" --stop-at 0
expect_error "--zero must be 0, 1 or 2" train "${tiny[@]}" --zero 3
expect_error "--temperature: 'nan' is not a number" generate --ckpt x --prompt y --temperature nan
expect_error "--top-p: 'nan' is not a number" generate --ckpt x --prompt y --top-p nan
expect_error "--max-tokens: '0' is not a whole number" generate --ckpt x --prompt y --max-tokens 0
# A batch that cannot fit names the memory it needs.
expect_error "needs about .* GB per rank .* more than this machine's" bench \
  --config "$src/configs/bench15m.toml" --train.batch_size 20000
[ ! -e runs ] || fail "a refused run wrote files"
echo "e2e cli: all checks passed"
