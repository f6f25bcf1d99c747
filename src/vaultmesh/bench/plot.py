"""Latency over time as a self-contained HTML page with an inline SVG: no dependency, opens in any browser.

Each successful sample is a dot at (its end time, its latency) on a log scale, coloured by phase; failures
are red crosses on the top edge; chaos events are dashed vertical lines with their names. Large runs are thinned
to ``max_points`` (evenly, keeping every failure).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from vaultmesh.bench.model import BenchResult, Sample
from vaultmesh.bench.report import PHASE_ORDER, overall

COLORS = ("#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#e377c2")
W, H = 960, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 170, 30, 50


def thin(samples: Sequence[Sample], max_points: int) -> list[Sample]:
    ok = [s for s in samples if s.ok]
    bad = [s for s in samples if not s.ok]
    if len(ok) > max_points:
        step = len(ok) / max_points
        ok = [ok[int(i * step)] for i in range(max_points)]
    return ok + bad


def log_ticks(lo: float, hi: float) -> list[float]:
    """Decade ticks (1, 2, 5 x 10^k seconds) between lo and hi."""
    out = []
    k = math.floor(math.log10(lo))
    while 10 ** k <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** k
            if lo <= v <= hi:
                out.append(v)
        k += 1
    return out


def fmt_latency(v: float) -> str:
    return f"{v * 1000:g} ms" if v < 1 else f"{v:g} s"


def render_html(result: BenchResult, *, title: str = "", max_points: int = 20_000) -> str:
    samples = thin(result.samples, max_points)
    phases = [p for p in PHASE_ORDER if any(s.phase == p for s in samples)]
    phases += sorted({s.phase for s in samples} - set(phases))
    color = {p: COLORS[i % len(COLORS)] for i, p in enumerate(phases)}
    t_max = max([s.t_end for s in samples] + [e.t for e in result.events] + [1.0])
    lat = [max(s.latency, 1e-4) for s in samples if s.ok] or [1e-3]
    lo = 10 ** math.floor(math.log10(min(lat)))
    hi = 10 ** math.ceil(math.log10(max(lat) * 1.05))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + pw * t / t_max

    def y(v: float) -> float:
        return TOP + ph * (1 - (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
             f'font-size="12">', f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fafafa" '
             'stroke="#999"/>']
    for v in log_ticks(lo, hi):
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{fmt_latency(v)}</text>')
    step = max(1.0, 10 ** math.floor(math.log10(t_max / 2)))
    if t_max / step > 10:
        step *= 2 if t_max / (step * 2) <= 10 else 5
    t = 0.0
    while t <= t_max + 1e-9:
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP + ph}" y2="{TOP + ph + 4}" stroke="#333"/>'
                     f'<text x="{x(t):.1f}" y="{TOP + ph + 18}" text-anchor="middle">{t:g}</text>')
        t += step
    parts.append(f'<text x="{LEFT + pw / 2}" y="{H - 10}" text-anchor="middle">seconds since start '
                 '(sample end time)</text>')
    parts.append(f'<text x="16" y="{TOP + ph / 2}" transform="rotate(-90 16 {TOP + ph / 2})" '
                 'text-anchor="middle">latency (log scale)</text>')
    for p in phases:
        dots = "".join(f'<circle cx="{x(s.t_end):.1f}" cy="{y(s.latency):.1f}" r="1.6"/>'
                       for s in samples if s.phase == p and s.ok)
        parts.append(f'<g fill="{color[p]}" fill-opacity="0.55">{dots}</g>')
    crosses = "".join(f'<path d="M{x(s.t_end) - 3:.1f},{TOP + 3} l6,6 m0,-6 l-6,6"/>'
                      for s in samples if not s.ok)
    if crosses:
        parts.append(f'<g stroke="#d62728" stroke-width="1.5">{crosses}</g>')
    for e in result.events:
        parts.append(f'<line x1="{x(e.t):.1f}" x2="{x(e.t):.1f}" y1="{TOP}" y2="{TOP + ph}" stroke="#d62728" '
                     f'stroke-dasharray="5,4"/><text x="{x(e.t) + 3:.1f}" y="{TOP - 6}" fill="#d62728">'
                     f'{html.escape(e.kind)}</text>')
    ly = TOP + 10
    for p in phases:
        parts.append(f'<circle cx="{W - RIGHT + 20}" cy="{ly}" r="4" fill="{color[p]}"/>'
                     f'<text x="{W - RIGHT + 30}" y="{ly + 4}">{html.escape(p)}</text>')
        ly += 18
    if crosses:
        parts.append(f'<path d="M{W - RIGHT + 17},{ly - 3} l6,6 m0,-6 l-6,6" stroke="#d62728" stroke-width="1.5"/>'
                     f'<text x="{W - RIGHT + 30}" y="{ly + 4}">error</text>')
    parts.append("</svg>")
    o = overall(result)
    c = result.config
    heading = title or f"vaultmesh bench: {c.scenario}" + (" (raw ceiling)" if c.raw else "")
    events = "".join(f"<li>{e.t:.2f} s: {html.escape(e.kind)} {html.escape(e.detail)}</li>" for e in result.events)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(heading)}</title></head>"
            f"<body style='font-family:sans-serif;margin:20px'><h2>{html.escape(heading)}</h2>"
            f"<p>{o.successes}/{o.attempts} ok, {o.throughput:.1f}/s, p50 {o.p50 * 1000:.1f} ms, "
            f"p99 {o.p99 * 1000:.1f} ms, max {o.max * 1000:.1f} ms</p>{''.join(parts)}"
            f"{'<ul>' + events + '</ul>' if events else ''}</body></html>\n")
