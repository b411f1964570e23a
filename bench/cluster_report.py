"""Reports bench/cluster.sh's measurements.

    cluster_report.py costs DIR        Markdown table of DIR/costs_RATE_STRATEGY.jsonl
    cluster_report.py curve DIR SVG    validation loss against seconds, DIR/curve_RATE_S.jsonl
    cluster_report.py overlap DIR      before/after table of DIR/overlap_RATE_{before,after}.json
"""
import glob
import json
import os
import sys

RATES = ["unshaped", "10", "1", "0.1"]
STRATEGIES = [("allreduce_fp32", "allreduce, fp32 reduction", 2, 4),
              ("allreduce_bf16", "allreduce, bf16 reduction", 2, 4),
              ("zero1", "allreduce, --zero 1", 2, 4),
              ("zero2", "allreduce, --zero 2", 2, 4),
              ("ps", "ps (1 worker + 1 server)", 1, 8),
              ("ps_async", "ps-async (1 worker + 1 server)", 1, 8),
              ("local", "local SGD (period 4)", 2, 4),
              ("diloco", "DiLoCo (4 inner steps)", 2, 4)]


def rows(path, first=3):
    out = [json.loads(l) for l in open(path) if l.endswith("\n")]
    return [r for r in out if r["step"] >= first]


def rate_of(rs):
    """Tokens per second over the steps: their tokens over their time."""
    seconds = sum(1.0 / r["tokens_per_s"] for r in rs)  # each step has the same tokens
    return len(rs) / seconds


def costs(d):
    alone = {b: rate_of(rows(os.path.join(d, f"alone_b{b}.jsonl"))) for b in (4, 8)}
    print("| link (Gbit/s) | strategy | tokens/s | scaling efficiency | MB sent per step (rank 0 / rank 1) | exposed communication (s/step) |")
    print("|---|---|---|---|---|---|")
    for rate in RATES:
        for key, name, workers, batch in STRATEGIES:
            f = os.path.join(d, f"costs_{rate}_{key}.jsonl")
            if not os.path.exists(f):
                continue
            rs = rows(f)
            tps = rate_of(rs)
            eff = tps / (workers * alone[batch])
            sent = []
            for k in range(2):
                vals = [r["bytes_per_rank"][k]["sent"] for r in rs if len(r["bytes_per_rank"]) > k]
                sent.append(f"{sum(vals) / len(vals) / 1e6:.1f}" if vals else "-")
            waits = [max(p["wait_s"] for p in r["bytes_per_rank"] if p.get("role") == "worker"
                         and "wait_s" in p) for r in rs]
            print(f"| {rate} | {name} | {tps:.0f} | {100 * eff:.1f}% | {' / '.join(sent)} | "
                  f"{sum(waits) / len(waits):.3f} |")
    print(f"\n(alone: {alone[4]:.0f} tokens/s per process with 4 sequences per step, two at once; "
          f"{alone[8]:.0f} with 8, one process)")
    costs_svg(d, alone, os.path.join(os.path.dirname(os.path.abspath(d)), "cluster_costs.svg"))


