#!/usr/bin/env bash
# Convergence under gradient compression: kjv-small at 4 data-parallel ranks for the same steps
# (the config's 600; its batch of 8 sequences of 256 tokens shared out, 2 per rank) with
# parallel.compress none, bf16, int8, powersgd of rank 1, 2 and 4 (and rank 4 after a tenth of the
# steps uncompressed, as a warm-up), and DiLoCo (8 inner steps) whose outer gradient travels in
# fp32 and in int4. Prints a Markdown table (final validation loss, its gap to `none`, dp bytes per step per
# rank, the residual's norm) and writes OUT/compression.svg (validation loss against steps, and
# against MB moved by rank 0).
#
#   bench/compression.sh [--steps N] [--out DIR] [NAME...]
#
# Needs ./build/parallama and data/kjv (scripts/demo.sh makes both). A run whose
# OUT/NAME/summary.json exists is read, not repeated (remove the directory to run it again); NAMEs
# limit the runs (default: all). All ranks share this machine's cores: wall times say little about
# a cluster (bench/cluster.sh measures shaped links).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=600 out=runs/compression names=()
while [ $# -gt 0 ]; do
  case $1 in
    --steps) steps=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -*) echo "bench/compression.sh: unknown option $1" >&2; exit 2 ;;
    *) names+=("$1"); shift ;;
  esac
done
[[ $steps =~ ^[1-9][0-9]*$ ]] || { echo "bench/compression.sh: --steps must be a positive integer" >&2; exit 2; }
[ -x build/parallama ] && [ -d data/kjv ] || { echo "bench/compression.sh: needs build/parallama and data/kjv (run scripts/demo.sh)" >&2; exit 2; }
declare -A runs=(
  [none]="--parallel.compress none"
  [bf16]="--parallel.compress bf16"
  [int8]="--parallel.compress int8"
  [powersgd-r1]="--parallel.compress powersgd --parallel.powersgd_rank 1"
  [powersgd-r2]="--parallel.compress powersgd --parallel.powersgd_rank 2"
  [powersgd-r4]="--parallel.compress powersgd --parallel.powersgd_rank 4"
  [powersgd-r4-after]="--parallel.compress powersgd --parallel.powersgd_rank 4 --parallel.compress_after $((steps / 10))"
  [diloco-fp32]="--sync diloco --diloco.inner-steps 8"
  [diloco-int4]="--sync diloco --diloco.inner-steps 8 --diloco.compress int4"
)
order=(none bf16 int8 powersgd-r1 powersgd-r2 powersgd-r4 powersgd-r4-after diloco-fp32 diloco-int4)
[ ${#names[@]} -gt 0 ] || names=("${order[@]}")
for n in "${names[@]}"; do
  [ -n "${runs[$n]+x}" ] || { echo "bench/compression.sh: unknown run $n (choose: ${order[*]})" >&2; exit 2; }
done
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$out"
for n in "${names[@]}"; do
  [ -f "$out/$n/summary.json" ] && continue
  # shellcheck disable=SC2086
  mpirun --oversubscribe -np 4 ./build/parallama train --config configs/kjv-small.toml --dp 4 \
    --train.batch_size 2 --train.steps "$steps" --train.val_every $((steps / 12 > 0 ? steps / 12 : 1)) \
    --train.ckpt_every 0 --train.out_dir "$out/$n" ${runs[$n]} > "$out/$n.log" 2>&1 ||
    { echo "bench/compression.sh: $n failed: $(tail -3 "$out/$n.log")" >&2; exit 1; }
done
/usr/bin/python3 bench/compression_report.py "$out" "${names[@]}"
