#!/usr/bin/env bash
# Runs parallama (fp32 and bf16 mixed precision) and the PyTorch peer on the same config, one
# process with all cores and data-parallel with one thread per rank, one after the other in one
# run, and prints a Markdown table of the results.
# Usage: bench/compare.sh [CONFIG] [RANKS]   (defaults: configs/bench15m.toml 2)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/bench15m.toml}
np=${2:-2}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp -d)
./build/parallama bench --config "$config" --json | tail -n 1 > "$out/p1.json"
./build/parallama bench --config "$config" --precision bf16 --json | tail -n 1 > "$out/p1bf16.json"
mpirun --oversubscribe -np "$np" ./build/parallama bench --config "$config" --dp "$np" --json | tail -n 1 > "$out/pdp.json"
/usr/bin/python3 bench/torch_bench.py --config "$config" --json | tail -n 1 > "$out/t1.json"
/usr/bin/python3 bench/torch_bench.py --config "$config" --ddp "$np" --json | tail -n 1 > "$out/tdp.json"
/usr/bin/python3 - "$out" <<'PY'
import json, os, sys
d = sys.argv[1]
rows = [("parallama", "p1.json"), ("parallama bf16", "p1bf16.json"),
        ("parallama, DP over MPI", "pdp.json"),
        ("PyTorch", "t1.json"), ("PyTorch DDP over gloo", "tdp.json")]
peak = json.load(open(os.path.join(d, "p1.json")))["peak_gflops"]
print("| run | processes x threads | median step (s) | tokens/s | GFLOP/s | MFU (fp32 peak) | MFU (own precision's peak) |")
print("|---|---|---|---|---|---|---|")
for name, f in rows:
    j = json.load(open(os.path.join(d, f)))
    threads = j.get("threads", j.get("threads_per_rank"))
    print(f"| {name} | {j['ranks']} x {threads} | {j['median_step_s']:.3f} | {j['tokens_per_s']:.0f} | "
          f"{j['gflops']:.1f} | {100 * j['gflops'] / peak:.1f}% | "
          f"{100 * j['gflops'] / j.get('peak_gflops', peak):.1f}% |")
fp32, bf16 = (json.load(open(os.path.join(d, f))) for f in ("p1.json", "p1bf16.json"))
print(f"\nbf16 / fp32 tokens/s: {bf16['tokens_per_s'] / fp32['tokens_per_s']:.2f}x "
      f"(measured GEMM peaks: fp32 {peak:.0f}, bf16 {bf16['peak_gflops']:.0f} GFLOP/s)")
j = json.load(open(os.path.join(d, "pdp.json")))
print(f"\nDP: scaling efficiency {100 * j['scaling_efficiency']:.1f}%, gradient all-reduce "
      f"{j['comm_s']:.3f} s per step, {100 * j['comm_hidden_fraction']:.0f}% hidden behind backward; "
      f"MFU against the fp32 GEMM peak of oneDNN measured by `parallama bench` ({peak:.0f} GFLOP/s).")
PY
rm -rf "$out"
