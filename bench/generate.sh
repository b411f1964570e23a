#!/usr/bin/env bash
# Generation speed: `generate --prompts` on the same prompts with 1 and N processes and several
# batch sizes, one after the other in one run, as a Markdown table. The prompts are the first
# words of KJV verses; each generates up to --max-tokens (fewer where the model emits </s>).
# Usage: bench/generate.sh [CKPT] [RANKS] [PROMPTS] [MAX_TOKENS]
#   (defaults: runs/kjv-small 2 64 64; train the main job first: parallama train --config
#   configs/kjv-small.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${1:-runs/kjv-small}
np=${2:-2}
n=${3:-64}
max_tokens=${4:-64}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# n verses spread over the whole Bible, their first 3 to 12 words.
bible -f gen1:1-rev22:21 | awk -v n="$n" '{ l[NR] = $0 } END { for (k = 0; k < n; ++k) {
  split(l[1 + int(k * (NR - 1) / n)], w, " "); s = w[2]; for (i = 3; i <= 3 + k % 10; ++i) s = s " " w[i];
  print s } }' > "$out/prompts.txt"
echo "| processes | batch | prompts | tokens generated | seconds (slowest rank) | tokens/s |"
echo "|---|---|---|---|---|---|"
for ranks in 1 "$np"; do
  for batch in 1 4 16 64; do
    # One process runs without mpirun, which would bind it (and its two threads) to one core.
    launch=(mpirun --oversubscribe -np "$ranks")
    [ "$ranks" -gt 1 ] || launch=()
    "${launch[@]}" ./build/parallama generate --ckpt "$ckpt" \
      --prompts "$out/prompts.txt" --out "$out/r.jsonl" --batch "$batch" \
      --max-tokens "$max_tokens" --temperature 0.8 2> /dev/null > "$out/log"
    # wrote FILE: N prompts, T tokens in S s (R tokens/s)
    sed -nE "s/^wrote .*: ([0-9]+) prompts, ([0-9]+) tokens in ([0-9.]+) s \(([0-9]+) tokens\/s\)$/| $ranks | $batch | \1 | \2 | \3 | \4 |/p" "$out/log"
  done
done
