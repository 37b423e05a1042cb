"""``report.html``: the result a person reads — the table of targets, the floors, and per target a timeline
of answered calls per second and instance, failures per second, and the nemesis's faults as shaded spans.

Plain HTML with inline SVG: no script, no network, opens from a file anywhere.
"""

from __future__ import annotations

import html as _html
from collections.abc import Mapping, Sequence
from typing import Any

COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22"]
FAULT_FILL = {"kill": "#d62728", "stop": "#ff7f0e", "not-serving": "#e377c2"}
W, H, LEFT, RIGHT, TOP, BOTTOM = 960, 240, 60, 20, 16, 44


def _e(value: Any) -> str:
    return _html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def chart(name: str, line: Mapping[str, Any], windows: Sequence[Mapping[str, Any]],
          faults: Sequence[Mapping[str, Any]], duration: float) -> str:
    per: Mapping[str, list[int]] = line["per_instance"]
    failures: list[int] = line["failures"]
    series = [*per.values(), failures]
    top = max([max(s) for s in series if s] + [1])
    top = int(top * 1.1) + 1
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + plot_w * t / max(duration, 1e-9)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    out = [f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{_e(name)} timeline">']
    instances = sorted({w["instance"] for w in windows} | set(per))
    lane = plot_h / max(len(instances), 1)
    for w in windows:  # each fault as a span in its instance's lane
        row = instances.index(w["instance"]) if w["instance"] in instances else 0
        width = max(1, x(w["end"]) - x(w["start"]))
        out.append(f'<rect x="{x(w["start"]):.1f}" y="{TOP + row * lane:.1f}" width="{width:.1f}" '
                   f'height="{lane:.1f}" fill="{FAULT_FILL.get(w["fault"], "#999")}" opacity="0.15">'
                   f'<title>{_e(w["fault"])} {_e(w["instance"])} {w["start"]:.1f}–{w["end"]:.1f} s</title></rect>')
    for f in faults:
        if f["fault"] == "leader-kill":
            out.append(f'<line x1="{x(f["at"]):.1f}" x2="{x(f["at"]):.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
                       f'stroke="#000" stroke-dasharray="4 3"><title>raftkv leader {_e(f["target"])} killed at '
                       f'{f["at"]:.1f} s</title></line>')
    # axes, ticks, labels
    out.append(f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="#333"/>')
    out.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#333"/>')
    step = 5 if duration <= 60 else 10 if duration <= 180 else 30
    t = 0
    while t <= duration:
        out.append(f'<text x="{x(t):.1f}" y="{TOP + plot_h + 14}" font-size="10" text-anchor="middle">{t}</text>')
        t += step
    for frac in (0, 0.5, 1):
        v = int(top * frac)
        out.append(f'<text x="{LEFT - 6}" y="{y(v) + 3:.1f}" font-size="10" text-anchor="end">{v}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{H - 6}" font-size="11" text-anchor="middle">'
               'time since the load started (s)</text>')
    out.append(f'<text x="14" y="{TOP + plot_h / 2}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 14 {TOP + plot_h / 2})">calls per second</text>')

    def path(values: list[int], color: str, label: str, width: float = 1.5) -> None:
        points = " ".join(f"{x(i + 0.5):.1f},{y(v):.1f}" for i, v in enumerate(values))
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="{width}">'
                   f'<title>{_e(label)}</title></polyline>')

    for i, (instance, values) in enumerate(per.items()):
        path(values, COLORS[i % len(COLORS)], f"{instance}: answered calls/s")
    path(failures, "#d62728", "failed calls/s", 2.0)
    out.append("</svg>")
    legend = " ".join(f'<span style="color:{COLORS[i % len(COLORS)]}">&#9632; {_e(n)}</span>'
                      for i, n in enumerate(per)) + ' <span style="color:#d62728">&#9632; failed</span>'
    return "\n".join(out) + f"<div class=legend>{legend}</div>"


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def render(result: Mapping[str, Any]) -> str:
    targets = result["targets"]
    cond = result.get("conditions", {})
    duration = float(cond.get("duration_s", 0) or 0)
    head = ["target", "calls", "ok", "success rate", "p50 ms", "p99 ms", "client CPU µs/call",
            "kill → last call s", "NOT_SERVING → last call s", "stop → last call s"]
    rows = [[name, t.get("calls"), t.get("ok"), t.get("success_rate"), t.get("p50_ms"), t.get("p99_ms"),
             t.get("client_cpu_us_per_call"), t.get("kill_to_last_call_s"), t.get("not-serving_to_last_call_s"),
             t.get("stop_to_last_call_s")] for name, t in targets.items()]
    floor_rows = [[name, "; ".join(map(str, f["figure"])) if isinstance(f["figure"], list) else f["figure"],
                   {True: "met", False: "NOT met", None: "not measured"}[f["met"]]]
                  for name, f in result.get("floors", {}).items()]
    parts = [
        "<!doctype html><html><head><meta charset=utf-8><title>raftkv chaos benchmark</title><style>",
        "body{font-family:sans-serif;margin:24px;max-width:1000px}table{border-collapse:collapse;margin:8px 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        "td:first-child{text-align:left}.legend{font-size:12px;margin-bottom:18px}",
        "</style></head><body><h1>raftkv discovery under chaos</h1>",
        f"<p>{_e(cond.get('duration_s'))} s at {_e(cond.get('rate_per_target'))} calls/s per target, "
        f"{'all targets at once' if cond.get('targets_at_once') else 'one target after the other under the same plan'}"
        f" on the same {_e(cond.get('instances'))} instances; call deadline {_e(cond.get('deadline_s'))} s; "
        f"{_e(cond.get('cpus'))} CPUs, load average at the end {_e(cond.get('loadavg_at_end'))}.</p>",
        "<p>Nemesis: every 5 s an instance is SIGKILLed (restarted 3 s later); every 20 s one is SIGSTOPped for "
        "2.5 s, one turned NOT_SERVING with failing calls for 3 s, the raftkv leader SIGKILLed (dashed line) and a "
        "registration process killed. Shaded spans: red kill, orange stop, pink NOT_SERVING, in the lane of "
        "the instance hit.</p>",
        "<h2>Targets</h2>", _table(rows, head),
        "<h2>Floors</h2>", _table(floor_rows, ["floor", "figure", "verdict"]),
    ]
    calibration = result.get("calibration") or {}
    if calibration:
        cal_rows = [[n, c.get("calls"), c.get("success_rate"), c.get("client_cpu_us_per_call"), c.get("p50_ms")]
                    for n, c in calibration.items() if isinstance(c, dict)]
        parts += ["<h2>CPU per call, calm load</h2>",
                  _table(cal_rows, ["client", "calls", "success rate", "CPU µs/call", "p50 ms"]),
                  f"<p>balanced / plain round_robin over the same instances = "
                  f"{_e(_fmt(calibration.get('cpu_ratio')))}; balanced / plain channel to one instance = "
                  f"{_e(_fmt(calibration.get('cpu_ratio_vs_one_instance')))}</p>"]
    runs = (result.get("hashing") or {}).get("runs") or []
    if runs:
        parts += ["<h2>Bounded-load hashing across a join</h2>",
                  _table([[r["instances"], r["keys"], r["epsilon"], r["kept_overall"],
                           r["kept_of_keys_not_taken_by_newcomer"], r["newcomer_share"], r["max_load_over_mean"]]
                          for r in runs], ["instances", "keys", "ε", "kept (all keys)", "kept (keys the newcomer "
                                           "did not take)", "newcomer's share", "busiest / mean"])]
    for name, line in result.get("timeline", {}).items():
        parts += [f"<h2>{_e(name)}</h2>", chart(name, line, result.get("windows", {}).get(name, []),
                                                result.get("faults", {}).get(name, []), duration)]
    if result.get("errors"):
        parts += ["<h2>Problems during the run</h2><ul>"] + [f"<li>{_e(e)}</li>" for e in result["errors"]] + ["</ul>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)
