#!/usr/bin/env bash
# A parallama model in llama.cpp: train a tiny model (grouped-query attention, tied head) on the
# first verses of the King James Bible, export it to GGUF (f32, f16, q8_0), and hold llama.cpp
# (the prebuilt CPU library of the npm package node-llama-cpp, installed by
# scripts/install-deps.sh) to parallama on the f32 file: the same token ids for sample verses, the
# same greedy continuations, and the same perplexity on held-out verses within 1e-3 relative. The
# f16 and q8_0 files must give a perplexity within 1% and 3% of it. Then the same for a model with
# Llama 3.1's rotary scaling.
# Usage: gguf_llama_cpp.sh PARALLAMA_BIN SOURCE_DIR WORK_DIR
# (node-llama-cpp in $PARALLAMA_NODE_DIR, by default /opt/parallama-node)
set -euo pipefail
bin=$1 src=$2 work=$3
source "$src/tests/e2e/lib.sh"
node_dir=${PARALLAMA_NODE_DIR:-/opt/parallama-node}
version=$(sed -n 's/^node_llama_cpp_version=\([0-9.]*\).*/\1/p' "$src/scripts/install-deps.sh")
[ -n "$version" ] || fail "no node_llama_cpp_version in scripts/install-deps.sh"
command -v node > /dev/null || fail "node (Node.js) is missing: run scripts/install-deps.sh"
# node-llama-cpp needs Node.js 20 (Debian 12's own is 18): without it the test is reported as
# skipped (exit 77), never as passed.
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "skipped: Node.js $(node --version) is older than node-llama-cpp's minimum (20)"
  exit 77
fi
have=$(node -p "require('$node_dir/node_modules/node-llama-cpp/package.json').version" 2> /dev/null) ||
  fail "node-llama-cpp is missing from $node_dir: run scripts/install-deps.sh"
[ "$have" = "$version" ] ||
  fail "node-llama-cpp $have in $node_dir, the tests need $version: run scripts/install-deps.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work"

# Training text: the first 2000 verses; held out: verses 3001-3040 (Exodus), never trained on.
bible -f gen1:1-rev22:21 | awk '{ sub(/^[^ ]+ /, "") } NR <= 2000 { print > "text.txt" }
                                NR > 3000 && NR <= 3040 { print > "heldout.txt" }'
[ -s text.txt ] && [ -s heldout.txt ] || fail "could not read the bible-kjv corpus"
# Sample texts for the tokenizers: ten held-out verses, and some with digits, runs of spaces,
# leading and trailing spaces, and characters the tokenizer has never seen (byte fallback).
{
  head -n 10 heldout.txt
  printf '%s\n' "In the 1611 edition, 42 verses;  two  spaces and 3.14159" "  leading and trailing  " \
    "Naïve café, ☃ and 漢字 — bytes" "LORD,LORD!!!...?"
} > verses.txt

"$bin" prepare --text text.txt --vocab 512 --out data > /dev/null
seq_len=64
prompts=("And God said" "In the beginning" "And the LORD spake unto Moses")
# check RUN [TRAIN_ARGS...]: train RUN, export it, and hold llama.cpp to parallama on it.
check() {
  local run=$1; shift
  "$bin" train --config "$src/configs/tiny.toml" --data.dir data --model.vocab_size 512 \
    --model.dim 64 --model.n_heads 4 --model.n_kv_heads 2 --model.ffn_dim 96 \
    --model.max_seq_len 128 --model.tie_embeddings true --train.seq_len $seq_len \
    --train.batch_size 16 --train.steps 400 --train.val_every 1000 --train.ckpt_every 1000 \
    --optim.lr 1e-2 --optim.warmup_steps 20 --train.threads 1 --train.out_dir $run "$@" > $run.log
  for t in f32 f16 q8_0; do
    "$bin" convert --from $run --to gguf:$run-$t.gguf --dtype $t | tee -a convert.log
  done
  "$bin" tokenize --ckpt $run --text verses.txt > $run-verses.json
  "$bin" tokenize --ckpt $run --text heldout.txt > $run-heldout.json
  local eval_out
  eval_out=$("$bin" eval --ckpt $run --text heldout.txt)
  echo "parallama eval --ckpt $run --text heldout.txt: $eval_out"
  : > $run-greedy.txt
  for p in "${prompts[@]}"; do
    "$bin" generate --ckpt $run --prompt "$p" --temperature 0 --max-tokens 20 --ids |
      tail -n 1 >> $run-greedy.txt
  done
  /usr/bin/python3 - "$node_dir" "$version" "$run" "$seq_len" "$eval_out" "${prompts[@]}" \
    > $run-spec.json <<'PY'
import json, re, sys
node_dir, version, run, seq_len, eval_out, *prompts = sys.argv[1:]
m = re.match(r"loss ([0-9.]+) perplexity [0-9.]+ over ([0-9]+) tokens", eval_out)
held = json.load(open(run + "-heldout.json"))
stream = [t for line in held["lines"] for t in [held["bos"]] + line]
json.dump({
    "node_modules": node_dir + "/node_modules", "version": version,
    "f32": run + "-f32.gguf",
    "load": [{"file": run + "-f16.gguf", "max_rel": 1e-2}, {"file": run + "-q8_0.gguf", "max_rel": 3e-2}],
    "verses": [l.rstrip("\n") for l in open("verses.txt") if l.strip(" \t\n")],
    "parallama_ids": json.load(open(run + "-verses.json"))["lines"],
    "prompts": prompts, "max_tokens": 20,
    "greedy_ids": [json.loads(l) for l in open(run + "-greedy.txt")],
    "stream": stream, "seq_len": int(seq_len),
    "parallama_loss": float(m.group(1)), "parallama_tokens": int(m.group(2)), "max_rel": 1e-3,
}, sys.stdout)
PY
  node "$src/tests/interop/llama_cpp_check.mjs" $run-spec.json ||
    fail "llama.cpp and parallama disagree on $run"
}
check plain
expect_error "f32, f16 or q8_0" convert --from plain --to gguf:x.gguf --dtype q4_0
expect_error "convert hf:DIR to a checkpoint first" convert --from hf:plain --to gguf:x.gguf
expect_error "eval needs --data SHARD or --text FILE" eval --ckpt plain
[ ! -e x.gguf ] && [ ! -e x.gguf.tmp ] || fail "a refused export left a file"
# Llama 3.1's rotary scaling (rope_freqs.weight): a short original context puts the 8
# frequencies of a head in all three bands (kept, blended, divided by the factor).
check llama3 --model.rope_scaling llama3 --model.rope_factor 4 --model.rope_low_freq_factor 1 \
  --model.rope_high_freq_factor 4 --model.rope_original_max_len 64
echo "PASS: llama.cpp agrees with parallama (plain and llama3 rotary scaling)"
