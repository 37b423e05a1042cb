"""One self-contained HTML report: verdicts, a per-process timeline with nemesis windows shaded, the write
gap of every fault window (how long no write was acknowledged), throughput and latency over time (inline
SVG), and every anomaly explained by the few operations that prove it.

Every time shown -- axes, nemesis windows, the operations of an anomaly -- is in seconds since the first
event of the run, so a time read in a table is found at that place on the charts. The timeline tells four
outcomes apart: done (green), certainly not done (red), answered "no" (a compare-and-set whose compare was
false: blue, an answer like any read), and unknown (orange: a short mark at the invocation and a thin line
to when the client gave up; it may have taken effect any time after).
"""

from __future__ import annotations

import html
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jepsen_like.checkers.result import Anomaly, CheckResult
from jepsen_like.history import FAIL, INFINITY, NEMESIS, OK, WRITE_FS, Event, Op, pair

COLORS = {"ok": "#3a3", "fail": "#c33", "info": "#e90", "answered": "#39c"}
LABELS = {"ok": "ok", "fail": "failed (did not happen)", "answered": "answered: compare false",
          "info": "unknown outcome"}
W = 1100
LEFT, RIGHT = 70, 20  # plot margins (px): the left one holds the y-axis labels
NS = 1_000_000_000


class Clock:
    """Maps harness timestamps (ns) to seconds since the run began and to x positions."""

    def __init__(self, t0: int, t1: int) -> None:
        self.t0, self.t1 = t0, max(t1, t0 + 1)

    def s(self, t: int) -> float:
        return (t - self.t0) / NS

    def x(self, t: int) -> float:
        return LEFT + (W - LEFT - RIGHT) * (t - self.t0) / (self.t1 - self.t0)


def _step(span_s: float) -> float:
    """A tick spacing (1, 2 or 5 times a power of ten seconds) giving at most about 12 ticks."""
    step = 0.001
    while span_s / step > 12:
        for factor in (2, 2.5, 2):
            step *= factor
            if span_s / step <= 12:
                break
    return step


def x_axis(clock: Clock, y: float, origin: int | None = None, title: str = "time since the run began (s)") -> str:
    """Ticks at round numbers of seconds since ``origin`` (default: the clock's start) along ``y``, and the
    axis title below them. A zoomed clock labelled from the run's start shows the same seconds as the tables."""
    origin = clock.t0 if origin is None else origin
    first_s, last_s = (clock.t0 - origin) / NS, (clock.t1 - origin) / NS
    step = _step(last_s - first_s)
    parts = [f'<line x1="{LEFT}" y1="{y}" x2="{W - RIGHT}" y2="{y}" stroke="#888"/>']
    k = math.ceil(first_s / step - 1e-9)
    while k * step <= last_s + 1e-9:
        x = clock.x(origin + int(k * step * NS))
        parts.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" stroke="#888"/>'
                     f'<text x="{x:.1f}" y="{y + 15}" font-size="10" text-anchor="middle">{k * step:.6g}</text>')
        k += 1
    if title:
        parts.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{y + 29}" font-size="11" text-anchor="middle">'
                     f'{html.escape(title)}</text>')
    return "".join(parts)


def y_title(text: str, height: float) -> str:
    return (f'<text x="12" y="{height / 2}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 12 {height / 2})">{html.escape(text)}</text>')


def _windows(events: Sequence[Event], t1: int) -> list[tuple[int, int, str]]:
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


def write_gaps(events: Sequence[Event]) -> list[tuple[str, float | None]]:
    """Per fault window: its description and the longest stretch (seconds) without an acknowledged write in
    it, counted from the last acknowledgement before it; if none came during the window, up to the first one
    after it (None: none ever came). What a client of the store sees of the fault: the outage."""
    acked = sorted(o.ret for o in pair(events) if o.type == OK and o.f in WRITE_FS and o.ret < INFINITY)
    out: list[tuple[str, float | None]] = []
    for start, stop, detail in _windows(events, max((e.time for e in events if e.time), default=1)):
        during = [t for t in acked if start < t <= stop]
        after = [t for t in acked if t > stop][:1]
        if not during and not after:
            out.append((detail, None))
            continue
        marks = [t for t in acked if t <= start][-1:] + during + ([stop] if during else after)
        out.append((detail, max(b - a for a, b in zip(marks, marks[1:])) / NS if len(marks) > 1 else None))
    return out


