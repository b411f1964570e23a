#!/usr/bin/env bash
# The main job in small: prepare a corpus, train, stop and resume bit for bit, evaluate,
# generate, plot; corrupt checkpoints are refused.
# Usage: train.sh PARALLAMA_BIN SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
source "$src/tests/e2e/lib.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work"

make_corpus text.txt 2000
"$bin" prepare --text text.txt --vocab 400 --out d1 > /dev/null
"$bin" prepare --text text.txt --vocab 400 --out d2 > /dev/null
for f in tokenizer.model train.bin val.bin meta.json; do cmp d1/$f d2/$f || fail "prepare not deterministic: $f"; done
"$bin" prepare --text text.txt --tokenizer d1/tokenizer.model --out d3 > /dev/null
cmp d1/train.bin d3/train.bin || fail "prepare with --tokenizer differs"
: > empty.txt
expect_error "is empty" prepare --text empty.txt --vocab 400 --out d4
expect_error "cannot read text file" prepare --text nothere.txt --vocab 400 --out d4

run=(--config "$src/configs/tiny.toml" --data.dir d1 --model.vocab_size 400 --train.steps 40
     --train.val_every 10 --train.ckpt_every 10 --train.micro_batches 2 --optim.warmup_steps 5)
"$bin" train "${run[@]}" --train.out_dir full > full.log
"$bin" train "${run[@]}" --train.out_dir part --stop-at 17 > /dev/null
[ -d part/step-17 ] && [ ! -d part/step-20 ] || fail "--stop-at 17 did not stop there with a checkpoint"
"$bin" train "${run[@]}" --train.out_dir part --resume part/step-17 > /dev/null
strip() { /usr/bin/python3 -c '
import json, sys
for line in open(sys.argv[1]):
    j = json.loads(line)
    for timing in ("elapsed", "time", "tokens_per_s", "compute_s", "wait_s"): j.pop(timing)
    print(json.dumps(j, sort_keys=True))' "$1"; }
diff <(strip full/metrics.jsonl) <(strip part/metrics.jsonl) > /dev/null || fail "resumed losses differ"
cmp full/step-40/model.safetensors part/step-40/model.safetensors || fail "resumed weights differ"
/usr/bin/python3 - full/metrics.jsonl <<'PY' || fail "metrics"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["step"] for r in rows] == list(range(1, 41)), "one line per step"
for k in ("loss", "lr", "grad_norm", "tokens_per_s", "elapsed", "time", "compute_s", "wait_s"):
    assert all(k in r for r in rows), k
vals = [r["val_loss"] for r in rows if "val_loss" in r]
assert len(vals) == 4 and vals[-1] < vals[0] and vals[-1] < math.log(400) - 1, vals
assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
PY
grep -q "step 40/40" full.log || fail "no plain progress lines when not a terminal"

"$bin" eval --ckpt full/step-40 --data d1/val.bin | grep -qE "^loss [0-9.]+ perplexity [0-9.]+" || fail "eval"
out=$("$bin" generate --ckpt full/step-40 --prompt "And God said" --max-tokens 20 --seed 3)
[[ "$out" == "And God said"* ]] && [ ${#out} -gt 20 ] || fail "generate printed: $out"
[ "$out" = "$("$bin" generate --ckpt full/step-40 --prompt "And God said" --max-tokens 20 --seed 3)" ] || fail "seeded sampling differs"
"$bin" plot full > /dev/null && grep -q "<polyline" full/loss.svg || fail "plot"

cp -r full/step-40 broken
head -c 1000 full/step-40/model.safetensors > broken/model.safetensors
expect_error "broken/model.safetensors" train "${run[@]}" --train.out_dir again --resume broken
expect_error "broken/model.safetensors" eval --ckpt broken --data d1/val.bin
# Fine-tuning: --init starts from a checkpoint's weights with a fresh optimizer at step 0. With a
# learning rate of 0 the saved weights are the checkpoint's, bit for bit, and the first loss is
# the checkpoint's (far below a fresh model's).
"$bin" train "${run[@]}" --train.out_dir ft --init full/step-40 --train.steps 1 --optim.lr 0 \
  --optim.min_lr 0 > ft.log
grep -q "starting from the weights of full/step-40" ft.log || fail "--init not reported"
/usr/bin/python3 "$src/tests/dist/compare.py" params ft/step-1/model.safetensors \
  full/step-40/model.safetensors --tol 0 > /dev/null || fail "--init did not load the weights"
/usr/bin/python3 - full/metrics.jsonl ft/metrics.jsonl <<'PY' || fail "--init loss"
import json, sys
full = [json.loads(l) for l in open(sys.argv[1])]
ft = [json.loads(l) for l in open(sys.argv[2])]
assert ft[0]["step"] == 1 and ft[0]["loss"] < full[0]["loss"] - 0.5, (ft[0], full[0])
PY
expect_error "the checkpoint is of another model" train "${run[@]}" --train.out_dir ft2 \
  --init full/step-40 --model.n_layers 3
echo "e2e train: all checks passed"
