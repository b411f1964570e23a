"""Validation-loss curves as a two-panel SVG, for the bench scripts (standard library only)."""


def loss_curves_svg(series, panels, path):
    """series: dicts with "name", "color" and "curve" (tuples whose last item is the loss);
    panels: (index into a curve's tuple for x, axis label, divisor of the x tick labels)."""
    W, H, pad = 460, 320, 55
    losses = [p[-1] for r in series for p in r["curve"]]
    lo, hi = min(losses), max(losses)
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="960" height="380" '
             'font-family="sans-serif" font-size="12">', '<rect width="960" height="380" fill="white"/>']
    for panel, (xi, label, scale) in enumerate(panels):
        ox = panel * 480
        xmax = max(p[xi] for r in series for p in r["curve"]) or 1
        parts.append(f'<line x1="{ox + pad}" y1="{H - pad + 40}" x2="{ox + W}" y2="{H - pad + 40}" stroke="black"/>')
        parts.append(f'<line x1="{ox + pad}" y1="40" x2="{ox + pad}" y2="{H - pad + 40}" stroke="black"/>')
        parts.append(f'<text x="{ox + (W + pad) / 2}" y="{H + 30}" text-anchor="middle">{label}</text>')
        for i in range(6):
            y = 40 + (H - pad) * i / 5
            parts.append(f'<text x="{ox + pad - 5}" y="{y + 4:.0f}" text-anchor="end">{hi - (hi - lo) * i / 5:.2f}</text>')
            x = ox + pad + (W - pad) * i / 5
            parts.append(f'<text x="{x:.0f}" y="{H - pad + 55}" text-anchor="middle">{xmax * i / 5 / scale:.3g}</text>')
        for r in series:
            pts = " ".join(f"{ox + pad + (W - pad) * p[xi] / xmax:.1f},"
                           f"{40 + (H - pad) * (hi - p[-1]) / (hi - lo or 1):.1f}" for p in r["curve"])
            parts.append(f'<polyline fill="none" stroke="{r["color"]}" stroke-width="2" points="{pts}"/>')
    for k, r in enumerate(series):
        parts.append(f'<text x="{60 + 120 * k}" y="16" fill="{r["color"]}">{r["name"]}</text>')
    parts.append('<text x="12" y="200" transform="rotate(-90 12 200)">validation loss</text></svg>')
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
