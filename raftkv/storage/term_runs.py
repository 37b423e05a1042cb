"""The terms of the newest stored log entries, kept in memory as runs so the core's term lookups skip LMDB.

The leader asks for the term of an entry for every append it sends (the entry before the ones it sends)
and every time it checks a commit, nearly always for entries it has just persisted. Each such lookup was a
read transaction; under load that was one of the loop's larger costs. Terms never decrease along the log,
so the newest entries are described by a handful of (first index, term) runs, which is what this holds.

A value is immutable: the storage publishes a new one after each commit that changes the log, so a reader
on another thread sees either the old or the new one whole. Indices it does not cover are looked up in
LMDB as before.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from raftkv.core.types import Entry

#: Runs kept; older ones are forgotten (a term change per run, so this spans many elections).
MAX_RUNS = 64


@dataclass(frozen=True)
class TermRuns:
    """Terms of the stored entries ``covered_from .. last`` (empty when ``last < covered_from``)."""

    covered_from: int
    last: int
    starts: tuple[int, ...] = ()
    terms: tuple[int, ...] = ()

    @classmethod
    def empty_after(cls, index: int) -> TermRuns:
        """Nothing covered yet; the next append (at ``index + 1`` or below) starts the coverage."""
        return cls(covered_from=index + 1, last=index)

    def term(self, index: int) -> int | None:
        """The term of ``index`` if covered, else None (ask the disk)."""
        if not self.covered_from <= index <= self.last:
            return None
        return self.terms[bisect.bisect_right(self.starts, index) - 1]

    def after_append(self, entries: Sequence[Entry]) -> TermRuns:
        """The runs once ``entries`` are stored; storing index i discards every entry from i on."""
        assert entries, "an append without entries changes nothing"
        first_new = entries[0].index
        if first_new < self.covered_from or first_new > self.last + 1:
            starts, terms, covered_from = [], [], first_new
        else:
            keep = bisect.bisect_left(self.starts, first_new)
            starts, terms, covered_from = list(self.starts[:keep]), list(self.terms[:keep]), self.covered_from
        for entry in entries:
            if not terms or entry.term != terms[-1]:
                assert not terms or entry.term > terms[-1], f"term went back at index {entry.index}"
                starts.append(entry.index)
                terms.append(entry.term)
        if len(starts) > MAX_RUNS:
            del starts[:-MAX_RUNS], terms[:-MAX_RUNS]
            covered_from = starts[0]
        return TermRuns(covered_from, entries[-1].index, tuple(starts), tuple(terms))
