"""Ports handed out to local clusters: never the same one twice while a member may still be starting."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from raftkv import local_processes
from raftkv.local_processes import free_ports


@pytest.fixture(autouse=True)
def own_reservations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ports.json"
    monkeypatch.setattr(local_processes, "RESERVATIONS", path)
    return path


def test_allocations_at_the_same_time_never_share_a_port() -> None:
    """Each allocation's ports are free when it returns and nobody binds them here: only the reservations
    keep eight allocators running at once (threads stand in for processes; each holds its own lock) apart."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        allocations = list(pool.map(lambda _: free_ports(40), range(8)))
    ports = [port for allocation in allocations for port in allocation]
    assert len(set(ports)) == len(ports) == 320


def test_a_reservation_expires(monkeypatch: pytest.MonkeyPatch, own_reservations: Path) -> None:
    [first] = free_ports(1)
    assert str(first) in own_reservations.read_text()
    monkeypatch.setattr(local_processes, "RESERVATION_SECONDS", -1.0)
    free_ports(1)  # its own reservation is born expired, and the earlier one is still in force
    assert str(first) in own_reservations.read_text()
    monkeypatch.setattr(local_processes.time, "time", lambda: 1e12)  # long after both
    [last] = free_ports(1)
    assert str(first) not in own_reservations.read_text() and str(last) in own_reservations.read_text()


def test_a_damaged_reservation_file_reserves_nothing(own_reservations: Path) -> None:
    own_reservations.write_text('{"12345": 1')  # cut short
    assert len(free_ports(3)) == 3