def _shade(windows: list[tuple[int, int, str]], clock: Clock, height: float) -> str:
    return "".join(
        f'<rect x="{clock.x(a):.1f}" y="0" width="{max(1.0, clock.x(b) - clock.x(a)):.1f}" height="{height}" '
        f'fill="#99c" opacity="0.25"><title>{clock.s(a):.1f}-{clock.s(b):.1f} s: {html.escape(d)}</title></rect>'
        for a, b, d in windows)


def outcome(op: Op) -> str:
    """ok, fail, info -- or answered, for a compare that was false (the store told us what it held)."""
    if op.type == FAIL and op.extra.get("observed"):
        return "answered"
    return op.type


def _op_title(op: Op, clock: Clock) -> str:
    ret = "never" if op.ret >= INFINITY else f"{clock.s(op.ret):.3f}s"
    gave_up = f", client gave up at {clock.s(op.gave_up):.3f}s" if op.gave_up is not None else ""
    return html.escape(f"{LABELS[outcome(op)]}: {op.f} {op.key or ''} {json.dumps(op.value, default=str)} -> "
                       f"{json.dumps(op.result, default=str)}; invoked {clock.s(op.call):.3f}s, returned {ret}"
                       f"{gave_up}; process {op.process}, member {op.member}")


def _op_mark(op: Op, clock: Clock, y: float) -> str:
    kind = outcome(op)
    color, title = COLORS[kind], _op_title(op, clock)
    x0 = clock.x(op.call)
    if kind == "info":
        tail = ""
        if op.gave_up is not None:
            tail = (f'<line x1="{x0:.1f}" y1="{y + 3}" x2="{clock.x(op.gave_up):.1f}" y2="{y + 3}" '
                    f'stroke="{color}" stroke-width="1"/>')
        return (f'<g><title>{title}</title><rect x="{x0 - 1:.1f}" y="{y}" width="3" height="6" fill="{color}"/>'
                f'{tail}</g>')
    width = max(0.8, clock.x(op.ret) - x0)
    return f'<rect x="{x0:.1f}" y="{y}" width="{width:.1f}" height="6" fill="{color}"><title>{title}</title></rect>'


def legend(y: float) -> str:
    parts, x = [], LEFT
    for kind in ("ok", "fail", "answered", "info"):
        parts.append(f'<rect x="{x}" y="{y}" width="10" height="6" fill="{COLORS[kind]}"/>'
                     f'<text x="{x + 14}" y="{y + 7}" font-size="10">{LABELS[kind]}</text>')
        x += 24 + 6 * len(LABELS[kind])
    return "".join(parts)


