#!/usr/bin/env bash
# Runs parallama (fp32 and bf16 mixed precision) and the PyTorch peer on the same config, one
# process with all cores and data-parallel with one thread per rank, one after the other in one
# run, and prints a Markdown table of the results.
# Usage: bench/compare.sh [CONFIG] [RANKS] [PAIRS]   (defaults: configs/bench15m.toml 2 5)
# fp32 and bf16 run PAIRS times, alternating, so that a slow spell of a shared machine lands on
# both: the table shows each precision's median run, and the bf16 / fp32 line the median of the
# pairs' ratios with every pair's ratio beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/bench15m.toml}
np=${2:-2}
pairs=${3:-5}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp -d)
for i in $(seq "$pairs"); do
  ./build/parallama bench --config "$config" --json | tail -n 1 > "$out/fp32.$i.json"
  ./build/parallama bench --config "$config" --precision bf16 --json | tail -n 1 > "$out/bf16.$i.json"
done
mpirun --oversubscribe -np "$np" ./build/parallama bench --config "$config" --dp "$np" --json | tail -n 1 > "$out/pdp.json"
/usr/bin/python3 bench/torch_bench.py --config "$config" --json | tail -n 1 > "$out/t1.json"
/usr/bin/python3 bench/torch_bench.py --config "$config" --ddp "$np" --json | tail -n 1 > "$out/tdp.json"
/usr/bin/python3 - "$out" "$pairs" <<'PY'
import json, os, statistics, sys
d, pairs = sys.argv[1], int(sys.argv[2])
runs = {p: [json.load(open(os.path.join(d, f"{p}.{i}.json"))) for i in range(1, pairs + 1)]
        for p in ("fp32", "bf16")}
ratios = [b["tokens_per_s"] / f["tokens_per_s"] for f, b in zip(runs["fp32"], runs["bf16"])]
for p, rs in runs.items():  # each precision's median run (by tokens/s) stands for it in the table
    med = sorted(rs, key=lambda j: j["tokens_per_s"])[(len(rs) - 1) // 2]
    json.dump(med, open(os.path.join(d, f"med.{p}.json"), "w"))
rows = [("parallama", "med.fp32.json"), ("parallama bf16", "med.bf16.json"),
        ("parallama, DP over MPI", "pdp.json"),
        ("PyTorch", "t1.json"), ("PyTorch DDP over gloo", "tdp.json")]
peak = json.load(open(os.path.join(d, "med.fp32.json")))["peak_gflops"]
print("| run | processes x threads | median step (s) | tokens/s | GFLOP/s | MFU (fp32 peak) | MFU (own precision's peak) |")
print("|---|---|---|---|---|---|---|")
for name, f in rows:
    j = json.load(open(os.path.join(d, f)))
    threads = j.get("threads", j.get("threads_per_rank"))
    print(f"| {name} | {j['ranks']} x {threads} | {j['median_step_s']:.3f} | {j['tokens_per_s']:.0f} | "
          f"{j['gflops']:.1f} | {100 * j['gflops'] / peak:.1f}% | "
          f"{100 * j['gflops'] / j.get('peak_gflops', peak):.1f}% |")
pf, pb = (statistics.median(j["peak_gflops"] for j in runs[p]) for p in ("fp32", "bf16"))
print(f"\nbf16 / fp32 tokens/s: {statistics.median(ratios):.2f}x, the median of {pairs} alternating "
      f"pair(s): {', '.join(f'{r:.2f}' for r in ratios)}. Measured GEMM peaks (medians): fp32 "
      f"{pf:.0f}, bf16 {pb:.0f} GFLOP/s, {pb / pf:.2f}x: the ratio a step made only of GEMMs "
      f"would reach.")
j = json.load(open(os.path.join(d, "pdp.json")))
print(f"\nDP: scaling efficiency {100 * j['scaling_efficiency']:.1f}%, gradient all-reduce "
      f"{j['comm_s']:.3f} s per step, {100 * j['comm_hidden_fraction']:.0f}% hidden behind backward; "
      f"MFU against the fp32 GEMM peak of oneDNN measured by `parallama bench` ({peak:.0f} GFLOP/s).")
PY
rm -rf "$out"
