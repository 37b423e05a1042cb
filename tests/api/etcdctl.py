"""Run the real ``etcdctl`` (3.4, Debian's ``etcd-client``) against a local cluster and normalise what it
prints, so that a raftkv answer can be compared with etcd's answer to the same command."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from raftkv.localcluster import LocalCluster

ETCDCTL = "/usr/bin/etcdctl"
T = TypeVar("T")


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """The ``Error: ...`` line etcdctl prints for a failed command (without the prefix)."""
        lines = [line for line in self.stderr.splitlines() if line.startswith("Error: ")]
        assert lines, f"etcdctl {' '.join(self.args)} printed no error; stderr={self.stderr!r}"
        return lines[-1].removeprefix("Error: ")

    def ok(self) -> Result:
        assert self.returncode == 0, f"etcdctl {' '.join(self.args)} failed: {self.stderr}"
        return self


class Etcdctl:
    """etcdctl with the cluster's client certificate; ``endpoint`` names one member (default: all)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        self._env = {**inherited, **cluster.env()}

    def __call__(
        self,
        *args: str,
        member: str | None = None,
        stdin: str | bytes | None = None,
        timeout: float = 20.0,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        """``env`` overrides variables (another client certificate, say) for this one command."""
        endpoints = self.cluster.client_url(member) if member else ",".join(self.cluster.endpoints)
        env = {**self._env, **(env or {}), "ETCDCTL_ENDPOINTS": endpoints}  # the flag and variable clash
        data = stdin.encode() if isinstance(stdin, str) else stdin
        done = subprocess.run([ETCDCTL, *args], input=data, capture_output=True, env=env, timeout=timeout)
        return Result(tuple(args), done.returncode, done.stdout.decode(), done.stderr.decode())


_MASKS: Sequence[tuple[re.Pattern[str], str]] = (
    (re.compile(r"https?://127\.0\.0\.1:\d+"), "<url>"),
    # Ids are printed with %x or %16x (space-padded); an id below 2**48 is too unlikely to matter.
    (re.compile(r"( ?) *\b[0-9a-f]{12,16}\b"), r"\1<id>"),
    (re.compile(r"took = [0-9.]+[a-zµ]*s"), "took = <t>"),
    (re.compile(r"\b\d+(\.\d+)? [kMG]?B\b"), "<size>"),
)


def normalise(text: str) -> str:
    """Mask what legitimately differs between two clusters: URLs, member ids, timings, sizes (not the
    version: raftkv reports the reference etcd's, ``raftkv.ETCD_VERSION``)."""
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


def poll(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call ``probe`` until it returns something other than None; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def assert_same(expected: Sequence[tuple[object, ...]], actual: Sequence[tuple[object, ...]]) -> None:
    """Two transcripts of one session (etcd's first), each line starting with the command it answers."""
    differences = [
        f"$ etcdctl {want[0]}\n  etcd:   {want[1:]}\n  raftkv: {got[1:]}"
        for want, got in zip(expected, actual, strict=True)
        if want != got
    ]
    assert not differences, "\n".join(differences)