def timeline(ops: Sequence[Op], windows: list[tuple[int, int, str]], clock: Clock) -> str:
    procs = sorted({o.process for o in ops}, key=lambda p: (isinstance(p, str), p if isinstance(p, int) else 0, str(p)))
    row = {p: i for i, p in enumerate(procs)}
    plot_h = 8 * len(procs) + 12
    labels = "".join(
        f'<text x="{LEFT - 4}" y="{10 + 8 * i + 6}" font-size="7" text-anchor="end">{html.escape(str(p))}</text>'
        for i, p in enumerate(procs) if len(procs) <= 40 or i % max(1, len(procs) // 20) == 0)
    marks = "".join(_op_mark(o, clock, 10 + 8 * row[o.process]) for o in ops)
    h = plot_h + 56
    return (f'<svg width="{W}" height="{h}" xmlns="http://www.w3.org/2000/svg">{_shade(windows, clock, plot_h)}'
            f'{y_title("process", plot_h)}{labels}{marks}{x_axis(clock, plot_h)}{legend(plot_h + 40)}</svg>')


def _chart(title: str, unit: str, lines: list[tuple[list[float], str]], top: float, secs: range,
           windows: list[tuple[int, int, str]], clock: Clock) -> str:
    plot_h = 150
    top = top if top > 0 else 1.0

    def y(v: float) -> float:
        return plot_h - 6 - (plot_h - 16) * v / top

    ticks = "".join(
        f'<line x1="{LEFT - 4}" y1="{y(v):.1f}" x2="{LEFT}" y2="{y(v):.1f}" stroke="#888"/>'
        f'<text x="{LEFT - 6}" y="{y(v) + 3:.1f}" font-size="10" text-anchor="end">{_number(v)}</text>'
        for v in (0.0, top / 2, top))
    polylines = "".join(
        f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="'
        + " ".join(f"{clock.x(clock.t0 + s * NS + NS // 2):.1f},{y(v):.1f}" for s, v in zip(secs, vals)) + '"/>'
        for vals, color in lines)
    return (f'<h3>{html.escape(title)}</h3><svg width="{W}" height="{plot_h + 36}" '
            f'xmlns="http://www.w3.org/2000/svg">{_shade(windows, clock, plot_h)}{y_title(unit, plot_h)}'
            f'<line x1="{LEFT}" y1="0" x2="{LEFT}" y2="{plot_h}" stroke="#888"/>{ticks}{polylines}'
            f'{x_axis(clock, plot_h)}</svg>')


def _number(v: float) -> str:
    return f"{v:.0f}" if v >= 10 else f"{v:.2g}"


def series(ops: Sequence[Op], windows: list[tuple[int, int, str]], clock: Clock) -> str:
    """Per-second throughput (completed ops) and latency (median and max of completed ops)."""
    buckets: dict[int, list[float]] = defaultdict(list)
    for o in ops:
        if o.ret < INFINITY:
            buckets[int(clock.s(o.ret))].append((o.ret - o.call) / 1e6)
    secs = range(0, int(clock.s(clock.t1)) + 1)
    thr = [float(len(buckets.get(s, []))) for s in secs]
    p50 = [sorted(buckets[s])[len(buckets[s]) // 2] if buckets.get(s) else 0.0 for s in secs]
    mx = [max(buckets[s]) if buckets.get(s) else 0.0 for s in secs]
    return (_chart("Throughput: operations completed per second", "ops/s", [(thr, "#36c")], max(thr, default=1.0),
                   secs, windows, clock)
            + _chart("Latency per second: median (blue) and slowest (red) completed operation", "latency (ms)",
                     [(p50, "#36c"), (mx, "#c33")], max(mx, default=1.0), secs, windows, clock))


def _seconds(value: Any, clock: Clock) -> str:
    return f"{clock.s(value):.3f}" if isinstance(value, int) and value > 0 else "-"


def explain(anomaly: Anomaly, clock: Clock) -> str:
    """An anomaly's sentence, its operations as a table (times in run seconds), and those operations alone
    on a timeline of their own, so the overlap (or order) that proves it can be seen."""
    rows, spans = [], []
    for d in anomaly.ops:
        call, ret = d.get("call"), d.get("ret")
        when = d.get("time")
        kind = "answered" if d.get("observed") else d.get("type", "")
        fields = {k: v for k, v in d.items()
                  if k not in ("call", "ret", "time", "index", "process", "type", "member", "observed")}
        rows.append(
            f"<tr><td>{html.escape(str(d.get('process', '')))}</td><td>{html.escape(LABELS.get(kind, str(kind)))}</td>"
            f"<td><code>{html.escape(json.dumps(fields, default=str))}</code></td>"
            f"<td>{_seconds(call if call is not None else when, clock)}</td><td>{_seconds(ret, clock)}</td>"
            f"<td>{html.escape(str(d.get('member') or ''))}</td></tr>")
        if isinstance(call, int):
            spans.append((call, ret if isinstance(ret, int) else None, COLORS.get(kind, "#888")))
    table = ("<table><tr><th>process</th><th>outcome</th><th>operation</th><th>invoked (s)</th>"
             f"<th>returned (s)</th><th>member</th></tr>{''.join(rows)}</table>") if rows else ""
    return (f"<h3>{html.escape(anomaly.kind)}</h3><p>{html.escape(anomaly.message)}</p>{table}"
            + (_mini_timeline(spans, clock) if spans else ""))


def _mini_timeline(spans: list[tuple[int, int | None, str]], clock: Clock) -> str:
    lo = min(a for a, _, _ in spans)
    hi = max((b if b is not None else a) for a, b, _ in spans)
    pad = max((hi - lo) // 10, NS // 100)
    local = Clock(lo - pad, hi + pad)
    plot_h = 10 * len(spans) + 8
    bars = []
    for i, (a, b, color) in enumerate(spans):
        x0 = local.x(a)
        width = 3.0 if b is None else max(1.0, local.x(b) - x0)
        bars.append(f'<rect x="{x0:.1f}" y="{6 + 10 * i}" width="{width:.1f}" height="6" fill="{color}"/>'
                    f'<text x="{LEFT - 4}" y="{12 + 10 * i}" font-size="9" text-anchor="end">op {i + 1}</text>')
    return (f'<svg width="{W}" height="{plot_h + 26}" xmlns="http://www.w3.org/2000/svg">{"".join(bars)}'
            f'{x_axis(local, plot_h, origin=clock.t0, title="")}'
            f'<text x="{W - RIGHT}" y="{plot_h + 22}" font-size="9" text-anchor="end">s since the run began</text>'
            '</svg>')


def write_report(path: Path, events: Sequence[Event], results: Sequence[CheckResult]) -> None:
    ops = pair(events)
    times = [e.time for e in events if e.time]
    clock = Clock(*(min(times), max(times)) if times else (0, 1))
    windows = _windows(events, clock.t1)
    rows = "".join(
        f"<tr><td>{r.name}</td><td style='color:{'#3a3' if r.valid else '#c33'}'>"
        f"{ {True: 'valid', False: 'ANOMALIES', None: 'unknown'}[r.valid] }</td>"
        f"<td>{len(r.anomalies)}</td><td><code>{html.escape(json.dumps(r.stats, default=str))}</code></td></tr>"
        for r in results)
    anomalies = "".join(f"<h2>{html.escape(r.name)}</h2>" + "".join(explain(a, clock) for a in r.anomalies[:50])
                        for r in results if r.anomalies)
    gaps = [gap for _, gap in write_gaps(events)]
    nem = "".join(f"<li>{clock.s(a):.1f} s - {clock.s(b):.1f} s: {html.escape(d)}; write gap "
                  f"{'none acknowledged' if gap is None else f'{1000 * gap:,.0f} ms'}</li>"
                  for (a, b, d), gap in zip(windows, gaps, strict=True))
    counts = {kind: sum(1 for o in ops if outcome(o) == kind) for kind in LABELS}
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>jepsen_like report</title>
<style>body{{font-family:sans-serif;margin:20px}}td,th{{border:1px solid #ccc;padding:4px;font-size:13px}}
table{{border-collapse:collapse}}code{{font-size:12px}}</style>
</head><body><h1>{'VALID' if all(r.valid for r in results) else 'INVALID'}</h1>
<table><tr><th>checker</th><th>verdict</th><th>anomalies</th><th>stats</th></tr>{rows}</table>
<p>{len(ops)} operations over {clock.s(clock.t1):.1f} s: {", ".join(f"{n} {LABELS[k]}" for k, n in counts.items())}.
Nemesis windows (shaded on every chart), each with its write gap: the longest time no write was
acknowledged, from the last acknowledgement before the fault on:</p><ul>{nem}</ul>
<h2>Timeline: one row per process</h2>{timeline(ops, windows, clock)}
{series(ops, windows, clock)}<h2>Anomalies</h2>{anomalies or '<p>none</p>'}</body></html>"""
    path.write_text(body, encoding="utf-8")