def costs_svg(d, alone, path):
    """Scaling efficiency against the link's rate, a line per strategy."""
    w, h, m = 900, 420, 60
    xs = {"0.1": 0, "1": 1, "10": 2, "unshaped": 3}
    x = lambda i: m + (w - 5 * m) * i / 3
    y = lambda e: h - m - (h - 2 * m) * min(e, 1.0)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#333333"]
    p = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="{w / 2}" y="20" text-anchor="middle">bench15m over 2 hosts: scaling efficiency against the link</text>',
         f'<line x1="{m}" y1="{h - m}" x2="{x(3)}" y2="{h - m}" stroke="black"/>',
         f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>']
    for name, i in xs.items():
        p.append(f'<text x="{x(i)}" y="{h - m + 16}" text-anchor="middle">{name}{"" if name == "unshaped" else " Gbit/s"}</text>')
    for e in (0, 0.25, 0.5, 0.75, 1.0):
        p.append(f'<text x="{m - 6}" y="{y(e) + 4}" text-anchor="end">{int(100 * e)}%</text>')
        p.append(f'<line x1="{m}" y1="{y(e)}" x2="{x(3)}" y2="{y(e)}" stroke="#ddd"/>')
    for k, (key, name, workers, batch) in enumerate(STRATEGIES):
        pts = []
        for rate, i in xs.items():
            f = os.path.join(d, f"costs_{rate}_{key}.jsonl")
            if os.path.exists(f):
                pts.append((i, rate_of(rows(f)) / (workers * alone[batch])))
        if not pts:
            continue
        c = colors[k % len(colors)]
        p.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{" ".join(f"{x(i):.1f},{y(e):.1f}" for i, e in pts)}"/>')
        p.append(f'<text x="{x(3) + 8}" y="{m + 16 * k}" fill="{c}">{name}</text>')
    p.append("</svg>")
    open(path, "w").write("\n".join(p) + "\n")


