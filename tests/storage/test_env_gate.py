"""``Env``'s gate: LMDB may change its map size only while this process holds no transaction, so a resize
waits for the reads in progress, and reads started while it waits come after it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from raftkv.storage.env import Env

DEADLINE = 10.0


def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


def test_a_resize_waits_for_an_open_read_and_later_reads_wait_for_it(tmp_path: Path) -> None:
    env = Env(tmp_path / "db", map_size=1 << 20, max_map_size=8 << 20)
    order: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def long_read() -> None:
        with env.read():
            holding.set()
            release.wait(DEADLINE)
        order.append("first read done")

    def resize() -> None:
        env.grow()
        order.append("grown")

    def later_read() -> None:
        with env.read():
            order.append("later read")

    first = threading.Thread(target=long_read)
    first.start()
    assert holding.wait(DEADLINE)
    grower = threading.Thread(target=resize)
    grower.start()
    _until(lambda: env.gate._waiting_exclusive == 1, "the resize waits")
    later = threading.Thread(target=later_read)
    later.start()
    assert order == [] and grower.is_alive()
    release.set()
    for thread in (first, grower, later):
        thread.join(DEADLINE)
    assert order.index("first read done") < order.index("grown") < order.index("later read")
    assert env.map_size == 2 << 20
    assert (env.gate._readers, env.gate._exclusive, env.gate._waiting_exclusive) == (0, False, 0)
    env.close()


def test_a_read_that_fails_to_begin_leaves_the_gate_open(tmp_path: Path) -> None:
    env = Env(tmp_path / "db")

    class NoReaderSlots:
        def begin(self, **kwargs: object) -> None:
            raise RuntimeError("no reader slot")

    real, env.lmdb = env.lmdb, NoReaderSlots()
    try:
        with pytest.raises(RuntimeError), env.read():
            pass
    finally:
        env.lmdb = real
    assert env.gate._readers == 0
    env.grow()  # would wait for ever on a reader the failed begin left counted
    env.close()
