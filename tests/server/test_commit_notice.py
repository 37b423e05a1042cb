"""The deferred commit notice: armed once while a follower is owed the commit index, disarmed when an append
carried it, due when the delay passes; and its flag is validated like any other."""

from __future__ import annotations

import pytest

from raftkv.security.tls import ConfigError
from raftkv.server.config import DEFAULT_COMMIT_NOTICE_DELAY_MS, parse_config
from raftkv.server.node.commit_notice import CommitNotice
from tests.server.manual_clock import ManualClock

PLAINTEXT = ["--insecure-plaintext", "--listen-peer-urls", "http://127.0.0.1:2380",
             "--listen-client-urls", "http://127.0.0.1:2379"]


def make() -> tuple[ManualClock, CommitNotice, list[int]]:
    clock, wakes = ManualClock(t=0.0), []
    return clock, CommitNotice(clock, 0.005, lambda: wakes.append(1)), wakes


def test_arms_once_while_owed_and_fires_after_the_delay() -> None:
    clock, notice, wakes = make()
    notice.after_turn(True)
    notice.after_turn(True)
    assert clock.armed() == 1
    clock.advance(0.004)
    assert not notice.take_due() and not wakes
    clock.advance(0.001)
    assert wakes == [1]
    assert notice.take_due()
    assert not notice.take_due()  # taken once


def test_an_append_that_carried_the_commit_disarms_it() -> None:
    clock, notice, wakes = make()
    notice.after_turn(True)
    notice.after_turn(False)
    clock.advance(0.01)
    assert clock.armed() == 0 and not wakes and not notice.take_due()
    notice.after_turn(True)  # a new commit index owed: a fresh full delay
    clock.advance(0.004)
    assert not wakes
    clock.advance(0.001)
    assert notice.take_due()


def test_a_zero_delay_is_the_cores_job() -> None:
    with pytest.raises(AssertionError):
        CommitNotice(ManualClock(), 0.0, lambda: None)


def test_flag_default_and_bounds() -> None:
    assert parse_config(PLAINTEXT).commit_notice_delay_ms == DEFAULT_COMMIT_NOTICE_DELAY_MS
    assert parse_config([*PLAINTEXT, "--commit-notice-delay-ms", "5"]).commit_notice_delay_ms == 5.0
    with pytest.raises(ConfigError, match="--commit-notice-delay-ms"):
        parse_config([*PLAINTEXT, "--commit-notice-delay-ms", "30"])
    with pytest.raises(ConfigError, match="--commit-notice-delay-ms"):
        parse_config([*PLAINTEXT, "--commit-notice-delay-ms", "-1"])
