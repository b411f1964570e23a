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
import time

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
    W, H, pad = 460, 320, 55
    losses = [p[2] for r in results for p in r["curve"]]
    lo, hi = min(losses), max(losses)
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="960" height="360" font-family="sans-serif" font-size="12">',
             '<rect width="960" height="360" fill="white"/>']
    for panel, (xi, label) in enumerate([(0, "tokens trained"), (1, "MB moved by rank 0 (sent + received)")]):
        ox = panel * 480
        xmax = max(p[xi] for r in results for p in r["curve"]) or 1
        scale = 1e6 if xi == 1 else 1
        parts.append(f'<line x1="{ox + pad}" y1="{H - pad + 20}" x2="{ox + W}" y2="{H - pad + 20}" stroke="black"/>')
        parts.append(f'<line x1="{ox + pad}" y1="20" x2="{ox + pad}" y2="{H - pad + 20}" stroke="black"/>')
        parts.append(f'<text x="{ox + (W + pad) / 2}" y="{H + 10}" text-anchor="middle">{label}</text>')
        for i in range(6):
            y = 20 + (H - pad) * i / 5
            v = hi - (hi - lo) * i / 5
            parts.append(f'<text x="{ox + pad - 5}" y="{y + 4:.0f}" text-anchor="end">{v:.2f}</text>')
            x = ox + pad + (W - pad) * i / 5
            parts.append(f'<text x="{x:.0f}" y="{H - pad + 35}" text-anchor="middle">{xmax * i / 5 / scale:.3g}</text>')
        for r in results:
            pts = " ".join(f"{ox + pad + (W - pad) * p[xi] / xmax:.1f},{20 + (H - pad) * (hi - p[2]) / (hi - lo or 1):.1f}"
                           for p in r["curve"])
            parts.append(f'<polyline fill="none" stroke="{COLORS[r["name"]]}" stroke-width="2" points="{pts}"/>')
    for i, r in enumerate(results):
        parts.append(f'<text x="{400 + 110 * i - 330}" y="14" fill="{COLORS[r["name"]]}">{r["name"]}</text>')
    parts.append('<text x="5" y="190" transform="rotate(-90 12 190)">validation loss</text></svg>')
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


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
