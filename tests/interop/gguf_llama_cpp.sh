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
source "$src/tests/interop/llama_cpp_lib.sh"
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

/usr/bin/python3 -c 'import json, sys; json.dump([l.rstrip("\n") for l in sys.stdin if l.strip(" \t\n")], sys.stdout)' \
  < verses.txt > verses.json
"$bin" prepare --text text.txt --vocab 512 --out data > /dev/null
data=data vocab=512 texts=verses.json seq_len=64
prompts=("And God said" "In the beginning" "And the LORD spake unto Moses")
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
