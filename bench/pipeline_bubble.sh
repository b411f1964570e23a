#!/usr/bin/env bash
# The pipeline bubble, measured against (p-1)/(v*m+p-1): GPipe, 1F1B and interleaved 1F1B
# (v = 2) at p = 2 and 4 stages and m = 4, 8 and 16 micro-batches, on kjv-small with 8 layers,
# one sequence of 128 tokens per micro-batch, one thread per rank. The measured bubble is the
# idle share of each stage's step (waiting for activations or gradients), averaged over stages.
# Prints a Markdown table. Usage: bench/pipeline_bubble.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-4}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
out=$(mktemp -d)
for p in 2 4; do
  for m in 4 8 16; do
    for s in gpipe 1f1b interleaved; do
      extra=()
      [ $s = interleaved ] && extra=(--parallel.pp_virtual 2)
      mpirun --oversubscribe -np $p ./build/parallama bench --config configs/kjv-small.toml \
        --model.n_layers 8 --train.batch_size 1 --train.seq_len 128 --train.micro_batches $m \
        --pp $p --parallel.pp_schedule $s "${extra[@]}" --bench.steps "$steps" --bench.warmup 1 \
        --json | tail -n 1 > "$out/$p-$m-$s.json"
    done
  done
done
/usr/bin/python3 - "$out" <<'PY'
import json, os, sys
d = sys.argv[1]
print("| stages p | micro-batches m | schedule | bubble measured | (p-1)/(v·m+p-1) | stage 0 holds | tokens/s |")
print("|---|---|---|---|---|---|---|")
for p in (2, 4):
    for m in (4, 8, 16):
        for s in ("gpipe", "1f1b", "interleaved"):
            j = json.load(open(os.path.join(d, f"{p}-{m}-{s}.json")))
            name = s + (" (v = 2)" if s == "interleaved" else "")
            print(f"| {p} | {m} | {name} | {100 * j['pp_bubble']:.1f}% | "
                  f"{100 * j['pp_bubble_formula']:.1f}% | {j['pp_peak_micro_batches_per_stage'][0]:.0f} "
                  f"micro-batches | {j['tokens_per_s']:.0f} |")
PY
