"""Dynamic balancing against a slow rank: kjv-small on 2 data-parallel ranks of this machine,
rank 1 slowed from outside the program (stopped STOP ms of every STOP + RUN ms, as a busy
neighbour would slow it), with equal shares (static) and with parallel.balance = dynamic.

    /usr/bin/python3 bench/balance.py [--steps 40] [--stop-ms 30] [--run-ms 30] [--out runs/balance]

Needs ./build/parallama and data/kjv (scripts/demo.sh makes both). Prints a Markdown table of
tokens/s (median over the steps after the first 10): static, dynamic, and the ideal, the sum of
the two ranks' own rates (micro-batches per compute second, from the dynamic run's per-rank
compute_s and shares); writes OUT/balance_shares.svg, the shares over the steps.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import threading
import time

B, T, K = 2, 128, 8  # batch per micro-batch, tokens, micro-batches per rank (equal shares)


def rank_pid(rank, cwd):
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{p}/cwd") != cwd:
                continue
            env = open(f"/proc/{p}/environ", "rb").read().split(b"\0")
            cmd = open(f"/proc/{p}/cmdline", "rb").read()
        except OSError:
            continue
        if b"parallama" in cmd and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(p)
    return None


def slow_down(rank, cwd, stop_s, run_s, done):
    pid = None
    while pid is None and not done.is_set():
        pid = rank_pid(rank, cwd)
        time.sleep(0.05)
    while pid and not done.is_set():
        try:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(stop_s)
            os.kill(pid, signal.SIGCONT)
            time.sleep(run_s)
        except ProcessLookupError:
            return


def train(name, extra, a):
    out = os.path.join(a.out, name)
    cmd = ["mpirun", "--oversubscribe", "-np", "2", os.path.abspath("build/parallama"), "train",
           "--config", os.path.abspath("configs/kjv-small.toml"),
           "--data.dir", os.path.abspath("data/kjv"), "--train.out_dir", out, "--force",
           "--train.steps", str(a.steps), "--train.batch_size", str(B), "--train.seq_len", str(T),
           "--train.micro_batches", str(K), "--train.val_every", "0", "--train.ckpt_every", "0",
           "--train.threads", "1", "--dp", "2"] + extra
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    done = threading.Event()
    slower = threading.Thread(target=slow_down,
                              args=(1, os.getcwd(), a.stop_ms / 1e3, a.run_ms / 1e3, done))
    slower.start()
    try:
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    finally:
        done.set()
        slower.join()
    return [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]


def svg(rows, path):
    w, h, pad = 640, 260, 40
    n = len(rows)
    x = lambda i: pad + (w - 2 * pad) * i / max(1, n - 1)
    y = lambda v: h - pad - (h - 2 * pad) * v / (2 * K)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{pad}" y="20">micro-batches per step taken by each rank (dynamic; rank 1 slowed)</text>']
    for v in range(0, 2 * K + 1, 4):
        parts.append(f'<line x1="{pad}" x2="{w - pad}" y1="{y(v)}" y2="{y(v)}" stroke="#ddd"/>'
                     f'<text x="{pad - 24}" y="{y(v) + 4}">{v}</text>')
    parts.append(f'<text x="{w / 2 - 15}" y="{h - 8}">step</text>')
    for rank, color in ((0, "#1f77b4"), (1, "#d62728")):
        pts = " ".join(f"{x(i):.1f},{y(r['shares'][rank]):.1f}" for i, r in enumerate(rows))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<text x="{w - pad + 4}" y="{y(rows[-1]["shares"][rank]) + 4}" fill="{color}">rank {rank}</text>')
    parts.append("</svg>")
    open(path, "w").write("\n".join(parts) + "\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--stop-ms", type=float, default=30)
    p.add_argument("--run-ms", type=float, default=30)
    p.add_argument("--out", default="runs/balance")
    a = p.parse_args()
    a.out = os.path.abspath(a.out)
    static = train("static", [], a)
    dynamic = train("dynamic", ["--parallel.balance", "dynamic", "--parallel.balance_every", "5"], a)
    after = lambda rows: rows[10:]
    tps = lambda rows: statistics.median(r["tokens_per_s"] for r in after(rows))
    rates = [statistics.median(r["shares"][k] / r["bytes_per_rank"][k]["compute_s"]
                               for r in after(dynamic)) for k in range(2)]
    ideal = sum(rates) * B * T
    svg(dynamic, os.path.join(a.out, "balance_shares.svg"))
    shares = [statistics.mean(r["shares"][k] for r in after(dynamic)) for k in range(2)]
    print(f"rank 1 stopped {a.stop_ms:.0f} ms of every {a.stop_ms + a.run_ms:.0f}; "
          f"{a.steps} steps of {2 * K} micro-batches x {B} x {T} tokens; medians after step 10\n")
    print("| shares | tokens/s | of ideal |\n|---|---|---|")
    for name, v in (("static (8 + 8)", tps(static)),
                    (f"dynamic (mean {shares[0]:.1f} + {shares[1]:.1f})", tps(dynamic)),
                    (f"ideal (rank rates {rates[0] * B * T:.0f} + {rates[1] * B * T:.0f})", ideal)):
        print(f"| {name} | {v:.0f} | {100 * v / ideal:.0f}% |")


if __name__ == "__main__":
    main()
