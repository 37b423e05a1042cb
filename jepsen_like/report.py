"""One self-contained HTML report: verdicts, a per-process timeline with nemesis windows shaded,
latency and throughput over time (inline SVG), and every anomaly with its minimal offending operations."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from jepsen_like.checkers.result import CheckResult
from jepsen_like.history import INFINITY, NEMESIS, Event, Op, pair

COLORS = {"ok": "#3a3", "fail": "#c33", "info": "#e90"}
W = 1100


def _windows(events: Sequence[Event], t0: int, t1: int) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    open_at: tuple[int, str] | None = None
    for e in events:
        if e.process != NEMESIS:
            continue
        if e.f == "start":
            open_at = (e.time, str(e.value.get("detail") if isinstance(e.value, dict) else e.value))
        elif e.f == "stop" and open_at:
            out.append((open_at[0], e.time, open_at[1]))
            open_at = None
    if open_at:
        out.append((open_at[0], t1, open_at[1]))
    return out


def _x(t: int, t0: int, t1: int) -> float:
    return 60 + (W - 80) * (t - t0) / max(1, t1 - t0)


def _shade(windows: list[tuple[int, int, str]], t0: int, t1: int, height: int) -> str:
    return "".join(
        f'<rect x="{_x(a, t0, t1):.1f}" y="0" width="{max(1.0, _x(b, t0, t1) - _x(a, t0, t1)):.1f}" '
        f'height="{height}" fill="#99c" opacity="0.25"><title>{html.escape(d)}</title></rect>'
        for a, b, d in windows)


def timeline(ops: Sequence[Op], windows: list[tuple[int, int, str]], t0: int, t1: int) -> str:
    procs = sorted({o.process for o in ops}, key=str)
    row = {p: i for i, p in enumerate(procs)}
    h = 8 * len(procs) + 20
    bars = []
    for o in ops:
        end = t1 if o.ret >= INFINITY else o.ret
        y = 10 + 8 * row[o.process]
        x0, x1 = _x(o.call, t0, t1), _x(end, t0, t1)
        bars.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(0.8, x1 - x0):.1f}" height="6" '
                    f'fill="{COLORS[o.type]}"><title>{html.escape(json.dumps(o.brief()))}</title></rect>')
    return (f'<svg width="{W}" height="{h}" xmlns="http://www.w3.org/2000/svg">{_shade(windows, t0, t1, h)}'
            f'{"".join(bars)}</svg>')


def series(ops: Sequence[Op], windows: list[tuple[int, int, str]], t0: int, t1: int) -> str:
    """Per-second throughput (ok ops) and latency (median and max of completed ops)."""
    buckets: dict[int, list[float]] = defaultdict(list)
    for o in ops:
        if o.ret < INFINITY:
            buckets[(o.ret - t0) // 1_000_000_000].append((o.ret - o.call) / 1e6)
    secs = range(0, int((t1 - t0) // 1_000_000_000) + 1)
    thr = [len(buckets.get(s, [])) for s in secs]
    p50 = [sorted(buckets[s])[len(buckets[s]) // 2] if buckets.get(s) else 0.0 for s in secs]
    mx = [max(buckets[s]) if buckets.get(s) else 0.0 for s in secs]
    h = 160

    def line(vals: Sequence[float], top: float, color: str) -> str:
        pts = " ".join(f"{_x(t0 + s * 1_000_000_000, t0, t1):.1f},{h - 10 - (h - 20) * v / max(top, 1e-9):.1f}"
                       for s, v in zip(secs, vals))
        return f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>'

    def chart(title: str, body: str) -> str:
        return (f'<h3>{title}</h3><svg width="{W}" height="{h}" xmlns="http://www.w3.org/2000/svg">'
                f'{_shade(windows, t0, t1, h)}{body}</svg>')

    top = max(mx, default=1.0)
    return (chart(f"Throughput (completed ops/s, max {max(thr, default=0)})", line(thr, max(thr, default=1), "#36c"))
            + chart(f"Latency (ms; median blue, max red; top {top:.0f} ms)",
                    line(p50, top, "#36c") + line(mx, top, "#c33")))


def write_report(path: Path, events: Sequence[Event], results: Sequence[CheckResult]) -> None:
    ops = pair(events)
    times = [e.time for e in events if e.time]
    t0, t1 = (min(times), max(times)) if times else (0, 1)
    windows = _windows(events, t0, t1)
    rows = "".join(
        f"<tr><td>{r.name}</td><td style='color:{'#3a3' if r.valid else '#c33'}'>"
        f"{ {True: 'valid', False: 'ANOMALIES', None: 'unknown'}[r.valid] }</td>"
        f"<td>{len(r.anomalies)}</td><td><code>{html.escape(json.dumps(r.stats, default=str))}</code></td></tr>"
        for r in results)
    anomalies = "".join(
        f"<h3>{html.escape(r.name)}: {html.escape(a.kind)}</h3><p>{html.escape(a.message)}</p>"
        f"<pre>{html.escape(json.dumps(a.ops, indent=1, default=str))}</pre>"
        for r in results for a in r.anomalies[:50])
    nem = "".join(f"<li>{(a - t0) / 1e9:.1f}s - {(b - t0) / 1e9:.1f}s: {html.escape(d)}</li>" for a, b, d in windows)
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>jepsen_like report</title>
<style>body{{font-family:sans-serif;margin:20px}}td,th{{border:1px solid #ccc;padding:4px}}
table{{border-collapse:collapse}}pre{{background:#f6f6f6;padding:6px;max-height:300px;overflow:auto}}</style>
</head><body><h1>{'VALID' if all(r.valid for r in results) else 'INVALID'}</h1>
<table><tr><th>checker</th><th>verdict</th><th>anomalies</th><th>stats</th></tr>{rows}</table>
<p>{len(ops)} operations, {(t1 - t0) / 1e9:.1f} s. Nemesis windows (shaded):</p><ul>{nem}</ul>
<h2>Timeline (one row per process; green ok, red fail, orange info)</h2>{timeline(ops, windows, t0, t1)}
{series(ops, windows, t0, t1)}<h2>Anomalies</h2>{anomalies or '<p>none</p>'}</body></html>"""
    path.write_text(body, encoding="utf-8")
