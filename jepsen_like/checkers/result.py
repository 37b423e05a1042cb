"""The common result type of every checker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Anomaly:
    """One violation: a short kind, a human sentence, and the minimal operations that prove it."""

    kind: str
    message: str
    ops: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CheckResult:
    """Verdict of one checker.  ``valid`` is ``None`` when the checker could not decide (time budget)."""

    name: str
    valid: bool | None
    anomalies: list[Anomaly] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def add(self, kind: str, message: str, ops: list[dict[str, Any]] | None = None) -> None:
        """Record an anomaly; more than a few hundred are summarised because the first ones explain the rest."""
        self.valid = False
        if len(self.anomalies) < 200:
            self.anomalies.append(Anomaly(kind, message, ops or []))
        else:
            self.stats["anomalies_not_listed"] = self.stats.get("anomalies_not_listed", 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "valid": self.valid,
            "stats": self.stats,
            "anomalies": [a.__dict__ for a in self.anomalies],
        }
