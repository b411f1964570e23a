#!/usr/bin/env bash
# Tokenizer speed on one thread: `parallama tokenize` over the whole King James Bible (31,102
# lines, 4.1 MB of English), with a Llama-3-style byte-level BPE (tokenizer.json, trained by the
# tests' reference trainer on the first 2,000 verses; VOCAB tokens) and with a sentencepiece BPE of
# the same size (prepare's), as a Markdown table of the median of RUNS runs each, alternating.
# The time is the encoding alone (stderr of tokenize), not reading the file or writing the JSON.
# A second text, 2 MB of random words in several scripts, measures the byte-level BPE where
# words do not repeat.
# Usage: bench/tokenizer.sh [VOCAB] [RUNS]   (defaults 8000 5; needs build/parallama)
set -euo pipefail
cd "$(dirname "$0")/.."
vocab=${1:-8000}
runs=${2:-5}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bible -f gen1:1-rev22:21 | awk '{ sub(/^[^ ]+ /, ""); print }' > "$out/kjv.txt"
head -n 2000 "$out/kjv.txt" > "$out/train.txt"
python3 tests/interop/bpe_reference.py --text "$out/train.txt" --vocab "$vocab" \
  --out "$out/bpe" > /dev/null
./build/parallama prepare --text "$out/train.txt" --vocab "$vocab" --out "$out/spm" > /dev/null
# Words the tokenizer has never seen (few repeat, so its cache of words rarely helps): random
# words of Latin, accented, Cyrillic and CJK letters, with digits and punctuation.
python3 - "$out/multi.txt" << 'PY'
import random, sys
rng = random.Random(1)
letters = "abcdefghijklmnopqrstuvwxyz" + "éèàüößçñ" + "абвгдежзиклмнопрст" + "漢字日本語中文天地"
with open(sys.argv[1], "w", encoding="utf-8") as f:
    size = 0
    while size < 2_000_000:
        words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(12)]
        line = " ".join(words) + rng.choice([".", ",", " 1234", "!", "'s"])
        f.write(line + "\n")
        size += len(line.encode()) + 1
PY
speed() {  # speed TOKENIZER TEXT: MB/s of one run
  ./build/parallama tokenize --tokenizer "$1" --text "$2" 2>&1 > /dev/null |
    sed -n 's/.*(\([0-9.]*\) MB\/s)$/\1/p'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
: > "$out/bpe.kjv" ; : > "$out/spm.kjv"; : > "$out/bpe.multi"
for ((i = 0; i < runs; ++i)); do
  speed "$out/bpe/tokenizer.json" "$out/kjv.txt" >> "$out/bpe.kjv"
  speed "$out/spm/tokenizer.model" "$out/kjv.txt" >> "$out/spm.kjv"
  speed "$out/bpe/tokenizer.json" "$out/multi.txt" >> "$out/bpe.multi"
done
echo "| tokenizer ($vocab tokens) | text | MB/s, one thread (median of $runs) |"
echo "|---|---|---|"
echo "| byte-level BPE (tokenizer.json) | KJV, 4.1 MB | $(median < "$out/bpe.kjv") |"
echo "| sentencepiece BPE (tokenizer.model) | KJV, 4.1 MB | $(median < "$out/spm.kjv") |"
echo "| byte-level BPE (tokenizer.json) | random words in four scripts, 2 MB | $(median < "$out/bpe.multi") |"
