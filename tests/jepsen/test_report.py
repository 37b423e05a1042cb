"""The HTML report: labelled axes in run seconds, four outcomes told apart, anomalies explained."""

from __future__ import annotations

import re
from pathlib import Path

from jepsen_like.checkers import check_all
from jepsen_like.history import FAIL, INFO, INVOKE, NEMESIS, Event
from jepsen_like.report import COLORS, write_report

from .synth import Builder

S = 1_000_000_000


def test_the_report_labels_its_axes_in_run_seconds_and_tells_the_outcomes_apart(tmp_path: Path) -> None:
    b = Builder()
    t0 = 5_000 * S  # an arbitrary monotonic clock: the report shows seconds since the first event
    b.op(1, "write", "k", "a", t0, t0 + S // 10, revision=2)
    b.op(2, "cas", "k", ["x", "b"], t0 + 2 * S, t0 + 2 * S + S // 10, type=FAIL, result="a", observed=True)
    b.op(3, "read", "k", None, t0 + 3 * S, t0 + 3 * S + S // 10, result="stale", revision=2, mod_revision=9)
    b.events.append(Event(4, INVOKE, "write", "k", "c", t0 + 4 * S))
    b.events.append(Event(4, INFO, "write", "k", None, t0 + 5 * S, error="deadline"))
    b.events.append(Event(NEMESIS, INFO, "start", value={"fault": "kill", "detail": "killed n1"}, time=t0 + S))
    b.events.append(Event(NEMESIS, INFO, "stop", value={"fault": "kill"}, time=t0 + 2 * S))
    b.op(5, "read", "k", None, t0 + 20 * S, t0 + 20 * S + 1, result="a", revision=2, mod_revision=2)
    events = b.sorted()
    results = check_all(events, time_limit=5)
    path = tmp_path / "report.html"
    write_report(path, events, results)
    page = path.read_text()
    assert "time since the run began (s)" in page and ">process<" in page and ">ops/s<" in page
    assert ">latency (ms)<" in page and ">10<" in page  # a tick at 10 s
    assert "1.0 s - 2.0 s: killed n1" in page  # nemesis windows in run seconds too
    # The unknown write is a 3 px mark at its invocation, not a bar to the end of the run.
    unknown = re.search(r'<rect x="[\d.]+" y="[\d.]+" width="(\d+)" height="6" fill="' + COLORS["info"], page)
    assert unknown and unknown.group(1) == "3"
    assert "client gave up at 5.000s" in page
    # The false compare is drawn as an answer.
    assert f'fill="{COLORS["answered"]}"><title>answered: compare false' in page
    # The stale read's anomaly shows its operations with invocation times in run seconds.
    assert "<h2>Anomalies</h2>" in page and "<th>invoked (s)</th>" in page
    assert "<td>3.000</td><td>3.100</td>" in page


def test_each_fault_window_reports_its_write_gap() -> None:
    from jepsen_like.report import write_gaps

    b = Builder()
    for i, at in enumerate([0.0, 0.5, 1.0, 1.9, 2.2, 2.4, 6.0]):  # acknowledged writes, seconds
        b.op(i, "write", "k", f"v{i}", int(at * S) - S // 100, int(at * S), revision=i + 2)
    b.op(90, "read", "k", None, int(1.5 * S), int(1.6 * S), result="v2", revision=4, mod_revision=4)
    b.events.append(Event(NEMESIS, INFO, "start", value={"fault": "kill-leader", "detail": "killed n1 (the leader)"},
                          time=int(1.1 * S)))
    b.events.append(Event(NEMESIS, INFO, "stop", value={"fault": "kill-leader"}, time=int(3 * S)))
    b.events.append(Event(NEMESIS, INFO, "start", value={"fault": "pause", "detail": "paused n2"}, time=int(7 * S)))
    b.events.append(Event(NEMESIS, INFO, "stop", value={"fault": "pause"}, time=int(8 * S)))
    (kill, gap), (pause, none) = write_gaps(b.sorted())
    # From the last write before the fault (1.0 s) to the next one (1.9 s); a read does not end a gap.
    assert kill == "killed n1 (the leader)" and abs(gap - 0.9) < 1e-9  # type: ignore[operator]
    assert pause == "paused n2" and none is None
