"""The table and the loss curves of bench/compression.sh: reads OUT/NAME/metrics.jsonl of each
run named, prints a Markdown table and writes OUT/compression.svg.

    /usr/bin/python3 bench/compression_report.py OUT NAME...
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot_svg import loss_curves_svg  # noqa: E402

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def read(out, name):
    rows = [json.loads(l) for l in open(os.path.join(out, name, "metrics.jsonl"))]
    curve, moved = [], 0.0
    for r in rows:
        moved += r.get("bytes_dp", 0.0)
        if "val_loss" in r:
            curve.append((r["step"], moved, r["val_loss"]))
    if not curve:
        sys.exit(f"{name}: no validation loss in its metrics.jsonl")
    dp = [r.get("bytes_dp", 0.0) for r in rows]
    resid = [r["residual_norm"] for r in rows if "residual_norm" in r]
    return dict(name=name, curve=curve, val=curve[-1][2], steps=rows[-1]["step"],
                dp_bytes=sum(dp) / len(dp), residual=resid[-1] if resid else None)


def svg(results, path):
    series = [dict(r, color=COLORS[k % len(COLORS)]) for k, r in enumerate(results)]
    loss_curves_svg(series, [(0, "step", 1), (1, "MB moved on the dp axis by rank 0", 1e6)], path)


def main():
    out, names = sys.argv[1], sys.argv[2:]
    results = [read(out, n) for n in names]
    svg(results, os.path.join(out, "compression.svg"))
    base = next((r for r in results if r["name"] == "none"), None)
    print(f"kjv-small, 4 data-parallel ranks, {results[0]['steps']} steps\n")
    print("| run | final validation loss | vs none | dp bytes per step per rank | vs none | residual norm (last) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        gap = f"{100 * (r['val'] / base['val'] - 1):+.2f}%" if base else "-"
        ratio = f"{base['dp_bytes'] / r['dp_bytes']:.1f}× fewer" if base and r["dp_bytes"] > 0 else "-"
        resid = f"{r['residual']:.3g}" if r["residual"] is not None else "-"
        print(f"| {r['name']} | {r['val']:.4f} | {gap} | {r['dp_bytes'] / 1e6:.3f} MB | {ratio} | {resid} |")


if __name__ == "__main__":
    main()
