"""The planner's predictions against bench's measurements (bench/auto_layout.sh): errors, rank
correlation, the automatic pick against the best, and a scatter SVG (standard library only)."""
import json
import math
import os
import statistics
import sys


def ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    for k, i in enumerate(order):
        r[i] = k
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return num / den if den else 0.0


def scatter_svg(points, path):
    W, pad = 420, 60
    lo = min(min(p, m) for p, m, _ in points) * 0.8
    hi = max(max(p, m) for p, m, _ in points) * 1.25
    pos = lambda v: pad + (W - pad) * (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W + 40}" height="{W + 40}" '
             'font-family="sans-serif" font-size="12">',
             f'<rect width="{W + 40}" height="{W + 40}" fill="white"/>',
             f'<line x1="{pad}" y1="{W + 20 - pad + pad}" x2="{W}" y2="{W + 20 - pad + pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="20" x2="{pad}" y2="{W + 20}" stroke="black"/>',
             f'<line x1="{pos(lo)}" y1="{W + 20 - pos(lo) + pad}" x2="{pos(hi)}" '
             f'y2="{W + 20 - pos(hi) + pad}" stroke="#999" stroke-dasharray="4"/>']
    for p, m, first in points:
        parts.append(f'<circle cx="{pos(p):.1f}" cy="{W + 20 - pos(m) + pad:.1f}" r="{5 if first else 3}" '
                     f'fill="{"#d62728" if first else "#1f77b4"}" fill-opacity="0.7"/>')
    for k in range(5):
        v = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * k / 4)
        parts.append(f'<text x="{pos(v):.0f}" y="{W + 35}" text-anchor="middle">{v:.3g}</text>')
        parts.append(f'<text x="{pad - 5}" y="{W + 24 - pos(v) + pad:.0f}" text-anchor="end">{v:.3g}</text>')
    parts.append(f'<text x="{(W + pad) / 2}" y="14" text-anchor="middle">measured against predicted '
                 'step time (s, log scales; red: the automatic pick; dashed: equal)</text>')
    parts.append('</svg>')
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main(out):
    # The predictions: plan --auto's (plan.json, the planner's order); the measurements: bench's.
    planned = [l for l in json.load(open(os.path.join(out, "plan.json")))["layouts"] if l["fits"]]
    rows = []
    for index, l in enumerate(planned):
        key = "-".join(str(l[k]) for k in ("dp", "tp", "pp", "pp_virtual", "pp_schedule", "zero",
                                           "batch_size", "micro_batches", "recompute", "precision"))
        f = os.path.join(out, "runs", key + ".json")
        if not os.path.exists(f) or not os.path.getsize(f):
            continue
        j = json.load(open(f))
        p = j["prediction"]
        rows.append({"index": index, "layout": key.replace("-", " "),
                     "predicted_s": l["step_s"], "measured_s": p["measured"]["step_s"],
                     "tokens_per_s": j["tokens_per_s"], "memory_ratio": p["ratio"]["memory_bytes"]})
    if not rows:
        sys.exit("no layout was benched")
    err = [abs(r["predicted_s"] - r["measured_s"]) / r["measured_s"] for r in rows]
    rho = spearman([r["predicted_s"] for r in rows], [r["measured_s"] for r in rows])
    best = max(r["tokens_per_s"] for r in rows)
    pick = next((r for r in rows if r["index"] == 0), None)
    mem = max(abs(r["memory_ratio"] - 1) for r in rows)
    summary = {"layouts": len(rows), "median_error": statistics.median(err), "worst_error": max(err),
               "spearman": rho, "pick_share_of_best": pick["tokens_per_s"] / best if pick else None,
               "worst_memory_error": mem, "rows": rows}
    json.dump(summary, open(os.path.join(out, "results.json"), "w"), indent=1)
    scatter_svg([(r["predicted_s"], r["measured_s"], r["index"] == 0) for r in rows],
                os.path.join(out, "auto_layout.svg"))
    print("| # | layout (dp tp pp v schedule zero b m recompute precision) | predicted s | measured s | error |")
    print("|---|---|---|---|---|")
    for r in sorted(rows, key=lambda x: x["measured_s"]):
        signed = (r["predicted_s"] - r["measured_s"]) / r["measured_s"]
        print(f"| {r['index'] + 1} | {r['layout']} | {r['predicted_s']:.4f} | {r['measured_s']:.4f} | "
              f"{100 * signed:+.1f}% |")
    print(f"{len(rows)} layouts: step time error median {100 * summary['median_error']:.1f}%, worst "
          f"{100 * summary['worst_error']:.1f}%; rank correlation {rho:.3f}; the automatic pick at "
          f"{100 * (summary['pick_share_of_best'] or 0):.1f}% of the best measured tokens/s; memory "
          f"within {100 * mem:.2f}% on every layout")


if __name__ == "__main__":
    main(sys.argv[1])
