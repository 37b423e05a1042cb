"""The pause before a Raft turn applies only under load, and its settings are validated like any flag."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.security.tls import ConfigError
from raftkv.server.batching import BatchWindow
from raftkv.server.config import DEFAULT_BATCH_DELAY_MS, DEFAULT_BATCH_MIN_PENDING, parse_config

PLAINTEXT = ["--insecure-plaintext", "--listen-peer-urls", "http://127.0.0.1:2380",
             "--listen-client-urls", "http://127.0.0.1:2379"]


@given(st.floats(0, 0.05), st.integers(1, 100), st.integers(0, 1000))
def test_pauses_only_with_enough_in_flight(delay: float, min_pending: int, pending: int) -> None:
    pause = BatchWindow(delay, min_pending).pause_before_turn(pending)
    assert pause == (delay if pending >= min_pending else 0.0)


def test_a_lone_request_never_waits() -> None:
    window = BatchWindow(DEFAULT_BATCH_DELAY_MS / 1000, DEFAULT_BATCH_MIN_PENDING)
    assert window.pause_before_turn(1) == 0.0
    assert window.pause_before_turn(DEFAULT_BATCH_MIN_PENDING) == DEFAULT_BATCH_DELAY_MS / 1000


def test_defaults_and_flags() -> None:
    cfg = parse_config(PLAINTEXT)
    assert (cfg.batch_delay_ms, cfg.batch_min_pending) == (DEFAULT_BATCH_DELAY_MS, DEFAULT_BATCH_MIN_PENDING)
    cfg = parse_config([*PLAINTEXT, "--batch-delay-ms", "0", "--batch-min-pending", "4"])
    assert (cfg.batch_delay_ms, cfg.batch_min_pending) == (0.0, 4)


def test_default_delay_shrinks_with_a_short_heartbeat() -> None:
    cfg = parse_config([*PLAINTEXT, "--heartbeat-interval", "8", "--election-timeout", "80"])
    assert cfg.batch_delay_ms == 2.0  # a quarter of the heartbeat, below the 3 ms default


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-delay-ms", "-1"], "--batch-delay-ms must be between 0 and a quarter of --heartbeat-interval"),
        (["--batch-delay-ms", "30"], r"--batch-delay-ms must be between 0 and a quarter .*\(25\)"),
        (["--batch-min-pending", "0"], "--batch-min-pending must be at least 1"),
    ],
)
def test_bad_settings_are_refused(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config([*PLAINTEXT, *flags])
