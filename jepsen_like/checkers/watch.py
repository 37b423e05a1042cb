"""Watch-stream guarantees (etcd's API guarantees), checked per watch stream against the committed history.

A stream is the sequence of ``watch-response`` records with one ``watch`` id; a watcher that loses its stream
resumes under a new id from ``last delivered revision + 1``, so each stream is checked on its own:

* ordered      -- event revisions never decrease;
* unique       -- no (revision, key) delivered twice;
* atomic       -- one revision's events are not split across responses;
* bookmarkable -- a progress notification at R is never below a delivered event, and no later event is <= R;
* resumable    -- the first event is the first committed matching event at or after the start revision;
* reliable     -- between the start (or first event) and the last event or progress notification, the
  delivered events are exactly the committed matching events: no gap, no phantom, right values.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from jepsen_like.checkers.result import CheckResult
from jepsen_like.checkers.truth import TruthEvent, event_tuple
from jepsen_like.history import Event, records


def _where(e: Event) -> dict[str, Any]:
    return {"process": e.process, "watch": e.extra.get("watch"), "revision": e.revision, "time": e.time,
            "member": e.member, "events": e.extra.get("events"), "progress": e.extra.get("progress", False)}


def check(events: Sequence[Event], truth: Sequence[TruthEvent]) -> CheckResult:
    res = CheckResult("watch", True)
    streams: dict[Any, list[Event]] = defaultdict(list)
    for e in records(events, "watch-response"):
        streams[e.extra["watch"]].append(e)
    truth_revs = [t[0] for t in truth]
    delivered_total = 0
    for wid, resps in streams.items():
        prefix = str(resps[0].extra.get("prefix", ""))
        start = int(resps[0].extra.get("start", 0))
        seen: dict[tuple[int, str], Event] = {}
        rev_resp: dict[int, Event] = {}
        last_rev = 0
        high = 0  # highest revision up to which the stream claims completeness
        first: tuple[TruthEvent, Event] | None = None
        delivered: list[TruthEvent] = []
        for resp in resps:
            if resp.extra.get("progress"):
                r = resp.revision or 0
                if r < last_rev:
                    res.add("watch-bookmark-behind", f"watch {wid}: progress at {r} after event {last_rev}",
                            [_where(resp)])
                high = max(high, r)
                continue
            for raw in resp.extra.get("events", []):
                ev = event_tuple(raw)
                delivered_total += 1
                rev, _, key, _ = ev
                if first is None:
                    first = (ev, resp)
                if rev < last_rev:
                    res.add("watch-unordered", f"watch {wid}: revision {rev} after {last_rev}", [_where(resp)])
                if rev <= high and rev > last_rev:
                    res.add("watch-bookmark-behind", f"watch {wid}: event at {rev} after progress at {high}",
                            [_where(resp)])
                if (rev, key) in seen:
                    res.add("watch-duplicate", f"watch {wid}: event ({rev}, {key!r}) delivered twice",
                            [_where(seen[(rev, key)]), _where(resp)])
                    continue
                seen[(rev, key)] = resp
                other = rev_resp.setdefault(rev, resp)
                if other is not resp:
                    res.add("watch-split-revision", f"watch {wid}: revision {rev} split across responses",
                            [_where(other), _where(resp)])
                last_rev = max(last_rev, rev)
                delivered.append(ev)
        high = max(high, last_rev)
        matching = [t for t in truth if t[2].startswith(prefix)]
        if first is not None and start > 0:
            expected = next((t for t in matching if t[0] >= start), None)
            if expected is not None and expected[0] < first[0][0]:
                res.add("watch-not-resumable", f"watch {wid} from {start}: first event at {first[0][0]}, but "
                        f"{expected} was committed first", [_where(first[1])])
        lo = start if start > 0 else (first[0][0] if first else high + 1)
        i = bisect.bisect_left(truth_revs, lo)
        want = {t for t in truth[i:] if t[0] <= high and t[2].startswith(prefix)}
        got = set(delivered)
        for t in sorted(want - got)[:5]:
            res.add("watch-gap", f"watch {wid} ({prefix!r} from {lo}, complete to {high}): committed event "
                    f"{t} never delivered", [{"watch": wid, "missing": list(t)}])
        for t in sorted(got - want)[:5]:
            if t[0] >= lo and t[0] <= high:
                res.add("watch-phantom", f"watch {wid}: delivered {t}, which was never committed",
                        [{"watch": wid, "event": list(t), "response": _where(seen[(t[0], t[2])])}])
    res.stats = {"streams": len(streams), "events": delivered_total}
    return res
