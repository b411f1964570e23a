"""Trains kjv-small with 4 data-parallel workers under every --sync strategy, for the same
number of tokens, and compares final validation loss, wall time and bytes per step per rank.

    /usr/bin/python3 bench/sync_strategies.py [--steps 120] [--out runs/sync]

Needs ./build/parallama and data/kjv (scripts/demo.sh makes both). The parameter-server
strategies add one server rank (5 processes); the others use 4. Writes OUT/sync_strategies.svg
(validation loss against tokens and against bytes communicated per rank) and prints a Markdown
table.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot_svg import loss_curves_svg  # noqa: E402

STRATEGIES = [
    ("allreduce", []),
    ("ps", ["--ps.servers", "1"]),
    ("ps-async", ["--ps.servers", "1", "--ps.max-staleness", "2"]),
    ("local", ["--local.period", "8"]),
    ("diloco", ["--diloco.inner-steps", "8", "--diloco.outer-lr", "0.7", "--diloco.outer-momentum", "0.9"]),
]
COLORS = {"allreduce": "#1f77b4", "ps": "#ff7f0e", "ps-async": "#2ca02c", "local": "#d62728", "diloco": "#9467bd"}


def run(name, extra, a):
    out = os.path.join(a.out, name)
    np_ = 4 + (1 if name.startswith("ps") else 0)
    cmd = ["mpirun", "--oversubscribe", "-np", str(np_), "./build/parallama", "train",
           "--config", "configs/kjv-small.toml", "--dp", "4", "--parallel.sync", name,
           "--train.batch_size", "2", "--train.seq_len", "128", "--train.steps", str(a.steps),
           "--train.val_every", str(a.steps // 6), "--train.val_batches", "4", "--train.ckpt_every", "0",
           "--optim.warmup_steps", "20", "--train.out_dir", out] + extra
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    t0 = time.time()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    summary = json.load(open(os.path.join(out, "summary.json")))
    tokens_per_step = 4 * 2 * 128
    curve, moved = [], 0.0
    for r in rows:
        moved += r["bytes_sent"] + r["bytes_received"]
        if "val_loss" in r:
            curve.append((r["step"] * tokens_per_step, moved, r["val_loss"]))
    per_rank = [x["bytes_sent_per_step"] + x["bytes_received_per_step"] for x in summary["ranks"]]
    return dict(name=name, processes=np_, wall=wall, val=curve[-1][2], curve=curve,
                mean_bytes=sum(per_rank) / len(per_rank), max_bytes=max(per_rank))


def svg(results, path):
    series = [dict(r, color=COLORS[r["name"]]) for r in results]
    loss_curves_svg(series, [(0, "tokens trained", 1), (1, "MB moved by rank 0 (sent + received)", 1e6)], path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--out", default="runs/sync")
    a = ap.parse_args()
    results = [run(n, e, a) for n, e in STRATEGIES]
    svg(results, os.path.join(a.out, "sync_strategies.svg"))
    tokens = a.steps * 4 * 2 * 128
    print(f"kjv-small, 4 workers x batch 2 x 128 tokens, {a.steps} steps ({tokens} tokens) per strategy\n")
    print("| --sync | processes | final validation loss | wall time (s) | bytes per step per rank (mean) | (max rank) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['processes']} | {r['val']:.3f} | {r['wall']:.0f} | "
              f"{r['mean_bytes'] / 1e6:.2f} MB | {r['max_bytes'] / 1e6:.2f} MB |")


if __name__ == "__main__":
    main()
