#!/usr/bin/env python3
"""Draws the speed-up curves of tools/bench_flux_gpu.py's flux.json as one SVG (no plotting
library): prefill and decode speed-up over the FA-only run against the context length, one line
per share of streaming layers, and the KV memory per request.

Usage: python3 tools/plot_flux_curve.py flux.json docs/flux_speedup.svg
"""
import json
import math
import sys

COLORS = {"sa25": "#4c72b0", "sa50": "#dd8452", "sa75": "#55a868"}


def panel(x0, y0, w, h, title, series, contexts, y_max, y_label, fmt):
    out = [f'<g transform="translate({x0},{y0})">',
           f'<text x="{w / 2}" y="-12" text-anchor="middle" font-size="14">{title}</text>',
           f'<rect x="0" y="0" width="{w}" height="{h}" fill="none" stroke="#333"/>']
    lx = [math.log2(c) for c in contexts]
    x_of = (lambda c: (math.log2(c) - lx[0]) / (lx[-1] - lx[0]) * w) if len(lx) > 1 else \
        (lambda c: w / 2)
    y_of = lambda v: h - v / y_max * h  # noqa: E731
    ticks = 5
    for i in range(ticks + 1):
        v = y_max * i / ticks
        y = y_of(v)
        out.append(f'<line x1="0" y1="{y:.1f}" x2="{w}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="-6" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
                   f'{fmt(v)}</text>')
    for c in contexts:
        x = x_of(c)
        out.append(f'<text x="{x:.1f}" y="{h + 16}" text-anchor="middle" font-size="11">'
                   f'{c // 1024}K</text>')
    out.append(f'<text x="{w / 2}" y="{h + 34}" text-anchor="middle" font-size="12">'
               'context (tokens)</text>')
    out.append(f'<text transform="translate(-44,{h / 2}) rotate(-90)" text-anchor="middle" '
               f'font-size="12">{y_label}</text>')
    for name, points in series.items():
        pts = " ".join(f"{x_of(c):.1f},{y_of(v):.1f}" for c, v in points)
        color = COLORS.get(name, "#333")
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        for c, v in points:
            out.append(f'<circle cx="{x_of(c):.1f}" cy="{y_of(v):.1f}" r="3" fill="{color}"/>')
    out.append("</g>")
    return out


def main():
    report = json.load(open(sys.argv[1]))
    rows = report["curve_rows"]
    contexts = sorted({r["context"] for r in rows})
    base = {r["context"]: r for r in rows if r["config"] == "sa00"}
    prefill, decode, kv = {}, {}, {}
    for r in rows:
        if r["config"] == "sa00":
            continue
        b = base[r["context"]]
        prefill.setdefault(r["config"], []).append(
            (r["context"], b["prefill_seconds"] / r["prefill_seconds"]))
        decode.setdefault(r["config"], []).append(
            (r["context"], b["decode_ms_per_token"] / r["decode_ms_per_token"]))
        kv.setdefault(r["config"], []).append((r["context"], r["kv_bytes"] / b["kv_bytes"]))
    top = max(v for s in (prefill, decode) for pts in s.values() for _, v in pts)
    y_max = max(1.0, math.ceil(top * 2) / 2)
    w, h = 300, 220
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{3 * w + 260}" height="{h + 110}" '
           'font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>']
    x = lambda v: f"{v:.1f}x"  # noqa: E731
    svg += panel(70, 40, w, h, "prefill speed-up over FA-only", prefill, contexts, y_max,
                 "speed-up", x)
    svg += panel(70 + w + 80, 40, w, h, "decode speed-up over FA-only", decode, contexts, y_max,
                 "speed-up", x)
    svg += panel(70 + 2 * (w + 80), 40, w, h, "KV per request / FA-only", kv, contexts, 1.0,
                 "fraction", lambda v: f"{v:.1f}")
    ly = 60
    for name, color in COLORS.items():
        share = int(name[2:])
        svg.append(f'<line x1="{3 * w + 250 - 50}" y1="{ly}" x2="{3 * w + 250 - 30}" y2="{ly}" '
                   f'stroke="{color}" stroke-width="3"/>')
        svg.append(f'<text x="{3 * w + 250 - 26}" y="{ly + 4}" font-size="11">{share}%</text>')
        ly += 18
    svg.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