def curve(d, svg):
    one = [json.loads(l) for l in open(os.path.join(d, "curve_one_host.jsonl"))]
    target = one[-1]["val_loss"]
    lines = {}
    for f in sorted(glob.glob(os.path.join(d, "curve_*_*.jsonl"))):
        base = os.path.basename(f)[len("curve_"):-len(".jsonl")]
        if base == "one_host":
            continue
        rate, strategy = base.split("_", 1)
        rs = [json.loads(l) for l in open(f) if l.endswith("\n")]
        pts = [(r["elapsed"], r["val_loss"]) for r in rs if "val_loss" in r]
        lines[f"{strategy}, {rate} Gbit/s"] = pts
    lines["one host (1 rank)"] = [(r["elapsed"], r["val_loss"]) for r in one if "val_loss" in r]
    print(f"| run | seconds to validation loss {target:.3f} (one host after 300 steps) | steps |")
    print("|---|---|---|")
    for name, pts in lines.items():
        hit = next(((t, i) for i, (t, v) in enumerate(pts) if v <= target + 1e-9), None)
        print(f"| {name} | {hit[0]:.0f} |  {25 * (hit[1] + 1)} |" if hit else f"| {name} | not reached | - |")
    w, h, m = 720, 420, 60
    tmax = max(t for pts in lines.values() for t, _ in pts)
    vals = [v for pts in lines.values() for _, v in pts]
    vmin, vmax = min(vals), min(max(vals), target + 1.5)
    x = lambda t: m + (w - 2 * m) * t / tmax
    y = lambda v: h - m - (h - 2 * m) * (min(v, vmax) - vmin) / (vmax - vmin)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#333333"]
    p = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="{w / 2}" y="20" text-anchor="middle">kjv-small over 2 hosts: validation loss against wall-clock seconds</text>',
         f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
         f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
         f'<text x="{w / 2}" y="{h - 20}" text-anchor="middle">seconds (0 to {tmax:.0f})</text>',
         f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">validation loss ({vmin:.2f} to {vmax:.2f})</text>',
         f'<line x1="{m}" y1="{y(target):.1f}" x2="{w - m}" y2="{y(target):.1f}" stroke="#999" stroke-dasharray="4 3"/>',
         f'<text x="{w - m}" y="{y(target) - 4:.1f}" text-anchor="end" fill="#666">one host at 300 steps: {target:.3f}</text>']
    for i, (name, pts) in enumerate(lines.items()):
        c = colors[i % len(colors)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
        p.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{path}"/>')
        p.append(f'<text x="{w - m - 180}" y="{m + 16 * i}" fill="{c}">{name}</text>')
    p.append("</svg>")
    open(svg, "w").write("\n".join(p) + "\n")


def overlap(d):
    print("| link (Gbit/s) | | scaling efficiency | gradient communication (s/step) | exposed (s/step) | hidden | MB sent per step |")
    print("|---|---|---|---|---|---|---|")
    for rate in ("10", "1", "0.1"):
        for how, name in (("before", "before: no progress thread, embedding whole"),
                          ("after", "after: progress thread, embedding rows")):
            f = os.path.join(d, f"overlap_{rate}_{how}.json")
            if not os.path.exists(f) or not open(f).read().strip():
                continue
            j = json.load(open(f))
            comm, exp = j["comm_s"], j["comm_exposed_s"]
            print(f"| {rate} | {name} | {100 * j['scaling_efficiency']:.1f}% | {comm:.3f} | {exp:.3f} | "
                  f"{100 * (1 - exp / comm):.0f}% | {j['bytes_per_step']['dp'][0] / 2e6:.1f} |")


def compress(d, conv):
    """bench/cluster.sh compress: the bench runs, and the wall-clock to `none`'s final validation
    loss of bench/compression.sh's runs in conv (steps to reach it × the kjv-small step time)."""
    def load(rate, model, how):
        f = os.path.join(d, f"compress_{rate}_{model}_{how}.json")
        return json.load(open(f)) if os.path.exists(f) and open(f).read().strip() else None
    print("| link (Gbit/s) | model, hosts | compress | scaling efficiency | tokens/s | dp MB per step (sent + received, rank 0) | fewer bytes than none | than dense | exposed communication (s/step) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rate in ("1", "0.1"):
        for model in ("bench15m2", "bench15m4", "kjv-small4"):
            base, dense = load(rate, model, "none"), load(rate, model, "dense")
            for how in ("none", "dense", "int8", "powersgd"):
                j = load(rate, model, how)
                if not j:
                    continue
                dp = j["bytes_per_step"]["dp"][0]
                fewer = f"{base['bytes_per_step']['dp'][0] / dp:.1f}×" if base and dp else "-"
                fewer_dense = f"{dense['bytes_per_step']['dp'][0] / dp:.1f}×" if dense and dp else "-"
                print(f"| {rate} | {model[:-1]}, {model[-1]} | {how} | {100 * j['scaling_efficiency']:.1f}% | "
                      f"{j['tokens_per_s']:.0f} | {dp / 1e6:.2f} | {fewer} | {fewer_dense} | {j['comm_exposed_s']:.3f} |")
    runs = {"none": "none", "int8": "int8", "powersgd": "powersgd-r4"}
    def rows(name):
        p = os.path.join(conv, name, "metrics.jsonl")
        return [json.loads(l) for l in open(p)] if os.path.exists(p) else None
    ref = rows("none")
    if not ref:
        return
    target = [r["val_loss"] for r in ref if "val_loss" in r][-1]
    steps = ref[-1]["step"]
    print(f"\nkjv-small at dp 4 over 4 hosts, bench/compression.sh's runs ({steps} steps) at the step "
          f"times measured here: the wall-clock of the run, and of reaching `none`'s final validation "
          f"loss {target:.4f}\n")
    print("| compress | final validation loss | steps to none's loss | wall-clock at 1 Gbit/s (s) | to none's loss | wall-clock at 0.1 Gbit/s (s) | to none's loss |")
    print("|---|---|---|---|---|---|---|")
    for how, name in runs.items():
        rs = rows(name)
        if not rs:
            continue
        final = [r["val_loss"] for r in rs if "val_loss" in r][-1]
        hit = next((r["step"] for r in rs if r.get("val_loss", 1e9) <= target + 1e-9), None)
        cells = [how, f"{final:.4f}", str(hit) if hit else f"not in {steps}"]
        for rate in ("1", "0.1"):
            j = load(rate, "kjv-small4", how)
            s = j["median_step_s"] if j else None
            cells += [f"{steps * s:.0f}" if s else "-", f"{hit * s:.0f}" if s and hit else "-"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if sys.argv[1] == "compress":
        compress(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "overlap":
        overlap(sys.argv[2])
    elif sys.argv[1] == "costs":
        costs(sys.argv[2])
    else:
        curve(sys.argv[2], sys.argv[3])
